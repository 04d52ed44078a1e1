//! The NGINX Ingress traffic router, with Argo Rollouts' semantics
//! (`rollout/trafficrouting/nginx/nginx.go`), plus header routes through the
//! `canary-by-header*` annotations and a working `verify-weight`.
//!
//! Configuration is Argo's `trafficRouting.nginx` block: `stableIngress` or
//! `stableIngresses`, `annotationPrefix` (default `nginx.ingress.kubernetes.io`),
//! `additionalIngressAnnotations` (prefixed) and `canaryIngressAnnotations`
//! (verbatim, winning on collision).

use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use weir_plugin_sdk::objects::{self, check_weight_within};
use weir_plugin_sdk::router::exports::weir::plugin::traffic_router::Guest;
use weir_plugin_sdk::types::{
    HeaderRoute, MirrorRoute, ObservedWeights, PluginError, Rollout, StringMatch, Verification,
    WeightDestination, WeightVerification,
};

const INGRESS_API: &str = "networking.k8s.io/v1";
const DEFAULT_PREFIX: &str = "nginx.ingress.kubernetes.io";
const CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";
const CANARY_SUFFIX: &str = "-canary";
/// Annotation suffixes a header route sets.
const HEADER_KEYS: [&str; 3] = [
    "canary-by-header",
    "canary-by-header-value",
    "canary-by-header-pattern",
];

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NginxConfig {
    #[serde(default)]
    stable_ingress: String,
    #[serde(default)]
    stable_ingresses: Vec<String>,
    #[serde(default)]
    annotation_prefix: String,
    #[serde(default)]
    additional_ingress_annotations: BTreeMap<String, String>,
    #[serde(default)]
    canary_ingress_annotations: BTreeMap<String, String>,
}

struct Context<'a> {
    rollout: &'a Rollout,
    config: NginxConfig,
    prefix: String,
}

/// Argo's `GetCanaryIngressName`: `<rollout>-<stable>-canary`, within 253 characters.
fn canary_name(rollout: &str, stable: &str) -> String {
    let mut prefix = format!("{rollout}-{stable}");
    let room = 253 - CANARY_SUFFIX.len();
    if prefix.len() > room {
        let mut cut = room;
        while !prefix.is_char_boundary(cut) {
            cut -= 1;
        }
        prefix.truncate(cut);
    }
    format!("{prefix}{CANARY_SUFFIX}")
}

impl<'a> Context<'a> {
    fn new(rollout: &'a Rollout) -> Result<Self, PluginError> {
        let config: NginxConfig = weir_plugin_sdk::parse_config(
            "nginx configuration (trafficRouting.nginx)",
            &rollout.config,
        )?;
        if config.stable_ingress.is_empty() && config.stable_ingresses.is_empty() {
            return Err(PluginError::InvalidConfig(
                "nginx configuration: `stableIngress` or `stableIngresses` is required".into(),
            ));
        }
        let prefix = if config.annotation_prefix.is_empty() {
            DEFAULT_PREFIX.to_string()
        } else {
            config.annotation_prefix.clone()
        };
        Ok(Context {
            rollout,
            config,
            prefix,
        })
    }

    /// `stableIngresses` when given, else `stableIngress` (as Argo).
    fn stable_ingresses(&self) -> Vec<&str> {
        if self.config.stable_ingresses.is_empty() {
            vec![self.config.stable_ingress.as_str()]
        } else {
            self.config
                .stable_ingresses
                .iter()
                .map(String::as_str)
                .collect()
        }
    }

    fn key(&self, suffix: &str) -> String {
        format!("{}/{suffix}", self.prefix)
    }

    fn ingress_ref(&self, name: &str) -> weir_plugin_sdk::cluster::ObjectRef {
        objects::object_ref(INGRESS_API, "Ingress", &self.rollout.namespace, name)
    }

    /// Argo's `buildCanaryIngress`: the canary Ingress wanted for `stable`.
    fn desired_canary(
        &self,
        stable_name: &str,
        stable: &Value,
        weight: i32,
    ) -> Result<Value, PluginError> {
        let (stable_svc, canary_svc) = (&self.rollout.stable_service, &self.rollout.canary_service);
        let mut rules = Vec::new();
        for rule in stable["spec"]["rules"].as_array().into_iter().flatten() {
            let mut rule = rule.clone();
            let mut uses_stable = false;
            if let Some(paths) = rule
                .pointer_mut("/http/paths")
                .and_then(Value::as_array_mut)
            {
                for path in paths {
                    if path["backend"]["service"]["name"].as_str() == Some(stable_svc.as_str()) {
                        path["backend"]["service"]["name"] = json!(canary_svc);
                        uses_stable = true;
                    }
                }
            }
            if uses_stable {
                rules.push(rule);
            }
        }
        if rules.is_empty() {
            return Err(PluginError::InvalidConfig(format!(
                "ingress `{stable_name}` has no rules using service {stable_svc} backend"
            )));
        }
        let mut spec = json!({"rules": rules});
        if let Some(tls) = stable["spec"].get("tls") {
            spec["tls"] = tls.clone();
        }
        if let Some(class) = stable["spec"].get("ingressClassName") {
            spec["ingressClassName"] = class.clone();
        }
        let mut annotations = Map::new();
        if let Some(class) = stable["metadata"]["annotations"].get(CLASS_ANNOTATION) {
            annotations.insert(CLASS_ANNOTATION.into(), class.clone());
        }
        for (k, v) in &self.config.additional_ingress_annotations {
            let key = if k.starts_with(&self.prefix) {
                k.clone()
            } else {
                self.key(k)
            };
            annotations.insert(key, json!(v));
        }
        for (k, v) in &self.config.canary_ingress_annotations {
            annotations.insert(k.clone(), json!(v));
        }
        annotations.insert(self.key("canary"), json!("true"));
        annotations.insert(self.key("canary-weight"), json!(weight.to_string()));
        // NGINX takes 100 when the total is not given; Argo writes it when
        // `maxTrafficWeight` is set at all, which gives the same traffic.
        let total = self.rollout.max_traffic_weight;
        if total != 100 {
            annotations.insert(self.key("canary-weight-total"), json!(total.to_string()));
        }
        Ok(json!({
            "apiVersion": INGRESS_API,
            "kind": "Ingress",
            "metadata": {
                "name": canary_name(&self.rollout.name, stable_name),
                "namespace": self.rollout.namespace,
                "annotations": annotations,
                "ownerReferences": [objects::owner_reference(self.rollout)],
            },
            "spec": spec,
        }))
    }

    /// For each stable ingress: the canary Ingress as stored (if any), after
    /// checking this Rollout controls it.
    fn canary_ingresses(&self) -> Result<Vec<(String, Option<Value>)>, PluginError> {
        let mut found = Vec::new();
        for stable in self.stable_ingresses() {
            let name = canary_name(&self.rollout.name, stable);
            let current = objects::get(&self.ingress_ref(&name))?;
            if let Some(existing) = &current
                && !objects::is_controlled_by(existing, self.rollout)
            {
                return Err(PluginError::Conflict(format!(
                    "canary ingress `{name}` is controlled by a different object than Rollout {}; Weir will not take it over",
                    self.rollout.name
                )));
            }
            found.push((stable.to_string(), current));
        }
        Ok(found)
    }

    /// Creates or updates each canary Ingress to carry `weight`, keeping
    /// annotations others (or header routes) added but not their labels,
    /// as Argo does; `edit` adjusts the annotations last.
    fn apply(
        &self,
        weight: Option<i32>,
        edit: &dyn Fn(&mut Map<String, Value>),
    ) -> Result<(), PluginError> {
        for (stable_name, current) in self.canary_ingresses()? {
            let stable = objects::get_required(&self.ingress_ref(&stable_name))?;
            let current_weight = current
                .as_ref()
                .and_then(|c| c["metadata"]["annotations"][self.key("canary-weight")].as_str())
                .and_then(|w| w.parse().ok())
                .unwrap_or(0);
            let mut desired =
                self.desired_canary(&stable_name, &stable, weight.unwrap_or(current_weight))?;
            match current {
                None => {
                    if let Some(annotations) = desired
                        .pointer_mut("/metadata/annotations")
                        .and_then(Value::as_object_mut)
                    {
                        edit(annotations);
                    }
                    objects::create(&desired)?;
                }
                Some(existing) => {
                    let mut updated = existing.clone();
                    let mut annotations = desired["metadata"]["annotations"]
                        .as_object()
                        .cloned()
                        .unwrap_or_default();
                    // Argo's getDesiredAnnotations: keep annotations others added.
                    for (k, v) in existing["metadata"]["annotations"]
                        .as_object()
                        .into_iter()
                        .flatten()
                    {
                        annotations.entry(k.clone()).or_insert_with(|| v.clone());
                    }
                    edit(&mut annotations);
                    updated["metadata"]["annotations"] = Value::Object(annotations);
                    // Argo's merge patch sets the canary Ingress's labels
                    // to the desired ones, which are none: labels others
                    // added go (annotations stay, above).
                    if let Some(metadata) = updated["metadata"].as_object_mut() {
                        metadata.remove("labels");
                    }
                    updated["spec"] = desired["spec"].take();
                    if updated != existing {
                        objects::update(&updated)?;
                    }
                }
            }
        }
        Ok(())
    }
}

fn no_additional(additional: &[WeightDestination]) -> Result<(), PluginError> {
    if additional.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = additional.iter().map(|d| d.service_name.as_str()).collect();
    Err(PluginError::InvalidConfig(format!(
        "NGINX canary Ingresses split between two services only; cannot also send traffic to experiment services {names:?} (use istio or smi for weighted experiments)"
    )))
}

/// Escapes regex metacharacters so a prefix can be written as a pattern.
fn regex_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 4);
    for c in text.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

struct Nginx;

impl Guest for Nginx {
    fn init(_args: Vec<String>) -> Result<(), PluginError> {
        Ok(())
    }

    fn update_hash(
        _: Rollout,
        _: String,
        _: String,
        _: Vec<WeightDestination>,
    ) -> Result<(), PluginError> {
        Ok(()) // The canary and stable Services select pods by hash.
    }

    fn set_weight(
        rollout: Rollout,
        desired: i32,
        additional: Vec<WeightDestination>,
    ) -> Result<(), PluginError> {
        check_weight_within(desired, rollout.max_traffic_weight.max(1), "desired")?;
        no_additional(&additional)?;
        Context::new(&rollout)?.apply(Some(desired), &|_| {})
    }

    fn set_header_route(rollout: Rollout, route: HeaderRoute) -> Result<(), PluginError> {
        let ctx = Context::new(&rollout)?;
        let keys: Vec<String> = HEADER_KEYS.iter().map(|k| ctx.key(k)).collect();
        let wanted: Vec<(String, String)> = match route.matches.as_slice() {
            [] => vec![],
            [m] => {
                let (key, value) = match &m.value {
                    StringMatch::Exact(v) => (&keys[1], v.clone()),
                    StringMatch::Regex(v) => (&keys[2], v.clone()),
                    StringMatch::Prefix(v) => (&keys[2], format!("^{}.*", regex_escape(v))),
                };
                vec![(keys[0].clone(), m.name.clone()), (key.clone(), value)]
            }
            more => {
                return Err(PluginError::InvalidConfig(format!(
                    "NGINX canary Ingresses match one header only; header route {} has {} matches",
                    route.name,
                    more.len()
                )));
            }
        };
        ctx.apply(None, &|annotations| {
            for key in &keys {
                annotations.remove(key);
            }
            for (k, v) in &wanted {
                annotations.insert(k.clone(), json!(v));
            }
        })
    }

    fn set_mirror_route(_: Rollout, route: MirrorRoute) -> Result<(), PluginError> {
        if route.matches.is_empty() {
            return Ok(());
        }
        Err(PluginError::InvalidConfig(
            "NGINX canary Ingresses cannot mirror traffic; use the istio router".into(),
        ))
    }

    fn verify_weight(
        rollout: Rollout,
        desired: i32,
        additional: Vec<WeightDestination>,
    ) -> Result<WeightVerification, PluginError> {
        no_additional(&additional)?;
        let ctx = Context::new(&rollout)?;
        let mut verified = true;
        let mut observed = None;
        for (_, current) in ctx.canary_ingresses()? {
            let weight = current
                .as_ref()
                .and_then(|c| c["metadata"]["annotations"][ctx.key("canary-weight")].as_str())
                .and_then(|w| w.parse::<i32>().ok());
            verified &= weight == Some(desired);
            if observed.is_none() && ctx.rollout.max_traffic_weight == 100 {
                observed = weight
                    .filter(|w| (0..=100).contains(w))
                    .map(|w| ObservedWeights {
                        canary: w,
                        stable: 100 - w,
                        additional: vec![],
                    });
            }
        }
        Ok(WeightVerification {
            verification: if verified {
                Verification::Verified
            } else {
                Verification::NotVerified
            },
            observed,
        })
    }

    fn remove_managed_routes(rollout: Rollout) -> Result<(), PluginError> {
        let ctx = Context::new(&rollout)?;
        let keys: Vec<String> = HEADER_KEYS.iter().map(|k| ctx.key(k)).collect();
        for (_, current) in ctx.canary_ingresses()? {
            let Some(mut existing) = current else {
                continue;
            };
            let before = existing.clone();
            if let Some(annotations) = existing
                .pointer_mut("/metadata/annotations")
                .and_then(Value::as_object_mut)
            {
                for key in &keys {
                    annotations.remove(key);
                }
            }
            if existing != before {
                objects::update(&existing)?;
            }
        }
        Ok(())
    }
}

weir_plugin_sdk::export_traffic_router!(Nginx);

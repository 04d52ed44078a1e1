//! VirtualService and DestinationRule edits, as pure functions over JSON.

use crate::HASH_LABEL;
use crate::config::{DrRef, VsRef};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use weir_plugin_sdk::PluginError;
use weir_plugin_sdk::types::{ObservedWeights, WeightDestination};

/// The rollout's services and subsets, as the router matches destinations.
pub struct Services {
    pub canary: String,
    pub stable: String,
    pub canary_subset: String,
    pub stable_subset: String,
    pub additional_subsets: Vec<String>,
    pub has_destination_rule: bool,
}

/// Istio's and Argo's host comparison: the short name before the first dot.
pub fn short_host(host: &str) -> &str {
    match host.find('.') {
        Some(0) => "",
        Some(i) => &host[..i],
        None => host,
    }
}

fn name_of(route: &Value) -> Option<&str> {
    route.get("name").and_then(Value::as_str)
}

fn invalid(message: impl Into<String>) -> PluginError {
    PluginError::InvalidConfig(message.into())
}

/// `spec.http`, which header and mirror routes need.
pub fn http_routes_mut(vs: &mut Value) -> Result<&mut Vec<Value>, PluginError> {
    let name = vs["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    vs.pointer_mut("/spec/http")
        .and_then(Value::as_array_mut)
        .ok_or_else(|| invalid(format!("VirtualService {name} has no spec.http routes")))
}

/// Removes every HTTP route named `name`.
pub fn remove_route(vs: &mut Value, name: &str) -> Result<(), PluginError> {
    http_routes_mut(vs)?.retain(|r| name_of(r) != Some(name));
    Ok(())
}

/// Puts managed routes first, in `managedRoutes` order, above the others.
pub fn order_routes(vs: &mut Value, managed: &[String]) {
    if managed.is_empty() {
        return;
    }
    let Some(routes) = vs.pointer_mut("/spec/http").and_then(Value::as_array_mut) else {
        return;
    };
    let mut ordered = Vec::with_capacity(routes.len());
    for name in managed {
        ordered.extend(
            routes
                .iter()
                .filter(|r| name_of(r) == Some(name.as_str()))
                .cloned(),
        );
    }
    ordered.extend(
        routes
            .iter()
            .filter(|r| !name_of(r).is_some_and(|n| managed.iter().any(|m| m == n)))
            .cloned(),
    );
    *routes = ordered;
}

/// Which HTTP routes a set-weight drives (Argo's `getHttpRouteIndexesToPatch`).
fn http_indexes(names: &[String], routes: &[Value]) -> Result<Vec<usize>, PluginError> {
    if names.is_empty() {
        if routes.len() == 1 {
            return Ok(vec![0]);
        }
        return Ok(routes
            .iter()
            .position(|r| name_of(r).unwrap_or("").is_empty())
            .into_iter()
            .collect());
    }
    names
        .iter()
        .map(|name| {
            routes
                .iter()
                .position(|r| name_of(r) == Some(name.as_str()))
                .ok_or_else(|| {
                    invalid(format!(
                        "HTTP Route '{name}' is not found in the defined Virtual Service."
                    ))
                })
        })
        .collect()
}

/// The single match port of a TLS/TCP route (0 with no port), or `None`
/// when its matches name several ports (such a route never matches).
fn single_port(route: &Value) -> Option<i64> {
    let mut ports: Vec<i64> = route["match"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| m["port"].as_i64().unwrap_or(0))
        .collect();
    ports.sort_unstable();
    ports.dedup();
    match ports.as_slice() {
        [] => Some(0),
        [p] => Some(*p),
        _ => None,
    }
}

fn sni_hosts(route: &Value) -> Vec<String> {
    let mut hosts: Vec<String> = route["match"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|m| {
            m["sniHosts"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_string)
        })
        .collect();
    hosts.sort();
    hosts.dedup();
    hosts
}

fn l4_indexes<T>(
    selectors: &[T],
    routes: &[Value],
    kind: &str,
    matches: impl Fn(&T, &Value) -> bool,
) -> Result<Vec<usize>, PluginError> {
    if selectors.is_empty() {
        return Ok(if routes.is_empty() { vec![] } else { vec![0] });
    }
    let mut indexes = Vec::new();
    for selector in selectors {
        let found: Vec<usize> = routes
            .iter()
            .enumerate()
            .filter(|(_, r)| matches(selector, r))
            .map(|(i, _)| i)
            .collect();
        if found.is_empty() {
            return Err(invalid(format!(
                "No matching {kind} routes found in the defined Virtual Service."
            )));
        }
        indexes.extend(found);
    }
    Ok(indexes)
}

fn destinations(route: &Value) -> Vec<Value> {
    route["route"].as_array().cloned().unwrap_or_default()
}

/// Argo's `validateVirtualServiceRouteDestinations`: the route must reach
/// both canary and stable (hosts, or subsets with a DestinationRule).
fn validate_destinations(route: &Value, s: &Services) -> Result<(), PluginError> {
    let dests = destinations(route);
    let has = |f: &dyn Fn(&str, &str) -> bool| {
        dests.iter().any(|d| {
            let host = short_host(d["destination"]["host"].as_str().unwrap_or(""));
            f(host, d["destination"]["subset"].as_str().unwrap_or(""))
        })
    };
    if s.has_destination_rule {
        if !has(&|_, sub| !s.canary_subset.is_empty() && sub == s.canary_subset) {
            return Err(invalid(format!(
                "Canary DestinationRule subset '{}' not found in route",
                s.canary_subset
            )));
        }
        if !has(&|_, sub| !s.stable_subset.is_empty() && sub == s.stable_subset) {
            return Err(invalid(format!(
                "Stable DestinationRule subset '{}' not found in route",
                s.stable_subset
            )));
        }
    } else {
        if !has(&|host, _| !s.canary.is_empty() && host == s.canary) {
            return Err(invalid(format!(
                "Canary Service '{}' not found in route",
                s.canary
            )));
        }
        if !has(&|host, _| !s.stable.is_empty() && host == s.stable) {
            return Err(invalid(format!(
                "Stable Service '{}' not found in route",
                s.stable
            )));
        }
    }
    Ok(())
}

/// The routes a set-weight drives, validated as Argo validates them:
/// `(section, index)` with section `http`, `tls` or `tcp`.
fn selected_routes(
    vs: &Value,
    cfg: &VsRef,
    s: &Services,
    managed: &[String],
) -> Result<Vec<(&'static str, usize)>, PluginError> {
    let mut selected = Vec::new();
    if let Some(http) = vs["spec"]["http"].as_array() {
        let indexes = http_indexes(&cfg.routes, http)?;
        for &i in &indexes {
            validate_destinations(&http[i], s)?;
        }
        let unmanaged = http
            .iter()
            .filter(|r| !name_of(r).is_some_and(|n| managed.iter().any(|m| m == n)))
            .count();
        if cfg.routes.is_empty() && unmanaged > 1 {
            return Err(invalid(
                "spec.http[] should be set in VirtualService and it must have exactly one route when omitting spec.strategy.canary.trafficRouting.istio.virtualService.routes",
            ));
        }
        selected.extend(indexes.into_iter().map(|i| ("http", i)));
        // Mirror routes among the managed routes carry weighted
        // destinations too, and follow every set-weight.
        for (i, route) in http.iter().enumerate() {
            let managed_mirror = route.get("mirror").is_some()
                && name_of(route).is_some_and(|n| managed.iter().any(|m| m == n));
            if managed_mirror && !selected.contains(&("http", i)) {
                selected.push(("http", i));
            }
        }
    }
    if let Some(tls) = vs["spec"]["tls"].as_array() {
        let indexes = l4_indexes(&cfg.tls_routes, tls, "TLS", |sel, route| {
            let mut wanted = sel.sni_hosts.clone();
            wanted.sort();
            wanted.dedup();
            single_port(route) == Some(sel.port) && sni_hosts(route) == wanted
        })?;
        for &i in &indexes {
            validate_destinations(&tls[i], s)?;
        }
        if cfg.tls_routes.is_empty() && tls.len() > 1 {
            return Err(invalid(
                "spec.tls[] should be set in VirtualService and it must have exactly one route when omitting spec.strategy.canary.trafficRouting.istio.virtualService.tlsRoutes",
            ));
        }
        selected.extend(indexes.into_iter().map(|i| ("tls", i)));
    }
    if let Some(tcp) = vs["spec"]["tcp"].as_array() {
        let indexes = l4_indexes(&cfg.tcp_routes, tcp, "TCP", |sel, route| {
            single_port(route) == Some(sel.port)
        })?;
        for &i in &indexes {
            validate_destinations(&tcp[i], s)?;
        }
        if cfg.tcp_routes.is_empty() && tcp.len() > 1 {
            return Err(invalid(
                "spec.tcp[] should be set in VirtualService and it must have exactly one route when omitting spec.strategy.canary.trafficRouting.istio.virtualService.tcpRoutes",
            ));
        }
        selected.extend(indexes.into_iter().map(|i| ("tcp", i)));
    }
    Ok(selected)
}

fn weight_of(dest: &Value) -> i64 {
    dest["weight"]
        .as_i64()
        .or_else(|| dest["weight"].as_f64().map(|f| f as i64))
        .unwrap_or(0)
}

/// Argo's `processRoutes`: the destinations of one route after a set-weight.
fn reweighted(
    dests: &[Value],
    s: &Services,
    desired: i64,
    additional: &[WeightDestination],
) -> Vec<Value> {
    let is_additional_subset =
        |sub: &str| !sub.is_empty() && s.additional_subsets.iter().any(|a| a == sub);
    let mut stable_weight = 100 - desired;
    let mut experiments: BTreeMap<&str, i64> = BTreeMap::new();
    for d in additional {
        experiments.insert(d.service_name.as_str(), i64::from(d.weight));
        stable_weight -= i64::from(d.weight);
    }
    for d in dests {
        if is_additional_subset(d["destination"]["subset"].as_str().unwrap_or("")) {
            stable_weight -= weight_of(d);
        }
    }
    let stable_weight = stable_weight.max(0);

    let mut out = Vec::with_capacity(dests.len() + experiments.len());
    for d in dests {
        let host = short_host(d["destination"]["host"].as_str().unwrap_or(""));
        let subset = d["destination"]["subset"].as_str().unwrap_or("");
        let new_weight = if host.is_empty() {
            Some(weight_of(d))
        } else if host == s.canary || (!subset.is_empty() && subset == s.canary_subset) {
            Some(desired)
        } else if host == s.stable || (!subset.is_empty() && subset == s.stable_subset) {
            Some(stable_weight)
        } else if let Some(w) = experiments.remove(host) {
            Some(w)
        } else if is_additional_subset(subset) {
            Some(weight_of(d))
        } else {
            None // any other destination is removed
        };
        if let Some(w) = new_weight {
            let mut d = d.clone();
            if weight_of(&d) != w || d.get("weight").is_none() && w != 0 {
                d["weight"] = json!(w);
            }
            out.push(d);
        }
    }
    // New experiment destinations, in service-name order.
    for (host, w) in experiments {
        out.push(json!({"destination": {"host": host}, "weight": w}));
    }
    out
}

/// Applies a set-weight to one VirtualService; says whether it changed.
pub fn set_weight(
    vs: &mut Value,
    cfg: &VsRef,
    s: &Services,
    managed: &[String],
    desired: i64,
    additional: &[WeightDestination],
) -> Result<bool, PluginError> {
    let before = vs.clone();
    for (section, index) in selected_routes(vs, cfg, s, managed)? {
        if let Some(route) = vs["spec"][section].get_mut(index) {
            let updated = reweighted(&destinations(route), s, desired, additional);
            route["route"] = Value::Array(updated);
        }
    }
    Ok(*vs != before)
}

/// Whether the VirtualService already carries the split, and the weights
/// of its first driven route.
pub fn verify(
    vs: &Value,
    cfg: &VsRef,
    s: &Services,
    managed: &[String],
    desired: i64,
    additional: &[WeightDestination],
) -> Result<(bool, Option<ObservedWeights>), PluginError> {
    let mut copy = vs.clone();
    let differs = set_weight(&mut copy, cfg, s, managed, desired, additional)?;
    let selected = selected_routes(vs, cfg, s, managed)?;
    let observed = selected
        .first()
        .and_then(|&(section, index)| observe(&destinations(&vs["spec"][section][index]), s));
    Ok((!differs, observed))
}

fn observe(dests: &[Value], s: &Services) -> Option<ObservedWeights> {
    let mut seen = ObservedWeights {
        canary: 0,
        stable: 0,
        additional: vec![],
    };
    for d in dests {
        let host = short_host(d["destination"]["host"].as_str().unwrap_or(""));
        let subset = d["destination"]["subset"].as_str().unwrap_or("");
        let weight = i32::try_from(weight_of(d))
            .ok()
            .filter(|w| (0..=100).contains(w))?;
        if host == s.canary || (!subset.is_empty() && subset == s.canary_subset) {
            seen.canary += weight;
        } else if host == s.stable || (!subset.is_empty() && subset == s.stable_subset) {
            seen.stable += weight;
        } else {
            let name = if subset.is_empty() { host } else { subset };
            seen.additional.push(WeightDestination {
                service_name: name.to_string(),
                pod_template_hash: String::new(),
                weight,
            });
        }
    }
    Some(seen)
}

/// The destinations of the route set-weight drives first (for mirror routes).
pub fn set_weight_destinations(vs: &Value, cfg: &VsRef) -> Result<Vec<Value>, PluginError> {
    let http = vs["spec"]["http"].as_array().cloned().unwrap_or_default();
    let indexes = http_indexes(&cfg.routes, &http)?;
    Ok(indexes
        .first()
        .map(|&i| destinations(&http[i]))
        .unwrap_or_default())
}

/// The port of the first destination of that route, if any.
pub fn set_weight_port(vs: &Value, cfg: &VsRef) -> Option<i64> {
    set_weight_destinations(vs, cfg).ok()?.first()?["destination"]["port"]["number"].as_i64()
}

/// A weighted route destination.
pub fn destination(host: &str, port: Option<i64>, subset: &str, weight: i64) -> Value {
    let mut dest = json!({"host": host});
    if let Some(port) = port.filter(|p| *p > 0) {
        dest["port"] = json!({"number": port});
    }
    if !subset.is_empty() {
        dest["subset"] = json!(subset);
    }
    json!({"destination": dest, "weight": weight})
}

fn set_hash(subset: &mut Value, hash: &str) {
    if !subset["labels"].is_object() {
        subset["labels"] = json!({});
    }
    if let Some(labels) = subset["labels"].as_object_mut() {
        if hash.is_empty() {
            labels.remove(HASH_LABEL);
        } else {
            labels.insert(HASH_LABEL.into(), json!(hash));
        }
    }
}

/// Argo's DestinationRule subset update for `update-hash`: canary and stable
/// subsets get the hashes, experiment subsets are named after their service,
/// other subsets are dropped.
pub fn update_subsets(
    rule: &mut Value,
    dr: &DrRef,
    canary_hash: &str,
    stable_hash: &str,
    additional: &[WeightDestination],
) -> Result<(), PluginError> {
    let mut experiments: BTreeMap<&str, &str> = additional
        .iter()
        .map(|d| (d.service_name.as_str(), d.pod_template_hash.as_str()))
        .collect();
    let subsets = rule["spec"]["subsets"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut kept = Vec::with_capacity(subsets.len());
    for mut subset in subsets {
        let name = subset["name"].as_str().unwrap_or("").to_string();
        if name == dr.canary_subset_name {
            set_hash(&mut subset, canary_hash);
        } else if name == dr.stable_subset_name {
            set_hash(&mut subset, stable_hash);
        } else if let Some(hash) = experiments.remove(name.as_str()) {
            set_hash(&mut subset, hash);
        } else {
            continue;
        }
        kept.push(subset);
    }
    for (name, hash) in experiments {
        kept.push(json!({"name": name, "labels": {HASH_LABEL: hash}}));
    }
    if !rule["spec"].is_object() {
        return Err(invalid(format!("DestinationRule {} has no spec", dr.name)));
    }
    rule["spec"]["subsets"] = Value::Array(kept);
    Ok(())
}

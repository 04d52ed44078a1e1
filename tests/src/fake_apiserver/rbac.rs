//! RBAC as the API server's authorizer applies it, for one ServiceAccount,
//! with the Roles, ClusterRoles and bindings read from a manifest (Weir's
//! `deploy/weir.yaml`): a request is allowed when a rule of a role bound to
//! the account names its verb, API group and resource (or
//! `resource/subresource`), and, for a Role or a RoleBinding, its
//! namespace. Everything else is 403 Forbidden, named as the server names
//! it. `*` in a rule matches anything, as in Kubernetes.

use serde::Deserialize;
use serde_json::Value;

/// One policy rule.
#[derive(Debug, Clone)]
struct Rule {
    groups: Vec<String>,
    resources: Vec<String>,
    verbs: Vec<String>,
    names: Vec<String>,
}

impl Rule {
    fn of(value: &Value) -> Rule {
        let strings = |field: &str| -> Vec<String> {
            value[field]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        Rule {
            groups: strings("apiGroups"),
            resources: strings("resources"),
            verbs: strings("verbs"),
            names: strings("resourceNames"),
        }
    }

    fn allows(&self, request: &Access) -> bool {
        let any = |list: &[String], wanted: &str| list.iter().any(|x| x == "*" || x == wanted);
        any(&self.verbs, &request.verb)
            && any(&self.groups, &request.group)
            && any(&self.resources, &request.resource)
            && (self.names.is_empty()
                || request
                    .name
                    .as_deref()
                    .is_some_and(|n| self.names.iter().any(|x| x == n)))
    }
}

/// What a request asks to do.
#[derive(Debug, Clone)]
pub struct Access {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`.
    pub verb: String,
    /// API group.
    pub group: String,
    /// Resource, or `resource/subresource`.
    pub resource: String,
    /// Namespace ("" for cluster-scoped or all namespaces).
    pub namespace: String,
    /// The object's name, when the request names one.
    pub name: Option<String>,
}

/// The rules that apply to one ServiceAccount.
#[derive(Debug, Clone)]
pub struct Policy {
    /// `system:serviceaccount:<namespace>:<name>`.
    pub user: String,
    /// Rules that hold in every namespace (a ClusterRole through a ClusterRoleBinding).
    cluster: Vec<Rule>,
    /// Rules that hold in one namespace (a Role, or a ClusterRole through a RoleBinding).
    namespaced: Vec<(String, Rule)>,
}

impl Policy {
    /// The policy of ServiceAccount `namespace/name` in the manifests `yaml`.
    pub fn from_manifests(yaml: &str, namespace: &str, name: &str) -> Policy {
        let docs: Vec<Value> = serde_yaml_ng::Deserializer::from_str(yaml)
            .filter_map(|d| Value::deserialize(d).ok())
            .collect();
        let rules_of = |kind: &str, role: &str, role_ns: Option<&str>| -> Vec<Rule> {
            docs.iter()
                .filter(|d| {
                    d["kind"] == kind
                        && d["metadata"]["name"] == role
                        && role_ns.is_none_or(|ns| d["metadata"]["namespace"] == ns)
                })
                .flat_map(|d| {
                    d["rules"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .iter()
                        .map(Rule::of)
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        let binds_us = |binding: &Value| {
            binding["subjects"].as_array().is_some_and(|subjects| {
                subjects.iter().any(|s| {
                    s["kind"] == "ServiceAccount"
                        && s["name"] == name
                        && s["namespace"] == namespace
                })
            })
        };
        let mut policy = Policy {
            user: format!("system:serviceaccount:{namespace}:{name}"),
            cluster: Vec::new(),
            namespaced: Vec::new(),
        };
        for binding in docs.iter().filter(|d| binds_us(d)) {
            let role = binding["roleRef"]["name"].as_str().unwrap_or("");
            let role_kind = binding["roleRef"]["kind"].as_str().unwrap_or("");
            match binding["kind"].as_str() {
                Some("ClusterRoleBinding") if role_kind == "ClusterRole" => {
                    policy.cluster.extend(rules_of("ClusterRole", role, None));
                }
                Some("RoleBinding") => {
                    let ns = binding["metadata"]["namespace"].as_str().unwrap_or("");
                    let rules = if role_kind == "ClusterRole" {
                        rules_of("ClusterRole", role, None)
                    } else {
                        rules_of("Role", role, Some(ns))
                    };
                    policy
                        .namespaced
                        .extend(rules.into_iter().map(|r| (ns.to_string(), r)));
                }
                _ => {}
            }
        }
        policy
    }

    /// Weir's ServiceAccount under `deploy/weir.yaml`.
    pub fn weir() -> Policy {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/weir.yaml");
        let yaml = std::fs::read_to_string(path).unwrap_or_default();
        let policy = Policy::from_manifests(&yaml, "weir-system", "weir");
        assert!(
            !policy.cluster.is_empty(),
            "no ClusterRole bound to weir-system/weir in {path}"
        );
        policy
    }

    /// Adds a cluster-wide rule, as an operator extends Weir's ClusterRole
    /// for what a third-party plugin's registration grants it.
    pub fn add_cluster_rule(&mut self, group: &str, resources: &[&str], verbs: &[&str]) {
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        self.cluster.push(Rule {
            groups: vec![group.to_string()],
            resources: strings(resources),
            verbs: strings(verbs),
            names: Vec::new(),
        });
    }

    /// Whether the account may do `access`.
    pub fn allows(&self, access: &Access) -> bool {
        self.cluster.iter().any(|r| r.allows(access))
            || (!access.namespace.is_empty()
                && self
                    .namespaced
                    .iter()
                    .any(|(ns, r)| *ns == access.namespace && r.allows(access)))
    }

    /// The server's message for a refused `access`.
    pub fn refusal(&self, access: &Access) -> String {
        let object = match &access.name {
            Some(name) => format!("{} \"{name}\"", qualified(access)),
            None => qualified(access),
        };
        let scope = if access.namespace.is_empty() {
            "at the cluster scope".to_string()
        } else {
            format!("in the namespace \"{}\"", access.namespace)
        };
        format!(
            "{object} is forbidden: User \"{}\" cannot {} resource \"{}\" in API group \"{}\" {scope}",
            self.user, access.verb, access.resource, access.group
        )
    }
}

fn qualified(access: &Access) -> String {
    let plural = access.resource.split('/').next().unwrap_or("");
    if access.group.is_empty() {
        plural.to_string()
    } else {
        format!("{plural}.{}", access.group)
    }
}

//! The resources the simulated server serves, and its discovery documents.
//!
//! Built-in kinds are listed as Kubernetes 1.3x serves them; Argo's kinds
//! come from Weir's own CRDs (`deploy/crds.yaml`: served versions, scope,
//! subresources), so a CRD change is what the simulation serves; Istio's and
//! SMI's kinds as their projects' CRDs install them. A resource not in the
//! table is answered with the server's 404 for an unknown resource.

use serde_json::{Value, json};

/// One resource type.
#[derive(Debug, Clone)]
pub struct Resource {
    /// API group ("" for core).
    pub group: String,
    /// Served versions, the preferred one first.
    pub versions: Vec<String>,
    /// Kind.
    pub kind: String,
    /// Plural (the resource name in paths).
    pub plural: String,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// Has a `status` subresource: writes to the main resource keep the
    /// stored status, writes to `/status` change nothing else.
    pub status_subresource: bool,
    /// Built into Kubernetes: list items carry no `apiVersion`/`kind`, and
    /// an update without a resourceVersion is allowed (unconditional).
    pub built_in: bool,
    /// A `scale` subresource: the JSON paths of the spec replicas, the
    /// status replicas and the label selector (`.spec.replicas`, ...).
    pub scale: Option<[String; 3]>,
}

/// A CRD version's `subresources.scale`, as its three paths.
pub fn scale_of(subresources: &Value) -> Option<[String; 3]> {
    let scale = subresources.get("scale")?;
    let path = |field: &str| scale[field].as_str().unwrap_or("").to_string();
    Some([
        path("specReplicasPath"),
        path("statusReplicasPath"),
        path("labelSelectorPath"),
    ])
}

impl Resource {
    fn built_in(group: &str, version: &str, kind: &str, plural: &str, status: bool) -> Self {
        Resource {
            group: group.into(),
            versions: vec![version.into()],
            kind: kind.into(),
            plural: plural.into(),
            namespaced: plural != "namespaces",
            status_subresource: status,
            built_in: true,
            scale: None,
        }
    }

    /// `group/version` of `version`, or `version` for the core group.
    pub fn group_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{version}", self.group)
        }
    }
}

/// Kubernetes' built-in kinds the simulation serves.
fn built_ins() -> Vec<Resource> {
    vec![
        Resource::built_in("", "v1", "Namespace", "namespaces", true),
        Resource::built_in("", "v1", "Pod", "pods", true),
        Resource::built_in("", "v1", "Service", "services", true),
        Resource::built_in("", "v1", "ConfigMap", "configmaps", false),
        Resource::built_in("", "v1", "Secret", "secrets", false),
        Resource::built_in("", "v1", "Event", "events", false),
        Resource::built_in("apps", "v1", "ReplicaSet", "replicasets", true),
        Resource::built_in("apps", "v1", "Deployment", "deployments", true),
        Resource::built_in("batch", "v1", "Job", "jobs", true),
        Resource::built_in("coordination.k8s.io", "v1", "Lease", "leases", false),
        Resource::built_in("networking.k8s.io", "v1", "Ingress", "ingresses", true),
    ]
}

/// A custom resource.
fn custom(group: &str, versions: &[&str], kind: &str, plural: &str) -> Resource {
    Resource {
        group: group.into(),
        versions: versions.iter().map(|v| v.to_string()).collect(),
        kind: kind.into(),
        plural: plural.into(),
        namespaced: true,
        status_subresource: false,
        built_in: false,
        scale: None,
    }
}

/// Istio's, SMI's and Gateway API's (v1.4, experimental channel) CRDs as
/// their installs define them.
fn third_party() -> Vec<Resource> {
    let gateway = |versions: &[&str], kind: &str, plural: &str| Resource {
        status_subresource: true,
        ..custom("gateway.networking.k8s.io", versions, kind, plural)
    };
    vec![
        gateway(&["v1", "v1beta1"], "HTTPRoute", "httproutes"),
        gateway(&["v1"], "GRPCRoute", "grpcroutes"),
        gateway(&["v1alpha2"], "TCPRoute", "tcproutes"),
        gateway(&["v1alpha2", "v1alpha3"], "TLSRoute", "tlsroutes"),
        custom(
            "networking.istio.io",
            &["v1", "v1beta1", "v1alpha3"],
            "VirtualService",
            "virtualservices",
        ),
        custom(
            "networking.istio.io",
            &["v1", "v1beta1", "v1alpha3"],
            "DestinationRule",
            "destinationrules",
        ),
        custom(
            "split.smi-spec.io",
            &["v1alpha4", "v1alpha3", "v1alpha2", "v1alpha1"],
            "TrafficSplit",
            "trafficsplits",
        ),
    ]
}

/// The resources defined by the CustomResourceDefinitions in `yaml`.
pub fn from_crds(yaml: &str) -> Vec<Resource> {
    use serde::Deserialize;
    serde_yaml_ng::Deserializer::from_str(yaml)
        .filter_map(|doc| Value::deserialize(doc).ok())
        .filter(|crd| crd["kind"] == "CustomResourceDefinition")
        .filter_map(|crd| {
            let spec = &crd["spec"];
            let served: Vec<&Value> = spec["versions"]
                .as_array()?
                .iter()
                .filter(|v| v["served"] == true)
                .collect();
            // The storage version first: what discovery prefers.
            let mut versions: Vec<String> = served
                .iter()
                .filter(|v| v["storage"] == true)
                .chain(served.iter().filter(|v| v["storage"] != true))
                .filter_map(|v| v["name"].as_str().map(str::to_string))
                .collect();
            versions.dedup();
            Some(Resource {
                group: spec["group"].as_str()?.to_string(),
                versions,
                kind: spec["names"]["kind"].as_str()?.to_string(),
                plural: spec["names"]["plural"].as_str()?.to_string(),
                namespaced: spec["scope"] == "Namespaced",
                status_subresource: served
                    .iter()
                    .any(|v| v["subresources"].get("status").is_some()),
                built_in: false,
                scale: served.iter().find_map(|v| scale_of(&v["subresources"])),
            })
        })
        .collect()
}

/// Weir's CRDs as shipped.
pub fn weir_crds() -> Vec<Resource> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/crds.yaml");
    let yaml = std::fs::read_to_string(path).unwrap_or_default();
    let crds = from_crds(&yaml);
    assert!(!crds.is_empty(), "no CRDs read from {path}");
    crds
}

/// Everything a cluster with Weir's CRDs, Istio and SMI serves.
pub fn default_resources() -> Vec<Resource> {
    let mut all = built_ins();
    all.extend(weir_crds());
    all.extend(third_party());
    all
}

/// `/api` (core versions).
pub fn core_versions() -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"],
           "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}]})
}

fn group_document(group: &str, resources: &[&Resource]) -> Value {
    let mut versions: Vec<String> = Vec::new();
    for r in resources {
        for v in &r.versions {
            if !versions.contains(v) {
                versions.push(v.clone());
            }
        }
    }
    let entry = |v: &String| json!({"groupVersion": format!("{group}/{v}"), "version": v});
    json!({"name": group,
           "versions": versions.iter().map(entry).collect::<Vec<_>>(),
           "preferredVersion": versions.first().map(entry).unwrap_or(Value::Null)})
}

/// `/apis` (every group but core).
pub fn group_list(all: &[Resource]) -> Value {
    let mut groups: Vec<&str> = Vec::new();
    for r in all.iter().filter(|r| !r.group.is_empty()) {
        if !groups.contains(&r.group.as_str()) {
            groups.push(&r.group);
        }
    }
    let documents: Vec<Value> = groups
        .iter()
        .map(|g| {
            let members: Vec<&Resource> = all.iter().filter(|r| r.group == *g).collect();
            group_document(g, &members)
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": documents})
}

/// `/apis/{group}`, if served.
pub fn group(all: &[Resource], group: &str) -> Option<Value> {
    let members: Vec<&Resource> = all.iter().filter(|r| r.group == group).collect();
    (!members.is_empty()).then(|| {
        let mut doc = group_document(group, &members);
        doc["kind"] = json!("APIGroup");
        doc["apiVersion"] = json!("v1");
        doc
    })
}

/// `/api/v1` or `/apis/{group}/{version}`, if served.
pub fn resource_list(all: &[Resource], group: &str, version: &str) -> Option<Value> {
    let verbs = json!([
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch"
    ]);
    let mut resources = Vec::new();
    for r in all
        .iter()
        .filter(|r| r.group == group && r.versions.iter().any(|v| v == version))
    {
        resources.push(
            json!({"name": r.plural, "singularName": r.kind.to_lowercase(),
            "namespaced": r.namespaced, "kind": r.kind, "verbs": verbs}),
        );
        if r.status_subresource {
            resources.push(
                json!({"name": format!("{}/status", r.plural), "singularName": "",
                "namespaced": r.namespaced, "kind": r.kind, "verbs": ["get", "patch", "update"]}),
            );
        }
    }
    (!resources.is_empty()).then(|| {
        let group_version = if group.is_empty() {
            version.to_string()
        } else {
            format!("{group}/{version}")
        };
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version,
               "resources": resources})
    })
}

//! The manifests in `deploy/` against the Kubernetes schemas (the typed
//! objects of k8s-openapi, with every field the schema does not know
//! reported), and the ClusterRole against what Weir and its shipped plugins
//! actually touch.

use serde::de::DeserializeOwned;
use serde_json::Value;
use std::path::PathBuf;

fn documents(file: &str) -> Vec<Value> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(file);
    let text = std::fs::read_to_string(&path).expect("deploy manifest");
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| <Value as serde::Deserialize>::deserialize(d).expect("YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

/// Deserialises `doc` as `T` and returns the paths of fields `T`'s schema does not have.
fn unknown_fields<T: DeserializeOwned>(doc: &Value) -> Result<Vec<String>, String> {
    let mut unknown = Vec::new();
    let text = serde_json::to_string(doc).map_err(|e| e.to_string())?;
    let mut de = serde_json::Deserializer::from_str(&text);
    serde_ignored::deserialize::<_, _, T>(&mut de, |path| {
        unknown.push(path.to_string().replace(".?", ""))
    })
    .map_err(|e| e.to_string())?;
    Ok(unknown)
}

fn check(doc: &Value) -> Result<Vec<String>, String> {
    use k8s_openapi::api::{apps::v1 as apps, core::v1 as core, rbac::v1 as rbac};
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as ext;
    match doc["kind"].as_str().unwrap_or("") {
        "Namespace" => unknown_fields::<core::Namespace>(doc),
        "ServiceAccount" => unknown_fields::<core::ServiceAccount>(doc),
        "ConfigMap" => unknown_fields::<core::ConfigMap>(doc),
        "Service" => unknown_fields::<core::Service>(doc),
        "Deployment" => unknown_fields::<apps::Deployment>(doc),
        "ClusterRole" => unknown_fields::<rbac::ClusterRole>(doc),
        "ClusterRoleBinding" => unknown_fields::<rbac::ClusterRoleBinding>(doc),
        "Role" => unknown_fields::<rbac::Role>(doc),
        "RoleBinding" => unknown_fields::<rbac::RoleBinding>(doc),
        "CustomResourceDefinition" => unknown_fields::<ext::CustomResourceDefinition>(doc),
        other => Err(format!("no schema for kind {other:?} in this test")),
    }
}

#[test]
fn every_deploy_manifest_matches_the_kubernetes_schema() {
    let mut seen = 0;
    for file in ["weir.yaml", "crds.yaml"] {
        for doc in documents(file) {
            let what = format!("{file}: {} {}", doc["kind"], doc["metadata"]["name"]);
            match check(&doc) {
                Ok(unknown) => assert!(unknown.is_empty(), "{what}: unknown fields {unknown:?}"),
                Err(e) => panic!("{what}: {e}"),
            }
            seen += 1;
        }
    }
    assert_eq!(seen, 9 + 5, "every document was checked");
}

#[test]
fn the_schema_check_catches_a_misspelt_field() {
    let mut docs = documents("weir.yaml");
    let deployment = docs
        .iter_mut()
        .find(|d| d["kind"] == "Deployment")
        .expect("deployment");
    deployment["spec"]["replica"] = serde_json::json!(2);
    let unknown = check(deployment).expect("parses");
    assert_eq!(unknown, vec!["spec.replica".to_string()]);
}

#[test]
fn the_cluster_role_covers_what_weir_and_its_plugins_touch_and_no_more() {
    let docs = documents("weir.yaml");
    let role = docs
        .iter()
        .find(|d| d["kind"] == "ClusterRole")
        .expect("ClusterRole");
    let allows = |group: &str, resource: &str, verb: &str| {
        role["rules"].as_array().expect("rules").iter().any(|r| {
            r["apiGroups"]
                .as_array()
                .is_some_and(|g| g.iter().any(|g| g == group))
                && r["resources"]
                    .as_array()
                    .is_some_and(|x| x.iter().any(|x| x == resource))
                && r["verbs"]
                    .as_array()
                    .is_some_and(|v| v.iter().any(|v| v == verb))
        })
    };
    for kind in weir::cluster::kubernetes::KINDS {
        if matches!(kind.kind, "Lease" | "ConfigMap") {
            continue; // namespaced Role in weir-system
        }
        assert!(
            allows(kind.group, kind.plural, "get"),
            "get {}",
            kind.plural
        );
        assert!(
            allows(kind.group, kind.plural, "watch"),
            "watch {}",
            kind.plural
        );
        if kind.status_subresource {
            assert!(
                allows(kind.group, &format!("{}/status", kind.plural), "update"),
                "update {}/status",
                kind.plural
            );
        }
    }
    // Owners of children created with blockOwnerDeletion: with the
    // OwnerReferencesPermissionEnforcement admission plugin every such
    // create needs update on the owner's finalizers, as Argo grants.
    for owner in ["rollouts", "analysisruns", "experiments"] {
        assert!(
            allows("argoproj.io", &format!("{owner}/finalizers"), "update"),
            "update {owner}/finalizers"
        );
    }
    for (group, resource) in [
        ("networking.istio.io", "virtualservices"),
        ("networking.k8s.io", "ingresses"),
        ("split.smi-spec.io", "trafficsplits"),
        ("batch", "jobs"),
        ("apps", "replicasets"),
    ] {
        assert!(
            allows(group, resource, "update") || allows(group, resource, "create"),
            "{resource}"
        );
    }
    // spec.restartAt: the rollout's pods listed, old ones evicted (which
    // honours disruption budgets; never a plain delete).
    assert!(allows("", "pods", "list"));
    assert!(allows("", "pods/eviction", "create"));
    // Least privilege: no wildcards, no secrets (an operator who uses
    // secretKeyRef arguments grants them, see docs/kubernetes.md), no
    // pod deletes.
    let text = serde_json::to_string(role).expect("json");
    assert!(!text.contains("\"*\""), "no wildcard rules");
    assert!(!allows("", "secrets", "get"));
    assert!(!allows("", "pods", "delete"));
}

#[test]
fn weir_manifests_sets_the_image_it_is_given_and_refuses_anything_else() {
    let run = |args: &[&str]| {
        std::process::Command::new(weir_e2e::weir_binary())
            .args(args)
            .output()
            .expect("run weir manifests")
    };
    let out = run(&[
        "manifests",
        "--image",
        "registry.example:5000/weir@sha256:abc123",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let docs: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| <Value as serde::Deserialize>::deserialize(d).expect("YAML"))
        .filter(|v| !v.is_null())
        .collect();
    assert_eq!(docs, {
        let mut shipped = documents("weir.yaml");
        for doc in &mut shipped {
            if doc["kind"] == "Deployment" {
                doc["spec"]["template"]["spec"]["containers"][0]["image"] =
                    "registry.example:5000/weir@sha256:abc123".into();
            }
        }
        shipped
    });
    // The bundled image carries its plugins: no plugin directory is named.
    assert!(!text.contains("--plugins"), "{text}");
    for bad in [
        "",
        "weir:1\nkind: Secret",
        "weir 1",
        "weir:1\"",
        &"w".repeat(600),
    ] {
        let out = run(&["manifests", "--image", bad]);
        assert!(!out.status.success(), "{bad:?} was accepted");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("not an image reference"),
            "{bad:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stdout.is_empty(), "{bad:?} printed manifests");
    }
}

#[test]
fn the_containerfile_builds_every_shipped_component_and_nothing_else() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/Containerfile");
    let text = std::fs::read_to_string(&path).expect("deploy/Containerfile");
    let mut built: Vec<String> = text
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0] == "-p" && w[1] != "weir")
        .map(|w| format!("{}.wasm", w[1].replace('-', "_")))
        .collect();
    built.sort();
    let mut shipped = weir::controller::shipped_component_files();
    shipped.sort();
    assert_eq!(built, shipped, "deploy/Containerfile's plugin list");
}

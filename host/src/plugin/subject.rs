//! The Rollout a router or step call serves ([`Rollout`]), and what each
//! contract line is handed of it: 0.3 the record's typed fields, with the
//! whole object only when the plugin asks (`rollout-object`); 0.1 and 0.2
//! the whole object as text in every call.

use super::bindings::types::Rollout as RolloutRecord;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use std::sync::Arc;

/// The Rollout a router or step-plugin call serves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    /// Namespace of the Rollout; the call's cluster access is confined to it.
    pub namespace: String,
    /// Name of the Rollout.
    pub name: String,
    /// UID of the Rollout, for owner references.
    pub uid: String,
    /// `spec.strategy.canary.stableService`.
    pub stable_service: String,
    /// `spec.strategy.canary.canaryService`.
    pub canary_service: String,
    /// The plugin's own configuration block, as JSON text (`"null"` when
    /// none).
    pub config: String,
    /// The whole Rollout object, shared (a call hands it to its Store
    /// without copying it). Recorded as JSON text, as contracts 0.1 and 0.2
    /// hand it over, so recordings read the same either way.
    #[serde(with = "object_text")]
    pub object: Arc<Value>,
}

impl Rollout {
    /// The record contract 0.3 hands the plugin: the identity, the config
    /// and the typed routing fields, read off the object (lookups, no
    /// parsing: the object is already a tree).
    pub(crate) fn record(&self) -> RolloutRecord {
        RolloutRecord {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            uid: self.uid.clone(),
            stable_service: self.stable_service.clone(),
            canary_service: self.canary_service.clone(),
            config: self.config.clone(),
            max_traffic_weight: self.max_traffic_weight(),
            managed_routes: self.managed_routes(),
        }
    }

    /// The whole object as JSON text: what `rollout-object` returns, and
    /// what 0.1 and 0.2 plugins get in `rollout.object`.
    pub(crate) fn object_text(&self) -> String {
        self.object.to_string()
    }

    /// `trafficRouting.maxTrafficWeight`: what weights are out of (100
    /// unless set; a value that is not a positive 32-bit number counts as
    /// unset).
    pub fn max_traffic_weight(&self) -> i32 {
        self.traffic_routing("maxTrafficWeight")
            .and_then(Value::as_i64)
            .and_then(|m| i32::try_from(m).ok())
            .filter(|m| *m > 0)
            .unwrap_or(100)
    }

    /// `trafficRouting.managedRoutes[].name`, in order (entries without a
    /// name are skipped).
    pub fn managed_routes(&self) -> Vec<String> {
        self.traffic_routing("managedRoutes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|route| route.get("name").and_then(Value::as_str))
            .map(str::to_string)
            .collect()
    }

    fn traffic_routing(&self, field: &str) -> Option<&Value> {
        self.object
            .get("spec")?
            .get("strategy")?
            .get("canary")?
            .get("trafficRouting")?
            .get(field)
    }
}

/// The object's recorded form: JSON text (what 0.1 and 0.2 carried), read
/// back from text or, should a recording hold one, from a JSON value.
mod object_text {
    use super::*;

    pub fn serialize<S: Serializer>(object: &Arc<Value>, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&object.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Arc<Value>, D::Error> {
        let object = match Value::deserialize(deserializer)? {
            Value::String(text) if text.trim().is_empty() => Value::Null,
            Value::String(text) => serde_json::from_str(&text).map_err(serde::de::Error::custom)?,
            other => other,
        };
        Ok(Arc::new(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rollout(object: Value) -> Rollout {
        Rollout {
            namespace: "shop".into(),
            name: "checkout".into(),
            uid: "u1".into(),
            stable_service: "stable".into(),
            canary_service: "canary".into(),
            config: "null".into(),
            object: Arc::new(object),
        }
    }

    #[test]
    fn the_record_carries_the_routing_fields_read_off_the_object() {
        let r = rollout(json!({"spec": {"strategy": {"canary": {"trafficRouting": {
            "maxTrafficWeight": 1000,
            "managedRoutes": [{"name": "header"}, {"other": 1}, {"name": "mirror"}]
        }}}}}));
        let record = r.record();
        assert_eq!(record.max_traffic_weight, 1000);
        assert_eq!(record.managed_routes, ["header", "mirror"]);
    }

    #[test]
    fn a_missing_or_unusable_max_weight_is_100() {
        for routing in [
            json!({}),
            json!({"maxTrafficWeight": 0}),
            json!({"maxTrafficWeight": -5}),
            json!({"maxTrafficWeight": "10"}),
            json!({"maxTrafficWeight": 1u64 << 40}),
        ] {
            let r = rollout(json!({"spec": {"strategy": {"canary": {"trafficRouting": routing}}}}));
            assert_eq!(r.max_traffic_weight(), 100, "{routing}");
        }
        assert_eq!(rollout(Value::Null).record().max_traffic_weight, 100);
        assert!(rollout(json!([1])).managed_routes().is_empty());
    }

    #[test]
    fn recordings_keep_the_object_as_text_and_read_either_form() {
        let r = rollout(json!({"metadata": {"name": "checkout"}}));
        let recorded = serde_json::to_value(&r).unwrap();
        assert_eq!(
            recorded["object"],
            json!(r#"{"metadata":{"name":"checkout"}}"#)
        );
        let back: Rollout = serde_json::from_value(recorded.clone()).unwrap();
        assert_eq!(back, r);
        let mut as_value = recorded;
        as_value["object"] = json!({"metadata": {"name": "checkout"}});
        assert_eq!(serde_json::from_value::<Rollout>(as_value).unwrap(), r);
        let mut bad = serde_json::to_value(&r).unwrap();
        bad["object"] = json!("{not json");
        assert!(serde_json::from_value::<Rollout>(bad).is_err());
    }
}

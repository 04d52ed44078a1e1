//! Credentials Secrets, read as Argo Rollouts' metric providers read
//! theirs: one Secret, by name, through the `cluster` import (so only with
//! the registration's `grant.read` of Secrets and, outside the run's own
//! namespace, its `grant.namespaces`). Values are decoded from the
//! Secret's base64 `data`, trimmed, and never put in an error message.

use crate::PluginError;
use crate::objects;
use base64::Engine as _;
use serde_json::Value;

/// The registration argument that names the namespace of a provider's
/// credentials Secret: Weir's stand-in for Argo's controller namespace.
pub const SECRET_NAMESPACE_ARG: &str = "secretNamespace";

/// A Secret that was read, with its keys still encoded.
pub struct Secret {
    namespace: String,
    name: String,
    data: serde_json::Map<String, Value>,
}

impl Secret {
    /// Reads Secret `namespace/name`; a missing one is `not-found` naming it.
    pub fn read(namespace: &str, name: &str) -> Result<Self, PluginError> {
        let object = objects::get_required(&objects::object_ref("v1", "Secret", namespace, name))?;
        let data = object
            .get("data")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        Ok(Self {
            namespace: namespace.to_string(),
            name: name.to_string(),
            data,
        })
    }

    /// Reads Secret `name` from the namespace the registration's
    /// `secretNamespace` argument names, as Argo reads a provider's Secret
    /// from its controller's namespace. Without that argument the error
    /// names the fix; `provider` prefixes it.
    pub fn read_from_registration(provider: &str, name: &str) -> Result<Self, PluginError> {
        let namespace = crate::registration_arg(SECRET_NAMESPACE_ARG).ok_or_else(|| {
            PluginError::InvalidConfig(format!(
                "{provider}: no namespace for the credentials Secret {name:?}: add `args: [{SECRET_NAMESPACE_ARG}=<namespace>]` to the provider's registration (and that namespace to its grant.namespaces)"
            ))
        })?;
        Self::read(&namespace, name)
    }

    /// `namespace/name`, for messages.
    pub fn describe(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The decoded, trimmed value of `key`; `None` when absent or empty.
    pub fn get(&self, key: &str) -> Result<Option<String>, PluginError> {
        let Some(encoded) = self.data.get(key).and_then(Value::as_str) else {
            return Ok(None);
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| {
                PluginError::InvalidConfig(format!(
                    "Secret {}: {key} is not base64",
                    self.describe()
                ))
            })?;
        let text = String::from_utf8(bytes).map_err(|_| {
            PluginError::InvalidConfig(format!("Secret {}: {key} is not text", self.describe()))
        })?;
        let text = text.trim();
        Ok((!text.is_empty()).then(|| text.to_string()))
    }

    /// The value of `key`, which must be there: a missing one is an
    /// `invalid-config` error naming the Secret and the key.
    pub fn require(&self, key: &str) -> Result<String, PluginError> {
        self.get(key)?.ok_or_else(|| {
            PluginError::InvalidConfig(format!(
                "Secret {} has no {key} (or it is empty)",
                self.describe()
            ))
        })
    }
}

//! The data of one call's Store, and the host imports (`log`, `cluster`) it serves.

use super::bindings::cluster::{self, ObjectRef, PatchType};
use super::bindings::log::{self, Level};
use super::bindings::types::{self, PluginError as ReportedError};
use super::http_policy::PolicyHooks;
use super::limits::{Grant, Limits};
use crate::cluster::{ClusterError, ObjectKey, StagedCluster, group_of, parse_label_selector};
use serde_json::Value;
use std::sync::{Arc, Mutex};
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// Longest log line kept; longer ones are cut.
const LOG_LINE_BYTES: usize = 2048;

/// What the host observed during a call, shared with callbacks that cannot
/// reach the Store (the socket check, the HTTP hooks).
#[derive(Debug, Default)]
pub struct CallRecord {
    /// Capabilities the plugin tried to use without a grant.
    pub denials: Vec<String>,
}

/// Shared handle to a [`CallRecord`].
pub type SharedRecord = Arc<Mutex<CallRecord>>;

/// Records a denial in a shared record.
pub fn record_denial(record: &SharedRecord, what: String) {
    let mut rec = record.lock().unwrap_or_else(|p| p.into_inner());
    if rec.denials.len() < 16 {
        rec.denials.push(what);
    }
}

/// The log lines of one call, bounded.
#[derive(Debug, Default)]
pub struct LogBuffer {
    /// Kept lines.
    pub lines: Vec<(Level, String)>,
    /// Lines dropped past the cap.
    pub dropped: u64,
    cap: usize,
}

/// Caps enforced by the Store's resource limiter, and what tripped them.
pub struct CallLimiter {
    memory_cap: usize,
    table_cap: usize,
    /// The first limit hit, if any.
    pub tripped: Option<LimitHit>,
}

/// A resource limit the guest ran into.
#[derive(Debug, Clone, Copy)]
pub enum LimitHit {
    /// Linear memory growth past the cap.
    Memory {
        /// Bytes requested.
        requested: usize,
        /// The cap.
        cap: usize,
    },
    /// Table growth past the cap.
    Table {
        /// Elements requested.
        requested: usize,
        /// The cap.
        cap: usize,
    },
}

impl wasmtime::ResourceLimiter for CallLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_cap {
            self.tripped.get_or_insert(LimitHit::Memory {
                requested: desired,
                cap: self.memory_cap,
            });
            // Trap rather than let the guest's allocator abort: the trap is
            // classified from `tripped`.
            return Err(wasmtime::format_err!(
                "memory limit of {} bytes reached",
                self.memory_cap
            ));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.table_cap {
            self.tripped.get_or_insert(LimitHit::Table {
                requested: desired,
                cap: self.table_cap,
            });
            return Err(wasmtime::format_err!(
                "table limit of {} elements reached",
                self.table_cap
            ));
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        64
    }
    fn tables(&self) -> usize {
        64
    }
    fn memories(&self) -> usize {
        16
    }
}

/// The data of one call's Store.
pub struct CallState {
    pub(crate) wasi: WasiCtx,
    pub(crate) http: WasiHttpCtx,
    pub(crate) hooks: PolicyHooks,
    pub(crate) table: ResourceTable,
    pub(crate) limiter: CallLimiter,
    pub(crate) cluster: StagedCluster,
    /// The namespace cluster access is confined to (none: no cluster access).
    pub(crate) namespace: Option<String>,
    pub(crate) grant: Arc<Grant>,
    pub(crate) record: SharedRecord,
    pub(crate) logs: LogBuffer,
}

impl CallState {
    /// Builds the state of a fresh call.
    pub(crate) fn new(
        wasi: WasiCtx,
        hooks: PolicyHooks,
        limits: &Limits,
        cluster: StagedCluster,
        namespace: Option<String>,
        grant: Arc<Grant>,
        record: SharedRecord,
    ) -> Self {
        CallState {
            wasi,
            http: WasiHttpCtx::new(),
            hooks,
            table: ResourceTable::new(),
            limiter: CallLimiter {
                memory_cap: limits.memory_bytes(),
                table_cap: limits.table_elements,
                tripped: None,
            },
            cluster,
            namespace,
            grant,
            record,
            logs: LogBuffer {
                cap: limits.log_lines,
                ..LogBuffer::default()
            },
        }
    }

    /// Checks a cluster access against the namespace and grant; records and
    /// returns a `denied` error when it falls outside.
    fn authorize(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        write: bool,
    ) -> Result<(), ReportedError> {
        let group = group_of(api_version);
        let what = if write { "write" } else { "read" };
        let denial = match &self.namespace {
            None => Some(format!(
                "{what} of {kind} in namespace {namespace:?}: this call has no cluster access"
            )),
            Some(ns) if ns != namespace => Some(format!(
                "{what} of {kind} in namespace {namespace:?}: plugins may only touch the namespace of the rollout they serve ({ns:?})"
            )),
            Some(_) => {
                let allowed = if write {
                    self.grant.may_write(group, kind)
                } else {
                    self.grant.may_read(group, kind)
                };
                (!allowed).then(|| {
                    let list = if write { "write" } else { "read" };
                    format!("{what} of {kind} (group {group:?}) is not in the plugin's grant; add {{group: {group:?}, kind: {kind:?}}} to `grant.{list}` in its registration if it should")
                })
            }
        };
        match denial {
            Some(message) => {
                record_denial(&self.record, format!("cluster {message}"));
                Err(ReportedError::Denied(message))
            }
            None => Ok(()),
        }
    }
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for CallState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

fn to_reported(error: ClusterError) -> ReportedError {
    match error {
        ClusterError::NotFound(m) => ReportedError::NotFound(format!("{m} not found")),
        ClusterError::AlreadyExists(m) => ReportedError::Conflict(format!("{m} already exists")),
        e @ ClusterError::Conflict { .. } => ReportedError::Conflict(e.to_string()),
        ClusterError::Invalid(m) => ReportedError::InvalidConfig(m),
        ClusterError::Forbidden(m) => ReportedError::Denied(m),
        ClusterError::Unavailable(m) => ReportedError::Transient(m),
    }
}

fn parse_object(text: &str) -> Result<Value, ReportedError> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| ReportedError::InvalidConfig(format!("object is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(ReportedError::InvalidConfig(
            "object is not a JSON object".into(),
        ));
    }
    Ok(value)
}

fn key_of(r: &ObjectRef) -> ObjectKey {
    ObjectKey::new(&r.api_version, &r.kind, &r.namespace, &r.name)
}

/// Sets `apiVersion` to the caller's so a read through another version of
/// the group looks like that version.
fn as_version(mut object: Value, api_version: &str) -> String {
    if let Some(map) = object.as_object_mut() {
        map.insert("apiVersion".into(), Value::String(api_version.to_string()));
    }
    object.to_string()
}

impl types::Host for CallState {}

impl log::Host for CallState {
    async fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        let logs = &mut self.logs;
        if logs.lines.len() >= logs.cap {
            logs.dropped += 1;
            return Ok(());
        }
        let mut message = message;
        if message.len() > LOG_LINE_BYTES {
            let mut cut = LOG_LINE_BYTES;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push_str(" [...]");
        }
        logs.lines.push((level, message));
        Ok(())
    }
}

impl cluster::Host for CallState {
    async fn get(&mut self, object: ObjectRef) -> wasmtime::Result<Result<String, ReportedError>> {
        if let Err(e) = self.authorize(&object.api_version, &object.kind, &object.namespace, false)
        {
            return Ok(Err(e));
        }
        Ok(self
            .cluster
            .get(&key_of(&object))
            .await
            .map(|v| as_version(v, &object.api_version))
            .map_err(to_reported))
    }

    async fn list(
        &mut self,
        api_version: String,
        kind: String,
        namespace: String,
        label_selector: Option<String>,
    ) -> wasmtime::Result<Result<Vec<String>, ReportedError>> {
        if let Err(e) = self.authorize(&api_version, &kind, &namespace, false) {
            return Ok(Err(e));
        }
        let labels = match parse_label_selector(label_selector.as_deref().unwrap_or("")) {
            Ok(l) => l,
            Err(e) => return Ok(Err(to_reported(e))),
        };
        let listed = self
            .cluster
            .list(group_of(&api_version), &kind, &namespace, &labels)
            .await;
        Ok(listed
            .map(|items| {
                items
                    .into_iter()
                    .map(|v| as_version(v, &api_version))
                    .collect()
            })
            .map_err(to_reported))
    }

    async fn create(&mut self, object: String) -> wasmtime::Result<Result<String, ReportedError>> {
        Ok(self.write(object, true).await)
    }

    async fn update(&mut self, object: String) -> wasmtime::Result<Result<String, ReportedError>> {
        Ok(self.write(object, false).await)
    }

    async fn patch(
        &mut self,
        object: ObjectRef,
        patch_type: PatchType,
        patch: String,
    ) -> wasmtime::Result<Result<String, ReportedError>> {
        if let Err(e) = self.authorize(&object.api_version, &object.kind, &object.namespace, true) {
            return Ok(Err(e));
        }
        Ok(self.apply_patch(&object, patch_type, &patch).await)
    }

    async fn delete(&mut self, object: ObjectRef) -> wasmtime::Result<Result<(), ReportedError>> {
        if let Err(e) = self.authorize(&object.api_version, &object.kind, &object.namespace, true) {
            return Ok(Err(e));
        }
        Ok(self
            .cluster
            .delete(&key_of(&object))
            .await
            .map_err(to_reported))
    }
}

impl CallState {
    async fn write(&mut self, text: String, create: bool) -> Result<String, ReportedError> {
        let object = parse_object(&text)?;
        let api_version = object
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let kind = object
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let namespace = object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        self.authorize(&api_version, &kind, &namespace, true)?;
        let stored = if create {
            self.cluster.create(object).await
        } else {
            self.cluster.update(object).await
        };
        stored.map(|v| v.to_string()).map_err(to_reported)
    }

    async fn apply_patch(
        &mut self,
        target: &ObjectRef,
        patch_type: PatchType,
        patch: &str,
    ) -> Result<String, ReportedError> {
        let key = key_of(target);
        let mut current = self.cluster.get(&key).await.map_err(to_reported)?;
        let patch: Value = serde_json::from_str(patch).map_err(|e| {
            ReportedError::InvalidConfig(format!("patch for {key} is not valid JSON: {e}"))
        })?;
        match patch_type {
            PatchType::Merge => json_patch::merge(&mut current, &patch),
            PatchType::Json => {
                let ops: json_patch::Patch = serde_json::from_value(patch).map_err(|e| {
                    ReportedError::InvalidConfig(format!("JSON patch for {key}: {e}"))
                })?;
                json_patch::patch(&mut current, &ops).map_err(|e| {
                    ReportedError::InvalidConfig(format!("JSON patch for {key}: {e}"))
                })?;
            }
        }
        match ObjectKey::of(&current) {
            Ok(k) if k == key => {}
            _ => {
                return Err(ReportedError::InvalidConfig(format!(
                    "a patch may not change the identity of {key}"
                )));
            }
        }
        self.cluster
            .update(current)
            .await
            .map(|v| as_version(v, &target.api_version))
            .map_err(to_reported)
    }
}

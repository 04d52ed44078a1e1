//! The data of one call's Store, and the host imports (`log`, `registration`,
//! `rollout-object`, `cluster`) it serves.

use super::bindings::cluster::{self, ObjectRef, PatchType};
use super::bindings::log::{self, Level};
use super::bindings::types::{self, PluginError as ReportedError};
use super::bindings::{registration, rollout_object};
use super::budget::{CallBudget, Exceeded};
use super::http_policy::PolicyHooks;
use super::limits::{Grant, Limits};
use crate::cluster::patch::{self, Patch, PatchError};
use crate::cluster::{
    ClusterError, ObjectKey, StagedCluster, StagedError, group_of, parse_label_selector,
};
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// Longest log line kept; longer ones are cut.
pub const LOG_LINE_BYTES: usize = 2048;

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

/// The log lines of one call, bounded in lines and bytes.
#[derive(Debug, Default)]
pub struct LogBuffer {
    /// Kept lines.
    pub lines: Vec<(Level, String)>,
    /// Lines dropped past the caps.
    pub dropped: u64,
    /// Bytes kept.
    bytes: usize,
    line_cap: usize,
    byte_cap: usize,
}

impl LogBuffer {
    /// Keeps `message` (cut to [`LOG_LINE_BYTES`]) if both caps allow it.
    /// The kept text is a fresh allocation of the cut size: a huge line's
    /// own allocation is dropped here, not kept behind a short string.
    fn push(&mut self, level: Level, message: &str) {
        let mut cut = message.len().min(LOG_LINE_BYTES);
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        let elided = cut < message.len();
        let size = cut + if elided { 6 } else { 0 };
        if self.lines.len() >= self.line_cap || self.bytes + size > self.byte_cap {
            self.dropped += 1;
            return;
        }
        let mut kept = String::with_capacity(size);
        kept.push_str(&message[..cut]);
        if elided {
            kept.push_str(" [...]");
        }
        self.bytes += size;
        self.lines.push((level, kept));
    }
}

/// How many core instances, memories and tables one call may create: its
/// share of the pooling allocator's slots, so that no plugin can take the
/// slots other calls need (the pool holds a share for every call slot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallShares {
    /// Core instances per call.
    pub instances: usize,
    /// Linear memories per call.
    pub memories: usize,
    /// Tables per call.
    pub tables: usize,
}

/// Caps enforced by the Store's resource limiter, and what tripped them.
/// Memory and table caps are the call's: every memory (table) of every core
/// instance in the component counts towards one total.
pub struct CallLimiter {
    memory_cap: usize,
    table_cap: usize,
    shares: CallShares,
    memory_total: usize,
    table_total: usize,
    /// The growth last allowed, taken back if the growth then failed.
    last_memory_growth: usize,
    last_table_growth: usize,
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

impl CallLimiter {
    /// A limiter for one call.
    pub fn new(limits: &Limits, shares: CallShares) -> Self {
        CallLimiter {
            memory_cap: limits.memory_bytes(),
            table_cap: limits.table_elements,
            shares,
            memory_total: 0,
            table_total: 0,
            last_memory_growth: 0,
            last_table_growth: 0,
            tripped: None,
        }
    }
}

impl wasmtime::ResourceLimiter for CallLimiter {
    // Called on every growth and, with `current` 0, when a memory is created.
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let growth = desired.saturating_sub(current);
        let total = self.memory_total.saturating_add(growth);
        if total > self.memory_cap {
            self.tripped.get_or_insert(LimitHit::Memory {
                requested: total,
                cap: self.memory_cap,
            });
            // Trap rather than let the guest's allocator abort: the trap is
            // classified from `tripped`.
            return Err(wasmtime::format_err!(
                "memory limit of {} bytes reached",
                self.memory_cap
            ));
        }
        self.memory_total = total;
        self.last_memory_growth = growth;
        Ok(true)
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.memory_total -= std::mem::take(&mut self.last_memory_growth);
        Ok(())
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let growth = desired.saturating_sub(current);
        let total = self.table_total.saturating_add(growth);
        if total > self.table_cap {
            self.tripped.get_or_insert(LimitHit::Table {
                requested: total,
                cap: self.table_cap,
            });
            return Err(wasmtime::format_err!(
                "table limit of {} elements reached",
                self.table_cap
            ));
        }
        self.table_total = total;
        self.last_table_growth = growth;
        Ok(true)
    }

    fn table_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.table_total -= std::mem::take(&mut self.last_table_growth);
        Ok(())
    }

    fn instances(&self) -> usize {
        self.shares.instances
    }
    fn tables(&self) -> usize {
        self.shares.tables
    }
    fn memories(&self) -> usize {
        self.shares.memories
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
    pub(crate) budget: CallBudget,
    /// When the call ends: bounds host work done for it (a patch).
    pub(crate) deadline: Instant,
    /// The registration's `args`, for the `registration` import.
    pub(crate) args: Arc<Vec<String>>,
    /// The Rollout the call serves, for the `rollout-object` import (none
    /// for `init` and metric providers).
    rollout_object: Option<Arc<Value>>,
    /// Its JSON text, written on the first `rollout-object` get of the
    /// call; later gets are charged before they copy it.
    rollout_text: Option<Arc<str>>,
}

impl CallState {
    /// Builds the state of a fresh call.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        wasi: WasiCtx,
        hooks: PolicyHooks,
        limits: &Limits,
        shares: CallShares,
        cluster: StagedCluster,
        namespace: Option<String>,
        grant: Arc<Grant>,
        record: SharedRecord,
        deadline: Instant,
    ) -> Self {
        CallState {
            wasi,
            http: WasiHttpCtx::new(),
            hooks,
            table: ResourceTable::new(),
            limiter: CallLimiter::new(limits, shares),
            cluster,
            namespace,
            grant,
            record,
            logs: LogBuffer {
                line_cap: limits.log_lines,
                byte_cap: limits.log_bytes,
                ..LogBuffer::default()
            },
            budget: CallBudget::new(limits),
            deadline,
            args: Arc::default(),
            rollout_object: None,
            rollout_text: None,
        }
    }

    /// Sets the Rollout the call serves (what `rollout-object` hands out).
    pub(crate) fn serve_rollout(&mut self, object: Option<Arc<Value>>) {
        self.rollout_object = object;
        self.rollout_text = None;
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
            Some(ns)
                if ns != namespace && !self.grant.namespaces.iter().any(|n| n == namespace) =>
            {
                Some(format!(
                    "{what} of {kind} in namespace {namespace:?}: plugins may only touch the namespace of the rollout they serve ({ns:?}); add {namespace:?} to `grant.namespaces` in its registration if it should"
                ))
            }
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
        e @ ClusterError::TooManyRequests(_) => ReportedError::Transient(e.to_string()),
        e @ ClusterError::PartiallyApplied { .. } => ReportedError::Transient(e.to_string()),
    }
}

/// The answer of a host import: a value or error for the guest, or a trap
/// that ends the call (a per-call limit reached).
type ImportResult<T> = wasmtime::Result<Result<T, ReportedError>>;

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

impl registration::Host for CallState {
    async fn args(&mut self) -> wasmtime::Result<Vec<String>> {
        Ok(self.args.as_ref().clone())
    }
}

impl rollout_object::Host for CallState {
    async fn get(&mut self) -> wasmtime::Result<String> {
        let object = &self.rollout_object;
        let text = self
            .rollout_text
            .get_or_insert_with(|| match object {
                Some(object) => object.to_string().into(),
                None => "null".into(),
            })
            .clone();
        // Charged as a cluster read is: the bytes handed to the guest.
        match self.budget.charge_read(text.len(), "rollout-object get") {
            Ok(()) => Ok(text.to_string()),
            Err(e) => Err(self.over(e)),
        }
    }
}

impl log::Host for CallState {
    async fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        self.logs.push(level, &message);
        Ok(())
    }
}

impl CallState {
    /// Ends the call: records `exceeded` and returns the trap.
    fn over(&mut self, exceeded: Exceeded) -> wasmtime::Error {
        self.budget.trap(exceeded)
    }

    /// Charges a cluster call and checks the access; `Ok(Err)` is a denial
    /// for the guest, `Err` a trap.
    fn admit(
        &mut self,
        what: &str,
        api_version: &str,
        kind: &str,
        namespace: &str,
        write: bool,
    ) -> ImportResult<()> {
        if let Err(e) = self.budget.charge_cluster_call(what) {
            return Err(self.over(e));
        }
        Ok(self.authorize(api_version, kind, namespace, write))
    }

    /// [`Self::admit`] for a call naming its object by reference.
    fn admit_ref(&mut self, what: &str, object: &ObjectRef, write: bool) -> ImportResult<()> {
        self.admit(
            what,
            &object.api_version,
            &object.kind,
            &object.namespace,
            write,
        )
    }

    /// A staged cluster operation's error, for the guest or as a trap.
    fn staged_error<T>(&mut self, error: StagedError) -> ImportResult<T> {
        match error {
            StagedError::Cluster(e) => Ok(Err(to_reported(e))),
            StagedError::Limit(e) => Err(self.over(e.into())),
        }
    }

    /// Object text for the guest, charged to `readBytes` first.
    fn hand_out(&mut self, object: Value, api_version: &str, what: &str) -> ImportResult<String> {
        let text = as_version(object, api_version);
        match self.budget.charge_read(text.len(), what) {
            Ok(()) => Ok(Ok(text)),
            Err(e) => Err(self.over(e)),
        }
    }

    /// Parses a document the guest handed in, after checking its size and
    /// nesting (a trap when over, an error for the guest when not JSON).
    fn parse_document(&mut self, text: &str, what: &str) -> ImportResult<Value> {
        let limits = self.budget.documents();
        if let Err(e) = limits.check_text(text) {
            let exceeded = self.budget.document_exceeded(e, what);
            return Err(self.over(exceeded));
        }
        Ok(serde_json::from_str(text)
            .map_err(|e| ReportedError::InvalidConfig(format!("{what} is not valid JSON: {e}"))))
    }
}

impl cluster::Host for CallState {
    async fn get(&mut self, object: ObjectRef) -> ImportResult<String> {
        let key = key_of(&object);
        let what = format!("get {key}");
        if let Err(denied) = self.admit_ref(&what, &object, false)? {
            return Ok(Err(denied));
        }
        match self.cluster.get(&key, &object.api_version).await {
            Ok(v) => self.hand_out(v, &object.api_version, &what),
            Err(e) => self.staged_error(e),
        }
    }

    async fn list(
        &mut self,
        api_version: String,
        kind: String,
        namespace: String,
        label_selector: Option<String>,
    ) -> ImportResult<Vec<String>> {
        let what = format!("list {kind} in {namespace:?}");
        if let Err(denied) = self.admit(&what, &api_version, &kind, &namespace, false)? {
            return Ok(Err(denied));
        }
        let labels = match parse_label_selector(label_selector.as_deref().unwrap_or("")) {
            Ok(l) => l,
            Err(e) => return Ok(Err(to_reported(e))),
        };
        let items = match self
            .cluster
            .list(&api_version, &kind, &namespace, &labels)
            .await
        {
            Ok(items) => items,
            Err(e) => return self.staged_error(e),
        };
        let mut texts = Vec::with_capacity(items.len());
        for item in items {
            match self.hand_out(item, &api_version, &what)? {
                Ok(text) => texts.push(text),
                Err(e) => return Ok(Err(e)),
            }
        }
        Ok(Ok(texts))
    }

    async fn create(&mut self, object: String) -> ImportResult<String> {
        self.write(object, true).await
    }

    async fn update(&mut self, object: String) -> ImportResult<String> {
        self.write(object, false).await
    }

    async fn patch(
        &mut self,
        object: ObjectRef,
        patch_type: PatchType,
        patch: String,
    ) -> ImportResult<String> {
        let key = key_of(&object);
        let what = format!("patch of {key}");
        if let Err(denied) = self.admit_ref(&what, &object, true)? {
            return Ok(Err(denied));
        }
        self.apply_patch(&object, key, patch_type, &patch).await
    }

    async fn delete(&mut self, object: ObjectRef) -> ImportResult<()> {
        let key = key_of(&object);
        if let Err(denied) = self.admit_ref(&format!("delete {key}"), &object, true)? {
            return Ok(Err(denied));
        }
        match self.cluster.delete(&key).await {
            Ok(()) => Ok(Ok(())),
            Err(e) => self.staged_error(e),
        }
    }
}

impl CallState {
    async fn write(&mut self, text: String, create: bool) -> ImportResult<String> {
        let verb = if create { "create" } else { "update" };
        // The budget is charged and the text checked before it is parsed.
        if let Err(e) = self.budget.charge_cluster_call(verb) {
            return Err(self.over(e));
        }
        let object = match self.parse_document(&text, &format!("the object to {verb}"))? {
            Ok(v) => v,
            Err(e) => return Ok(Err(e)),
        };
        drop(text);
        if !object.is_object() {
            return Ok(Err(ReportedError::InvalidConfig(format!(
                "the object to {verb} is not a JSON object"
            ))));
        }
        let field = |pointer: &str| {
            object
                .pointer(pointer)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let (api_version, kind, namespace) = (
            field("/apiVersion"),
            field("/kind"),
            field("/metadata/namespace"),
        );
        if let Err(denied) = self.authorize(&api_version, &kind, &namespace, true) {
            return Ok(Err(denied));
        }
        let stored = if create {
            self.cluster.create(object).await
        } else {
            self.cluster.update(object).await
        };
        match stored {
            Ok(v) => self.hand_out(v, &api_version, verb),
            Err(e) => self.staged_error(e),
        }
    }

    async fn apply_patch(
        &mut self,
        target: &ObjectRef,
        key: ObjectKey,
        patch_type: PatchType,
        text: &str,
    ) -> ImportResult<String> {
        let what = format!("the patch for {key}");
        let parsed = match self.parse_document(text, &what)? {
            Ok(v) => v,
            Err(e) => return Ok(Err(e)),
        };
        let patch = match patch_type {
            PatchType::Merge => Patch::Merge(parsed),
            PatchType::Json => match serde_json::from_value(parsed) {
                Ok(ops) => Patch::Json(ops),
                Err(e) => {
                    return Ok(Err(ReportedError::InvalidConfig(format!(
                        "JSON patch for {key}: {e}"
                    ))));
                }
            },
        };
        let current = match self.cluster.get(&key, &target.api_version).await {
            Ok(v) => v,
            Err(e) => return self.staged_error(e),
        };
        let limits = self.budget.documents();
        // Off the async workers, bounded while it applies, and cut off at
        // the call's deadline.
        let patched = match patch::apply_blocking(current, patch, limits, self.deadline).await {
            Ok(v) => v,
            Err(PatchError::Limit { error, index }) => {
                let exceeded = self.budget.document_exceeded(
                    error,
                    &format!("the result of operation {index} of the patch for {key}"),
                );
                return Err(self.over(exceeded));
            }
            Err(PatchError::Deadline { applied, total }) => {
                return Err(wasmtime::format_err!(
                    "the patch for {key} reached the call's deadline after {applied} of {total} operations"
                ));
            }
            Err(PatchError::Invalid(m)) => {
                return Ok(Err(ReportedError::InvalidConfig(format!(
                    "JSON patch for {key}: {m}"
                ))));
            }
        };
        match ObjectKey::of(&patched) {
            Ok(k) if k == key => {}
            _ => {
                return Ok(Err(ReportedError::InvalidConfig(format!(
                    "a patch may not change the identity of {key}"
                ))));
            }
        }
        match self.cluster.update(patched).await {
            Ok(v) => self.hand_out(v, &target.api_version, &what),
            Err(e) => self.staged_error(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_are_cut_into_fresh_allocations_and_bounded_in_bytes() {
        let mut logs = LogBuffer {
            line_cap: 100,
            byte_cap: 3 * (LOG_LINE_BYTES + 6),
            ..LogBuffer::default()
        };
        let huge = "z".repeat(1 << 20);
        for _ in 0..5 {
            logs.push(Level::Info, &huge);
        }
        assert_eq!(logs.lines.len(), 3, "three cut lines fit the byte cap");
        assert_eq!(logs.dropped, 2);
        for (_, line) in &logs.lines {
            assert_eq!(line.len(), LOG_LINE_BYTES + 6);
            assert!(
                line.capacity() <= LOG_LINE_BYTES + 6,
                "the huge allocation is not kept"
            );
            assert!(line.ends_with(" [...]"));
        }
        logs.push(Level::Warn, "short");
        assert_eq!(logs.dropped, 3, "the byte cap holds for short lines too");
    }
}

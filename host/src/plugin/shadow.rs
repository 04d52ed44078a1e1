//! Shadow upgrades: a registration's candidate build runs beside the live
//! one on the same inputs and the same (recorded) host answers, after the
//! live call has returned; its outcome and staged writes are compared with
//! the live call's and counted, and never applied.
//!
//! Bounded: shadow runs take one of the runtime's shadow slots or are
//! dropped (counted), so a slow or hanging candidate never queues work
//! behind the live calls; each run has the candidate's own deadline; the
//! candidate has its own quarantine and counters, so its faults never
//! touch the live plugin's.

use super::recorder::{HostAnswer, OwnedCall, RecordedOutcome, ReplaySource};
use super::runtime::Plugin;
use super::sandbox::replay_call;
use crate::cluster::Write;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Disagreements kept for the report (the newest).
pub const KEPT_DISAGREEMENTS: usize = 20;

/// Longest excerpt of a disagreement's staged-write diff kept.
const DIFF_EXCERPT_BYTES: usize = 4096;

/// A registration's `shadow:` block: the candidate build to run beside the
/// live one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ShadowSpec {
    /// Where the candidate is (as `location`).
    pub location: String,
    /// Its sha256 pin (as `sha256`).
    #[serde(default)]
    pub sha256: Option<String>,
    /// Agreeing calls `weir plugin promote-shadow` needs before it switches.
    #[serde(default = "default_promote_after")]
    pub promote_after: u64,
}

fn default_promote_after() -> u64 {
    20
}

/// The counts of one method.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MethodCounts {
    /// Shadow runs that finished.
    pub runs: u64,
    /// Runs whose outcome and staged writes matched the live call's.
    pub agreed: u64,
    /// Runs that did not.
    pub disagreed: u64,
    /// Runs in which the candidate faulted.
    pub candidate_faults: u64,
    /// Live calls not shadowed because every shadow slot was busy.
    pub dropped: u64,
    /// Total live-call time of the shadowed calls, in microseconds.
    pub live_micros: u64,
    /// Total candidate time, in microseconds.
    pub shadow_micros: u64,
}

/// One call on which the candidate did not do what the live build did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Disagreement {
    /// The method.
    pub method: String,
    /// `namespace/name` served.
    pub target: Option<String>,
    /// The live outcome.
    pub live: RecordedOutcome,
    /// The candidate's.
    pub candidate: RecordedOutcome,
    /// A diff of the staged writes (`-` live, `+` candidate), cut; empty
    /// when they matched.
    pub writes_diff: String,
    /// What the candidate asked for that the live call never did.
    pub divergences: Vec<String>,
}

/// What `weir plugin shadow-report` shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShadowReport {
    /// The plugin.
    pub plugin: String,
    /// The live build's sha256.
    pub live_sha256: String,
    /// The candidate's location.
    pub candidate_location: String,
    /// The candidate's sha256 (empty when it did not load).
    pub candidate_sha256: String,
    /// Why the candidate did not load, if it did not.
    pub load_error: Option<String>,
    /// Agreeing calls needed to promote.
    pub promote_after: u64,
    /// Counts per method.
    pub methods: BTreeMap<String, MethodCounts>,
    /// The newest disagreements.
    pub disagreements: Vec<Disagreement>,
}

impl ShadowReport {
    /// All methods together.
    pub fn totals(&self) -> MethodCounts {
        let mut t = MethodCounts::default();
        for c in self.methods.values() {
            t.runs += c.runs;
            t.agreed += c.agreed;
            t.disagreed += c.disagreed;
            t.candidate_faults += c.candidate_faults;
            t.dropped += c.dropped;
            t.live_micros += c.live_micros;
            t.shadow_micros += c.shadow_micros;
        }
        t
    }

    /// Whether promotion may go ahead: the candidate loaded, agreed on at
    /// least `promote_after` calls and never disagreed.
    pub fn promotable(&self) -> Result<(), String> {
        if let Some(e) = &self.load_error {
            return Err(format!("the candidate did not load: {e}"));
        }
        let t = self.totals();
        if t.disagreed > 0 {
            return Err(format!(
                "the candidate disagreed with the live build on {} of {} shadowed calls",
                t.disagreed, t.runs
            ));
        }
        if t.agreed < self.promote_after {
            return Err(format!(
                "the candidate agreed on {} calls; promotion needs {} (`shadow.promoteAfter`)",
                t.agreed, self.promote_after
            ));
        }
        Ok(())
    }

    /// The report as text.
    pub fn render(&self) -> String {
        let mut out = format!(
            "plugin {}: live {} / candidate {} ({})\n",
            self.plugin,
            short(&self.live_sha256),
            short(&self.candidate_sha256),
            self.candidate_location
        );
        if let Some(e) = &self.load_error {
            out.push_str(&format!("  the candidate did not load: {e}\n"));
        }
        out.push_str(&format!(
            "  {:<22} {:>6} {:>7} {:>9} {:>7} {:>8} {:>12} {:>12}\n",
            "method",
            "runs",
            "agreed",
            "disagreed",
            "faults",
            "dropped",
            "live µs/run",
            "shadow µs/run"
        ));
        let mut rows: Vec<(String, MethodCounts)> = self
            .methods
            .iter()
            .map(|(m, c)| (m.clone(), c.clone()))
            .collect();
        rows.push(("(all)".into(), self.totals()));
        for (method, c) in rows {
            let per = |total: u64| total.checked_div(c.runs).unwrap_or(0);
            out.push_str(&format!(
                "  {:<22} {:>6} {:>7} {:>9} {:>7} {:>8} {:>12} {:>12}\n",
                method,
                c.runs,
                c.agreed,
                c.disagreed,
                c.candidate_faults,
                c.dropped,
                per(c.live_micros),
                per(c.shadow_micros)
            ));
        }
        for d in &self.disagreements {
            let outcome = |o: &RecordedOutcome| match &o.error {
                Some(e) => format!("{}: {e}", o.kind),
                None => o.kind.clone(),
            };
            out.push_str(&format!(
                "  disagreement on {} {}:\n    live:      {}\n    candidate: {}\n",
                d.method,
                d.target.as_deref().unwrap_or("-"),
                outcome(&d.live),
                outcome(&d.candidate)
            ));
            for line in d.writes_diff.lines() {
                out.push_str(&format!("    {line}\n"));
            }
            for v in &d.divergences {
                out.push_str(&format!("    diverged: {v}\n"));
            }
        }
        out.push_str(&match self.promotable() {
            Ok(()) => "promotable: yes\n".to_string(),
            Err(why) => format!("promotable: no ({why})\n"),
        });
        out
    }
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

/// A live plugin's candidate and what it has done.
pub(crate) struct Shadow {
    /// The live plugin's name (the one counters are labelled with).
    live_name: String,
    pub(crate) spec: ShadowSpec,
    /// The loaded candidate, or why it did not load.
    pub(crate) candidate: Result<Arc<Plugin>, String>,
    slots: Arc<Semaphore>,
    stats: Mutex<ShadowStats>,
}

#[derive(Default)]
struct ShadowStats {
    methods: BTreeMap<String, MethodCounts>,
    disagreements: VecDeque<Disagreement>,
}

/// The live call a shadow run is compared with.
pub(crate) struct LiveCall {
    pub(crate) call: OwnedCall,
    pub(crate) answers: Vec<HostAnswer>,
    pub(crate) outcome: RecordedOutcome,
    pub(crate) writes: Vec<Write>,
    pub(crate) elapsed: Duration,
}

impl Shadow {
    /// A shadow with its candidate (or its load error), taking runs from
    /// `slots`.
    pub(crate) fn new(
        live_name: String,
        spec: ShadowSpec,
        candidate: Result<Arc<Plugin>, String>,
        slots: Arc<Semaphore>,
    ) -> Self {
        Shadow {
            live_name,
            spec,
            candidate,
            slots,
            stats: Mutex::default(),
        }
    }

    fn stats(&self) -> std::sync::MutexGuard<'_, ShadowStats> {
        self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a loaded candidate is there to run.
    pub(crate) fn runs(&self) -> bool {
        self.candidate.is_ok()
    }

    /// A shadow slot for a live `method` call, taken before the call's
    /// inputs are copied for the candidate; `None` (the call is counted as
    /// dropped) when every slot is busy.
    pub(crate) fn slot(&self, method: &str) -> Option<OwnedSemaphorePermit> {
        let candidate = self.candidate.as_ref().ok()?;
        match self.slots.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => {
                self.stats()
                    .methods
                    .entry(method.to_string())
                    .or_default()
                    .dropped += 1;
                if let Some(observer) = candidate.runtime.observer.get() {
                    observer.shadow_finished(&self.live_name, method, "dropped", Duration::ZERO);
                }
                None
            }
        }
    }

    /// Runs the candidate on `live`'s inputs in the background, holding `permit`.
    pub(crate) fn shadow(self: &Arc<Self>, permit: OwnedSemaphorePermit, live: LiveCall) {
        let Ok(candidate) = self.candidate.clone() else {
            return;
        };
        let method = live.call.method_name().to_string();
        let shadow = self.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let source = Arc::new(ReplaySource::new(live.answers));
            let started = Instant::now();
            let ran = replay_call(&candidate, &live.call.as_call(), source.clone()).await;
            let elapsed = started.elapsed();
            let same_outcome =
                ran.outcome.kind == live.outcome.kind && ran.outcome.reply == live.outcome.reply;
            // Compared as JSON values: key order is not a difference.
            let before = serde_json::to_value(&live.writes).unwrap_or_default();
            let after = serde_json::to_value(&ran.staged_writes).unwrap_or_default();
            let same_writes = before == after;
            let candidate_fault = ran.outcome.fault;
            let mut stats = shadow.stats();
            let counts = stats.methods.entry(method.clone()).or_default();
            counts.runs += 1;
            counts.live_micros += u64::try_from(live.elapsed.as_micros()).unwrap_or(u64::MAX);
            counts.shadow_micros += u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
            if candidate_fault {
                counts.candidate_faults += 1;
            }
            if same_outcome && same_writes {
                counts.agreed += 1;
            } else {
                counts.disagreed += 1;
                let diff = if same_writes {
                    String::new()
                } else {
                    writes_diff(&before, &after)
                };
                if stats.disagreements.len() >= KEPT_DISAGREEMENTS {
                    stats.disagreements.pop_front();
                }
                stats.disagreements.push_back(Disagreement {
                    method: method.clone(),
                    target: live.call.as_call().target(),
                    live: live.outcome,
                    candidate: ran.outcome,
                    writes_diff: diff,
                    divergences: source.divergences(),
                });
            }
            drop(stats);
            if let Some(observer) = candidate.runtime.observer.get() {
                let result = if same_outcome && same_writes {
                    "agree"
                } else {
                    "disagree"
                };
                observer.shadow_finished(&shadow.live_name, &method, result, elapsed);
            }
        });
    }

    /// The report, for `live` (the live plugin).
    pub(crate) fn report(&self, live: &Plugin) -> ShadowReport {
        let stats = self.stats();
        let (candidate_sha256, load_error) = match &self.candidate {
            Ok(c) => (c.sha256.clone(), None),
            Err(e) => (String::new(), Some(e.clone())),
        };
        ShadowReport {
            plugin: live.spec.name.clone(),
            live_sha256: live.sha256.clone(),
            candidate_location: self.spec.location.clone(),
            candidate_sha256,
            load_error,
            promote_after: self.spec.promote_after,
            methods: stats.methods.clone(),
            disagreements: stats.disagreements.iter().cloned().collect(),
        }
    }
}

/// `-` live / `+` candidate lines of two write lists, cut.
fn writes_diff(before: &serde_json::Value, after: &serde_json::Value) -> String {
    let (before, after) = (canonical_text(before), canonical_text(after));
    let mut out = String::new();
    for change in similar::TextDiff::from_lines(&before, &after).iter_all_changes() {
        let sign = match change.tag() {
            similar::ChangeTag::Delete => "- ",
            similar::ChangeTag::Insert => "+ ",
            similar::ChangeTag::Equal => continue,
        };
        if out.len() > DIFF_EXCERPT_BYTES {
            out.push_str("[...]\n");
            break;
        }
        out.push_str(sign);
        out.push_str(change.value().trim_end());
        out.push('\n');
    }
    out
}

/// `value` pretty-printed with every object's keys sorted, so two equal
/// values print alike whatever order their keys were written in.
pub(crate) fn canonical_text(value: &serde_json::Value) -> String {
    fn sorted(value: &serde_json::Value) -> serde_json::Value {
        match value {
            serde_json::Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                serde_json::Value::Object(
                    keys.into_iter()
                        .filter_map(|k| map.get(k).map(|v| (k.clone(), sorted(v))))
                        .collect(),
                )
            }
            serde_json::Value::Array(items) => {
                serde_json::Value::Array(items.iter().map(sorted).collect())
            }
            other => other.clone(),
        }
    }
    serde_json::to_string_pretty(&sorted(value)).unwrap_or_default()
}

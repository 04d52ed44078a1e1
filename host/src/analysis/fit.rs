//! Keeping an AnalysisRun under a size: a provider's values, messages and
//! metadata are written into the run's status, and an object over ~1.5 MiB
//! is refused by a Kubernetes API server (the run, and so the rollout, would
//! wedge). When a run is over its size, in this order until it fits: long
//! strings in its measurements are cut (with a marker saying so), the oldest
//! measurements of each metric are dropped (the newest is always kept; the
//! metric's message says how many went), and the cut is made shorter.

use super::types::{AnalysisRun, Measurement};

/// Default largest serialised AnalysisRun the controller writes: well under
/// the API server's ~1.5 MiB, with room for what other writers add.
pub const DEFAULT_MAX_RUN_BYTES: usize = 512 << 10;

/// Longest a string in a measurement is kept, first pass.
const FIELD_BYTES: usize = 4 << 10;
/// Shortest the cut goes.
const MIN_FIELD_BYTES: usize = 256;

fn size(run: &AnalysisRun) -> usize {
    serde_json::to_vec(run).map_or(usize::MAX, |v| v.len())
}

/// Cuts `text` to at most `max` bytes (on a character boundary), with a
/// marker; true when it cut.
fn cut(text: &mut String, max: usize, run_max: usize) -> bool {
    if text.len() <= max {
        return false;
    }
    let marker = format!(
        "…[cut by Weir from {} bytes to keep the AnalysisRun under {run_max} bytes]",
        text.len()
    );
    // The cut text, marker included, fits in `max`: it is not cut again
    // at the same length (and keeps saying how long it was).
    let mut end = max.saturating_sub(marker.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str(&marker);
    true
}

/// Cuts every long string of `m` to `max`; the newest measurement's
/// metadata (the provider's state for its next call) only when `metadata`.
fn cut_measurement(m: &mut Measurement, max: usize, run_max: usize, metadata: bool) -> bool {
    let mut cut_any = false;
    for text in [m.value.as_mut(), m.message.as_mut()].into_iter().flatten() {
        cut_any |= cut(text, max, run_max);
    }
    if metadata {
        for text in m.metadata.values_mut() {
            cut_any |= cut(text, max, run_max);
        }
    }
    cut_any
}

/// Cuts the run's measurements to `field` bytes per string; the newest
/// measurement's metadata only when `newest_metadata`.
fn cut_all(run: &mut AnalysisRun, field: usize, max: usize, newest_metadata: bool) -> bool {
    let mut cut_any = false;
    for result in &mut run.status.metric_results {
        let newest = result.measurements.len().saturating_sub(1);
        for (i, m) in result.measurements.iter_mut().enumerate() {
            cut_any |= cut_measurement(m, field, max, i != newest || newest_metadata);
        }
        if let Some(message) = result.message.as_mut() {
            cut_any |= cut(message, field, max);
        }
    }
    if let Some(message) = run.status.message.as_mut() {
        cut_any |= cut(message, field, max);
    }
    cut_any
}

/// Drops each metric's oldest measurement (keeping the newest); true when
/// any was dropped.
fn drop_oldest(run: &mut AnalysisRun, max: usize) -> bool {
    let mut dropped_any = false;
    for result in &mut run.status.metric_results {
        if result.measurements.len() > 1 {
            result.measurements.remove(0);
            dropped_any = true;
            let note =
                format!("older measurements dropped to keep the AnalysisRun under {max} bytes");
            match &mut result.message {
                Some(m) if m.contains(&note) => {}
                Some(m) => *m = format!("{m}; {note}"),
                None => result.message = Some(note),
            }
        }
    }
    dropped_any
}

/// Brings `run` under `max` serialised bytes where it can; returns whether
/// anything was cut or dropped.
pub fn fit(run: &mut AnalysisRun, max: usize) -> bool {
    if size(run) <= max {
        return false;
    }
    let mut changed = cut_all(run, FIELD_BYTES, max, false);
    while size(run) > max && drop_oldest(run, max) {
        changed = true;
    }
    let mut field = FIELD_BYTES;
    while size(run) > max && field > MIN_FIELD_BYTES {
        field /= 2;
        changed |= cut_all(run, field, max, true);
    }
    if changed {
        tracing::warn!(
            run = %run.metadata.get("name").and_then(|n| n.as_str()).unwrap_or("?"),
            max,
            "AnalysisRun cut to stay under its size"
        );
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::types::{MetricResult, Phase};

    fn run_with(values: usize, value_bytes: usize) -> AnalysisRun {
        let mut run: AnalysisRun = serde_json::from_value(serde_json::json!({
            "apiVersion": "argoproj.io/v1alpha1", "kind": "AnalysisRun",
            "metadata": {"name": "r", "namespace": "shop"},
            "spec": {"metrics": [{"name": "m", "provider": {"web": {}}}]}
        }))
        .expect("run");
        let measurements = (0..values)
            .map(|i| Measurement {
                phase: Phase::Successful,
                value: Some(format!("\"{}{i}\"", "v".repeat(value_bytes))),
                ..Measurement::default()
            })
            .collect();
        run.status.metric_results.push(MetricResult {
            name: "m".into(),
            measurements,
            count: values as i64,
            ..MetricResult::default()
        });
        run
    }

    #[test]
    fn a_small_run_is_left_alone() {
        let mut run = run_with(3, 10);
        let before = run.clone();
        assert!(!fit(&mut run, DEFAULT_MAX_RUN_BYTES));
        assert_eq!(run, before);
    }

    #[test]
    fn eight_one_megabyte_values_are_cut_with_a_marker_and_the_counts_kept() {
        let mut run = run_with(8, 1 << 20);
        assert!(fit(&mut run, DEFAULT_MAX_RUN_BYTES));
        assert!(size(&run) <= DEFAULT_MAX_RUN_BYTES, "{}", size(&run));
        let result = &run.status.metric_results[0];
        assert_eq!(result.measurements.len(), 8, "cutting was enough");
        assert_eq!(result.count, 8);
        let value = result.measurements[0].value.as_deref().unwrap_or_default();
        assert!(value.contains("cut by Weir from 1048579 bytes"), "{value}");
    }

    #[test]
    fn when_cutting_is_not_enough_the_oldest_measurements_go_and_the_message_says_so() {
        let mut run = run_with(400, 1 << 10);
        assert!(fit(&mut run, 256 << 10));
        assert!(size(&run) <= 256 << 10);
        let result = &run.status.metric_results[0];
        assert!(result.measurements.len() < 400);
        assert!(
            result
                .measurements
                .last()
                .and_then(|m| m.value.as_deref())
                .is_some_and(|v| v.ends_with("399\"")),
            "the newest is kept"
        );
        assert!(
            result
                .message
                .as_deref()
                .is_some_and(|m| m.contains("older measurements dropped")),
            "{:?}",
            result.message
        );
    }
}

//! The queue of Rollouts (and standalone runs and experiments) due for a
//! reconcile, with what the loop remembers of each between reconciles.

use crate::cluster::ObjectKey;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Instant;

/// Rollouts due for a reconcile, ordered by time; a rollout is never queued
/// twice nor reconciled twice at once. Every operation is O(log n), so a
/// fleet of thousands does not turn the loop quadratic.
#[derive(Default)]
pub(super) struct Queue {
    pub(super) by_time: BTreeSet<(Instant, ObjectKey)>,
    pub(super) due_at: HashMap<ObjectKey, Instant>,
    pub(super) in_flight: HashSet<ObjectKey>,
    /// Scheduled while in flight: queued when the reconcile finishes.
    pub(super) deferred: HashMap<ObjectKey, Instant>,
    /// Consecutive failures per rollout, for backoff.
    pub(super) failures: HashMap<ObjectKey, u32>,
    /// The resourceVersion each rollout's last reconcile wrote: its watch
    /// echo needs no reconcile (the reconcile went as far as it could and
    /// asked for a requeue if it waits on time).
    pub(super) own_writes: HashMap<ObjectKey, String>,
    /// Rollouts whose last reconcile waited for pods: a change to one of
    /// their ReplicaSets (its status, written by the ReplicaSet controller)
    /// schedules them at once.
    pub(super) waiting_on_pods: HashSet<ObjectKey>,
    /// The Deployment each rollout with a `workloadRef` takes its template
    /// from, and the other way round: a change to it schedules the rollout.
    pub(super) workloads: HashMap<ObjectKey, ObjectKey>,
    pub(super) referring: HashMap<ObjectKey, HashSet<ObjectKey>>,
}

impl Queue {
    /// Records the Deployment `rollout` takes its template from (`None`:
    /// none any more).
    pub(super) fn set_workload(&mut self, rollout: &ObjectKey, deployment: Option<ObjectKey>) {
        if let Some(old) = self.workloads.remove(rollout)
            && let Some(set) = self.referring.get_mut(&old)
        {
            set.remove(rollout);
            if set.is_empty() {
                self.referring.remove(&old);
            }
        }
        if let Some(deployment) = deployment {
            self.referring
                .entry(deployment.clone())
                .or_default()
                .insert(rollout.clone());
            self.workloads.insert(rollout.clone(), deployment);
        }
    }

    /// Schedules `key` at `at`, keeping an earlier time if one is set.
    /// Whether `key` failed and waits for its backoff to pass.
    pub(super) fn backing_off(&self, key: &ObjectKey, now: Instant) -> bool {
        self.failures.contains_key(key)
            && (self.due_at.get(key).is_some_and(|at| *at > now)
                || self.deferred.get(key).is_some_and(|at| *at > now))
    }

    pub(super) fn schedule(&mut self, key: ObjectKey, at: Instant) {
        if self.in_flight.contains(&key) {
            self.deferred
                .entry(key)
                .and_modify(|t| *t = (*t).min(at))
                .or_insert(at);
            return;
        }
        match self.due_at.get(&key).copied() {
            Some(current) if current <= at => {}
            Some(current) => {
                self.by_time.remove(&(current, key.clone()));
                self.by_time.insert((at, key.clone()));
                self.due_at.insert(key, at);
            }
            None => {
                self.by_time.insert((at, key.clone()));
                self.due_at.insert(key, at);
            }
        }
    }

    pub(super) fn next_due(&self) -> Option<Instant> {
        self.by_time.first().map(|(t, _)| *t)
    }

    pub(super) fn pop_due(&mut self, now: Instant) -> Option<ObjectKey> {
        let (at, _) = self.by_time.first()?;
        if *at > now {
            return None;
        }
        let (_, key) = self.by_time.pop_first()?;
        self.due_at.remove(&key);
        self.in_flight.insert(key.clone());
        Some(key)
    }

    /// The reconcile of `key` ended: queue what arrived meanwhile.
    pub(super) fn finish(&mut self, key: &ObjectKey) {
        self.in_flight.remove(key);
        if let Some(at) = self.deferred.remove(key) {
            self.schedule(key.clone(), at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn key(name: &str) -> ObjectKey {
        ObjectKey::new("argoproj.io/v1alpha1", "Rollout", "ns", name)
    }

    #[test]
    fn the_queue_keeps_the_earliest_time_and_defers_what_is_in_flight() {
        let mut q = Queue::default();
        let now = Instant::now();
        let later = now + Duration::from_secs(5);
        q.schedule(key("a"), later);
        q.schedule(key("a"), now);
        q.schedule(key("a"), later);
        q.schedule(key("b"), later);
        assert_eq!(q.next_due(), Some(now));
        assert_eq!(q.pop_due(now), Some(key("a")));
        assert_eq!(q.pop_due(now), None, "b is not due yet");
        // An event while `a` is being reconciled waits for it to finish.
        q.schedule(key("a"), now);
        assert_eq!(q.pop_due(now), None, "never two reconciles of one rollout");
        q.finish(&key("a"));
        assert_eq!(q.pop_due(now), Some(key("a")));
        assert_eq!(q.pop_due(later), Some(key("b")));
        assert_eq!(q.next_due(), None);
    }
}

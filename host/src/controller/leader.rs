//! Leader election on a `coordination.k8s.io/v1` Lease, through the
//! `Cluster` trait (so the same code runs on Kubernetes and is tested on the
//! in-memory store and against a mock API server): acquire a free or
//! expired lease, renew it while leading, step down when a renewal cannot
//! be written before the lease would expire, release it on shutdown. Every
//! write carries the resourceVersion read, so two candidates never both win.
//!
//! As client-go's leader election does, a candidate judges another's lease
//! expired by its own clock: by when it last *saw* the lease record change,
//! never by the holder's `renewTime` (the holder's clock may be skewed).
//! Every round is bounded by the retry period, and a leader that has not
//! renewed within the renew deadline stops acting, so a hung request cannot
//! keep a leader acting past the point another may take over.

use crate::cluster::{Cluster, ClusterError, ObjectKey, Write, resource_version};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The lease record as this candidate last saw it, and when (its own clock).
#[derive(Debug, Clone, PartialEq)]
struct Observed {
    record: (String, String, String),
    at: DateTime<Utc>,
}

/// Competes for one Lease.
pub struct LeaderElector {
    cluster: Arc<dyn Cluster>,
    key: ObjectKey,
    identity: String,
    lease_duration: Duration,
    observed: Mutex<Option<Observed>>,
}

/// Who holds the lease after a round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leadership {
    /// This candidate.
    Leading,
    /// Another candidate, whose lease has not expired.
    Following {
        /// Its identity.
        holder: String,
    },
}

fn micro_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

impl LeaderElector {
    /// A candidate `identity` for the Lease `namespace/name`.
    pub fn new(
        cluster: Arc<dyn Cluster>,
        namespace: &str,
        name: &str,
        identity: impl Into<String>,
        lease_duration: Duration,
    ) -> Self {
        LeaderElector {
            cluster,
            key: ObjectKey::new("coordination.k8s.io/v1", "Lease", namespace, name),
            identity: identity.into(),
            lease_duration,
            observed: Mutex::new(None),
        }
    }

    /// How often rounds run, and how long one round (a read and a write of
    /// the lease) may take: a seventh of the lease (~2 s of 15, as
    /// client-go's retry period).
    pub fn retry_period(&self) -> Duration {
        self.lease_duration / 7
    }

    /// How long a leader keeps acting without a successful renewal: two
    /// thirds of the lease (client-go's renew deadline), so it has stopped
    /// well before any other candidate can see its lease expire.
    pub fn renew_deadline(&self) -> Duration {
        self.lease_duration * 2 / 3
    }

    /// Records the lease record seen at `now` (this candidate's clock) and
    /// returns when it was first seen as it is.
    fn observe(&self, record: (String, String, String), now: DateTime<Utc>) -> DateTime<Utc> {
        let mut observed = self.observed.lock().unwrap_or_else(|p| p.into_inner());
        match observed.as_ref() {
            Some(o) if o.record == record => o.at,
            _ => {
                *observed = Some(Observed { record, at: now });
                now
            }
        }
    }

    /// How long a lease lasts without renewal.
    pub fn lease_duration(&self) -> Duration {
        self.lease_duration
    }

    fn lease(&self, holder: &str, acquired: &str, renewed: &str, transitions: i64) -> Value {
        json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.key.name, "namespace": self.key.namespace},
            "spec": {
                "holderIdentity": holder,
                "leaseDurationSeconds": self.lease_duration.as_secs().max(1),
                "acquireTime": acquired,
                "renewTime": renewed,
                "leaseTransitions": transitions,
            }
        })
    }

    /// One round at `now`: create, renew or take over the lease if this
    /// candidate may; a lost race (409) means another candidate leads.
    pub async fn try_acquire_or_renew(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Leadership, ClusterError> {
        let stamp = micro_time(now);
        let stored = match self.cluster.get(&self.key).await {
            Ok(l) => l,
            Err(ClusterError::NotFound(_)) => {
                let lease = self.lease(&self.identity, &stamp, &stamp, 0);
                return match self.cluster.apply(vec![Write::Create(lease)]).await {
                    Ok(_) => Ok(Leadership::Leading),
                    Err(ClusterError::AlreadyExists(_)) | Err(ClusterError::Conflict { .. }) => {
                        Ok(Leadership::Following {
                            holder: "(another candidate, just now)".into(),
                        })
                    }
                    Err(e) => Err(e),
                };
            }
            Err(e) => return Err(e),
        };
        let spec = stored.get("spec").cloned().unwrap_or(Value::Null);
        let holder = spec
            .get("holderIdentity")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let duration = spec
            .get("leaseDurationSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(15)
            .max(1);
        // Expired by this candidate's clock: the record has not changed
        // for a whole lease duration since it first saw it as it is.
        let seen_since = self.observe(
            (
                holder.clone(),
                spec.get("renewTime")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                resource_version(&stored).unwrap_or("").to_string(),
            ),
            now,
        );
        let expired = seen_since + chrono::Duration::seconds(duration) <= now;
        let transitions = spec
            .get("leaseTransitions")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let (lease, taking_over) = if holder == self.identity {
            let acquired = spec
                .get("acquireTime")
                .and_then(Value::as_str)
                .unwrap_or(&stamp)
                .to_string();
            (
                self.lease(&self.identity, &acquired, &stamp, transitions),
                false,
            )
        } else if holder.is_empty() || expired {
            (
                self.lease(
                    &self.identity,
                    &stamp,
                    &stamp,
                    transitions.saturating_add(1),
                ),
                true,
            )
        } else {
            return Ok(Leadership::Following { holder });
        };
        let write = Write::Update {
            object: lease,
            expected_version: resource_version(&stored).map(str::to_string),
        };
        match self.cluster.apply(vec![write]).await {
            Ok(_) => {
                if taking_over {
                    tracing::info!(identity = %self.identity, previous = %holder, "acquired the leader lease");
                }
                Ok(Leadership::Leading)
            }
            Err(ClusterError::Conflict { .. }) => Ok(Leadership::Following {
                holder: "(another candidate, just now)".into(),
            }),
            Err(e) => Err(e),
        }
    }

    /// Gives the lease up if this candidate holds it, so another can take
    /// over at once instead of waiting for it to expire.
    pub async fn release(&self) -> Result<(), ClusterError> {
        let stored = match self.cluster.get(&self.key).await {
            Ok(l) => l,
            Err(ClusterError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        if stored
            .pointer("/spec/holderIdentity")
            .and_then(Value::as_str)
            != Some(self.identity.as_str())
        {
            return Ok(());
        }
        let mut lease = stored.clone();
        if let Some(spec) = lease.get_mut("spec").and_then(Value::as_object_mut) {
            spec.insert("holderIdentity".into(), Value::String(String::new()));
            spec.insert("leaseDurationSeconds".into(), json!(1));
        }
        self.cluster
            .apply(vec![Write::Update {
                object: lease,
                expected_version: resource_version(&stored).map(str::to_string),
            }])
            .await
            .map(drop)
    }

    /// Competes until `shutdown`: `leading` says whether this candidate may
    /// reconcile. A leader that cannot renew steps down before its lease
    /// could have expired, so two leaders never act at once.
    pub async fn run(
        self,
        leading: tokio::sync::watch::Sender<bool>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let period = self.retry_period();
        let mut last_renewal: Option<tokio::time::Instant> = None;
        loop {
            let now = Utc::now();
            // Bounded: a hung request must not keep a leader from stepping down.
            let result = match tokio::time::timeout(period, self.try_acquire_or_renew(now)).await {
                Ok(result) => result,
                Err(_) => Err(ClusterError::Unavailable(format!(
                    "the lease round took longer than the {period:?} retry period"
                ))),
            };
            let is_leader = match result {
                Ok(Leadership::Leading) => {
                    last_renewal = Some(tokio::time::Instant::now());
                    true
                }
                Ok(Leadership::Following { holder }) => {
                    if *leading.borrow() {
                        tracing::warn!(identity = %self.identity, %holder, "lost the leader lease");
                    }
                    false
                }
                Err(e) => {
                    tracing::warn!(identity = %self.identity, error = %e, "leader election round failed");
                    // Keep leading only while the last renewal still covers
                    // us through the next round (at most one renew deadline)
                    // and its wait (one period).
                    last_renewal.is_some_and(|t| t.elapsed() + period < self.renew_deadline())
                        && *leading.borrow()
                }
            };
            if *leading.borrow() != is_leader {
                let _ = leading.send(is_leader);
            }
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep(period) => {}
            }
        }
        let _ = leading.send(false);
        let released = tokio::time::timeout(self.retry_period(), self.release()).await;
        if let Ok(Err(e)) | Err(e) =
            released.map_err(|_| ClusterError::Unavailable("releasing the lease timed out".into()))
        {
            tracing::warn!(error = %e, "could not release the leader lease");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::MemoryCluster;

    fn candidate(cluster: &Arc<MemoryCluster>, who: &str) -> LeaderElector {
        LeaderElector::new(
            cluster.clone(),
            "weir",
            "weir-controller",
            who,
            Duration::from_secs(15),
        )
    }

    #[tokio::test]
    async fn acquire_renew_lose_and_reacquire() {
        let cluster = Arc::new(MemoryCluster::new());
        let a = candidate(&cluster, "a");
        let b = candidate(&cluster, "b");
        let t0 = Utc::now();
        assert_eq!(a.try_acquire_or_renew(t0).await, Ok(Leadership::Leading));
        assert_eq!(
            b.try_acquire_or_renew(t0).await,
            Ok(Leadership::Following { holder: "a".into() })
        );
        // a renews; b still follows 10 s later.
        let t1 = t0 + chrono::Duration::seconds(10);
        assert_eq!(a.try_acquire_or_renew(t1).await, Ok(Leadership::Leading));
        assert_eq!(
            b.try_acquire_or_renew(t1 + chrono::Duration::seconds(10))
                .await,
            Ok(Leadership::Following { holder: "a".into() })
        );
        // a stops renewing: b last saw the lease change at t1 + 10 s (a's
        // renewal at t1); a lease duration after that, by b's clock, b
        // takes over; a second earlier it does not.
        let seen = t1 + chrono::Duration::seconds(10);
        assert_eq!(
            b.try_acquire_or_renew(seen + chrono::Duration::seconds(14))
                .await,
            Ok(Leadership::Following { holder: "a".into() })
        );
        let t2 = seen + chrono::Duration::seconds(15);
        assert_eq!(b.try_acquire_or_renew(t2).await, Ok(Leadership::Leading));
        assert_eq!(
            a.try_acquire_or_renew(t2).await,
            Ok(Leadership::Following { holder: "b".into() })
        );
        let lease = cluster
            .get(&ObjectKey::new(
                "coordination.k8s.io/v1",
                "Lease",
                "weir",
                "weir-controller",
            ))
            .await
            .expect("lease");
        assert_eq!(lease["spec"]["leaseTransitions"], 1);
        // b releases on shutdown; a re-acquires at once.
        b.release().await.expect("release");
        assert_eq!(a.try_acquire_or_renew(t2).await, Ok(Leadership::Leading));
    }

    #[tokio::test]
    async fn two_candidates_racing_on_one_version_never_both_lead() {
        let cluster = Arc::new(MemoryCluster::new());
        let a = candidate(&cluster, "a");
        let t0 = Utc::now();
        a.try_acquire_or_renew(t0).await.expect("a");
        // Both b and c saw a's lease at t0, see it expired later, and try
        // to take it over.
        let b = candidate(&cluster, "b");
        let c = candidate(&cluster, "c");
        b.try_acquire_or_renew(t0).await.expect("b looks");
        c.try_acquire_or_renew(t0).await.expect("c looks");
        let later = t0 + chrono::Duration::seconds(30);
        let (rb, rc) = tokio::join!(b.try_acquire_or_renew(later), c.try_acquire_or_renew(later));
        let leaders = [rb, rc]
            .into_iter()
            .filter(|r| r == &Ok(Leadership::Leading))
            .count();
        assert_eq!(leaders, 1);
    }

    #[tokio::test]
    async fn expiry_is_judged_by_the_candidates_own_clock_not_the_holders() {
        let cluster = Arc::new(MemoryCluster::new());
        let a = candidate(&cluster, "a");
        let b = candidate(&cluster, "b");
        // a's clock runs an hour behind: its renewTime looks long expired.
        let real = Utc::now();
        a.try_acquire_or_renew(real - chrono::Duration::hours(1))
            .await
            .expect("a");
        assert_eq!(
            b.try_acquire_or_renew(real).await,
            Ok(Leadership::Following { holder: "a".into() }),
            "b has only just seen the lease: it is not expired for b"
        );
        assert_eq!(
            b.try_acquire_or_renew(real + chrono::Duration::seconds(15))
                .await,
            Ok(Leadership::Leading)
        );
    }
}

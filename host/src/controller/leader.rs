//! Leader election on a `coordination.k8s.io/v1` Lease, through the
//! `Cluster` trait (so the same code runs on Kubernetes and is tested on the
//! in-memory store and against a mock API server): acquire a free or
//! expired lease, renew it while leading, step down when a renewal cannot
//! be written before the lease would expire, release it on shutdown. Every
//! write carries the resourceVersion read, so two candidates never both win.

use crate::cluster::{Cluster, ClusterError, ObjectKey, Write, resource_version};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// Competes for one Lease.
pub struct LeaderElector {
    cluster: Arc<dyn Cluster>,
    key: ObjectKey,
    identity: String,
    lease_duration: Duration,
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

fn parse_time(v: Option<&Value>) -> Option<DateTime<Utc>> {
    v.and_then(Value::as_str)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
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
        let renewed = parse_time(spec.get("renewTime"));
        let expired = match renewed {
            Some(t) => t + chrono::Duration::seconds(duration) <= now,
            None => true,
        };
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
        let period = self.lease_duration / 3;
        let mut last_renewal: Option<tokio::time::Instant> = None;
        loop {
            let now = Utc::now();
            let result = self.try_acquire_or_renew(now).await;
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
                    // Keep leading only while the last renewal still covers us,
                    // with a margin of one period.
                    last_renewal.is_some_and(|t| t.elapsed() + period < self.lease_duration)
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
        if let Err(e) = self.release().await {
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
        // a stops renewing: after the lease expires, b takes over.
        let t2 = t1 + chrono::Duration::seconds(16);
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
        // Both b and c see a's lease expired and try to take it over.
        let later = t0 + chrono::Duration::seconds(30);
        let b = candidate(&cluster, "b");
        let c = candidate(&cluster, "c");
        let (rb, rc) = tokio::join!(b.try_acquire_or_renew(later), c.try_acquire_or_renew(later));
        let leaders = [rb, rc]
            .into_iter()
            .filter(|r| r == &Ok(Leadership::Leading))
            .count();
        assert_eq!(leaders, 1);
    }
}

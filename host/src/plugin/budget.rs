//! The per-call budget for work the host does on a plugin's behalf: cluster
//! calls, bytes read, the documents the plugin hands in. Each charge is made
//! before the work; the first one over a limit is recorded and ends the
//! call with a trap, which [`super::sandbox`] turns into
//! [`super::CallErrorKind::LimitExceeded`] naming the limit.

use super::limits::{Limit, Limits};
use crate::cluster::document::{DocumentError, DocumentLimits};
use crate::cluster::{StagingExceeded, StagingLimit};

/// A per-call limit that was reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Exceeded {
    /// The limit.
    pub limit: Limit,
    /// Its value.
    pub cap: u64,
    /// What the call asked for.
    pub detail: String,
}

impl From<StagingExceeded> for Exceeded {
    fn from(e: StagingExceeded) -> Self {
        Exceeded {
            limit: match e.limit {
                StagingLimit::ApiRequests => Limit::ApiRequests,
                StagingLimit::StagedObjects => Limit::StagedObjects,
                StagingLimit::StagedBytes => Limit::StagedBytes,
            },
            cap: e.cap,
            detail: e.detail,
        }
    }
}

/// What one call has used of its budgets.
pub(crate) struct CallBudget {
    cluster_calls: (u32, u32),
    read_bytes: (usize, usize),
    documents: DocumentLimits,
    /// The first limit reached, if any.
    pub exceeded: Option<Exceeded>,
}

impl CallBudget {
    /// A fresh budget under `limits`.
    pub fn new(limits: &Limits) -> Self {
        CallBudget {
            cluster_calls: (0, limits.cluster_calls),
            read_bytes: (0, limits.read_bytes),
            documents: limits.documents(),
            exceeded: None,
        }
    }

    /// The bounds on documents the plugin hands in.
    pub fn documents(&self) -> DocumentLimits {
        self.documents
    }

    /// Records `exceeded` (the first one wins) and returns the trap that
    /// ends the call.
    pub fn trap(&mut self, exceeded: Exceeded) -> wasmtime::Error {
        let message = format!(
            "{}: over the per-call limit {}",
            exceeded.detail, exceeded.limit
        );
        self.exceeded.get_or_insert(exceeded);
        wasmtime::format_err!(message)
    }

    /// Charges one call of the `cluster` import.
    pub fn charge_cluster_call(&mut self, what: &str) -> Result<(), Exceeded> {
        let (used, cap) = &mut self.cluster_calls;
        if *used >= *cap {
            return Err(Exceeded {
                limit: Limit::ClusterCalls,
                cap: u64::from(*cap),
                detail: format!("{what} would be cluster call {}", u64::from(*used) + 1),
            });
        }
        *used += 1;
        Ok(())
    }

    /// Charges `bytes` of object text handed to the plugin.
    pub fn charge_read(&mut self, bytes: usize, what: &str) -> Result<(), Exceeded> {
        let (used, cap) = &mut self.read_bytes;
        let total = used.saturating_add(bytes);
        if total > *cap {
            return Err(Exceeded {
                limit: Limit::ReadBytes,
                cap: *cap as u64,
                detail: format!("{what} would hand the plugin {total} bytes of objects"),
            });
        }
        *used = total;
        Ok(())
    }

    /// Turns a document bound that `what` broke into the limit it names.
    pub fn document_exceeded(&self, error: DocumentError, what: &str) -> Exceeded {
        match error {
            DocumentError::TooLarge { max, .. } => Exceeded {
                limit: Limit::DocumentBytes,
                cap: max as u64,
                detail: format!("{what} is {error}"),
            },
            DocumentError::TooDeep { max, .. } => Exceeded {
                limit: Limit::DocumentDepth,
                cap: max as u64,
                detail: format!("{what} is {error}"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_calls_and_reads_are_charged_before_the_work() {
        let limits = Limits {
            cluster_calls: 2,
            read_bytes: 10,
            ..Limits::default()
        };
        let mut budget = CallBudget::new(&limits);
        budget.charge_cluster_call("get a").expect("first");
        budget.charge_cluster_call("get b").expect("second");
        let e = budget.charge_cluster_call("get c").expect_err("third");
        assert_eq!((e.limit, e.cap), (Limit::ClusterCalls, 2));
        budget.charge_read(10, "get a").expect("exactly the cap");
        let e = budget.charge_read(1, "get b").expect_err("over");
        assert_eq!(e.limit, Limit::ReadBytes);
        let trap = budget.trap(e.clone());
        assert!(trap.to_string().contains("limits.readBytes"), "{trap}");
        assert_eq!(budget.exceeded, Some(e));
    }
}

//! The rollout controller (in progress): the pieces of Argo's canary
//! reconcile that are pure functions of the Rollout and its children.
//!
//! - [`experiment`]: which experiment templates become additional weighted
//!   destinations for the routers (the seed case of Argo Rollouts 1.6.6).

pub mod experiment;

//! Which pods still exist: the [`Liveness`] seam GC and start-up reconciliation ask.

use std::{
    collections::HashSet,
    fmt,
    sync::{Arc, PoisonError, RwLock},
};

use async_trait::async_trait;

use crate::pod::PodKey;

/// What the oracle knows about one pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PodLiveness {
    /// The pod (this sandbox of it) exists: keep its resource.
    Alive,
    /// The pod, or this sandbox of it, is gone for sure: its resource can be released.
    Gone,
    /// Unknown (the oracle could not tell): keep its resource.
    Unknown,
}

/// An error of the liveness oracle.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LivenessError(pub String);

/// Tells whether pods still exist, e.g. from the kubelet's pod list or the container runtime's
/// sandboxes. Implementations answer [`PodLiveness::Gone`] only when sure: the pool releases
/// a gone pod's resource.
#[async_trait]
pub trait Liveness: Send + Sync + fmt::Debug {
    /// One answer per pod, in order.
    async fn check(&self, pods: &[PodKey]) -> Result<Vec<PodLiveness>, LivenessError>;
}

/// An oracle that knows nothing: every pod is [`PodLiveness::Unknown`], so GC never releases a
/// binding (only DEL does).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoLiveness;

#[async_trait]
impl Liveness for NoLiveness {
    async fn check(&self, pods: &[PodKey]) -> Result<Vec<PodLiveness>, LivenessError> {
        Ok(vec![PodLiveness::Unknown; pods.len()])
    }
}

/// An oracle fed by its owner: pods marked alive are [`PodLiveness::Alive`], every other pod is
/// [`PodLiveness::Gone`]. Clones share the set. Useful in tests and for callers that track pods
/// themselves (e.g. from a runtime's event stream).
#[derive(Clone, Debug, Default)]
pub struct LivePodSet {
    alive: Arc<RwLock<HashSet<PodKey>>>,
}

impl LivePodSet {
    /// An empty set (every pod gone).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks `pod` alive.
    pub fn insert(&self, pod: PodKey) {
        self.alive
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(pod);
    }

    /// Marks `pod` gone.
    pub fn remove(&self, pod: &PodKey) {
        self.alive
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(pod);
    }

    /// Whether `pod` is marked alive.
    #[must_use]
    pub fn contains(&self, pod: &PodKey) -> bool {
        self.alive
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(pod)
    }
}

#[async_trait]
impl Liveness for LivePodSet {
    async fn check(&self, pods: &[PodKey]) -> Result<Vec<PodLiveness>, LivenessError> {
        let alive = self.alive.read().unwrap_or_else(PoisonError::into_inner);
        Ok(pods
            .iter()
            .map(|p| {
                if alive.contains(p) {
                    PodLiveness::Alive
                } else {
                    PodLiveness::Gone
                }
            })
            .collect())
    }
}

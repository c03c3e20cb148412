//! The pod index seam: which namespace a client address belongs to.
//!
//! AutoPath is only safe when the server knows the client's namespace first-hand: a wrong
//! namespace gives a wrong search list. On a node the CNI allocates every pod IP, so the index
//! can be fed by the IP allocator's own records (added on pod ADD, removed on DEL) rather than by
//! a watch on every Pod in the cluster as CoreDNS needs.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, RwLock},
};

/// Maps a client address to its pod's namespace.
pub trait PodIndex: Send + Sync + 'static {
    /// The namespace of the pod that owns `ip`, or `None` when unknown (no AutoPath then).
    ///
    /// Called for queries whose name could be a search step (it ends in `.svc.<zone>`), on the
    /// server's hot path: it must not block.
    fn namespace_of(&self, ip: IpAddr) -> Option<Arc<str>>;
}

/// An in-memory index, updated by whoever allocates pod addresses.
///
/// ```
/// use cnikit_dns_autopath::{PodIndex, StaticPodIndex};
///
/// let index = StaticPodIndex::new();
/// index.insert("198.18.0.10".parse().unwrap(), "prod");
/// assert_eq!(index.namespace_of("198.18.0.10".parse().unwrap()).as_deref(), Some("prod"));
/// index.remove("198.18.0.10".parse().unwrap());
/// assert_eq!(index.namespace_of("198.18.0.10".parse().unwrap()), None);
/// ```
#[derive(Debug, Default)]
pub struct StaticPodIndex {
    map: RwLock<HashMap<IpAddr, Arc<str>>>,
}

impl StaticPodIndex {
    /// An empty index.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `ip` belongs to a pod in `namespace` (replacing any previous owner, as when
    /// an address is reused). Namespaces are stored lower-case.
    pub fn insert(&self, ip: IpAddr, namespace: &str) {
        let namespace: Arc<str> = namespace.to_ascii_lowercase().into();
        self.write().insert(ip, namespace);
    }

    /// Forgets `ip` (pod deleted); returns the namespace it had.
    pub fn remove(&self, ip: IpAddr) -> Option<Arc<str>> {
        self.write().remove(&ip)
    }

    /// Number of known addresses.
    #[must_use]
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// True when no address is known.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<IpAddr, Arc<str>>> {
        // A panic while holding the lock cannot leave the map half-updated (single inserts and
        // removes), so a poisoned lock is still consistent.
        self.map
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<IpAddr, Arc<str>>> {
        self.map
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl PodIndex for StaticPodIndex {
    fn namespace_of(&self, ip: IpAddr) -> Option<Arc<str>> {
        self.read().get(&ip).cloned()
    }
}

/// The index that knows nobody: AutoPath never applies.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoPods;

impl PodIndex for NoPods {
    fn namespace_of(&self, _ip: IpAddr) -> Option<Arc<str>> {
        None
    }
}

impl<T: PodIndex> PodIndex for Arc<T> {
    fn namespace_of(&self, ip: IpAddr) -> Option<Arc<str>> {
        (**self).namespace_of(ip)
    }
}

//! Veth pairs of deleted pods, deleted after `DEL` has answered.
//!
//! `DEL` unwires a veth pod at once with `VethDriver::retire` (its rules go, the pair goes
//! down, the pod end is renamed so the namespace is free for the next `ADD`) and answers.
//! Deleting the pair waits out an RCU barrier in the kernel (10–20 ms, the larger part of a
//! `DEL`), so it runs here, on the node's threaded sockets, after the answer. An `ADD` that
//! would make a pair of the same name waits for that deletion first; shutdown waits for all.
//! An agent killed before a deletion leaves a down pair; the next agent deletes it at start
//! (`Retired::leftovers`), unless the pod's namespace took it first.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use cnikit_netns_setup::{Node, Retired};
use tokio::sync::watch;

use super::lock;

type Pending = HashMap<String, (u64, watch::Receiver<bool>)>;

/// Pairs being deleted, by host interface name.
#[derive(Debug)]
pub struct Retirements {
    node: Node,
    pending: Arc<Mutex<Pending>>,
    next: AtomicU64,
}

impl Retirements {
    /// Deletions run on `node` (sockets that may block: `Node::connect_threaded`).
    #[must_use]
    pub fn new(node: Node) -> Self {
        Self {
            node,
            pending: Arc::new(Mutex::new(HashMap::new())),
            next: AtomicU64::new(0),
        }
    }

    /// Deletes `retired`'s pair on a task of its own, then calls `then` with whether the pair
    /// is gone. Must run inside the agent's runtime.
    pub fn start(&self, retired: Retired, then: impl FnOnce(bool) + Send + 'static) {
        let Some(name) = retired.host_interface().map(str::to_owned) else {
            then(true);
            return;
        };
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (done, waiting) = watch::channel(false);
        lock(&self.pending).insert(name.clone(), (id, waiting));
        let node = self.node.clone();
        let pending = Arc::clone(&self.pending);
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let deleted = retired.delete(&node).await;
            let took_us = started.elapsed().as_micros();
            match &deleted {
                Ok(()) => tracing::debug!(link = %name, took_us, "retired veth pair deleted"),
                Err(e) => tracing::warn!(link = %name, error = %e, "deleting a retired veth pair"),
            }
            then(deleted.is_ok());
            let mut pending = lock(&pending);
            if pending.get(&name).is_some_and(|(i, _)| *i == id) {
                pending.remove(&name);
            }
            done.send_replace(true);
        });
    }

    /// Waits until no deletion of a pair whose host end is `host_interface` is running.
    pub async fn wait_for(&self, host_interface: &str) {
        let waiting = lock(&self.pending)
            .get(host_interface)
            .map(|(_, w)| w.clone());
        if let Some(mut waiting) = waiting {
            // A dropped sender means the task ended.
            waiting.wait_for(|done| *done).await.ok();
        }
    }

    /// Deletions still running.
    #[must_use]
    pub fn count(&self) -> usize {
        lock(&self.pending).len()
    }

    /// Waits (at most `limit`) for every deletion running now.
    pub async fn wait_all(&self, limit: Duration) {
        let all: Vec<watch::Receiver<bool>> = lock(&self.pending)
            .values()
            .map(|(_, w)| w.clone())
            .collect();
        let wait = async {
            for mut waiting in all {
                waiting.wait_for(|done| *done).await.ok();
            }
        };
        if tokio::time::timeout(limit, wait).await.is_err() {
            tracing::warn!(
                left = self.count(),
                "veth deletions still running at shutdown"
            );
        }
    }
}

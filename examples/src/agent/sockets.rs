//! Netlink sockets for pod namespaces, opened ahead of need.
//!
//! Opening a socket inside a pod's namespace takes a thread that enters it. The agent opens
//! it while the pool allocates the pod's address (on a blocking thread), and the wiring then
//! uses it through [`PodSockets`]'s [`Connector`] instead of opening its own, until the agent
//! discards it.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use cnikit_netns_setup::{
    Netns, Result,
    netlink::{Connector, Handle, RtConnector},
    netns::NetnsId,
};

/// A [`Connector`] that hands out sockets prepared for a namespace, else opens new ones.
#[derive(Debug, Default)]
pub struct PodSockets {
    ready: Mutex<HashMap<NetnsId, Handle>>,
}

impl PodSockets {
    fn ready(&self) -> std::sync::MutexGuard<'_, HashMap<NetnsId, Handle>> {
        self.ready.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Opens a socket in `netns` for the next [`connect`](Connector::connect) there. Blocks
    /// (it starts a thread): call it from a blocking task, inside a tokio runtime.
    ///
    /// # Errors
    /// When the namespace cannot be entered or the socket cannot be created.
    pub fn prepare(&self, netns: &Netns) -> Result<()> {
        let handle = RtConnector.connect(netns)?;
        self.ready().insert(netns.id(), handle);
        Ok(())
    }

    /// Drops the socket prepared for `netns` (every `connect` there until then shares it).
    pub fn discard(&self, netns: &Netns) {
        self.ready().remove(&netns.id());
    }

    /// This connector as the [`Connector`] a [`cnikit_netns_setup::Node`] takes.
    #[must_use]
    pub fn connector(self: &Arc<Self>) -> Arc<dyn Connector> {
        Arc::clone(self) as Arc<dyn Connector>
    }
}

impl Connector for PodSockets {
    fn connect(&self, netns: &Netns) -> Result<Handle> {
        if let Some(handle) = self.ready().get(&netns.id()) {
            return Ok(Arc::clone(handle));
        }
        RtConnector.connect(netns)
    }
}

//! Durable allocation records: the [`RecordStore`] seam, the records, and two stores.
//!
//! The pool makes every allocation and release durable before it acknowledges it. What it
//! records is small: which pod holds which resource (with everything DEL and CHECK need to
//! answer without the cloud), which released resources are still cooling down, and whether the
//! one-time warm-up already ran. The ENIs and idle addresses themselves are not recorded: they
//! are rebuilt from the cloud's view at start, as the AWS VPC CNI does.
//!
//! - [`FileStore`]: a journal plus snapshot in a directory; concurrent commits share one
//!   `fdatasync` (group commit); torn tails from a crash are cut, anything else malformed is
//!   a typed error.
//! - [`MemoryStore`]: in memory, for tests (it can be told to fail).

use std::{collections::BTreeMap, fmt, io, path::PathBuf};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::{
    allocation::{Allocation, ResourceId},
    pod::PodKey,
};

mod file;
mod format;
mod memory;

pub use file::{FileStore, FileStoreOptions, FileStoreStats};
pub use memory::MemoryStore;

/// A pod's binding to a resource.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct BindingRecord {
    /// The allocation handed to the pod.
    pub allocation: Allocation,
    /// When it was bound, in milliseconds since the Unix epoch.
    pub bound_at_ms: u64,
}

impl BindingRecord {
    /// A binding of `allocation` made at `bound_at_ms`.
    #[must_use]
    pub fn new(allocation: Allocation, bound_at_ms: u64) -> Self {
        Self {
            allocation,
            bound_at_ms,
        }
    }
}

/// A released resource that must not be handed out before `until_ms`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CoolingRecord {
    /// The resource.
    pub resource: ResourceId,
    /// End of its cool-down, in milliseconds since the Unix epoch.
    pub until_ms: u64,
}

impl CoolingRecord {
    /// `resource` cools down until `until_ms`.
    #[must_use]
    pub fn new(resource: ResourceId, until_ms: u64) -> Self {
        Self { resource, until_ms }
    }
}

/// Node-wide facts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct PoolMeta {
    /// The shared-IP warm-up target was reached once.
    pub shared_warm_up_done: bool,
    /// The exclusive-ENI warm-up target was reached once.
    pub exclusive_warm_up_done: bool,
}

/// Everything a store holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Records {
    /// Bindings by pod.
    pub bindings: BTreeMap<PodKey, BindingRecord>,
    /// Cooling resources.
    pub cooling: BTreeMap<ResourceId, CoolingRecord>,
    /// Node-wide facts.
    pub meta: PoolMeta,
}

/// One change to the records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Change {
    /// Adds or replaces a binding.
    PutBinding(BindingRecord),
    /// Removes a binding (no error when absent).
    RemoveBinding(PodKey),
    /// Adds or replaces a cooling record.
    PutCooling(CoolingRecord),
    /// Removes a cooling record (no error when absent).
    RemoveCooling(ResourceId),
    /// Replaces the node-wide facts.
    PutMeta(PoolMeta),
}

impl Records {
    /// Applies one change.
    pub fn apply(&mut self, change: &Change) {
        let mut leftovers = Vec::new();
        self.apply_owned(change.clone(), &mut leftovers);
    }

    /// Applies one change, moving its record in. What it displaces (a replaced or removed
    /// record, the change's own key) goes to `leftovers`, for the caller to free where the
    /// memory came from (see the file store's writer).
    pub(crate) fn apply_owned(&mut self, change: Change, leftovers: &mut Vec<Leftover>) {
        match change {
            Change::PutBinding(b) => {
                if let Some(old) = self.bindings.insert(b.allocation.pod.clone(), b) {
                    leftovers.push(Leftover::Binding(old));
                }
            }
            Change::RemoveBinding(ref k) => {
                if let Some(old) = self.bindings.remove(k) {
                    leftovers.push(Leftover::Binding(old));
                }
                leftovers.push(Leftover::Change(change));
            }
            Change::PutCooling(c) => {
                if let Some(old) = self.cooling.insert(c.resource.clone(), c) {
                    leftovers.push(Leftover::Cooling(old));
                }
            }
            Change::RemoveCooling(ref r) => {
                if let Some(old) = self.cooling.remove(r) {
                    leftovers.push(Leftover::Cooling(old));
                }
                leftovers.push(Leftover::Change(change));
            }
            Change::PutMeta(m) => self.meta = m,
        }
    }
}

/// Something [`Records::apply_owned`] displaced, kept only to be freed.
#[derive(Debug)]
pub(crate) enum Leftover {
    /// A replaced or removed binding.
    Binding(#[allow(dead_code, reason = "held to be dropped")] BindingRecord),
    /// A replaced or removed cooling record.
    Cooling(#[allow(dead_code, reason = "held to be dropped")] CoolingRecord),
    /// A removal, once applied.
    Change(#[allow(dead_code, reason = "held to be dropped")] Change),
}

/// Errors of a record store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A file operation failed.
    #[error("{op} {}: {source}", .path.display())]
    Io {
        /// What was being done, e.g. `fdatasync`.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A file is malformed in a way a crash cannot explain; it is left untouched.
    #[error("{} is corrupt{}: {detail}", .path.display(), .line.map(|l| format!(" at line {l}")).unwrap_or_default())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The 1-based line, for the journal.
        line: Option<usize>,
        /// What is wrong.
        detail: String,
    },
    /// A file was written by a format version this build does not read.
    #[error("{} has format version {found}; this build reads version {supported}", .path.display())]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version found.
        found: u32,
        /// The version this build reads and writes.
        supported: u32,
    },
    /// Another process holds the store.
    #[error("{} is locked by another process", .path.display())]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// The store failed before and refuses further writes (reopen it to recover).
    #[error("the store is unusable after an earlier failure: {0}")]
    Poisoned(String),
    /// The store was closed.
    #[error("the store is closed")]
    Closed,
    /// An injected failure (tests).
    #[error("injected failure: {0}")]
    Injected(String),
}

/// Where the pool keeps its records.
///
/// Contract: `commit` returns only once every change in it is durable, and applies them all or
/// none (also across a crash); concurrent commits may share one sync. `load` returns what was
/// committed.
#[async_trait]
pub trait RecordStore: Send + Sync + fmt::Debug {
    /// Everything committed so far.
    async fn load(&self) -> Result<Records, StoreError>;

    /// Makes `changes` durable, atomically.
    async fn commit(&self, changes: Vec<Change>) -> Result<(), StoreError>;
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

//! An in-memory record store for tests.

use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;

use super::{Change, RecordStore, Records, StoreError};

#[derive(Debug, Default)]
struct Inner {
    records: Records,
    fail_next: u32,
    commits: u64,
}

/// Records in memory. Clones share the records, so a test can "restart" a pool on the same
/// store, and can make the next commits fail.
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
}

impl MemoryStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The records now.
    #[must_use]
    pub fn records(&self) -> Records {
        self.lock().records.clone()
    }

    /// Makes the next `n` commits fail (without effect).
    pub fn fail_next_commits(&self, n: u32) {
        self.lock().fail_next = n;
    }

    /// Commits so far (failed ones excluded).
    #[must_use]
    pub fn commits(&self) -> u64 {
        self.lock().commits
    }
}

#[async_trait]
impl RecordStore for MemoryStore {
    async fn load(&self) -> Result<Records, StoreError> {
        Ok(self.records())
    }

    async fn commit(&self, changes: Vec<Change>) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if inner.fail_next > 0 {
            inner.fail_next -= 1;
            return Err(StoreError::Injected("commit refused".into()));
        }
        let mut leftovers = Vec::new();
        for c in changes {
            inner.records.apply_owned(c, &mut leftovers);
        }
        inner.commits += 1;
        Ok(())
    }
}

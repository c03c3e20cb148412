//! Dense ids (service and endpoint counters, policy slots): the lowest free id is handed out
//! first, so the kernel dataplane and the reference model number things alike.

use std::collections::BTreeSet;

#[derive(Clone, Debug)]
pub(crate) struct IdAllocator {
    capacity: u32,
    /// Ids below `fresh` that are free.
    free: BTreeSet<u32>,
    /// Every id at or above this one is free (and was never handed out).
    fresh: u32,
}

impl IdAllocator {
    pub(crate) fn new(capacity: u32) -> Self {
        Self {
            capacity,
            free: BTreeSet::new(),
            fresh: 0,
        }
    }

    /// An allocator with `used` already taken (restoring from pinned maps).
    pub(crate) fn with_used(capacity: u32, used: impl IntoIterator<Item = u32>) -> Self {
        let used: BTreeSet<u32> = used.into_iter().collect();
        let fresh = used.last().map_or(0, |max| max + 1);
        Self {
            capacity,
            free: (0..fresh).filter(|id| !used.contains(id)).collect(),
            fresh,
        }
    }

    /// The lowest free id, or `None` at capacity. The second value says whether the id was used
    /// before (its counters must be cleared).
    pub(crate) fn allocate(&mut self) -> Option<(u32, bool)> {
        if let Some(id) = self.free.pop_first() {
            return Some((id, true));
        }
        (self.fresh < self.capacity).then(|| {
            self.fresh += 1;
            (self.fresh - 1, false)
        })
    }

    pub(crate) fn release(&mut self, id: u32) {
        if id < self.fresh {
            self.free.insert(id);
        }
    }

    pub(crate) fn capacity(&self) -> u32 {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowest_free_first_and_capacity() {
        let mut ids = IdAllocator::new(3);
        assert_eq!(ids.allocate(), Some((0, false)));
        assert_eq!(ids.allocate(), Some((1, false)));
        assert_eq!(ids.allocate(), Some((2, false)));
        assert_eq!(ids.allocate(), None);
        ids.release(1);
        ids.release(0);
        assert_eq!(ids.allocate(), Some((0, true)));
        assert_eq!(ids.allocate(), Some((1, true)));
        let mut restored = IdAllocator::with_used(10, [4, 1]);
        assert_eq!(restored.allocate(), Some((0, true)));
        assert_eq!(restored.allocate(), Some((2, true)));
        assert_eq!(restored.allocate(), Some((3, true)));
        assert_eq!(restored.allocate(), Some((5, false)));
    }
}

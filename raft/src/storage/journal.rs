//! A watch on exactly-once writes, independent of the mechanism that provides them: this
//! process's own memory of the request ids it applied. A request id applied a second time is
//! a broken promise (a retry that undid another writer's change), logged as an error and
//! counted in `netting_catalog_duplicate_applications_total`, which the chaos lab checks.
//!
//! It is not replicated and not in snapshots, so it says nothing of ids applied before this
//! process started or before a snapshot it installed; it remembers the newest
//! [`JOURNAL_IDS`] ids, four times what the replicated record keeps, so a duplicate that slips
//! past the record's bound is still seen.

use std::collections::{HashSet, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};

use crate::catalog::requests::KEPT_RESULTS;
use crate::catalog::{LogIndex, RequestId};

/// Ids remembered.
pub(crate) const JOURNAL_IDS: usize = 4 * KEPT_RESULTS;

/// Hashes of recently applied request ids, 8 bytes each rather than the ids. Two ids with one
/// hash (odds about 2^-64) would be reported as a duplicate; a real duplicate is never hidden.
#[derive(Debug)]
pub(crate) struct AppliedJournal {
    seen: HashSet<u64>,
    order: VecDeque<u64>,
    capacity: usize,
}

impl Default for AppliedJournal {
    fn default() -> Self {
        Self::with_capacity(JOURNAL_IDS)
    }
}

impl AppliedJournal {
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Self {
            seen: HashSet::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// Notes that `id` was applied at `index`; returns false (and reports it) when this
    /// process had applied it before.
    pub(crate) fn note(&mut self, id: &RequestId, index: LogIndex) -> bool {
        let hash = hash_of(id);
        if !self.seen.insert(hash) {
            metrics::counter!("netting_catalog_duplicate_applications_total").increment(1);
            tracing::error!(request = %id, index, "a request was applied twice: exactly-once writes are broken");
            return false;
        }
        self.order.push_back(hash);
        if self.order.len() > self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.seen.remove(&oldest);
        }
        true
    }
}

fn hash_of(id: &RequestId) -> u64 {
    let mut hasher = DefaultHasher::new();
    id.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(sequence: u64) -> RequestId {
        RequestId {
            client: "c".into(),
            sequence,
        }
    }

    /// A second application of an id is reported; other ids are not.
    #[test]
    fn a_second_application_is_reported() {
        let mut journal = AppliedJournal::with_capacity(8);
        assert!(journal.note(&id(1), 1));
        assert!(journal.note(&id(2), 2));
        assert!(!journal.note(&id(1), 3));
    }

    /// The journal forgets its oldest ids beyond its bound.
    #[test]
    fn the_journal_is_bounded() {
        let mut journal = AppliedJournal::with_capacity(2);
        for sequence in 1..=3 {
            assert!(journal.note(&id(sequence), sequence));
        }
        assert!(journal.note(&id(1), 4), "id 1 was forgotten");
        assert!(!journal.note(&id(3), 5));
    }
}

//! The named in-memory snapshots of a session, in creation order ("initial" first), with a
//! name index so that creating or finding one costs O(1) however many a session holds.

use std::hash::BuildHasher;

use hashbrown::HashTable;

use super::state::{SessionPins, SessionState};

/// A named copy of the session state.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub name: String,
    pub description: String,
    /// UTC ISO-8601, shared with the snapshots taken in the same second.
    pub created_at: std::sync::Arc<str>,
    pub state: SessionState,
    /// The session's pins, shared (a snapshot copies no strings for them).
    pub pins: std::sync::Arc<SessionPins>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct SnapshotStore {
    list: Vec<Snapshot>,
    /// Positions in `list`, found by the hash of the snapshot's name (compared in `list`).
    index: HashTable<usize>,
    hasher: foldhash::fast::RandomState,
}

impl SnapshotStore {
    fn hash(&self, name: &str) -> u64 {
        self.hasher.hash_one(name)
    }

    fn position(&self, name: &str) -> Option<usize> {
        self.index
            .find(self.hash(name), |&i| self.list[i].name == name)
            .copied()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.position(name).is_some()
    }

    pub fn get(&self, name: &str) -> Option<&Snapshot> {
        self.position(name).map(|i| &self.list[i])
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Snapshot> {
        self.list.iter()
    }

    /// Appends `snap`; the caller has checked that its name is new.
    pub fn push(&mut self, snap: Snapshot) {
        let hash = self.hash(&snap.name);
        let (list, hasher) = (&self.list, &self.hasher);
        self.index
            .insert_unique(hash, list.len(), |&i| hasher.hash_one(&*list[i].name));
        self.list.push(snap);
    }

    /// Puts `snap` first (the automatic "initial" snapshot, created once per session).
    pub fn insert_first(&mut self, snap: Snapshot) {
        self.list.insert(0, snap);
        self.index.clear();
        for i in 0..self.list.len() {
            let hash = self.hash(&self.list[i].name);
            let (list, hasher) = (&self.list, &self.hasher);
            self.index
                .insert_unique(hash, i, |&j| hasher.hash_one(&*list[j].name));
        }
    }
}

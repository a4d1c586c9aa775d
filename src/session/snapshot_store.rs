//! The named in-memory snapshots of a session, in creation order ("initial" first), with a
//! name index so that creating or finding one costs O(1) however many a session holds.

use std::hash::BuildHasher;

use hashbrown::HashTable;

use super::state::{PackedState, SessionPins, SessionState};

/// A named copy of the session state.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub name: String,
    pub description: String,
    /// UTC ISO-8601, shared with the snapshots taken in the same second.
    pub created_at: std::sync::Arc<str>,
    /// The state, its vectors in one allocation.
    state: PackedState,
    /// The session's pins, shared (a snapshot copies no strings for them).
    pub pins: std::sync::Arc<SessionPins>,
}

impl Snapshot {
    pub(crate) fn new(
        name: String,
        description: String,
        created_at: std::sync::Arc<str>,
        state: &SessionState,
        pins: std::sync::Arc<SessionPins>,
    ) -> Self {
        Snapshot {
            name,
            description,
            created_at,
            state: PackedState::pack(state),
            pins,
        }
    }

    /// A copy of the saved state.
    pub fn state(&self) -> SessionState {
        self.state.unpack()
    }

    /// Time of the saved state.
    pub fn t(&self) -> f64 {
        self.state.t()
    }

    /// Step count of the saved state.
    pub fn step(&self) -> u64 {
        self.state.step()
    }
}

#[derive(Debug, Clone, Default)]
pub(crate) struct SnapshotStore {
    list: Vec<Snapshot>,
    /// (hash of the name, position in `list`), the name compared in `list`; growing the
    /// table rehashes from the stored hashes without reading the names.
    index: HashTable<(u64, usize)>,
    hasher: foldhash::fast::RandomState,
}

impl SnapshotStore {
    fn hash(&self, name: &str) -> u64 {
        self.hasher.hash_one(name)
    }

    fn position(&self, name: &str) -> Option<usize> {
        self.index
            .find(self.hash(name), |&(_, i)| self.list[i].name == name)
            .map(|&(_, i)| i)
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
        self.index
            .insert_unique(hash, (hash, self.list.len()), |&(h, _)| h);
        self.list.push(snap);
    }

    /// Puts `snap` first (the automatic "initial" snapshot, created once per session).
    pub fn insert_first(&mut self, snap: Snapshot) {
        self.list.insert(0, snap);
        self.index.clear();
        for i in 0..self.list.len() {
            let hash = self.hash(&self.list[i].name);
            self.index.insert_unique(hash, (hash, i), |&(h, _)| h);
        }
    }
}

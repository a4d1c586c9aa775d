//! The named in-memory snapshots of a session, in creation order ("initial" first), with a
//! name index so that creating or finding one costs O(1) however many a session holds.

use super::state::{SessionPins, SessionState};

/// A named copy of the session state.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub name: String,
    pub description: String,
    /// UTC ISO-8601.
    pub created_at: String,
    pub state: SessionState,
    /// The session's pins, shared (a snapshot copies no strings for them).
    pub pins: std::sync::Arc<SessionPins>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct SnapshotStore {
    list: Vec<Snapshot>,
    /// Name → position in `list`.
    index: foldhash::HashMap<String, usize>,
}

impl SnapshotStore {
    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    pub fn get(&self, name: &str) -> Option<&Snapshot> {
        self.index.get(name).map(|&i| &self.list[i])
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Snapshot> {
        self.list.iter()
    }

    /// Appends `snap`; the caller has checked that its name is new.
    pub fn push(&mut self, snap: Snapshot) {
        self.index.insert(snap.name.clone(), self.list.len());
        self.list.push(snap);
    }

    /// Puts `snap` first (the automatic "initial" snapshot, created once per session).
    pub fn insert_first(&mut self, snap: Snapshot) {
        self.list.insert(0, snap);
        self.index = self
            .list
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.clone(), i))
            .collect();
    }
}

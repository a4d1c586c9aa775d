//! A compact index of declared names for models of up to millions of names.
//!
//! A `HashMap<&str, V>` of 10^6 names is a table of tens of MB: every lookup misses the
//! cache (and the TLB) in the table before it touches the name. This index keeps 4-byte
//! positions in its table (about 5 MB at 10^6 names, within the last-level cache) and the
//! names with their values in one list in declaration order, which lookups from equations
//! written in that order read nearly sequentially.

use foldhash::fast::FixedState;
use hashbrown::HashTable;
use std::hash::BuildHasher;

pub(crate) struct NameIndex<'a, V> {
    table: HashTable<u32>,
    entries: Vec<(&'a str, V)>,
    hasher: FixedState,
}

impl<'a, V> NameIndex<'a, V> {
    pub(crate) fn with_capacity(n: usize) -> Self {
        NameIndex {
            table: HashTable::with_capacity(n),
            entries: Vec::with_capacity(n),
            hasher: FixedState::default(),
        }
    }

    /// Adds `name` unless it is already there: the first declaration wins.
    pub(crate) fn insert_first(&mut self, name: &'a str, value: V) {
        self.first_or_insert(name, value);
    }

    /// The value of `name` if it is already indexed; otherwise indexes it with `value` and
    /// gives `None`. One hash and one probe of the table (at 10^6 names each probe is a
    /// cache miss).
    pub(crate) fn first_or_insert(&mut self, name: &'a str, value: V) -> Option<&V> {
        let hash = self.hasher.hash_one(name);
        let (entries, hasher) = (&self.entries, &self.hasher);
        let entry = self.table.entry(
            hash,
            |&i| entries[i as usize].0 == name,
            |&i| hasher.hash_one(entries[i as usize].0),
        );
        match entry {
            hashbrown::hash_table::Entry::Occupied(o) => Some(&self.entries[*o.get() as usize].1),
            hashbrown::hash_table::Entry::Vacant(v) => {
                let position = u32::try_from(self.entries.len()).expect("fewer than 2^32 names");
                v.insert(position);
                self.entries.push((name, value));
                None
            }
        }
    }

    pub(crate) fn get(&self, name: &str) -> Option<&V> {
        let hash = self.hasher.hash_one(name);
        let i = *self
            .table
            .find(hash, |&i| self.entries[i as usize].0 == name)?;
        Some(&self.entries[i as usize].1)
    }

    pub(crate) fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
}

/// Each name's first position in `names`.
pub(crate) fn first_positions<'a>(names: impl Iterator<Item = &'a str>) -> NameIndex<'a, usize> {
    let mut index = NameIndex::with_capacity(names.size_hint().0);
    for (i, n) in names.enumerate() {
        index.insert_first(n, i);
    }
    index
}

#[cfg(test)]
mod tests {
    use super::{first_positions, NameIndex};

    #[test]
    fn the_first_declaration_wins_and_absent_names_are_absent() {
        let names = ["a", "b", "a", "c", "b"];
        let ix = first_positions(names.iter().copied());
        assert_eq!(ix.get("a"), Some(&0));
        assert_eq!(ix.get("b"), Some(&1));
        assert_eq!(ix.get("c"), Some(&3));
        assert_eq!(ix.get("d"), None);
        assert!(!ix.contains(""));
        // Growth past the reserved size keeps every name.
        let many: Vec<String> = (0..10_000).map(|i| format!("x{i}")).collect();
        let mut grown = NameIndex::with_capacity(4);
        for (i, n) in many.iter().enumerate() {
            grown.insert_first(n.as_str(), i);
        }
        assert!(many
            .iter()
            .enumerate()
            .all(|(i, n)| grown.get(n) == Some(&i)));
        assert_eq!(grown.get("x10000"), None);
    }
}

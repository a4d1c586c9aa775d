//! A compact index of declared names for models of up to millions of names.
//!
//! A `HashMap<&str, V>` of 10^6 names is a table of tens of MB: every lookup misses the
//! cache (and the TLB) in the table before it touches the name. This index keeps 4-byte
//! positions in its table (about 5 MB at 10^6 names, within the last-level cache) and the
//! names with their values in one list in declaration order, which lookups from equations
//! written in that order read nearly sequentially.

use foldhash::fast::FixedState;
use hashbrown::HashTable;
use std::cell::Cell;
use std::hash::BuildHasher;

pub(crate) struct NameIndex<'a, V> {
    table: HashTable<u32>,
    entries: Vec<(&'a str, V)>,
    hasher: FixedState,
    /// Positions of the last names found, most recent first (`NONE`: empty). Equations
    /// written in declaration order look up a name found a moment ago or the one declared
    /// after it, which the entries (read nearly sequentially) answer without the table: at
    /// 10^6 names a probe of the table is a cache miss, and was a superlinear part of
    /// loading (scale_bench `1000000 x loadonce` under perf: 7.6% of the load at 10^6,
    /// 1.5% at 10^5).
    recent: Cell<[u32; RECENT]>,
}

const RECENT: usize = 4;
const NONE: u32 = u32::MAX;

impl<'a, V> NameIndex<'a, V> {
    pub(crate) fn with_capacity(n: usize) -> Self {
        NameIndex {
            table: HashTable::with_capacity(n),
            entries: Vec::with_capacity(n),
            hasher: FixedState::default(),
            recent: Cell::new([NONE; RECENT]),
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
        let i = match self.near_recent(name) {
            Some(i) => i,
            None => {
                let hash = self.hasher.hash_one(name);
                *self
                    .table
                    .find(hash, |&i| self.entries[i as usize].0 == name)?
            }
        };
        self.remember(i);
        Some(&self.entries[i as usize].1)
    }

    /// The position of `name` if it is a recently found name or the one declared after it.
    /// Names are unique in `entries`, so a position found here is the table's answer.
    fn near_recent(&self, name: &str) -> Option<u32> {
        for r in self.recent.get() {
            if r == NONE {
                break;
            }
            for p in [r, r + 1] {
                if self.entries.get(p as usize).is_some_and(|e| e.0 == name) {
                    return Some(p);
                }
            }
        }
        None
    }

    fn remember(&self, i: u32) {
        let mut recent = self.recent.get();
        let at = recent.iter().position(|&r| r == i).unwrap_or(RECENT - 1);
        recent.copy_within(0..at, 1);
        recent[0] = i;
        self.recent.set(recent);
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

    #[test]
    fn lookups_in_any_order_find_each_names_own_value() {
        // The recent-position shortcut answers in-order lookups; every other order goes
        // through the table. Both must give each name's value and nothing for others.
        let names: Vec<String> = (0..2000).map(|i| format!("v{i}")).collect();
        let ix = first_positions(names.iter().map(String::as_str));
        let mut orders: Vec<Vec<usize>> = vec![(0..2000).collect(), (0..2000).rev().collect()];
        let mut x: u64 = 12345;
        orders.push(
            (0..6000)
                .map(|_| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (x >> 33) as usize % 2000
                })
                .collect(),
        );
        // Chain-like: a shared name between neighbours, as `k*(x{i-1} - x{i})`.
        orders.push((1..2000).flat_map(|i| [1999, i - 1, i]).collect());
        for order in &orders {
            for &i in order {
                assert_eq!(ix.get(&names[i]), Some(&i), "{}", names[i]);
                assert_eq!(ix.get(&format!("{}_", names[i])), None);
            }
        }
        assert_eq!(ix.get("v2000"), None);
        // Repeated declarations: the first one's value, whatever was looked up before.
        let dup = ["a", "b", "a", "b", "c"];
        let ix = first_positions(dup.iter().copied());
        for n in ["c", "b", "a", "a", "b", "c"] {
            let want = dup.iter().position(|d| *d == n).unwrap();
            assert_eq!(ix.get(n), Some(&want));
        }
    }
}

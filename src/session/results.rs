//! Recorded results: samples, the event log and segments, stitched across resumed runs.

pub use crate::column::Column;
use crate::error::{suggestion_suffix, Error, Result};
pub use crate::session::sample_labels::{Interpolated, StepLabels};
use hashbrown::HashTable;
use std::hash::BuildHasher;
use std::sync::Arc;

/// One recorded variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecVar {
    State(usize),
    Aux(usize),
}

/// One firing of an event.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    /// Index of the event in the model's declaration order.
    pub event: usize,
    /// Time of the firing (recording frame).
    pub t: f64,
    /// Recorded step label at which it fired.
    pub step: u64,
    /// Index of the most recent sample recorded before the firing, if any.
    pub sample: Option<usize>,
    /// Logged values (the event's `log` fields, after its action).
    pub values: Vec<f64>,
}

/// One recorded run.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// Explicit name (tag or rename); `None` means the automatic `run#<index>`.
    pub name: Option<String>,
    pub t_start: f64,
    pub t_end: f64,
    pub step_start: u64,
    pub step_end: u64,
    pub sample_start: usize,
    pub sample_len: usize,
    pub event_start: usize,
    pub event_len: usize,
    pub resume: bool,
    /// Digest of the stepper configuration used by the run (shared by the segments of the
    /// same configuration).
    pub cfg_hash: Arc<str>,
}

/// Samples, events and segments of the current recording pass.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Recording {
    /// The recorded variables and their names: shared with the session's selection (a run
    /// of a model of 10^6 states does not copy 10^6 names).
    pub vars: Arc<[RecVar]>,
    pub names: Arc<[String]>,
    pub t: Column,
    pub step: StepLabels,
    /// The samples produced by dense output at a run's horizon rather than by a step.
    pub interpolated: Interpolated,
    /// One column per recorded variable, in `names` order.
    pub columns: Vec<Column>,
    pub events: Vec<EventRecord>,
    /// Read freely; changed only through [`Recording::push_segment`],
    /// [`Recording::rename_segment`] and the truncating methods, which keep `names` current.
    pub segments: Vec<Segment>,
    /// Explicit segment names → the segments carrying them, so name checks cost O(1)
    /// however many segments a session has.
    names_index: SegmentNames,
}

/// Index of explicit segment names.
#[derive(Debug, Clone, Default)]
struct SegmentNames {
    names: NameTable,
    /// Wanted name → the first `-k` suffix not yet tried. Valid while segments are only
    /// added (added names only take more candidates); cleared on any rename or truncation.
    /// So a wanted name found here is taken.
    next_suffix: hashbrown::HashMap<String, u64, foldhash::fast::RandomState>,
}

/// Explicitly named segments by name: (hash of the name, position in the recording's
/// `segments`), the name compared there (no second copy of each name, no list per name,
/// and growing the table rehashes from the stored hashes without reading the names).
#[derive(Debug, Clone, Default)]
struct NameTable {
    table: HashTable<(u64, usize)>,
    hasher: foldhash::fast::RandomState,
}

/// The index holds what `segments` holds, so recordings equal by their data are equal.
impl PartialEq for SegmentNames {
    fn eq(&self, _: &SegmentNames) -> bool {
        true
    }
}

impl NameTable {
    fn hash(&self, name: &str) -> u64 {
        self.hasher.hash_one(name)
    }

    /// Segments explicitly named `name`.
    fn named<'a>(
        &'a self,
        segments: &'a [Segment],
        name: &'a str,
    ) -> impl Iterator<Item = usize> + 'a {
        self.table
            .iter_hash(self.hash(name))
            .map(|&(_, j)| j)
            .filter(move |&j| segments[j].name.as_deref() == Some(name))
    }

    /// Records that segment `i` is explicitly named `name`.
    fn add(&mut self, name: &str, i: usize) {
        let hash = self.hash(name);
        self.table.insert_unique(hash, (hash, i), |&(h, _)| h);
    }

    /// Forgets that segment `i` is named `name`.
    fn remove(&mut self, name: &str, i: usize) {
        if let Ok(entry) = self.table.find_entry(self.hash(name), |&(_, j)| j == i) {
            entry.remove();
        }
    }

    /// Whether a segment other than `except` has the explicit name `name`.
    fn taken(&self, segments: &[Segment], name: &str, except: Option<usize>) -> bool {
        self.named(segments, name).any(|j| Some(j) != except)
    }

    fn first(&self, segments: &[Segment], name: &str) -> Option<usize> {
        self.named(segments, name).min()
    }
}

/// `k` when `name` is exactly `run#k` (the automatic name of segment `k`).
fn run_alias(name: &str) -> Option<usize> {
    let k: usize = name.strip_prefix("run#")?.parse().ok()?;
    (format!("run#{k}") == name).then_some(k)
}

/// Lengths of a recording, to roll a failed run back.
#[derive(Debug, Clone, Copy)]
pub struct Mark {
    samples: usize,
    events: usize,
    segments: usize,
}

impl Recording {
    pub fn new(vars: Arc<[RecVar]>, names: Arc<[String]>) -> Self {
        let columns = (0..vars.len()).map(|_| Column::new()).collect();
        Recording {
            vars,
            names,
            columns,
            ..Default::default()
        }
    }

    pub fn len(&self) -> usize {
        self.t.len()
    }

    /// The recorded variables as a samples × variables array (columns in `names` order).
    pub fn matrix(&self) -> ndarray::Array2<f64> {
        ndarray::Array2::from_shape_fn((self.len(), self.columns.len()), |(i, j)| {
            self.columns[j][i]
        })
    }

    pub fn is_empty(&self) -> bool {
        self.t.is_empty()
    }

    pub fn mark(&self) -> Mark {
        Mark {
            samples: self.t.len(),
            events: self.events.len(),
            segments: self.segments.len(),
        }
    }

    /// Drops everything added after `m`.
    pub fn rollback(&mut self, m: Mark) {
        self.t.truncate(m.samples);
        self.step.truncate(m.samples);
        self.interpolated.truncate(m.samples);
        for c in &mut self.columns {
            c.truncate(m.samples);
        }
        self.events.truncate(m.events);
        self.truncate_segments(m.segments);
    }

    fn truncate_segments(&mut self, len: usize) {
        if len < self.segments.len() {
            self.names_index.next_suffix.clear();
        }
        for i in len..self.segments.len() {
            if let Some(name) = self.segments[i].name.take() {
                self.names_index.names.remove(&name, i);
            }
        }
        self.segments.truncate(len);
    }

    /// Appends a segment (its explicit name, if any, already made unique).
    pub fn push_segment(&mut self, seg: Segment) {
        if let Some(name) = &seg.name {
            self.names_index.names.add(name, self.segments.len());
        }
        self.segments.push(seg);
    }

    /// Gives segment `i` the explicit name `name` (already made unique).
    pub fn rename_segment(&mut self, i: usize, name: String) {
        if let Some(old) = self.segments[i].name.take() {
            self.names_index.names.remove(&old, i);
        }
        self.names_index.names.add(&name, i);
        self.names_index.next_suffix.clear();
        self.segments[i].name = Some(name);
    }

    /// A new, empty recording of `vars` that reuses `spare`'s buffers (their capacity), so a
    /// repeated run does not allocate and fault in its sample memory again.
    pub fn reusing(spare: Option<Recording>, vars: Arc<[RecVar]>, names: Arc<[String]>) -> Self {
        let Some(mut rec) = spare else {
            return Recording::new(vars, names);
        };
        rec.clear();
        rec.columns.resize_with(vars.len(), Column::new);
        rec.vars = vars;
        rec.names = names;
        rec
    }

    /// Bytes of sample memory allocated (capacity, not length).
    pub fn capacity_bytes(&self) -> usize {
        self.t.capacity() * 8
            + self.step.capacity_bytes()
            + self.interpolated.capacity_bytes()
            + self.columns.iter().map(|c| c.capacity() * 8).sum::<usize>()
    }

    /// Clears samples, events and segments, keeping the variable selection.
    pub fn clear(&mut self) {
        self.rollback(Mark {
            samples: 0,
            events: 0,
            segments: 0,
        });
    }

    /// Whether the last sample is the committed state at step label `step`.
    pub fn last_is_step(&self, step: u64) -> bool {
        self.step.last() == Some(step) && !self.interpolated.get(self.len() - 1)
    }

    /// Column of a recorded variable: `aux.NAME`, a state name, or an aux name.
    pub fn column(&self, name: &str) -> Result<&[f64]> {
        let plain = name.strip_prefix("aux.").unwrap_or(name);
        let idx = self
            .names
            .iter()
            .position(|n| n == name)
            .or_else(|| self.names.iter().position(|n| n == plain));
        match idx {
            Some(i) => Ok(&self.columns[i]),
            None => Err(Error::unknown(format!(
                "variable '{name}' is not recorded{}; recorded: {}",
                suggestion_suffix(plain, self.names.iter().map(String::as_str)),
                if self.names.is_empty() {
                    "(none)".to_string()
                } else {
                    self.names.join(", ")
                }
            ))),
        }
    }

    /// Effective name of segment `i`.
    pub fn segment_name(&self, i: usize) -> String {
        self.segments[i]
            .name
            .clone()
            .unwrap_or_else(|| format!("run#{i}"))
    }

    /// Finds a segment by effective name or automatic alias `run#k`.
    pub fn segment_index(&self, name: &str) -> Result<usize> {
        // The first segment whose effective name is `name`: an explicit name, or the
        // automatic name of an unnamed segment.
        let explicit = self.names_index.names.first(&self.segments, name);
        let automatic =
            run_alias(name).filter(|&k| k < self.segments.len() && self.segments[k].name.is_none());
        if let Some(i) = explicit.into_iter().chain(automatic).min() {
            return Ok(i);
        }
        if let Some(k) = name
            .strip_prefix("run#")
            .and_then(|k| k.parse::<usize>().ok())
        {
            if k < self.segments.len() {
                return Ok(k);
            }
        }
        let names: Vec<String> = (0..self.segments.len())
            .map(|i| self.segment_name(i))
            .collect();
        Err(Error::unknown(format!(
            "unknown segment '{name}'{}; segments: {}",
            suggestion_suffix(name, names.iter().map(String::as_str)),
            if names.is_empty() {
                "(none)".to_string()
            } else {
                names.join(", ")
            }
        )))
    }

    /// A name not used by any segment other than `except` (adds `-2`, `-3`, … if needed).
    /// A name is used when it is a segment's explicit name or the `run#k` name of segment k.
    pub fn unique_segment_name(&mut self, wanted: &str, except: Option<usize>) -> String {
        let (segments, names) = (&self.segments, &self.names_index.names);
        let n = segments.len();
        let taken = |cand: &str| {
            names.taken(segments, cand, except)
                || run_alias(cand).is_some_and(|k| k < n && Some(k) != except)
        };
        // A new segment's wanted name with a remembered suffix is taken (see `next_suffix`);
        // the first suffixes below the remembered one were taken and still are.
        let remembered = match except {
            None => self.names_index.next_suffix.get_mut(wanted),
            Some(_) => None,
        };
        if remembered.is_none() && !taken(wanted) {
            return wanted.to_string();
        }
        let start = remembered.as_deref().map_or(2, |&k| k.max(2));
        let (k, name) = (start..)
            .map(|k| (k, suffixed(wanted, k)))
            .find(|(_, c)| !taken(c))
            .unwrap_or((start, wanted.to_string()));
        match (remembered, except) {
            (Some(next), _) => *next = k + 1,
            // The key is allocated once per wanted name, not once per call.
            (None, None) => {
                self.names_index
                    .next_suffix
                    .insert(wanted.to_string(), k + 1);
            }
            (None, Some(_)) => {}
        }
        name
    }
}

/// `{wanted}-{k}`, built directly: a tagged segment of a series of short runs names itself
/// this way each run, and `format!` cost more than half of that naming.
fn suffixed(wanted: &str, k: u64) -> String {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut rest = k;
    loop {
        i -= 1;
        digits[i] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    let mut name = String::with_capacity(wanted.len() + 1 + digits.len() - i);
    name.push_str(wanted);
    name.push('-');
    // ASCII digits.
    name.extend(digits[i..].iter().map(|&d| d as char));
    name
}

#[cfg(test)]
mod tests {
    #[test]
    fn suffixed_names_are_the_formatted_ones() {
        for k in [0, 2, 9, 10, 301, 1_000_000, u64::MAX] {
            assert_eq!(super::suffixed("seg", k), format!("seg-{k}"));
        }
        assert_eq!(super::suffixed("", 7), "-7");
    }
}

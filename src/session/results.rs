//! Recorded results: samples, the event log and segments, stitched across resumed runs.

use crate::error::{suggestion_suffix, Error, Result};
pub use crate::session::sample_labels::{Interpolated, StepLabels};
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
    /// Digest of the stepper configuration used by the run.
    pub cfg_hash: String,
}

/// Samples, events and segments of the current recording pass.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Recording {
    /// The recorded variables and their names: shared with the session's selection (a run
    /// of a model of 10^6 states does not copy 10^6 names).
    pub vars: Arc<[RecVar]>,
    pub names: Arc<[String]>,
    pub t: Vec<f64>,
    pub step: StepLabels,
    /// The samples produced by dense output at a run's horizon rather than by a step.
    pub interpolated: Interpolated,
    /// One column per recorded variable, in `names` order.
    pub columns: Vec<Vec<f64>>,
    pub events: Vec<EventRecord>,
    /// Read freely; changed only through [`Recording::push_segment`],
    /// [`Recording::rename_segment`] and the truncating methods, which keep `names` current.
    pub segments: Vec<Segment>,
    /// Explicit segment names → the segments carrying them, so name checks cost O(1)
    /// however many segments a session has.
    names_index: SegmentNames,
}

/// Index of explicit segment names.
#[derive(Debug, Clone, PartialEq, Default)]
struct SegmentNames {
    /// Name → indices of the segments with that explicit name, ascending.
    by_name: foldhash::HashMap<String, Vec<usize>>,
    /// Wanted name → the first `-k` suffix not yet tried. Valid while segments are only
    /// added (added names only take more candidates); cleared on any rename or truncation.
    next_suffix: foldhash::HashMap<String, u64>,
}

impl SegmentNames {
    fn add(&mut self, name: &str, i: usize) {
        let list = self.by_name.entry(name.to_string()).or_default();
        let at = list.partition_point(|&j| j < i);
        list.insert(at, i);
    }

    fn remove(&mut self, name: &str, i: usize) {
        if let Some(list) = self.by_name.get_mut(name) {
            list.retain(|&j| j != i);
            if list.is_empty() {
                self.by_name.remove(name);
            }
        }
        self.next_suffix.clear();
    }

    /// Whether a segment other than `except` has the explicit name `name`.
    fn taken(&self, name: &str, except: Option<usize>) -> bool {
        self.by_name
            .get(name)
            .is_some_and(|l| l.iter().any(|&j| Some(j) != except))
    }

    fn first(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).and_then(|l| l.first().copied())
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
        let columns = vec![Vec::new(); vars.len()];
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
                self.names_index.remove(&name, i);
            }
        }
        self.segments.truncate(len);
    }

    /// Appends a segment (its explicit name, if any, already made unique).
    pub fn push_segment(&mut self, seg: Segment) {
        if let Some(name) = &seg.name {
            self.names_index.add(name, self.segments.len());
        }
        self.segments.push(seg);
    }

    /// Gives segment `i` the explicit name `name` (already made unique).
    pub fn rename_segment(&mut self, i: usize, name: String) {
        if let Some(old) = self.segments[i].name.take() {
            self.names_index.remove(&old, i);
        }
        self.names_index.add(&name, i);
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
        rec.columns.resize_with(vars.len(), Vec::new);
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
        let explicit = self.names_index.first(name);
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
        let n = self.segments.len();
        let taken = |names: &SegmentNames, cand: &str| {
            names.taken(cand, except) || run_alias(cand).is_some_and(|k| k < n && Some(k) != except)
        };
        if !taken(&self.names_index, wanted) {
            return wanted.to_string();
        }
        // Suffixes below the remembered one were taken and still are (only additions since).
        let hint = match except {
            None => self
                .names_index
                .next_suffix
                .get(wanted)
                .copied()
                .unwrap_or(2),
            Some(_) => 2,
        };
        let (k, name) = (hint.max(2)..)
            .map(|k| (k, suffixed(wanted, k)))
            .find(|(_, c)| !taken(&self.names_index, c))
            .unwrap_or((hint, wanted.to_string()));
        if except.is_none() {
            // The key is allocated once per wanted name, not once per call.
            match self.names_index.next_suffix.get_mut(wanted) {
                Some(next) => *next = k + 1,
                None => {
                    self.names_index
                        .next_suffix
                        .insert(wanted.to_string(), k + 1);
                }
            }
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

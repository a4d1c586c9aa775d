//! Recorded results: samples, the event log and segments, stitched across resumed runs.

use crate::error::{suggestion_suffix, Error, Result};
pub use crate::session::sample_labels::{Interpolated, StepLabels};

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
    pub vars: Vec<RecVar>,
    pub names: Vec<String>,
    pub t: Vec<f64>,
    pub step: StepLabels,
    /// The samples produced by dense output at a run's horizon rather than by a step.
    pub interpolated: Interpolated,
    /// One column per recorded variable, in `names` order.
    pub columns: Vec<Vec<f64>>,
    pub events: Vec<EventRecord>,
    pub segments: Vec<Segment>,
}

/// Lengths of a recording, to roll a failed run back.
#[derive(Debug, Clone, Copy)]
pub struct Mark {
    samples: usize,
    events: usize,
    segments: usize,
}

impl Recording {
    pub fn new(vars: Vec<RecVar>, names: Vec<String>) -> Self {
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
        self.segments.truncate(m.segments);
    }

    /// A new, empty recording of `vars` that reuses `spare`'s buffers (their capacity), so a
    /// repeated run does not allocate and fault in its sample memory again.
    pub fn reusing(spare: Option<Recording>, vars: Vec<RecVar>, names: Vec<String>) -> Self {
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
        if let Some(i) = (0..self.segments.len()).find(|&i| self.segment_name(i) == name) {
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
    pub fn unique_segment_name(&self, wanted: &str, except: Option<usize>) -> String {
        let taken = |cand: &str| {
            (0..self.segments.len()).any(|i| {
                Some(i) != except && (self.segment_name(i) == cand || format!("run#{i}") == cand)
            })
        };
        if !taken(wanted) {
            return wanted.to_string();
        }
        (2..)
            .map(|k| format!("{wanted}-{k}"))
            .find(|c| !taken(c))
            .unwrap_or_else(|| wanted.to_string())
    }
}

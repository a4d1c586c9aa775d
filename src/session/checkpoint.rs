//! Periodic checkpoints written during a run (the runner's side) and their directory
//! listing.

use std::path::{Path, PathBuf};

use super::snapshot_file::state_to_file;
use super::state::{SessionPins, SessionState};
use crate::error::{Error, Result};
use crate::model::Model;
use crate::persist::atomic::write_atomic;
use crate::persist::snapshot;
use crate::stepper::StepperInfo;

/// When a run writes checkpoints.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CheckpointEvery {
    /// After every step whose cumulative step count is a multiple of this.
    Steps(u64),
    /// After the first committed step at or past each multiple of this simulated time.
    Time(f64),
}

/// Periodic checkpoints: snapshot files written during a run into `dir`, each atomically,
/// keeping the newest `keep`. A file is named `checkpoint-<step>.npz` with the step count
/// zero-padded, so names sort by step; [`latest_checkpoint`] finds the newest. Importing it
/// and resuming reproduces the uninterrupted run bit for bit.
///
/// Checkpoints written before a run fails stay on disk: they are valid states of the run, and
/// surviving failures is what they are for.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointPolicy {
    pub dir: PathBuf,
    pub every: CheckpointEvery,
    pub keep: usize,
}

impl CheckpointPolicy {
    pub fn every_steps(dir: impl Into<PathBuf>, steps: u64, keep: usize) -> Self {
        CheckpointPolicy {
            dir: dir.into(),
            every: CheckpointEvery::Steps(steps),
            keep,
        }
    }
    pub fn every_time(dir: impl Into<PathBuf>, dt: f64, keep: usize) -> Self {
        CheckpointPolicy {
            dir: dir.into(),
            every: CheckpointEvery::Time(dt),
            keep,
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        match self.every {
            CheckpointEvery::Steps(0) => {
                return Err(Error::invalid(
                    "checkpoint interval must be at least 1 step",
                ))
            }
            CheckpointEvery::Time(dt) if !(dt > 0.0 && dt.is_finite()) => {
                return Err(Error::invalid(format!(
                    "checkpoint interval must be a positive, finite time, got {dt}"
                )))
            }
            _ => {}
        }
        if self.keep == 0 {
            return Err(Error::invalid("checkpoint 'keep' must be at least 1"));
        }
        Ok(())
    }
}

const CHECKPOINT_PREFIX: &str = "checkpoint-";
const CHECKPOINT_SUFFIX: &str = ".npz";

fn checkpoint_step(file_name: &str) -> Option<u64> {
    let digits = file_name
        .strip_prefix(CHECKPOINT_PREFIX)?
        .strip_suffix(CHECKPOINT_SUFFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Checkpoint files in `dir` as (step, path), oldest first: regular files (or symlinks to
/// them) named `checkpoint-<digits>.npz`.
pub fn list_checkpoints(dir: impl AsRef<Path>) -> Result<Vec<(u64, PathBuf)>> {
    let dir = dir.as_ref();
    let entries = std::fs::read_dir(dir).map_err(|e| {
        Error::io(format!(
            "cannot list checkpoint directory '{}': {e}",
            dir.display()
        ))
    })?;
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(step) = name.to_str().and_then(checkpoint_step) else {
            continue;
        };
        // Only regular files (a symlink counts as what it points to): a directory or a FIFO
        // named like a checkpoint is not one.
        let path = entry.path();
        if std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            found.push((step, path));
        }
    }
    found.sort();
    Ok(found)
}

/// The newest checkpoint in `dir` (highest step count), if any.
pub fn latest_checkpoint(dir: impl AsRef<Path>) -> Result<Option<PathBuf>> {
    Ok(list_checkpoints(dir)?.pop().map(|(_, p)| p))
}

/// Writes checkpoints for one run.
pub(crate) struct Checkpointer {
    policy: CheckpointPolicy,
    model: Model,
    info: &'static StepperInfo,
    pins: SessionPins,
    /// Time slot (multiple of the interval) of the last checkpoint, for time-based policies.
    slot: f64,
}

impl Checkpointer {
    /// Prepares the directory. Refuses one holding checkpoints from later steps, which would
    /// be taken for the newest and could make this run's files the ones pruned.
    pub(crate) fn new(
        policy: &CheckpointPolicy,
        model: &Model,
        info: &'static StepperInfo,
        pins: &SessionPins,
        st: &SessionState,
    ) -> Result<Self> {
        policy.validate()?;
        // Refuse up front a run whose checkpoints could not be written (or read back): their
        // size is that of this state's file.
        let probe = state_to_file(
            model,
            info,
            pins,
            st,
            &format!("{CHECKPOINT_PREFIX}{:020}", u64::MAX),
            &format!("periodic checkpoint at t = {}", -f64::MAX),
            crate::persist::timestamp::now_iso8601(),
        );
        snapshot::encode(&probe).map_err(|e| e.context("checkpoints"))?;
        std::fs::create_dir_all(&policy.dir).map_err(|e| {
            Error::io(format!(
                "cannot create checkpoint directory '{}': {e}",
                policy.dir.display()
            ))
        })?;
        if let Some((step, path)) = list_checkpoints(&policy.dir)?.pop() {
            if step > st.step {
                return Err(Error::invalid(format!(
                    "checkpoint directory '{}' already holds '{}' from step {step}, later than \
                     this session's step {}; use another directory or remove those files",
                    policy.dir.display(),
                    path.file_name().unwrap_or_default().to_string_lossy(),
                    st.step
                )));
            }
        }
        let slot = match policy.every {
            CheckpointEvery::Time(dt) => (st.t / dt).floor(),
            CheckpointEvery::Steps(_) => 0.0,
        };
        Ok(Checkpointer {
            policy: policy.clone(),
            model: model.clone(),
            info,
            pins: pins.clone(),
            slot,
        })
    }

    /// For a policy by step count, the first step after `step` that is due (the fused loop
    /// stops there); `None` for a policy by time, which only the general engine follows.
    pub(crate) fn next_due_step(&self, step: u64) -> Option<u64> {
        match self.policy.every {
            CheckpointEvery::Steps(n) => Some((step / n).saturating_add(1).saturating_mul(n)),
            CheckpointEvery::Time(_) => None,
        }
    }

    /// Whether the step just committed (now at `st.t`, `st.step`) is due for a checkpoint.
    pub(crate) fn due(&mut self, st: &SessionState) -> bool {
        match self.policy.every {
            CheckpointEvery::Steps(n) => st.step % n == 0,
            CheckpointEvery::Time(dt) => {
                let slot = (st.t / dt).floor();
                if slot > self.slot {
                    self.slot = slot;
                    true
                } else {
                    false
                }
            }
        }
    }

    /// Writes `st` (whose stepper workspace is up to date) and prunes old checkpoints.
    pub(crate) fn write(&mut self, st: &SessionState) -> Result<()> {
        let name = format!("{CHECKPOINT_PREFIX}{:020}", st.step);
        let image = state_to_file(
            &self.model,
            self.info,
            &self.pins,
            st,
            &name,
            &format!("periodic checkpoint at t = {}", st.t - st.time_shift),
            crate::persist::timestamp::now_iso8601(),
        );
        let bytes = snapshot::encode(&image)?;
        let path = self.policy.dir.join(format!("{name}{CHECKPOINT_SUFFIX}"));
        write_atomic(&path, &bytes).map_err(|e| e.context("writing a checkpoint"))?;
        let all = list_checkpoints(&self.policy.dir)?;
        let excess = all.len().saturating_sub(self.policy.keep);
        for (_, old) in all.into_iter().take(excess) {
            std::fs::remove_file(&old).map_err(|e| {
                Error::io(format!(
                    "cannot remove old checkpoint '{}': {e}",
                    old.display()
                ))
            })?;
        }
        Ok(())
    }
}

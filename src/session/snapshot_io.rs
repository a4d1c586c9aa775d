//! Snapshots outside the process: `.npz` files and byte buffers of a `Sim`.
//!
//! Export writes the session state (or a stored snapshot) in the format of
//! [`crate::persist::snapshot`] (see `snapshot_file`); import checks everything a file says
//! against this session before it changes anything.

use std::path::Path;

use super::sim::Sim;
use super::snapshot_file::{file_layout, state_from_owned_file, state_to_file, SizedBytes};
use crate::error::{Error, Result};
use crate::persist::atomic::write_atomic;
use crate::persist::snapshot::{self, FileLimits, SnapshotFile};
use crate::stepper;

/// The member of a file's pending-step state (all zeros when no step is pending).
const PENDING_Y_KEY: &str = "workspace/runtime/pending_y";

impl Sim {
    /// Calls `f` with the serialized bytes of `source` (as
    /// [`serialize_snapshot`](Self::serialize_snapshot)); when they are longer than `cap`,
    /// they are kept so that the next call for the same, unchanged source reuses them.
    pub(crate) fn with_serialized<R>(
        &mut self,
        source: Option<&str>,
        cap: usize,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R> {
        let kept = self.sized_bytes.take().filter(|k| {
            k.source.as_deref() == source
                && k.pins == *self.pins()
                && k.state
                    .as_ref()
                    .is_none_or(|st| st.bits_eq(self.session_state()))
        });
        let bytes = match kept {
            Some(k) => k.bytes,
            None => self.serialize_snapshot(source)?,
        };
        let r = f(&bytes);
        if bytes.len() > cap {
            self.sized_bytes = Some(SizedBytes {
                source: source.map(str::to_string),
                state: source.is_none().then(|| self.session_state().clone()),
                pins: self.pins().clone(),
                bytes,
            });
        }
        Ok(r)
    }

    fn file_image(&mut self, source: Option<&str>) -> Result<SnapshotFile> {
        let (model, info) = (self.model().clone(), self.stepper());
        match source {
            None => Ok(state_to_file(
                &model,
                info,
                self.pins(),
                self.session_state(),
                "current",
                "Current session state",
                crate::persist::timestamp::now_iso8601(),
            )),
            Some(name) => {
                let snap = self.snapshot(name)?;
                Ok(state_to_file(
                    &model,
                    info,
                    &snap.pins,
                    &snap.state(),
                    &snap.name,
                    &snap.description,
                    snap.created_at.to_string(),
                ))
            }
        }
    }

    /// The current state (`source = None`) or a stored snapshot as `.npz` bytes, for hosts
    /// that keep checkpoints in their own storage or send them between processes.
    pub fn serialize_snapshot(&mut self, source: Option<&str>) -> Result<Vec<u8>> {
        let image = self.file_image(source)?;
        snapshot::encode(&image)
    }

    /// Writes the current state (`source = None`) or a stored snapshot to `path` as an `.npz`
    /// file, atomically: readers see the old file or the new one, never a partial one. Missing
    /// parent directories are created. Recorded results are never written.
    pub fn export_snapshot(&mut self, path: impl AsRef<Path>, source: Option<&str>) -> Result<()> {
        let path = path.as_ref();
        let bytes = self.serialize_snapshot(source)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                Error::io(format!(
                    "cannot create directory '{}' for the snapshot: {e}",
                    dir.display()
                ))
            })?;
        }
        write_atomic(path, &bytes)
    }

    /// Restores a state serialized by [`serialize_snapshot`](Self::serialize_snapshot): every
    /// check runs first, then the session state is replaced and recorded results and segments
    /// are cleared. Stored snapshots are kept.
    pub fn deserialize_snapshot(&mut self, bytes: &[u8]) -> Result<()> {
        let (model, info) = (self.model().clone(), self.stepper());
        // What a file for this session holds: its members and their sizes bound the reader.
        let layout = file_layout(&model, info, &self.stepper_template);
        // An all-zero pending_y (no pending step) is not made, only checked.
        let (file, zeros) = snapshot::decode_for_layout_deferring(
            bytes,
            &layout,
            &FileLimits::default(),
            &[PENDING_Y_KEY],
        )?;
        let pending_y_is_zero = !zeros.is_empty();
        // A stepper that carries nothing has nothing to load or interpolate: no need to make
        // one (and its state-sized stage vectors).
        let mut stepper = (!self.stepper_template.is_empty() || info.adaptive)
            .then(|| stepper::create(info, model.n_states()));
        let st = state_from_owned_file(
            &model,
            info,
            self.pins(),
            (file, pending_y_is_zero),
            &self.stepper_template,
            stepper.as_deref_mut(),
        )?;
        self.replace_state(st);
        Ok(())
    }

    /// Imports a snapshot file written by [`export_snapshot`](Self::export_snapshot); see
    /// [`deserialize_snapshot`](Self::deserialize_snapshot).
    pub fn import_snapshot(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let bytes = snapshot::read_file(path)?;
        self.deserialize_snapshot(&bytes)
            .map_err(|e| e.context(format!("'{}'", path.display())))
    }
}

//! `Ensemble`: N sessions (members) of one model run with one set of options on a thread pool.
//!
//! Each member is an ordinary [`Sim`]; a run calls [`Sim::run`] on every member, so member i's
//! final state, events and recorded samples are bit-identical to a single `Sim` given the same
//! inputs — whatever the thread count or schedule, since members share nothing mutable.
//! Members whose runs are plain fixed-grid runs (fixed-step explicit method, no recording)
//! are advanced in batches by the lock-step kernel (`model::jit::batch`, driven by
//! `session::lockstep`) between the two halves of `Sim::run` (`start_run` / `finish_run`);
//! per lane its arithmetic is the single fused loop's, so the bits are the same.
//! A member that fails keeps its previous state (a failed `Sim::run` changes nothing) and
//! records its error; the others complete.
//!
//! Checkpoints: one `.npz` file for the whole ensemble (format `dynlib-ensemble-v1`), the
//! per-member arrays of `dynlib-snapshot-v1` stacked along a leading member axis, plus the
//! ensemble's reductions; written atomically, checked completely before an import changes
//! anything.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::Arc;

use rayon::prelude::*;
use serde_json::{json, Value};

use super::ensemble_checkpoint::{self, DecodedCheckpoint};
use super::sim::{RunOptions, Sim};
use super::snapshot_file::state_to_file;
use crate::error::{suggestion_suffix, Error, Result};
use crate::model::Model;
use crate::persist::atomic::write_atomic;
use crate::persist::npy::NpyArray;
use crate::persist::npz::write_npz_storing;
use crate::persist::snapshot::{self, SnapshotFile};
use crate::persist::timestamp::now_iso8601;
use crate::stepper::{WsArray, WsData};

/// The `schema` of ensemble checkpoint files.
pub use super::ensemble_checkpoint::ENSEMBLE_SCHEMA;

/// One member: its session and the outcome of its last run.
#[derive(Debug, Clone)]
struct Member {
    sim: Sim,
    /// The error of this member's last run; `None` = it succeeded (or has not run yet).
    error: Option<Error>,
    /// Events fired since the member's last fresh run (resumes add to it).
    events: u64,
    /// Set when the member's run panicked: its session is no longer trusted or run.
    poisoned: bool,
}

impl Member {
    fn new(sim: Sim) -> Self {
        Member {
            sim,
            error: None,
            events: 0,
            poisoned: false,
        }
    }

    /// One member's step of an ensemble run: exactly `Sim::run`, then the reductions.
    fn run(&mut self, opts: &RunOptions, keep_results: bool) {
        if self.poisoned {
            return; // keeps its error
        }
        let before = self.events_logged(opts);
        match catch_unwind(AssertUnwindSafe(|| self.sim.run(opts))) {
            Ok(outcome) => self.conclude(outcome, before, opts, keep_results),
            Err(payload) => self.poison(payload.as_ref()),
        }
    }

    /// Events in the member's log that this run's count starts from.
    fn events_logged(&self, opts: &RunOptions) -> usize {
        if opts.resume {
            self.sim.results().map_or(0, |r| r.events.len())
        } else {
            0
        }
    }

    /// The reductions after a run that returned `outcome`.
    fn conclude(&mut self, outcome: Result<()>, before: usize, opts: &RunOptions, keep: bool) {
        match outcome {
            Ok(()) => {
                let after = self.sim.results().map_or(0, |r| r.events.len());
                let fired = after.saturating_sub(before) as u64;
                self.events = if opts.resume { self.events } else { 0 } + fired;
                if !keep {
                    // Reduction-only: drop the event log and its buffer (samples were not
                    // recorded), so between runs the member holds O(states) however long the
                    // ensemble runs; during a run its event log grows with the events fired.
                    self.sim.release_results();
                }
                self.error = None;
            }
            Err(e) => self.error = Some(e),
        }
    }

    fn poison(&mut self, payload: &(dyn std::any::Any + Send)) {
        self.poisoned = true;
        self.error = Some(Error::internal(format!(
            "internal error: this member's run panicked ({}); the member refuses further \
             runs, please report this",
            crate::error::panic_message(payload)
        )));
    }
}

/// Members per lock-step batch by default for a model with events (see
/// `Ensemble::set_lockstep_lanes`), chosen with `examples/ensemble_bench.rs`: every lane
/// that fires makes the whole batch stop for that step, so narrower batches stop less often.
pub const DEFAULT_LOCKSTEP_LANES: usize = 8;

/// The default for a model without events, whose batches only stop at the end: more
/// independent chains in flight (Lorenz rk4: 16 lanes 3-6% faster than 8; README).
pub const DEFAULT_LOCKSTEP_LANES_NO_EVENTS: usize = 16;

/// The default lane count for members of `model`.
pub fn default_lockstep_lanes(model: &Model) -> usize {
    if model.events.is_empty() {
        DEFAULT_LOCKSTEP_LANES_NO_EVENTS
    } else {
        DEFAULT_LOCKSTEP_LANES
    }
}

/// N members of one model, run together.
#[derive(Debug)]
pub struct Ensemble {
    members: Vec<Member>,
    /// The thread pool of the last run, reused while the thread count stays the same.
    pool: Option<(usize, Arc<rayon::ThreadPool>)>,
    /// Members per lock-step batch; 0 runs every member on its own.
    lockstep_lanes: usize,
    /// Member-steps the lock-step kernel took in the last run.
    lockstep_steps: u64,
}

impl Clone for Ensemble {
    fn clone(&self) -> Self {
        Ensemble {
            members: self.members.clone(),
            pool: self.pool.clone(),
            lockstep_lanes: self.lockstep_lanes,
            lockstep_steps: self.lockstep_steps,
        }
    }
}

fn check_n(n: usize) -> Result<()> {
    if n == 0 {
        return Err(Error::invalid(
            "n_members is 0: an ensemble needs at least one member",
        ));
    }
    Ok(())
}

impl Ensemble {
    /// `n` members, each a new session of `model` with its default stepper and values.
    pub fn new(model: &Model, n: usize) -> Result<Ensemble> {
        Ensemble::with_stepper(model, None, n)
    }

    /// `n` members with stepper `stepper` (name or alias; `None` = the model's default).
    pub fn with_stepper(model: &Model, stepper: Option<&str>, n: usize) -> Result<Ensemble> {
        check_n(n)?;
        Ensemble::from_sim(&Sim::with_stepper(model, stepper)?, n)
    }

    /// `n` members that copy `sim`'s session: its state (time, values, stepper history), its
    /// snapshots and its recording selection, but not its recorded samples.
    pub fn from_sim(sim: &Sim, n: usize) -> Result<Ensemble> {
        check_n(n)?;
        let mut template = sim.clone();
        template.release_results();
        template.share_default_selection();
        Ok(Ensemble {
            members: vec![Member::new(template); n],
            pool: None,
            lockstep_lanes: default_lockstep_lanes(sim.model()),
            lockstep_steps: 0,
        })
    }

    pub fn n_members(&self) -> usize {
        self.members.len()
    }
    pub fn model(&self) -> &Model {
        self.members[0].sim.model()
    }
    pub fn n_states(&self) -> usize {
        self.model().n_states()
    }
    pub fn n_params(&self) -> usize {
        self.model().n_params()
    }

    fn index(&self, i: usize) -> Result<usize> {
        if i < self.members.len() {
            Ok(i)
        } else {
            Err(Error::invalid(format!(
                "member index {i} out of range: the ensemble has {} members (0..{})",
                self.members.len(),
                self.members.len() - 1
            )))
        }
    }

    /// Member `i`'s session (borrowed).
    pub fn member(&self, i: usize) -> Result<&Sim> {
        Ok(&self.members[self.index(i)?].sim)
    }

    /// Member `i` as an ordinary, independent session (a copy).
    pub fn member_sim(&self, i: usize) -> Result<Sim> {
        self.member(i).cloned()
    }

    /// The error of member `i`'s last run (`None`: it succeeded, or has not run).
    pub fn member_error(&self, i: usize) -> Result<Option<&Error>> {
        Ok(self.members[self.index(i)?].error.as_ref())
    }

    /// Members whose last run failed.
    pub fn n_failed(&self) -> usize {
        self.members.iter().filter(|m| m.error.is_some()).count()
    }

    // ------------------------------------------------------------ inputs

    fn check_matrix(
        &self,
        what: &str,
        data: &[f64],
        rows: usize,
        cols: usize,
        names: &[String],
    ) -> Result<()> {
        let n = self.members.len();
        if rows != n {
            return Err(Error::invalid(format!(
                "{what} matrix has {rows} rows; the ensemble has {n} members (one row per member)"
            )));
        }
        if cols != names.len() {
            return Err(Error::invalid(format!(
                "{what} matrix has {cols} columns; the model has {} {what} ({})",
                names.len(),
                names.join(", ")
            )));
        }
        if Some(data.len()) != rows.checked_mul(cols) {
            return Err(Error::invalid(format!(
                "{what} matrix of {rows} rows x {cols} columns needs {} values, got {}",
                rows.saturating_mul(cols),
                data.len()
            )));
        }
        if let Some(k) = data.iter().position(|v| !v.is_finite()) {
            return Err(Error::invalid(format!(
                "{what} matrix [row {}, column {}] ('{}') is {}; values must be finite \
                 (nothing was changed)",
                k / cols,
                k % cols,
                names[k % cols],
                data[k]
            )));
        }
        Ok(())
    }

    /// Assigns the validated `values` (row-major, one row per member) to `names` of every
    /// member, like [`Sim::assign`].
    fn apply_rows(&mut self, names: &[String], values: &[f64]) -> Result<()> {
        let cols = names.len();
        if cols == 0 {
            return Ok(());
        }
        for (m, row) in self.members.iter_mut().zip(values.chunks(cols)) {
            let pairs: Vec<(&str, f64)> = names
                .iter()
                .map(String::as_str)
                .zip(row.iter().copied())
                .collect();
            m.sim
                .assign(&pairs, false)
                .map_err(|e| Error::internal(format!("assign after validation failed: {e}")))?;
        }
        Ok(())
    }

    /// Sets every member's parameters from a row-major `rows x cols` matrix (rows = members,
    /// cols = the model's parameters in order). Everything is checked before anything changes.
    pub fn set_params(&mut self, data: &[f64], rows: usize, cols: usize) -> Result<()> {
        let names = self.model().param_names.clone();
        self.check_matrix("params", data, rows, cols, &names)?;
        self.apply_rows(&names, data)
    }

    /// Sets every member's state (initial condition of the next fresh run) from a row-major
    /// `rows x cols` matrix (rows = members, cols = the model's states in order).
    pub fn set_ic(&mut self, data: &[f64], rows: usize, cols: usize) -> Result<()> {
        let names = self.model().state_names.clone();
        self.check_matrix("ic", data, rows, cols, &names)?;
        self.apply_rows(&names, data)
    }

    /// Sets one named parameter or state across the members (`values[i]` for member i).
    pub fn set_column(&mut self, name: &str, values: &[f64]) -> Result<()> {
        let m = self.model();
        if m.param_index(name).is_none() && m.state_index(name).is_none() {
            return Err(Error::unknown(format!(
                "unknown state/param name '{name}'{}; states: [{}], params: [{}]",
                suggestion_suffix(
                    name,
                    m.state_names
                        .iter()
                        .chain(&m.param_names)
                        .map(String::as_str)
                ),
                m.state_names.join(", "),
                m.param_names.join(", ")
            )));
        }
        let names = vec![name.to_string()];
        self.check_matrix_column(name, values)?;
        self.apply_rows(&names, values)
    }

    /// Sets one named parameter across the members.
    pub fn set_param_column(&mut self, name: &str, values: &[f64]) -> Result<()> {
        let m = self.model();
        if m.param_index(name).is_none() {
            return Err(Error::unknown(format!(
                "unknown parameter '{name}'{}; params: [{}]",
                suggestion_suffix(name, m.param_names.iter().map(String::as_str)),
                m.param_names.join(", ")
            )));
        }
        self.set_column(name, values)
    }

    fn check_matrix_column(&self, name: &str, values: &[f64]) -> Result<()> {
        let n = self.members.len();
        if values.len() != n {
            return Err(Error::invalid(format!(
                "column '{name}' has {} values; the ensemble has {n} members (one value per member)",
                values.len()
            )));
        }
        if let Some(k) = values.iter().position(|v| !v.is_finite()) {
            return Err(Error::invalid(format!(
                "column '{name}' [row {k}] is {}; values must be finite (nothing was changed)",
                values[k]
            )));
        }
        Ok(())
    }

    // ------------------------------------------------------------ run

    fn pool(&mut self, n_threads: usize) -> Result<Arc<rayon::ThreadPool>> {
        if let Some((n, p)) = &self.pool {
            if *n == n_threads {
                return Ok(p.clone());
            }
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(n_threads) // 0 = one per available core
            .thread_name(|i| format!("dynlib-ensemble-{i}"))
            .build()
            .map_err(|e| Error::internal(format!("cannot start the thread pool: {e}")))?;
        let pool = Arc::new(pool);
        self.pool = Some((n_threads, pool.clone()));
        Ok(pool)
    }

    /// Runs every member with `opts` on `n_threads` threads (0 = one per core). Options that
    /// no member could accept (bad values, `ic` with resume, ...) are refused before any
    /// member runs, and nothing changes. Otherwise every member runs; the call fails when any
    /// member failed, saying how many — the others' results are kept, and
    /// [`member_error`](Self::member_error) gives each failure.
    ///
    /// With `record` off, members keep no event log either (only the event counts), so a
    /// reduction-only run needs O(states) memory per member.
    pub fn run(&mut self, opts: &RunOptions, n_threads: usize) -> Result<()> {
        if opts.checkpoint.is_some() {
            return Err(Error::invalid(
                "an ensemble run does not take a checkpoint policy (its members would write \
                 to one directory); run in pieces with resume and export_checkpoint instead",
            ));
        }
        #[cfg(feature = "phase-timers")]
        phases::begin_run();
        self.members[0].sim.validate_run(opts)?;
        let pool = self.pool(n_threads)?;
        #[cfg(feature = "phase-timers")]
        phases::mark_setup_done();
        self.run_members(opts, &pool);
        #[cfg(feature = "phase-timers")]
        phases::mark_parallel_done();
        self.summarise()
    }

    /// The per-member step of a run: `Sim::run` on each member, spread over the pool. A batched
    /// kernel can replace this for members sharing a step grid, as long as every member ends
    /// in the state its own `Sim::run` would give.
    ///
    /// Members whose runs are plain fixed-grid runs go through the lock-step kernel in
    /// batches of `lockstep_lanes` (see `session::lockstep`); each ends exactly where its
    /// own `Sim::run` would.
    fn run_members(&mut self, opts: &RunOptions, pool: &rayon::ThreadPool) {
        let keep = opts.record.unwrap_or(self.model().sim.record);
        self.lockstep_steps = 0;
        #[cfg(feature = "jit")]
        if let Some(kernel) = self.batch_kernel() {
            let steps = std::sync::atomic::AtomicU64::new(0);
            // One task per batch (`with_max_len(1)`): rayon's default splits the members
            // into a few long pieces, so a thread that ends first finds nothing left to
            // steal while the other finishes its piece (Lorenz, 2 threads: one idle for
            // the last 6% of the run; `ensemble_bench --phases`).
            pool.install(|| {
                self.members
                    .par_chunks_mut(kernel.lanes())
                    .with_max_len(1)
                    .for_each(|chunk| {
                        let n = run_batch(chunk, opts, keep, &kernel);
                        steps.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                    })
            });
            self.lockstep_steps = steps.into_inner();
            return;
        }
        pool.install(|| {
            self.members
                .par_iter_mut()
                .with_max_len(1) // one task per member, as per batch above
                .for_each(|m| m.run(opts, keep))
        });
    }

    /// Members per lock-step batch (rounded up to a whole number of vectors; at most
    /// `batch::MAX_LANES`); 0 turns the lock-step kernel off. The results are the same bits
    /// whatever the value: it only changes how fast they come.
    pub fn set_lockstep_lanes(&mut self, lanes: usize) -> Result<()> {
        #[cfg(feature = "jit")]
        {
            use crate::model::jit::batch::{MAX_LANES, VECTOR_LANES};
            if lanes > MAX_LANES {
                return Err(Error::invalid(format!(
                    "lock-step lanes = {lanes}: at most {MAX_LANES} (0 turns lock-step off)"
                )));
            }
            self.lockstep_lanes = lanes.div_ceil(VECTOR_LANES) * VECTOR_LANES;
        }
        #[cfg(not(feature = "jit"))]
        {
            self.lockstep_lanes = lanes;
        }
        Ok(())
    }

    pub fn lockstep_lanes(&self) -> usize {
        self.lockstep_lanes
    }

    /// Member-steps the lock-step kernel took in the last run (the rest went through each
    /// member's own runner): a diagnostic, the results do not depend on it.
    pub fn last_run_lockstep_steps(&self) -> u64 {
        self.lockstep_steps
    }

    /// The lock-step kernel for the members' model and stepper, when lock-step is on and
    /// one can be built (kept with the model, so a fresh ensemble of it does not compile
    /// again inside its run).
    #[cfg(feature = "jit")]
    fn batch_kernel(&self) -> Option<Arc<crate::model::jit::batch::BatchKernel>> {
        let sim = &self.members[0].sim;
        let (model, info) = (sim.model(), sim.stepper());
        if self.lockstep_lanes == 0 || model.native.is_none() {
            return None;
        }
        let form = crate::stepper::create(info, model.n_states()).step_form()?;
        // No wider than the ensemble: lanes beyond the members would only repeat slot 0.
        let vectors = self
            .members
            .len()
            .div_ceil(crate::model::jit::batch::VECTOR_LANES);
        let lanes = self
            .lockstep_lanes
            .min(vectors * crate::model::jit::batch::VECTOR_LANES);
        model.batch_kernel(info.name, form, lanes)
    }

    fn summarise(&self) -> Result<()> {
        let failed: Vec<usize> = (0..self.members.len())
            .filter(|&i| self.members[i].error.is_some())
            .collect();
        let Some(&first) = failed.first() else {
            return Ok(());
        };
        let e = self.members[first].error.as_ref().expect("failed member");
        Err(Error::new(
            e.kind(),
            format!(
                "{} of {} members failed (the others completed); first failure: member \
                 {first}: {}",
                failed.len(),
                self.members.len(),
                e.message()
            ),
        ))
    }

    // ------------------------------------------------------------ reductions

    /// Final states, row-major `n_members x n_states`.
    pub fn final_states(&self) -> Vec<f64> {
        self.members
            .iter()
            .flat_map(|m| m.sim.state().iter().copied())
            .collect()
    }

    /// Parameters, row-major `n_members x n_params`.
    pub fn params(&self) -> Vec<f64> {
        self.members
            .iter()
            .flat_map(|m| m.sim.params().iter().copied())
            .collect()
    }

    /// Each member's current (absolute) time.
    pub fn times(&self) -> Vec<f64> {
        self.members.iter().map(|m| m.sim.time()).collect()
    }

    /// Each member's committed steps since its last fresh run.
    pub fn step_counts(&self) -> Vec<u64> {
        self.members.iter().map(|m| m.sim.step_count()).collect()
    }

    /// Events each member fired since its last fresh run.
    pub fn event_counts(&self) -> Vec<u64> {
        self.members.iter().map(|m| m.events).collect()
    }

    // ------------------------------------------------------------ checkpoints

    /// The whole ensemble's session states as one `.npz` image.
    pub fn serialize_checkpoint(&self) -> Result<Vec<u8>> {
        let n = self.members.len();
        let files: Vec<SnapshotFile> = self
            .members
            .iter()
            .map(|m| {
                let s = &m.sim;
                state_to_file(
                    s.model(),
                    s.stepper(),
                    s.pins(),
                    s.session_state(),
                    "member",
                    "",
                    String::new(),
                )
            })
            .collect();
        let first = &files[0];
        let stack = |rows: Vec<&Vec<f64>>| -> Result<NpyArray> {
            let width = rows[0].len();
            NpyArray::f64(
                vec![n, width],
                rows.into_iter().flatten().copied().collect(),
            )
        };
        let mut members = vec![
            (
                "y".to_string(),
                stack(files.iter().map(|f| &f.y).collect())?,
            ),
            (
                "params".to_string(),
                stack(files.iter().map(|f| &f.params).collect())?,
            ),
            (
                "stepper_config".to_string(),
                stack(files.iter().map(|f| &f.config).collect())?,
            ),
            ("t".to_string(), NpyArray::f64(vec![n], self.times())?),
            (
                "event_counts".to_string(),
                NpyArray::i64(
                    vec![n],
                    self.members.iter().map(|m| m.events as i64).collect(),
                )?,
            ),
        ];
        for (bucket, get) in [
            (
                "stepper",
                (|f: &SnapshotFile| &f.stepper_ws) as fn(&SnapshotFile) -> &Vec<WsArray>,
            ),
            ("runtime", |f: &SnapshotFile| &f.runtime_ws),
        ] {
            for (k, a) in get(first).iter().enumerate() {
                // (members, elements): .npy members are at most 2-D; the per-member shape
                // is the stepper's layout, which the importing session knows.
                let shape = vec![n, a.shape.iter().product()];
                let array = match &a.data {
                    WsData::F64(_) => NpyArray::f64(
                        shape,
                        files
                            .iter()
                            .flat_map(|f| match &get(f)[k].data {
                                WsData::F64(v) => v.clone(),
                                WsData::I64(_) => Vec::new(),
                            })
                            .collect(),
                    ),
                    WsData::I64(_) => NpyArray::i64(
                        shape,
                        files
                            .iter()
                            .flat_map(|f| match &get(f)[k].data {
                                WsData::I64(v) => v.clone(),
                                WsData::F64(_) => Vec::new(),
                            })
                            .collect(),
                    ),
                }
                .map_err(|e| {
                    Error::internal(format!(
                        "workspace '{}' differs between members: {e}",
                        a.name
                    ))
                })?;
                members.push((format!("workspace/{bucket}/{}", a.name), array));
            }
        }
        let m = &first.meta;
        let errors: Vec<Value> = self
            .members
            .iter()
            .map(|m| match &m.error {
                None => Value::Null,
                Some(e) => json!({"kind": format!("{:?}", e.kind()), "message": e.message()}),
            })
            .collect();
        let meta = json!({
            "schema": ENSEMBLE_SCHEMA,
            "created_at": now_iso8601(),
            "n_members": n,
            "n_state": first.y.len(),
            "n_params": first.params.len(),
            "state_names": m.state_names,
            "param_names": m.param_names,
            "stepper_config_names": m.stepper_config_names,
            "pins": {
                "spec_hash": m.pins.spec_hash,
                "stepper_name": m.pins.stepper_name,
                "workspace_sig": m.pins.workspace_sig,
                "dtype_token": m.pins.dtype_token,
                "dynlib_version": m.pins.dynlib_version,
            },
            "member_errors": errors,
        });
        let text = serde_json::to_string_pretty(&meta)
            .map_err(|e| Error::internal(format!("cannot serialise meta.json: {e}")))?;
        members.insert(
            0,
            (
                "meta.json".to_string(),
                NpyArray::u8(vec![text.len()], text.into_bytes())?,
            ),
        );
        write_npz_storing(&members, |key| key == "meta.json")
    }

    /// Writes [`serialize_checkpoint`](Self::serialize_checkpoint) to `path` atomically
    /// (readers see the old file or the new one); missing parent directories are created.
    pub fn export_checkpoint(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let bytes = self.serialize_checkpoint()?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                Error::io(format!(
                    "cannot create directory '{}' for the checkpoint: {e}",
                    dir.display()
                ))
            })?;
        }
        write_atomic(path, &bytes)
    }

    /// Replaces every member's session state by the checkpoint's (results cleared, snapshots
    /// kept), after checking all of it: schema, member count, names, pins, layouts, values.
    pub fn deserialize_checkpoint(&mut self, bytes: &[u8]) -> Result<()> {
        let file = ensemble_checkpoint::decode(&self.members[0].sim, self.members.len(), bytes)?;
        let DecodedCheckpoint {
            states,
            event_counts,
            errors,
        } = file;
        for (((m, st), ev), err) in self
            .members
            .iter_mut()
            .zip(states)
            .zip(event_counts)
            .zip(errors)
        {
            m.sim.replace_state(st);
            m.events = ev;
            m.error = err;
            m.poisoned = false;
        }
        Ok(())
    }

    /// Reads a checkpoint file written by [`export_checkpoint`](Self::export_checkpoint).
    pub fn import_checkpoint(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let bytes = snapshot::read_file(path)?;
        self.deserialize_checkpoint(&bytes)
            .map_err(|e| e.context(format!("'{}'", path.display())))
    }
}

/// One chunk of members through the lock-step kernel: each member's run is started, the
/// plain ones advanced together, then every run finished by its own runner. Returns the
/// member-steps the kernel took. A panic poisons the chunk's members whose runs were open.
#[cfg(feature = "jit")]
fn run_batch(
    chunk: &mut [Member],
    opts: &RunOptions,
    keep: bool,
    kernel: &crate::model::jit::batch::BatchKernel,
) -> u64 {
    use super::lockstep::{advance, LaneEnd};
    let model = chunk[0].sim.model().clone();
    let mut open = vec![false; chunk.len()];
    let mut steps = 0;
    #[cfg(feature = "phase-timers")]
    let mut clock = phases::ChunkClock::start();
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        // Runs (moved as few times as possible: a started run is large) and, beside them,
        // (member, events logged before).
        let mut runs = Vec::with_capacity(chunk.len());
        let mut who = Vec::with_capacity(chunk.len());
        for (i, m) in chunk.iter_mut().enumerate() {
            if m.poisoned || !Arc::ptr_eq(&m.sim.model().0, &model.0) {
                continue;
            }
            let before = m.events_logged(opts);
            match m.sim.start_run(opts, &model) {
                Ok(run) => {
                    open[i] = true;
                    who.push((i, before));
                    runs.push(run);
                }
                Err(e) => m.conclude(Err(e), before, opts, keep),
            }
        }
        #[cfg(feature = "phase-timers")]
        clock.lap(phases::Phase::Start);
        let (ends, taken) = advance(kernel, &mut runs);
        steps = taken;
        #[cfg(feature = "phase-timers")]
        clock.lap(phases::Phase::Kernel);
        for (((i, before), mut run), end) in who.into_iter().zip(runs).zip(ends) {
            let outcome = match end {
                LaneEnd::Continue => run.runner.run(&mut run.st, &run.plan, &mut run.rec),
                LaneEnd::Finished => Ok(()),
                LaneEnd::Failed(e) => Err(e),
            };
            let m = &mut chunk[i];
            let outcome = m.sim.finish_run(run, outcome);
            m.conclude(outcome, before, opts, keep);
            open[i] = false;
        }
        // Members skipped above (another model) run on their own.
        for m in chunk.iter_mut() {
            if !Arc::ptr_eq(&m.sim.model().0, &model.0) {
                m.run(opts, keep);
            }
        }
    }));
    if let Err(payload) = outcome {
        for (m, _) in chunk.iter_mut().zip(&open).filter(|(_, o)| **o) {
            m.poison(payload.as_ref());
        }
    }
    #[cfg(feature = "phase-timers")]
    {
        clock.lap(phases::Phase::Finish);
        clock.record();
    }
    steps
}

/// Bench-only (feature `phase-timers`): wall time per pool thread of a lock-step run's
/// phases, to see whether any phase is serial and whether the threads finish together
/// (`examples/ensemble_bench.rs -- --phases`). One run at a time; a lock per batch.
#[cfg(feature = "phase-timers")]
pub mod phases {
    use std::sync::Mutex;
    use std::time::Instant;

    /// One thread's share of the last run, in seconds; `first` and `last` are the start of
    /// its first batch and the end of its last one, from the start of `Ensemble::run`.
    #[derive(Debug, Clone, Default)]
    pub struct ThreadPhases {
        pub thread: String,
        pub batches: u64,
        pub start: f64,
        pub kernel: f64,
        pub finish: f64,
        pub first: f64,
        pub last: f64,
        /// The thread's CPU time from its first batch's start to its last one's end: below
        /// `last - first` when the thread lost its core to another process.
        pub cpu: f64,
        cpu_first: f64,
        cpu_last: f64,
    }

    /// The last run: its setup (options check, pool) and its parallel part (every batch,
    /// from the start of `Ensemble::run`), and each thread's phases.
    #[derive(Debug, Clone, Default)]
    pub struct RunPhases {
        pub setup: f64,
        pub parallel_end: f64,
        pub threads: Vec<ThreadPhases>,
    }

    struct Current {
        begun: Instant,
        run: RunPhases,
    }

    static CURRENT: Mutex<Option<Current>> = Mutex::new(None);

    fn since_begin() -> f64 {
        CURRENT
            .lock()
            .unwrap()
            .as_ref()
            .map_or(0.0, |c| c.begun.elapsed().as_secs_f64())
    }

    pub(super) fn begin_run() {
        *CURRENT.lock().unwrap() = Some(Current {
            begun: Instant::now(),
            run: RunPhases::default(),
        });
    }

    pub(super) fn mark_setup_done() {
        let t = since_begin();
        if let Some(c) = CURRENT.lock().unwrap().as_mut() {
            c.run.setup = t;
        }
    }

    pub(super) fn mark_parallel_done() {
        let t = since_begin();
        if let Some(c) = CURRENT.lock().unwrap().as_mut() {
            c.run.parallel_end = t;
        }
    }

    /// The phases of the last run (and forgets them).
    pub fn take() -> Option<RunPhases> {
        CURRENT.lock().unwrap().take().map(|c| c.run)
    }

    pub(super) enum Phase {
        Start,
        Kernel,
        Finish,
    }

    /// CPU time of the calling thread, in seconds.
    fn thread_cpu() -> f64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        ts.tv_sec as f64 + 1e-9 * ts.tv_nsec as f64
    }

    /// One batch's phases, timed on its thread.
    pub(super) struct ChunkClock {
        began: Instant,
        lap: Instant,
        laps: [f64; 3],
        cpu_began: f64,
    }

    impl ChunkClock {
        pub(super) fn start() -> ChunkClock {
            let now = Instant::now();
            ChunkClock {
                began: now,
                lap: now,
                laps: [0.0; 3],
                cpu_began: thread_cpu(),
            }
        }

        pub(super) fn lap(&mut self, phase: Phase) {
            let now = Instant::now();
            self.laps[phase as usize] += (now - self.lap).as_secs_f64();
            self.lap = now;
        }

        pub(super) fn record(self) {
            let name = std::thread::current().name().unwrap_or("?").to_string();
            let cpu_now = thread_cpu();
            let mut guard = CURRENT.lock().unwrap();
            let Some(c) = guard.as_mut() else { return };
            let (first, last) = (
                (self.began - c.begun).as_secs_f64(),
                (self.lap - c.begun).as_secs_f64(),
            );
            let threads = &mut c.run.threads;
            let i = match threads.iter().position(|t| t.thread == name) {
                Some(i) => i,
                None => {
                    threads.push(ThreadPhases {
                        thread: name,
                        first,
                        cpu_first: self.cpu_began,
                        ..ThreadPhases::default()
                    });
                    threads.len() - 1
                }
            };
            let t = &mut threads[i];
            t.batches += 1;
            t.start += self.laps[0];
            t.kernel += self.laps[1];
            t.finish += self.laps[2];
            t.first = t.first.min(first);
            t.last = t.last.max(last);
            t.cpu_first = t.cpu_first.min(self.cpu_began);
            t.cpu_last = t.cpu_last.max(cpu_now);
            t.cpu = t.cpu_last - t.cpu_first;
        }
    }
}

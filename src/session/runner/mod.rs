//! The stepping loop: events, steps, commits, lag rings and recording.
//!
//! One code path serves fresh and resumed runs. Nothing here depends on where a run call
//! began: time is computed from the grid (fixed step) or carried in the state (adaptive),
//! recording depends on the cumulative step label, and everything carried between steps lives
//! in the `SessionState`.

#[cfg(feature = "jit")]
mod fused;

use super::checkpoint::Checkpointer;
use super::progress::Hooks;
use super::results::{EventRecord, RecVar, Recording};
use super::state::{PendingStep, SessionState, Status};
use crate::column::{Column, ReserveError};
use crate::error::{Error, ErrorKind, Result};
use crate::model::{Env, LagView, Model, ModelData, ModelEval};
use crate::stepper::{self, Rhs, Stepper, StepperInfo};
use std::sync::Arc;

/// Where a run ends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Horizon {
    /// Fixed-step methods and maps: run until the step count reaches `end_step`; if `clip_to`
    /// is set, the last step is shortened to end exactly there (an off-grid horizon).
    Steps { end_step: u64, clip_to: Option<f64> },
    /// Adaptive methods: run until the absolute time reaches `t_end`.
    Time(f64),
}

/// What one runner call does.
#[derive(Debug, Clone)]
pub struct RunPlan {
    pub horizon: Horizon,
    pub max_steps: u64,
    /// Record every `k`-th step label; `None` records nothing.
    pub record_interval: Option<u64>,
    /// Record the starting point (subject to the interval rule).
    pub record_start: bool,
    /// Whole steps may run in a fused native loop (same bits as the general engine).
    pub fused: bool,
}

/// The right-hand side with parameters and lag history bound.
struct BoundRhs<'a, 'm> {
    eval: &'a mut ModelEval<'m>,
    p: &'a [f64],
    lag: LagView<'a>,
}

impl Rhs for BoundRhs<'_, '_> {
    #[inline]
    fn eval(&mut self, t: f64, y: &[f64], out: &mut [f64]) -> Result<()> {
        self.eval.rhs(
            &Env {
                t,
                y,
                p: self.p,
                lag: self.lag,
            },
            out,
        )
    }
    fn lag_free(&self) -> bool {
        self.lag.ring.is_empty()
    }
    fn jacobian(&mut self, t: f64, y: &[f64], out: &mut [f64]) -> Option<Result<()>> {
        self.eval.jacobian(
            &Env {
                t,
                y,
                p: self.p,
                lag: self.lag,
            },
            out,
        )
    }
}

fn lag_view<'a>(
    model: &'a ModelData,
    ring: &'a [f64],
    heads: &'a [i64],
    shift: usize,
) -> LagView<'a> {
    LagView {
        ring,
        heads,
        layout: &model.lag_layout,
        shift,
    }
}

/// Most steps one fixed-step run may span: beyond 2^53 step indices are no longer exact
/// in an f64, so the grid `t0 + k·dt` cannot be followed.
const MAX_GRID_STEPS: f64 = 9_007_199_254_740_992.0;

/// Step count and time of the fixed-step horizon `t_end` on the session's grid. An horizon
/// that is not finite, or more steps away than the grid can count, is an error (a run must
/// never loop beyond what `max_steps` bounds).
pub fn fixed_horizon(st: &SessionState, t_end: f64) -> Result<(u64, Option<f64>)> {
    let span = (t_end - st.grid_t0) / st.nominal_dt;
    if !t_end.is_finite() || span.is_nan() || span >= MAX_GRID_STEPS {
        return Err(Error::invalid(format!(
            "the horizon T = {t_end} is {span:e} steps of dt = {} from the grid origin {}; a \
             fixed-step run can span at most 2^53 steps: use a larger dt or a nearer horizon",
            st.nominal_dt, st.grid_t0
        )));
    }
    if span <= 0.0 {
        return Ok((st.grid_k0, None));
    }
    let tol = 4.0 * f64::EPSILON * t_end.abs().max(1.0);
    let nearest = span.round() as u64;
    let k = st.grid_k0.saturating_add(nearest);
    if (st.grid_time(k) - t_end).abs() <= tol {
        return Ok((k, None));
    }
    // Off the grid: whole steps strictly before t_end, then one shortened step. The grid
    // time is monotonic in k, so each walk is a few steps (bounded here regardless).
    let mut j = st.grid_k0.saturating_add(span.floor() as u64);
    for _ in 0..64 {
        if j > st.grid_k0 && st.grid_time(j) >= t_end {
            j -= 1;
        }
    }
    for _ in 0..64 {
        if st.grid_time(j + 1) < t_end - tol {
            j += 1;
        }
    }
    Ok((j + 1, Some(t_end)))
}

/// How a run took its steps (a diagnostic: the results do not depend on it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Steps taken, warm-up included.
    pub steps: u64,
    /// Of those, steps taken inside a fused native loop.
    pub fused_steps: u64,
}

pub struct Runner<'m> {
    model: &'m Model,
    eval: ModelEval<'m>,
    stepper: Box<dyn Stepper>,
    info: &'static StepperInfo,
    y_new: Vec<f64>,
    aux_buf: Vec<f64>,
    steps_taken: u64,
    stats: RunStats,
    /// Boxed: most runs have none, and a runner is moved whole between a run's two halves.
    checkpoint: Option<Box<Checkpointer>>,
    hooks: Hooks,
    /// Where this run started (step, absolute time) and where it ends, for `fraction`.
    span: (u64, f64, Horizon),
    /// The fused native loop for the current run, when there is one.
    #[cfg(feature = "jit")]
    fused: fused::FusedState,
}

/// What a session keeps of its last successful run for the next one: the stepper (when it
/// may serve again, see [`Runner::reusing`]), the runner's scratch buffers and the buffers
/// of the session state the run replaced. A cache, not state: a copy of the session starts
/// without it, and what it saves making would be made the same. A tagged segment of a long
/// series of short runs then allocates none of these.
#[derive(Default)]
pub(crate) struct RunSpares {
    stepper: Option<Box<dyn Stepper>>,
    /// The step's output, the interpreter's registers and the aux values.
    scratch: Option<(Vec<f64>, Vec<f64>, Vec<f64>)>,
    /// The last run's fused-loop choice.
    #[cfg(feature = "jit")]
    fused: Option<fused::FusedState>,
    state: Option<SessionState>,
    /// The last configuration a segment was recorded with, and its digest.
    config_digest: Option<(Vec<f64>, Arc<str>)>,
    /// The buffer of the last run's segment tag.
    tag: String,
}

impl RunSpares {
    /// A copy of `state` for a run to advance (and to drop if it fails), made in the buffers
    /// of the state the last run replaced.
    pub(crate) fn working_copy(&mut self, state: &SessionState) -> SessionState {
        match self.state.take() {
            Some(mut copy) => {
                copy.copy_from(state);
                copy
            }
            None => state.clone(),
        }
    }

    /// [`config_hash`](crate::session::state::config_hash) of `config`, shared with the
    /// previous run's when the configuration is the same (it seldom changes between the
    /// segments of a series, and a digest is a SHA-256).
    pub(crate) fn config_digest(&mut self, config: &[f64]) -> Arc<str> {
        let same = |(c, _): &&(Vec<f64>, Arc<str>)| {
            c.len() == config.len()
                && c.iter()
                    .zip(config)
                    .all(|(a, b)| a.to_bits() == b.to_bits())
        };
        if let Some((_, digest)) = self.config_digest.as_ref().filter(same) {
            return digest.clone();
        }
        let digest: Arc<str> = crate::session::state::config_hash(config).into();
        self.config_digest = Some((config.to_vec(), digest.clone()));
        digest
    }

    /// `tag` in the buffer of the last run's tag (a series of tagged runs copies it into the
    /// same allocation each time).
    pub(crate) fn tag_copy(&mut self, tag: Option<&str>) -> Option<String> {
        let t = tag?;
        let mut copy = std::mem::take(&mut self.tag);
        copy.clear();
        copy.push_str(t);
        Some(copy)
    }

    /// Keeps the buffer of a run's tag for [`tag_copy`](Self::tag_copy).
    pub(crate) fn keep_tag(&mut self, tag: Option<String>) {
        if let Some(t) = tag {
            self.tag = t;
        }
    }

    /// Keeps a state no longer needed (the one a run replaced, or a failed run's copy) for
    /// its buffers.
    pub(crate) fn keep_state(&mut self, old: SessionState) {
        self.state = Some(old);
    }
}

impl Clone for RunSpares {
    fn clone(&self) -> Self {
        RunSpares::default()
    }
}

impl std::fmt::Debug for RunSpares {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RunSpares")
    }
}

/// `buf` as `vec![0.0; n]` would be, in its own allocation when it has room.
fn zeroed(mut buf: Vec<f64>, n: usize) -> Vec<f64> {
    buf.clear();
    buf.resize(n, 0.0);
    buf
}

impl<'m> Runner<'m> {
    /// The stepper's carried history for a native loop (`Stepper::fused_carry`): a lock-step
    /// kernel advancing this run outside the runner continues from it and writes it back.
    pub(crate) fn fused_carry(&mut self) -> Option<&mut [f64]> {
        self.stepper.fused_carry()
    }

    pub fn new(model: &'m Model, info: &'static StepperInfo, st: &SessionState) -> Result<Self> {
        Runner::reusing(model, info, st, &mut RunSpares::default())
    }

    /// [`Runner::new`] with what a previous run left in `spares` (from [`Runner::finish`]):
    /// its scratch buffers, and its stepper when it may serve again: the same method,
    /// explicit, carrying nothing between steps (an empty workspace) — so it holds no state
    /// at all, and a new one would be the same.
    pub(crate) fn reusing(
        model: &'m Model,
        info: &'static StepperInfo,
        st: &SessionState,
        spares: &mut RunSpares,
    ) -> Result<Self> {
        let reusable = |s: &dyn Stepper| {
            std::ptr::eq(s.info(), info) && !info.implicit && st.stepper_ws.is_empty()
        };
        let mut stepper = match spares.stepper.take().filter(|s| reusable(s.as_ref())) {
            Some(s) => s,
            None => stepper::create(info, model.n_states()),
        };
        stepper.load(&st.stepper_ws)?;
        let (y_new, regs, aux_buf) = spares.scratch.take().unwrap_or_default();
        Ok(Runner {
            model,
            eval: ModelEval::with_registers(&model.0, regs),
            stepper,
            info,
            y_new: zeroed(y_new, model.n_states()),
            aux_buf: zeroed(aux_buf, model.n_aux()),
            steps_taken: 0,
            stats: RunStats::default(),
            checkpoint: None,
            hooks: Hooks::default(),
            span: (0, 0.0, Horizon::Time(0.0)),
            #[cfg(feature = "jit")]
            fused: spares.fused.take().unwrap_or_default(),
        })
    }

    /// Forgets the stepper's carried history (fresh run, or the state was changed by hand).
    pub fn restart(&mut self) {
        self.stepper.restart();
    }

    /// Writes periodic checkpoints from now on (`None` stops them).
    pub(crate) fn set_checkpoint(&mut self, checkpoint: Option<Checkpointer>) {
        self.checkpoint = checkpoint.map(Box::new);
    }

    /// Calls progress and observer hooks during the next runs.
    pub(crate) fn set_hooks(&mut self, hooks: Hooks) {
        self.hooks = hooks;
    }

    /// Steps taken by every `run` of this runner so far.
    pub fn stats(&self) -> RunStats {
        self.stats
    }

    /// Saves the stepper's carried arrays into `st`; keeps the stepper and the scratch
    /// buffers in `spares`, for [`Runner::reusing`].
    pub(crate) fn finish(self, st: &mut SessionState, spares: &mut RunSpares) {
        st.stepper_ws = self.stepper.save();
        spares.stepper = Some(self.stepper);
        spares.scratch = Some((self.y_new, self.eval.into_registers(), self.aux_buf));
        #[cfg(feature = "jit")]
        {
            spares.fused = Some(self.fused);
        }
    }

    /// Runs until the horizon, the stop condition or an error.
    pub fn run(
        &mut self,
        st: &mut SessionState,
        plan: &RunPlan,
        rec: &mut Recording,
    ) -> Result<()> {
        self.steps_taken = 0;
        self.span = (st.step, st.t, plan.horizon);
        st.status = Status::Done;
        #[cfg(feature = "jit")]
        self.select_kernel(plan, rec);
        let result = match plan.horizon {
            Horizon::Steps { end_step, clip_to } => {
                self.run_fixed(st, plan, rec, end_step, clip_to)
            }
            Horizon::Time(t_end) => self.run_adaptive(st, plan, rec, t_end),
        };
        result.map_err(|e| {
            let at = format!(
                "run failed at t = {} (step {})",
                st.t - st.time_shift,
                st.step - st.step_shift
            );
            e.context(at)
        })
    }

    fn wants_sample(plan: &RunPlan, st: &SessionState) -> bool {
        plan.record_interval
            .is_some_and(|k| (st.step - st.step_shift) % k == 0)
    }

    fn record_start(
        &mut self,
        st: &SessionState,
        plan: &RunPlan,
        rec: &mut Recording,
    ) -> Result<()> {
        let label = st.step - st.step_shift;
        if plan.record_start && Self::wants_sample(plan, st) && !rec.last_is_step(label) {
            self.record(st, rec, false)?;
        }
        Ok(())
    }

    fn run_fixed(
        &mut self,
        st: &mut SessionState,
        plan: &RunPlan,
        rec: &mut Recording,
        end_step: u64,
        clip_to: Option<f64>,
    ) -> Result<()> {
        // Reserved before the start sample, so that a whole run's columns are reserved
        // once, exactly (see `reserve_column`).
        if let Some(every) = plan.record_interval {
            reserve_samples(rec, samples_between(st, end_step, every))?;
        }
        self.record_start(st, plan, rec)?;
        while st.step < end_step {
            #[cfg(feature = "jit")]
            {
                // Whole steps on the grid go through the fused loop when there is one; it
                // returns before any step that needs the general engine below.
                let fused_end = end_step - u64::from(clip_to.is_some());
                if self.fused_steps(st, plan, rec, fused_end, f64::INFINITY)? {
                    return Ok(());
                }
                if st.step >= end_step {
                    break;
                }
            }
            self.check_budget(plan)?;
            self.pre_events(st, rec)?;
            let clipped = st.step + 1 == end_step && clip_to.is_some();
            let (h, t_new) = match clip_to {
                Some(t_end) if clipped => (t_end - st.t, t_end),
                _ => (st.nominal_dt, st.grid_time(st.step + 1)),
            };
            self.take_step(st, h)?;
            if clipped {
                // An off-grid horizon re-anchors the grid at the point it reaches.
                st.grid_t0 = t_new;
                st.grid_k0 = st.step + 1;
            }
            if self.complete_step(st, plan, rec, t_new, st.nominal_dt)? {
                break;
            }
        }
        Ok(())
    }

    fn run_adaptive(
        &mut self,
        st: &mut SessionState,
        plan: &RunPlan,
        rec: &mut Recording,
        t_end: f64,
    ) -> Result<()> {
        if let Some(p) = st.pending.take() {
            if p.t_new <= t_end {
                // Commit the step the previous run accepted but stopped short of.
                self.check_budget(plan)?;
                self.y_new.copy_from_slice(&p.y_new);
                if self.complete_step(st, plan, rec, p.t_new, p.h_next)? {
                    return Ok(());
                }
            } else {
                // The new horizon is still inside that step: interpolate again.
                if !self.stepper.interpolate(t_end, &mut st.y) {
                    return Err(Error::internal(
                        "dense output unavailable for a pending step",
                    ));
                }
                st.t = t_end;
                st.pending = Some(p);
                if plan.record_interval.is_some() {
                    self.record(st, rec, true)?;
                }
                return Ok(());
            }
        } else {
            self.record_start(st, plan, rec)?;
        }
        while st.t < t_end {
            #[cfg(feature = "jit")]
            {
                // Accepted steps that end inside the horizon go through the fused loop;
                // the step that crosses it (and any that needs host work) comes here.
                if self.fused_steps(st, plan, rec, u64::MAX, t_end)? {
                    return Ok(());
                }
                if st.t >= t_end {
                    break;
                }
            }
            self.check_budget(plan)?;
            self.pre_events(st, rec)?;
            let out = self.take_step(st, st.dt)?;
            let t_new = st.t + out.h_used;
            if t_new > t_end {
                // Step past the horizon with the controller's own step and produce the output
                // point by dense interpolation; the step itself is committed by the next run.
                let pending = PendingStep {
                    t_new,
                    y_new: self.y_new.clone(),
                    h_next: out.h_next,
                };
                if !self.stepper.interpolate(t_end, &mut st.y) {
                    return Err(Error::internal(format!(
                        "stepper '{}' is adaptive but has no dense output",
                        self.info.name
                    )));
                }
                st.t = t_end;
                st.dt = out.h_next;
                st.pending = Some(pending);
                if plan.record_interval.is_some() {
                    self.record(st, rec, true)?;
                }
                return Ok(());
            }
            if self.complete_step(st, plan, rec, t_new, out.h_next)? {
                break;
            }
        }
        Ok(())
    }

    /// End-of-step events, commit, recording and the stop condition, shared by every loop.
    /// Returns true when the stop condition ended the run.
    fn complete_step(
        &mut self,
        st: &mut SessionState,
        plan: &RunPlan,
        rec: &mut Recording,
        t_new: f64,
        h_next: f64,
    ) -> Result<bool> {
        self.post_events(st, rec, t_new)?;
        self.commit(st, t_new, h_next)?;
        if Self::wants_sample(plan, st) {
            self.record(st, rec, false)?;
        }
        self.after_record(st)
    }

    /// The checkpoint, progress hooks and the stop condition after a committed, recorded
    /// step. Returns true when a hook or the stop condition ended the run.
    fn after_record(&mut self, st: &mut SessionState) -> Result<bool> {
        if let Some(cp) = &mut self.checkpoint {
            if cp.due(st) {
                let mut image = st.clone();
                image.stepper_ws = self.stepper.save();
                cp.write(&image)?;
            }
        }
        let mut hook_stop = false;
        if !self.hooks.is_empty() {
            let (step0, t0, horizon) = self.span;
            let progress = || {
                let fraction = match horizon {
                    Horizon::Steps { end_step, .. } => {
                        (st.step - step0) as f64 / (end_step.saturating_sub(step0)).max(1) as f64
                    }
                    Horizon::Time(t_end) => (st.t - t0) / (t_end - t0),
                };
                (
                    st.t - st.time_shift,
                    st.step - st.step_shift,
                    fraction.clamp(0.0, 1.0),
                )
            };
            hook_stop = self.hooks.after_step(st.step, progress, &st.y);
        }
        // The stop condition decides first: a run it ends has ended, and reporting a user
        // break there instead would let a resume go on past the step where an uninterrupted
        // run stops.
        if self.stop_condition(st) {
            st.status = Status::EarlyExit;
            return Ok(true);
        }
        if hook_stop {
            st.status = Status::UserBreak;
        }
        Ok(hook_stop)
    }

    fn check_budget(&mut self, plan: &RunPlan) -> Result<()> {
        if self.steps_taken >= plan.max_steps {
            return Err(Error::new(
                ErrorKind::StepFailed,
                format!(
                    "max_steps = {} reached before the horizon; raise max_steps or shorten the run",
                    plan.max_steps
                ),
            ));
        }
        self.steps_taken += 1;
        self.stats.steps += 1;
        Ok(())
    }

    fn take_step(&mut self, st: &SessionState, h: f64) -> Result<stepper::StepOutcome> {
        let model = &self.model.0;
        let mut rhs = BoundRhs {
            eval: &mut self.eval,
            p: &st.params,
            lag: lag_view(model, &st.lag_ring, &st.lag_head, 0),
        };
        let out = self
            .stepper
            .step(&mut rhs, st.t, &st.y, h, &st.config, &mut self.y_new)?;
        if let Some(i) = self.y_new.iter().position(|v| !v.is_finite()) {
            return Err(Error::new(
                ErrorKind::NonFinite,
                format!(
                    "state '{}' became {} (step size {h})",
                    model.state_names[i], self.y_new[i]
                ),
            ));
        }
        if !out.h_next.is_finite() || out.h_used.is_nan() || out.h_used <= 0.0 {
            return Err(Error::new(
                ErrorKind::NonFinite,
                format!("the stepper proposed a non-finite step size {}", out.h_next),
            ));
        }
        Ok(out)
    }

    fn commit(&mut self, st: &mut SessionState, t_new: f64, h_next: f64) -> Result<()> {
        std::mem::swap(&mut st.y, &mut self.y_new);
        let model = &self.model.0;
        for (i, slot) in model.lag_layout.iter().enumerate() {
            if slot.len > 0 {
                let head = (st.lag_head[i] as usize + 1) % slot.len;
                st.lag_head[i] = head as i64;
                st.lag_ring[slot.offset + head] = st.y[i];
            }
        }
        st.step += 1;
        st.t = t_new;
        st.dt = h_next;
        let mut rhs = BoundRhs {
            eval: &mut self.eval,
            p: &st.params,
            lag: lag_view(model, &st.lag_ring, &st.lag_head, 0),
        };
        self.stepper.commit(&mut rhs, t_new, &st.y)
    }

    fn pre_events(&mut self, st: &mut SessionState, rec: &mut Recording) -> Result<()> {
        let model = &self.model.0;
        for (i, ev) in model.events.iter().enumerate() {
            if !ev.phase.in_start() {
                continue;
            }
            let lag = lag_view(model, &st.lag_ring, &st.lag_head, 0);
            let env = Env {
                t: st.t,
                y: &st.y,
                p: &st.params,
                lag,
            };
            if self.eval.event_fires(i, &env)? {
                let p_before = st.params.clone();
                self.eval
                    .event_apply(i, st.t, &mut st.y, &mut st.params, lag)?;
                check_finite_after_event(model, i, &st.y, &p_before, &st.params)?;
                let label = st.step - st.step_shift;
                self.log_event(
                    i,
                    st.t - st.time_shift,
                    label,
                    st.t,
                    &st.y,
                    &st.params,
                    lag,
                    rec,
                );
                self.stepper.restart();
                break;
            }
        }
        Ok(())
    }

    fn post_events(
        &mut self,
        st: &mut SessionState,
        rec: &mut Recording,
        t_new: f64,
    ) -> Result<()> {
        let model = &self.model.0;
        for (i, ev) in model.events.iter().enumerate() {
            if !ev.phase.in_end() {
                continue;
            }
            // On the proposed state, lag_x(1) is the last committed value.
            let lag = lag_view(model, &st.lag_ring, &st.lag_head, 1);
            let env = Env {
                t: t_new,
                y: &self.y_new,
                p: &st.params,
                lag,
            };
            if self.eval.event_fires(i, &env)? {
                let p_before = st.params.clone();
                self.eval
                    .event_apply(i, t_new, &mut self.y_new, &mut st.params, lag)?;
                check_finite_after_event(model, i, &self.y_new, &p_before, &st.params)?;
                let label = st.step + 1 - st.step_shift;
                let y = std::mem::take(&mut self.y_new);
                self.log_event(
                    i,
                    t_new - st.time_shift,
                    label,
                    t_new,
                    &y,
                    &st.params,
                    lag,
                    rec,
                );
                self.y_new = y;
                self.stepper.restart();
                break;
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn log_event(
        &mut self,
        event: usize,
        t_rec: f64,
        step: u64,
        t_abs: f64,
        y: &[f64],
        p: &[f64],
        lag: LagView<'_>,
        rec: &mut Recording,
    ) {
        let n_log = self.model.events[event].log.len();
        let mut values = vec![0.0; n_log];
        if n_log > 0 {
            let env = Env {
                t: t_abs,
                y,
                p,
                lag,
            };
            self.eval.event_log(event, &env, &mut values);
            // `t` in a log means the recording frame, like the sample times.
            for (v, name) in values.iter_mut().zip(&self.model.events[event].log) {
                if name == "t" {
                    *v = t_rec;
                }
            }
        }
        rec.events.push(EventRecord {
            event,
            t: t_rec,
            step,
            sample: rec.t.len().checked_sub(1),
            values,
        });
    }

    fn stop_condition(&mut self, st: &SessionState) -> bool {
        let model = &self.model.0;
        if !self.model.has_stop() {
            return false;
        }
        let env = Env {
            t: st.t,
            y: &st.y,
            p: &st.params,
            lag: lag_view(model, &st.lag_ring, &st.lag_head, 0),
        };
        self.eval.stop(&env)
    }

    fn record(&mut self, st: &SessionState, rec: &mut Recording, interpolated: bool) -> Result<()> {
        if rec.t.len() == rec.t.capacity() {
            reserve_samples(rec, rec.t.len().max(64) as u64)?;
        }
        let model = &self.model.0;
        if rec.vars.iter().any(|v| matches!(v, RecVar::Aux(_))) {
            let env = Env {
                t: st.t,
                y: &st.y,
                p: &st.params,
                lag: lag_view(model, &st.lag_ring, &st.lag_head, 0),
            };
            self.eval.aux(&env, &mut self.aux_buf)?;
        }
        if interpolated {
            rec.interpolated.mark(rec.t.len());
        }
        rec.t.push(st.t - st.time_shift);
        rec.step.push(st.step - st.step_shift);
        for (col, var) in rec.columns.iter_mut().zip(rec.vars.iter()) {
            col.push(match *var {
                RecVar::State(i) => st.y[i],
                RecVar::Aux(i) => self.aux_buf[i],
            });
        }
        Ok(())
    }
}

/// Samples a fixed-step run from `st` to `end_step` records at most (labels divisible by
/// `every`, the seam sample included).
fn samples_between(st: &SessionState, end_step: u64, every: u64) -> u64 {
    samples_after(st, end_step, every) + 1
}

/// Samples the steps after `st` up to `end_step` record (the seam's own sample, if any,
/// is already recorded).
fn samples_after(st: &SessionState, end_step: u64, every: u64) -> u64 {
    let first = st.step - st.step_shift;
    let last = end_step.saturating_sub(st.step_shift);
    (last / every).saturating_sub(first / every)
}

/// Room for `n` more samples, or an error saying how much memory the recording would need
/// (allocation failure must not abort the host).
fn reserve_samples(rec: &mut Recording, n: u64) -> Result<()> {
    // The time and the values; step labels and interpolated flags are stored compactly.
    let per_sample = 8 + 8 * rec.columns.len() as u64;
    let fail = || {
        Error::invalid(format!(
            "the recording would need {} more bytes ({n} samples of {per_sample} bytes), more \
             than can be allocated; raise record_interval, record fewer variables, or run in \
             shorter pieces",
            n.saturating_mul(per_sample)
        ))
    };
    let n = usize::try_from(n).map_err(|_| fail())?;
    reserve_column(&mut rec.t, n).map_err(|_| fail())?;
    for c in &mut rec.columns {
        reserve_column(c, n).map_err(|_| fail())?;
    }
    Ok(())
}

/// Room for `n` more values in a recorded column.
///
/// A column's first reservation is exact: a whole run asks once for what it records, and
/// gets that (mapped by the column itself past 256 KiB, see [`Column`]). Later ones grow
/// by doubling; a column past 256 KiB grows by moving its pages, so a long series of
/// resumed runs neither copies its columns nor depends on what the heap holds.
fn reserve_column(column: &mut Column, n: usize) -> std::result::Result<(), ReserveError> {
    if column.capacity() == 0 {
        return column.try_reserve_exact(n);
    }
    column.try_reserve(n)
}

/// A state the event left non-finite, or a parameter it made non-finite, is an error at
/// the event (not one step later, when the state it feeds becomes NaN).
fn check_finite_after_event(
    model: &ModelData,
    event: usize,
    y: &[f64],
    p_before: &[f64],
    p: &[f64],
) -> Result<()> {
    let name = &model.events[event].name;
    let fail = |what: &str, var: &str, v: f64| {
        Err(Error::new(
            ErrorKind::NonFinite,
            format!("event '{name}' set {what} '{var}' to {v}"),
        ))
    };
    if let Some(i) = y.iter().position(|v| !v.is_finite()) {
        return fail("state", &model.state_names[i], y[i]);
    }
    let changed_to_non_finite =
        |i: usize| !p[i].is_finite() && p[i].to_bits() != p_before[i].to_bits();
    if let Some(i) = (0..p.len()).find(|&i| changed_to_non_finite(i)) {
        return fail("parameter", &model.param_names[i], p[i]);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::reserve_column;
    use crate::column::Column;

    #[test]
    fn first_reservations_are_exact_and_later_ones_double() {
        // A whole run's one reservation is what it asks for, however large (rounded to the
        // mapping's pages past 256 KiB).
        let mut whole = Column::new();
        reserve_column(&mut whole, 10_000).unwrap();
        assert_eq!(whole.capacity(), 10_000);
        let mut large = Column::new();
        reserve_column(&mut large, 1_000_000).unwrap();
        assert!((1_000_000..1_000_000 + (2 << 20) / 8).contains(&large.capacity()));
        // A column reserved segment by segment grows geometrically, keeping its values.
        let mut grown = Column::new();
        let mut reallocations = 0;
        for k in 0..1000 {
            let cap = grown.capacity();
            reserve_column(&mut grown, 1001).unwrap();
            reallocations += usize::from(grown.capacity() != cap);
            grown.extend_from_slice(&[k as f64; 1001]);
        }
        assert!(reallocations <= 14, "{reallocations}");
        assert_eq!(grown.is_mapped(), cfg!(target_os = "linux"));
        assert!(grown
            .chunks(1001)
            .enumerate()
            .all(|(k, c)| c.iter().all(|&x| x == k as f64)));
    }
}

//! The runner's side of the fused native loops (`model::jit::kernel`): which kernel a run
//! uses, and how a kernel call's exit continues in the general engine.

use std::sync::Arc;

use super::{lag_view, reserve_samples, BoundRhs, RunPlan, Runner};
use crate::error::Result;
use crate::method::Controller;
use crate::model::jit::kernel::{Exit, FusedKernel, KernelIo, RecIo, RecSlot};
use crate::session::results::{RecVar, Recording};
use crate::session::state::{SessionState, Status};
use crate::stepper::StepperInfo;

/// General steps to take before trying the kernel again after it returned almost at once
/// (an event firing every step would otherwise cost a kernel call per step).
const COOLDOWN_STEPS: u32 = 16;
/// Steps of the first chunk of an adaptive run (later ones grow with the recording).
const ADAPTIVE_CHUNK: u64 = 4096;
/// A kernel call that took fewer steps than this counts as returning "at once".
const SHORT_CALL: u64 = 4;

#[derive(Default)]
pub(super) struct FusedState {
    kernel: Option<Arc<FusedKernel>>,
    cooldown: u32,
    /// The last run's choice, kept between runs with the runner's spares: a series of
    /// resumed runs records the same selection with the same method, and finding the
    /// kernel again (a lock, a search, the selection rebuilt as slots) was a good part of
    /// each short run's cost.
    last: Option<KernelChoice>,
}

/// The kernel [`Runner::select_kernel`] picked, and what it was picked for.
struct KernelChoice {
    /// The model's address (the runner's model outlives the choice's use: it is only
    /// compared with the model of the next run of the same session).
    model: usize,
    stepper: &'static crate::stepper::StepperInfo,
    /// The recorded selection (`None`: a run that records nothing), compared by identity:
    /// a session shares one selection between the runs that record it.
    record: Option<Arc<[RecVar]>>,
    kernel: Option<Arc<FusedKernel>>,
}

impl FusedState {
    /// The state for a new run: no kernel yet, no cooldown, the last choice kept.
    pub(super) fn for_next_run(self) -> FusedState {
        FusedState {
            last: self.last,
            ..FusedState::default()
        }
    }
}

impl KernelChoice {
    fn serves(
        &self,
        model: &crate::model::ModelData,
        stepper: &StepperInfo,
        record: Option<&Arc<[RecVar]>>,
    ) -> bool {
        self.model == std::ptr::from_ref(model) as usize
            && std::ptr::eq(self.stepper, stepper)
            && match (&self.record, record) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                _ => false,
            }
    }
}

impl Runner<'_> {
    /// Picks the kernel for this run: fixed-step runs of a method with a step form, on a
    /// model with native code, unless a checkpoint policy by time needs per-step checks.
    pub(super) fn select_kernel(&mut self, plan: &RunPlan, rec: &Recording) {
        self.fused = std::mem::take(&mut self.fused).for_next_run();
        let by_time = self
            .checkpoint
            .as_ref()
            .is_some_and(|cp| cp.next_due_step(0).is_none());
        let Some(form) = self.stepper.step_form() else {
            return;
        };
        if !plan.fused || by_time {
            return;
        }
        let record = plan.record_interval.map(|_| &rec.vars);
        let model: &crate::model::ModelData = &self.model.0;
        if let Some(last) = self
            .fused
            .last
            .as_ref()
            .filter(|c| c.serves(model, self.info, record))
        {
            self.fused.kernel = last.kernel.clone();
            return;
        }
        let slots: Option<Vec<RecSlot>> = record.map(|vars| {
            vars.iter()
                .map(|v| match *v {
                    RecVar::State(i) => RecSlot::State(i),
                    RecVar::Aux(i) => RecSlot::Aux(i),
                })
                .collect()
        });
        let kernel = self
            .model
            .fused_kernel(self.info.name, form, slots.as_deref());
        self.fused.last = Some(KernelChoice {
            model: std::ptr::from_ref(model) as usize,
            stepper: self.info,
            record: record.cloned(),
            kernel: kernel.clone(),
        });
        self.fused.kernel = kernel;
    }

    /// Runs whole steps up to step `end` (fixed step) or strictly inside `t_end` (adaptive)
    /// in the fused loop, as far as it goes. Returns true when the stop condition ended the
    /// run; otherwise the next step, if any, is for the general engine.
    pub(super) fn fused_steps(
        &mut self,
        st: &mut SessionState,
        plan: &RunPlan,
        rec: &mut Recording,
        end: u64,
        t_end: f64,
    ) -> Result<bool> {
        if self.fused.cooldown > 0 {
            self.fused.cooldown -= 1;
            return Ok(false);
        }
        let Some(kernel) = self.fused.kernel.clone() else {
            return Ok(false);
        };
        // The kernel's arithmetic is the general engine's for a positive step only (an
        // adaptive kernel checks every step it tries).
        let positive_dt = st.nominal_dt > 0.0 && st.nominal_dt.is_finite();
        if !self.info.adaptive && !positive_dt {
            return Ok(false);
        }
        loop {
            let budget = plan.max_steps.saturating_sub(self.steps_taken);
            // Adaptive runs have no known step count: they go in chunks that the recording
            // buffer, grown by doubling, can hold.
            let chunk = if self.info.adaptive {
                budget.min((rec.t.len() as u64).max(ADAPTIVE_CHUNK))
            } else {
                budget
            };
            let k_end = end.min(st.step.saturating_add(chunk));
            if st.step >= k_end || st.t >= t_end {
                return Ok(false);
            }
            let checkpoint_k = self
                .checkpoint
                .as_ref()
                .and_then(|cp| cp.next_due_step(st.step));
            let hook_k = checkpoint_k
                .into_iter()
                .chain(self.hooks.next_due_step(st.step))
                .min()
                .unwrap_or(u64::MAX);
            if let Some(every) = plan.record_interval {
                reserve_samples(rec, super::samples_after(st, k_end, every))?;
            }
            let before = st.step;
            let bounds = (k_end, hook_k, t_end);
            let Some(exit) = self.call_kernel(&kernel, st, plan, rec, bounds) else {
                return Ok(false);
            };
            if kernel.defers_dense() && st.step > before {
                self.finish_fused(st)?;
            }
            let taken = st.step - before;
            self.steps_taken += taken;
            self.stats.steps += taken;
            self.stats.fused_steps += taken;
            if taken > 0 && !self.info.adaptive {
                st.dt = st.nominal_dt;
            }
            match exit {
                // A chunk of an adaptive run ended: take the next one.
                Exit::Done if self.info.adaptive && chunk < budget && taken > 0 => {}
                Exit::Done => return Ok(false),
                Exit::General => {
                    if taken < SHORT_CALL {
                        self.fused.cooldown = COOLDOWN_STEPS;
                    }
                    return Ok(false);
                }
                // Reported as the general engine reports it; never retried.
                Exit::HostFailed { what, code } => {
                    return Err(crate::model::callback_failed(what, code));
                }
                // The stop condition holds after the last step: what the general engine does
                // after a step (checkpoint, hooks, then the stop condition) finishes it.
                Exit::Stopped => {
                    if !self.after_record(st)? {
                        st.status = Status::EarlyExit;
                    }
                    return Ok(true);
                }
                // The step was committed and recorded: what remains of it is the
                // checkpoint, the hooks and the stop condition.
                Exit::Hook => {
                    if self.after_record(st)? {
                        return Ok(true);
                    }
                }
            }
        }
    }

    /// Completes the stepper's carry after a kernel that defers it.
    fn finish_fused(&mut self, st: &SessionState) -> Result<()> {
        let mut rhs = BoundRhs {
            eval: &mut self.eval,
            p: &st.params,
            lag: lag_view(&self.model.0, &st.lag_ring, &st.lag_head, 0),
        };
        self.stepper.finish_fused(&mut rhs)
    }

    /// One kernel call from the session's state; `None` when the method is not in a state
    /// the kernel continues (an Adams start-up).
    fn call_kernel(
        &mut self,
        kernel: &FusedKernel,
        st: &mut SessionState,
        plan: &RunPlan,
        rec: &mut Recording,
        (k_end, hook_k, t_end): (u64, u64, f64),
    ) -> Option<Exit> {
        let ctl = if self.info.adaptive {
            Controller::from_config(&st.config)
        } else {
            Controller::from_config(&[0.0; 8])
        };
        let carry = self.stepper.fused_carry()?;
        let samples_before = rec.t.len();
        let first_label = plan.record_interval.map(|every| {
            let label = st.step - st.step_shift;
            ((label / every + 1) * every, every)
        });
        let recording = first_label.map(|(next_label, every)| RecIo {
            t: &mut rec.t,
            cols: &mut rec.columns,
            every,
            next_label,
        });
        let mut io = KernelIo {
            y: &mut st.y,
            p: &st.params,
            ring: &mut st.lag_ring,
            heads: &mut st.lag_head,
            carry,
            t: st.t,
            grid_t0: st.grid_t0,
            dt: st.nominal_dt,
            time_shift: st.time_shift,
            k: st.step,
            k0: st.grid_k0,
            k_end,
            step_shift: st.step_shift,
            hook_k,
            rec: recording,
            t_end,
            h: st.dt,
            ctl,
        };
        let exit = kernel.run(&mut io);
        let (t, k, h) = (io.t, io.k, io.h);
        st.t = t;
        st.step = k;
        if self.info.adaptive {
            st.dt = h;
        }
        if let Some((first, every)) = first_label {
            let n = rec.t.len() - samples_before;
            rec.step.extend_progression(first, every, n);
        }
        Some(exit)
    }
}

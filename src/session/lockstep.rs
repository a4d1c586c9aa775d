//! The host side of the lock-step kernels (`model::jit::batch`): members' runs, started
//! with [`Sim::start_run`](super::sim::Sim::start_run), moved into a batch, advanced
//! together, and moved back so that each `StartedRun` is exactly where its own runner would
//! have brought it. A lane that needs host work at a step (an event, a non-finite state, the
//! stop condition) takes that one step through its own runner, the ordinary single-sim path,
//! and rejoins the batch; a lane that stops or fails there leaves it.

use super::runner::{Horizon, RunPlan};
use super::sim::StartedRun;
use super::state::Status;
use crate::error::Error;
use crate::model::jit::batch::{BatchExit, BatchIo, BatchKernel, BatchScratch};

/// Where a run stands after [`advance`].
#[derive(Debug)]
pub(crate) enum LaneEnd {
    /// The rest of the run (if any) is for its runner, from the run's current state.
    Continue,
    /// The run ended (the stop condition held); nothing is left to step.
    Finished,
    /// The run failed at a step its runner took; the run must be discarded with this error.
    Failed(Error),
}

/// The grid a batch shares: lanes must agree on every field, bit for bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Grid {
    step: u64,
    t: u64,
    grid_t0: u64,
    grid_k0: u64,
    dt: u64,
    end: u64,
}

/// The run's grid, when the kernel may take its next step: a plain fixed-grid run whose
/// method is in the steady state the kernel continues (an Adams start-up is not).
fn grid_of(run: &mut StartedRun<'_>) -> Option<Grid> {
    let end = run.lockstep_end()?;
    run.runner.fused_carry()?;
    let st = &run.st;
    Some(Grid {
        step: st.step,
        t: st.t.to_bits(),
        grid_t0: st.grid_t0.to_bits(),
        grid_k0: st.grid_k0,
        dt: st.nominal_dt.to_bits(),
        end,
    })
}

/// Takes a plain run's start-up steps (an Adams method before its history is full) through
/// its runner, so that it can join a batch after them. Returns how the run stands when it
/// finished or failed there.
fn start_up(run: &mut StartedRun<'_>) -> Option<LaneEnd> {
    while let Some(end) = run.lockstep_end() {
        if run.st.step >= end || run.runner.fused_carry().is_some() {
            return None;
        }
        match one_step(run) {
            Err(e) => return Some(LaneEnd::Failed(e)),
            Ok(()) if run.st.status != Status::Done => return Some(LaneEnd::Finished),
            Ok(()) => {}
        }
    }
    None
}

/// Advances, in batches of `kernel.lanes()`, the runs of `runs` that share the first
/// eligible run's grid, to the end of their lock-step span. Returns how each run stands
/// (runs that are not lock-step eligible are `Continue`, untouched) and the member-steps
/// the kernel took.
pub(crate) fn advance(kernel: &BatchKernel, runs: &mut [StartedRun<'_>]) -> (Vec<LaneEnd>, u64) {
    let mut ends: Vec<LaneEnd> = runs.iter().map(|_| LaneEnd::Continue).collect();
    for (run, end) in runs.iter_mut().zip(&mut ends) {
        if let Some(e) = start_up(run) {
            *end = e;
        }
    }
    let grids: Vec<Option<Grid>> = runs
        .iter_mut()
        .zip(&ends)
        .map(|(run, end)| match end {
            LaneEnd::Continue => grid_of(run),
            _ => None,
        })
        .collect();
    let Some(grid) = grids.iter().flatten().next().copied() else {
        return (ends, 0);
    };
    let members: Vec<usize> = (0..runs.len())
        .filter(|&i| grids[i] == Some(grid))
        .collect();
    let mut steps = 0;
    for group in members.chunks(kernel.lanes()) {
        steps += Batch::new(kernel, runs, group, grid).run(runs, &mut ends);
    }
    (ends, steps)
}

/// One batch's arrays (layouts in `batch`'s module docs). Slots `0..active.len()` hold the
/// active lanes; the rest repeat slot 0, so the kernel always runs full width (their results
/// are never read).
struct Batch<'k> {
    kernel: &'k BatchKernel,
    n: usize,
    n_params: usize,
    lag_total: usize,
    y: Vec<f64>,
    p: Vec<f64>,
    ring: Vec<f64>,
    heads: Vec<i64>,
    /// Carried history, `carry[c * lanes + slot]` for value `c` of the run's carry.
    carry: Vec<f64>,
    flags: Vec<i64>,
    /// Run index of each active slot.
    active: Vec<usize>,
    /// The kernel's buffers, kept across its calls.
    scratch: BatchScratch<'k>,
    /// A copy of the arrays while a flagged exit rearranges the slots (kept, so that
    /// exits allocate nothing).
    old: Arrays,
    /// (old slot, run) of the lanes a flagged exit keeps.
    keep: Vec<(usize, usize)>,
    k: u64,
    t: f64,
    end: u64,
}

impl<'k> Batch<'k> {
    fn new(
        kernel: &'k BatchKernel,
        runs: &mut [StartedRun<'_>],
        group: &[usize],
        grid: Grid,
    ) -> Batch<'k> {
        let st = &runs[group[0]].st;
        let (n, n_params, lag_total) = (st.y.len(), st.params.len(), st.lag_ring.len());
        let lanes = kernel.lanes();
        let mut b = Batch {
            kernel,
            n,
            n_params,
            lag_total,
            y: vec![0.0; n * lanes],
            p: vec![0.0; n_params * lanes],
            ring: vec![0.0; lag_total * lanes],
            heads: vec![0; n * lanes],
            carry: vec![0.0; kernel.carry_len() * lanes],
            flags: vec![0; lanes],
            active: group.to_vec(),
            scratch: kernel.scratch(),
            old: Arrays::default(),
            keep: Vec::with_capacity(group.len()),
            k: grid.step,
            t: st.t,
            end: grid.end,
        };
        for slot in 0..lanes {
            let run = group.get(slot).copied().unwrap_or(group[0]);
            b.pack(slot, &mut runs[run]);
        }
        b
    }

    /// Copies a run's state into a slot.
    fn pack(&mut self, slot: usize, run: &mut StartedRun<'_>) {
        let lanes = self.kernel.lanes();
        // Runs join a batch only with their carry ready (`grid_of`).
        if let Some(carry) = run.runner.fused_carry() {
            for (c, v) in carry.iter().enumerate() {
                self.carry[c * lanes + slot] = *v;
            }
        }
        let st = &run.st;
        for (s, v) in st.y.iter().enumerate() {
            self.y[s * lanes + slot] = *v;
        }
        for (j, v) in st.params.iter().enumerate() {
            self.p[j * lanes + slot] = *v;
        }
        self.ring[slot * self.lag_total..(slot + 1) * self.lag_total].copy_from_slice(&st.lag_ring);
        self.heads[slot * self.n..(slot + 1) * self.n].copy_from_slice(&st.lag_head);
    }

    /// Copies a slot's state back into its run, which is then at step `k`, time `t`.
    fn unpack(&self, slot: usize, run: &mut StartedRun<'_>, k: u64, t: f64) {
        let lanes = self.kernel.lanes();
        if let Some(carry) = run.runner.fused_carry() {
            for (c, v) in carry.iter_mut().enumerate() {
                *v = self.carry[c * lanes + slot];
            }
        }
        let st = &mut run.st;
        for (s, v) in st.y.iter_mut().enumerate() {
            *v = self.y[s * lanes + slot];
        }
        st.lag_ring
            .copy_from_slice(&self.ring[slot * self.lag_total..(slot + 1) * self.lag_total]);
        st.lag_head
            .copy_from_slice(&self.heads[slot * self.n..(slot + 1) * self.n]);
        if k > st.step {
            // As after a fused call that took steps.
            st.dt = st.nominal_dt;
        }
        st.step = k;
        st.t = t;
    }

    /// Runs the batch to its end; every lane's run is then at the end or has left (its
    /// `ends` entry says how). Returns the member-steps the kernel took.
    fn run(mut self, runs: &mut [StartedRun<'_>], ends: &mut [LaneEnd]) -> u64 {
        let mut kernel_steps = 0;
        let clock = &runs[self.active[0]].st;
        let (grid_t0, dt, k0) = (clock.grid_t0, clock.nominal_dt, clock.grid_k0);
        while self.k < self.end && !self.active.is_empty() {
            let mut io = BatchIo {
                y: &mut self.y,
                p: &self.p,
                ring: &mut self.ring,
                heads: &mut self.heads,
                carry: &mut self.carry,
                flags: &mut self.flags,
                t: self.t,
                grid_t0,
                dt,
                k: self.k,
                k0,
                k_end: self.end,
            };
            let exit = self.kernel.run(&mut io, &mut self.scratch);
            let taken = io.k - self.k;
            (self.k, self.t) = (io.k, io.t);
            kernel_steps += taken * self.active.len() as u64;
            for &i in &self.active {
                runs[i].outside_steps += taken;
            }
            if let BatchExit::Flagged { t_next } = exit {
                kernel_steps += self.host_step(runs, ends, t_next);
            }
        }
        for (slot, &i) in self.active.iter().enumerate() {
            self.unpack(slot, &mut runs[i], self.k, self.t);
        }
        kernel_steps
    }

    /// After a flagged exit at step `self.k`: the unflagged lanes took that step, the
    /// flagged ones take it through their runners and rejoin when they end on the grid.
    /// Returns the member-steps the kernel took at that step.
    fn host_step(&mut self, runs: &mut [StartedRun<'_>], ends: &mut [LaneEnd], t_next: f64) -> u64 {
        let (k_f, t_f) = (self.k, self.t);
        let mut keep = std::mem::take(&mut self.keep);
        keep.clear();
        let mut kernel_steps = 0;
        for slot in 0..self.active.len() {
            let i = self.active[slot];
            if self.flags[slot] == 0 {
                runs[i].outside_steps += 1;
                kernel_steps += 1;
                keep.push((slot, i));
                continue;
            }
            self.unpack(slot, &mut runs[i], k_f, t_f);
            match one_step(&mut runs[i]) {
                Err(e) => ends[i] = LaneEnd::Failed(e),
                Ok(()) if runs[i].st.status != Status::Done => ends[i] = LaneEnd::Finished,
                Ok(()) => {
                    let on_grid = {
                        let st = &runs[i].st;
                        st.step == k_f + 1 && st.t.to_bits() == t_next.to_bits()
                    };
                    // An event action restarts an Adams history: the run's runner starts
                    // it up again and does the rest, as it does for a run off the grid.
                    if on_grid && runs[i].runner.fused_carry().is_some() {
                        keep.push((slot, i));
                    }
                }
            }
        }
        self.k = k_f + 1;
        self.t = t_next;
        // Compact: the kept lanes move to the front, flagged ones repacked from their runs.
        let mut old = std::mem::take(&mut self.old);
        old.copy_from(self);
        self.active.clear();
        self.active.extend(keep.iter().map(|&(_, i)| i));
        let lanes = self.kernel.lanes();
        for new_slot in 0..lanes {
            match keep.get(new_slot).or(keep.first()) {
                Some(&(old_slot, _)) if self.flags[old_slot] == 0 => {
                    self.copy_slot(&old, old_slot, new_slot)
                }
                Some(&(_, i)) => self.pack(new_slot, &mut runs[i]),
                None => {}
            }
        }
        (self.old, self.keep) = (old, keep);
        kernel_steps
    }

    /// Copies slot `from` of the arrays `old` into slot `to`.
    fn copy_slot(&mut self, old: &Arrays, from: usize, to: usize) {
        let lanes = self.kernel.lanes();
        for s in 0..self.n {
            self.y[s * lanes + to] = old.y[s * lanes + from];
        }
        for j in 0..self.n_params {
            self.p[j * lanes + to] = old.p[j * lanes + from];
        }
        for c in 0..self.kernel.carry_len() {
            self.carry[c * lanes + to] = old.carry[c * lanes + from];
        }
        let (lt, n) = (self.lag_total, self.n);
        self.ring[to * lt..(to + 1) * lt].copy_from_slice(&old.ring[from * lt..(from + 1) * lt]);
        self.heads[to * n..(to + 1) * n].copy_from_slice(&old.heads[from * n..(from + 1) * n]);
    }
}

/// A copy of a batch's arrays, while its slots are rearranged.
#[derive(Default)]
struct Arrays {
    y: Vec<f64>,
    p: Vec<f64>,
    ring: Vec<f64>,
    heads: Vec<i64>,
    carry: Vec<f64>,
}

impl Arrays {
    /// Becomes a copy of `batch`'s arrays (reusing its own buffers).
    fn copy_from(&mut self, batch: &Batch<'_>) {
        self.y.clone_from(&batch.y);
        self.p.clone_from(&batch.p);
        self.ring.clone_from(&batch.ring);
        self.heads.clone_from(&batch.heads);
        self.carry.clone_from(&batch.carry);
    }
}

/// The run's next step through its own runner (the single-sim path, events and all).
fn one_step(run: &mut StartedRun<'_>) -> crate::error::Result<()> {
    let plan = RunPlan {
        horizon: Horizon::Steps {
            end_step: run.st.step + 1,
            clip_to: None,
        },
        ..run.plan.clone()
    };
    run.runner.run(&mut run.st, &plan, &mut run.rec)
}

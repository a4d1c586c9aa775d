//! Fused native loops: many steps of a fixed-step explicit method in one call, with the
//! method's stages, the model's right-hand side, event conditions, lag rings, the stop
//! condition and recording all in one generated function, and the state in registers.
//!
//! A kernel never does host work. It leaves the loop *before* a step that needs any: an
//! event that fires, a state that would become non-finite, a full recording buffer. The
//! session then runs that one step through the general engine and calls the kernel again.
//! Every step a kernel does take performs exactly the IEEE operations, in the same order, of
//! the general engine (`crate::method::StepForm` describes them), so results are the same
//! bits whichever path took a step.
//!
//! The generated function is `fn(ctx: *mut KernelCtx) -> i64`. Every access it makes is to
//! `ctx`'s fields and the arrays they point at, within the lengths `FusedKernel::run`
//! checks; that is the contract the unsafe call relies on.

use super::code_memory::CodeMemory;

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{types, AbiParam, Block, InstBuilder, Value};
use cranelift_frontend::{FunctionBuilder, Variable};
use cranelift_module::Module;

use super::lower::{mem, offset, truth, Bounds, Frame, Lowerer, Src};
use crate::column::Column;
use crate::error::{Error, Result};
use crate::method::{CarrySlots, Controller, EmbeddedPair, StepForm, PREV_ERR_FLOOR};
use crate::model::compile::CompiledModel;
use crate::model::host::CFunctions;
use crate::model::program::LagSlot;
use crate::model::EventPhase;

/// One recorded column, as a kernel writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecSlot {
    State(usize),
    Aux(usize),
}

/// What a kernel call reports when it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It reached `k_end`.
    Done,
    /// The next step (at the returned `k`) needs the general engine.
    General,
    /// The stop condition holds after the last step taken.
    Stopped,
    /// The last step taken is `hook_k`: the host has per-step work to do there.
    Hook,
    /// A host function returned this non-zero code (the step was not committed). It is
    /// reported as it is, not retried: a retry could see a different answer.
    HostFailed { what: &'static str, code: i32 },
}

/// Names of the host functions, as `HostFailed` reports them.
const HOST_FNS: [&str; 3] = ["right-hand side", "aux", "event condition"];

/// The kernel's view of a session, passed by pointer. Every field is 8 bytes, so the
/// offsets below are those of `#[repr(C)]`.
#[repr(C)]
struct KernelCtx {
    y: *mut f64,
    p: *const f64,
    ring: *mut f64,
    heads: *mut i64,
    carry: *mut f64,
    rec_t: *mut f64,
    /// One pointer per recorded column.
    rec_cols: *const *mut f64,
    t: f64,
    grid_t0: f64,
    dt: f64,
    time_shift: f64,
    k: u64,
    k0: u64,
    k_end: u64,
    hook_k: u64,
    rec_every: u64,
    next_label: u64,
    rec_n: u64,
    rec_cap: u64,
    /// Adaptive forms: the horizon (steps end strictly before it), the proposed step
    /// (updated) and the controller.
    t_end: f64,
    h: f64,
    ctl: *const Controller,
    /// Host models: the argument and result buffers of the C functions, and the event
    /// condition's out-flag.
    cb_y: *mut f64,
    cb_out: *mut f64,
    cb_fires: i64,
    /// The failing host function (index into `HOST_FNS`) and its code.
    cb_what: i64,
    cb_rc: i64,
}

macro_rules! field {
    ($f:ident) => {
        std::mem::offset_of!(KernelCtx, $f) as i32
    };
}

/// A session's arrays and clock as one kernel call reads and updates them.
pub struct KernelIo<'a> {
    pub y: &'a mut [f64],
    pub p: &'a [f64],
    pub ring: &'a mut [f64],
    pub heads: &'a mut [i64],
    /// The method's carried history (`Stepper::fused_carry`).
    pub carry: &'a mut [f64],
    /// Time of the current state (updated).
    pub t: f64,
    pub grid_t0: f64,
    pub dt: f64,
    pub time_shift: f64,
    /// Current step (updated); the kernel stops at `k_end`.
    pub k: u64,
    pub k0: u64,
    pub k_end: u64,
    pub step_shift: u64,
    /// The kernel returns `Exit::Hook` right after taking step `hook_k`.
    pub hook_k: u64,
    pub rec: Option<RecIo<'a>>,
    /// Adaptive forms: no step may end past `t_end` (such a step is left to the general
    /// engine, which interpolates); `h` is the proposed step (updated); `ctl` the knobs.
    pub t_end: f64,
    pub h: f64,
    pub ctl: Controller,
}

/// Recording buffers: samples are written into spare capacity and the lengths raised.
pub struct RecIo<'a> {
    /// Labels are not written: a call's samples are labelled `next_label`, then every
    /// `every` steps (the host stores them as a progression).
    pub t: &'a mut Column,
    /// One column per `RecSlot` of the kernel, in order.
    pub cols: &'a mut [Column],
    pub every: u64,
    /// Label of the next sample (updated).
    pub next_label: u64,
}

type KernelFn = unsafe extern "C" fn(*mut KernelCtx) -> i64;

/// A compiled fused loop for one model, method and recording selection.
pub struct FusedKernel {
    f: KernelFn,
    bounds: Bounds,
    carry_len: usize,
    n_rec: usize,
    /// Length of each host-call buffer (0 for model-language kernels).
    cb_len: usize,
    /// See [`FusedKernel::defers_dense`].
    defers_dense: bool,
    /// The code memory `f` points into, freed with the kernel.
    _code: CodeMemory,
}

impl std::fmt::Debug for FusedKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FusedKernel")
            .field("bounds", &self.bounds)
            .finish_non_exhaustive()
    }
}

/// An adaptive loop over a model-language model without lags writes only the start of
/// each accepted step (state, time, size) into the dense-output carry, and the stepper
/// recomputes the coefficients of the last one after the call
/// ([`crate::stepper::Stepper::finish_fused`]): the stage values are then dead once the
/// error is known, instead of being kept through the controller and stored every step.
/// (Host models keep the full store: recomputing would call the host's functions again.)
fn defers_dense(model: &KernelModel<'_>, spec: &KernelSpec<'_>, bounds: &Bounds) -> bool {
    matches!(spec.form, StepForm::Embedded(_))
        && matches!(model, KernelModel::Programs(_))
        && bounds.lag_total == 0
}

impl FusedKernel {
    /// True when the stepper must finish the carry after a call that took steps
    /// ([`crate::stepper::Stepper::finish_fused`]).
    pub fn defers_dense(&self) -> bool {
        self.defers_dense
    }

    /// Runs steps until `k_end` or an exit; updates `io` to where it stopped.
    pub fn run(&self, io: &mut KernelIo<'_>) -> Exit {
        let b = &self.bounds;
        assert!(
            io.y.len() >= b.n_states
                && io.p.len() >= b.n_params
                && io.ring.len() >= b.lag_total
                && io.heads.len() >= b.n_states
                && io.carry.len() == self.carry_len,
            "fused kernel called with buffers that do not match its model"
        );
        // The columns' write positions: on the stack for the usual few columns (a series of
        // short runs would otherwise allocate this list every call).
        const STACK_COLUMNS: usize = 16;
        let mut stack_ptrs = [std::ptr::null_mut::<f64>(); STACK_COLUMNS];
        let mut heap_ptrs: Vec<*mut f64> = Vec::new();
        let mut ctx = KernelCtx {
            y: io.y.as_mut_ptr(),
            p: io.p.as_ptr(),
            ring: io.ring.as_mut_ptr(),
            heads: io.heads.as_mut_ptr(),
            carry: io.carry.as_mut_ptr(),
            rec_t: std::ptr::null_mut(),
            rec_cols: std::ptr::null(),
            t: io.t,
            grid_t0: io.grid_t0,
            dt: io.dt,
            time_shift: io.time_shift,
            k: io.k,
            k0: io.k0,
            // Leaving at `hook_k` is reaching a nearer end: the host tells them apart.
            k_end: io.k_end.min(io.hook_k),
            hook_k: io.hook_k,
            rec_every: 0,
            next_label: u64::MAX,
            rec_n: 0,
            rec_cap: 0,
            t_end: io.t_end,
            h: io.h,
            ctl: &io.ctl,
            cb_y: std::ptr::null_mut(),
            cb_out: std::ptr::null_mut(),
            cb_fires: 0,
            cb_what: 0,
            cb_rc: 0,
        };
        // Host models' C functions read and write these (a kernel is shared between
        // threads, so each call has its own).
        let mut cb_buf = vec![0.0; 2 * self.cb_len];
        let (cb_y, cb_out) = cb_buf.split_at_mut(self.cb_len);
        ctx.cb_y = cb_y.as_mut_ptr();
        ctx.cb_out = cb_out.as_mut_ptr();
        if let Some(rec) = &mut io.rec {
            assert!(
                rec.cols.len() == self.n_rec && rec.every > 0,
                "fused kernel called with another recording selection"
            );
            let spare = |free: usize| free as u64;
            let mut cap = spare(rec.t.capacity() - rec.t.len());
            let col_ptrs: &mut [*mut f64] = if rec.cols.len() <= STACK_COLUMNS {
                &mut stack_ptrs[..rec.cols.len()]
            } else {
                heap_ptrs.resize(rec.cols.len(), std::ptr::null_mut());
                &mut heap_ptrs
            };
            for (c, ptr) in rec.cols.iter_mut().zip(col_ptrs.iter_mut()) {
                cap = cap.min(spare(c.capacity() - c.len()));
                // SAFETY: `len` is within the allocation; writes go to spare capacity.
                *ptr = unsafe { c.as_mut_ptr().add(c.len()) };
            }
            // SAFETY: as above.
            ctx.rec_t = unsafe { rec.t.as_mut_ptr().add(rec.t.len()) };
            ctx.rec_cols = col_ptrs.as_ptr();
            ctx.rec_every = rec.every;
            // The kernel compares step indices: the label plus the shift.
            ctx.next_label = rec.next_label.saturating_add(io.step_shift);
            ctx.rec_cap = cap;
            // Samples fall on steps next_label, next_label + every, ...: ending the loop at
            // the step of the last one that fits keeps every write inside the buffer.
            let last_fitting = match cap {
                0 => ctx.next_label.saturating_sub(1),
                _ => ctx
                    .next_label
                    .saturating_add((cap - 1).saturating_mul(rec.every)),
            };
            ctx.k_end = ctx.k_end.min(last_fitting);
        }
        // SAFETY: every pointer in `ctx` comes from a live buffer whose length was checked
        // above against what the generated code touches (module docs); the recording
        // pointers have `rec_cap` free slots and the kernel writes at most `rec_cap` samples.
        let code = unsafe { (self.f)(&mut ctx) };
        io.t = ctx.t;
        io.k = ctx.k;
        io.h = ctx.h;
        if let Some(rec) = &mut io.rec {
            let n = ctx.rec_n as usize;
            assert!(
                n as u64 <= ctx.rec_cap,
                "fused kernel overran its recording"
            );
            // SAFETY: the kernel initialised `n` slots past each length (n <= capacity).
            unsafe {
                rec.t.set_len(rec.t.len() + n);
                for c in rec.cols.iter_mut() {
                    c.set_len(c.len() + n);
                }
            }
            rec.next_label = ctx.next_label - io.step_shift;
        }
        match code {
            0 if ctx.k == io.hook_k => Exit::Hook,
            0 => Exit::Done,
            2 => Exit::Stopped,
            3 => Exit::Hook,
            4 => Exit::HostFailed {
                what: HOST_FNS[(ctx.cb_what as usize).min(HOST_FNS.len() - 1)],
                code: ctx.cb_rc as i32,
            },
            _ => Exit::General,
        }
    }
}

/// The model code a kernel runs.
#[derive(Clone, Copy)]
pub enum KernelModel<'a> {
    /// Model-language programs, emitted inline.
    Programs(&'a CompiledModel),
    /// A host model's C functions, called once per evaluation (host models have no lags
    /// and no stop condition; their events are end-phase).
    Host {
        c: CFunctions,
        n_aux: usize,
        n_events: usize,
    },
}

impl KernelModel<'_> {
    fn n_aux(&self) -> usize {
        match self {
            KernelModel::Programs(c) => c.aux.outputs.len(),
            KernelModel::Host { n_aux, .. } => *n_aux,
        }
    }
    fn n_events(&self) -> usize {
        match self {
            KernelModel::Programs(c) => c.events.len(),
            KernelModel::Host { n_events, .. } => *n_events,
        }
    }
}

/// What to build a kernel for.
pub struct KernelSpec<'a> {
    pub form: StepForm,
    /// Phase of each event, in the model's order.
    pub phases: &'a [EventPhase],
    /// Columns to record; `None` builds a kernel that never records.
    pub record: Option<&'a [RecSlot]>,
}

/// Largest model a kernel is built for: beyond it the state no longer fits in registers and
/// the general engine's per-step overhead is small next to the model's own work.
const MAX_STATES: usize = 64;
const MAX_OPS: usize = 4096;

/// Whether a kernel can be built for this model.
pub fn eligible(model: &KernelModel<'_>, n_states: usize) -> bool {
    n_states <= MAX_STATES
        && match model {
            KernelModel::Programs(c) => c.rhs.ops.len() <= MAX_OPS,
            KernelModel::Host { .. } => true,
        }
}

/// Compiles a fused loop.
pub fn build(
    model: KernelModel<'_>,
    layout: &[LagSlot],
    bounds: Bounds,
    spec: &KernelSpec<'_>,
) -> Result<FusedKernel> {
    let n = bounds.n_states;
    if layout.len() != n || spec.phases.len() != model.n_events() {
        return Err(Error::internal(
            "fused kernel: layout does not match the model",
        ));
    }
    let host = matches!(model, KernelModel::Host { .. });
    let has_aux_fn = match model {
        KernelModel::Host { c, .. } => c.aux.is_some(),
        KernelModel::Programs(_) => true,
    };
    if host && (bounds.lag_total > 0 || spec.phases.iter().any(|p| p.in_start())) {
        return Err(Error::internal(
            "fused kernel: host models have no lags or start events",
        ));
    }
    for slot in spec.record.unwrap_or(&[]) {
        let ok = match *slot {
            RecSlot::State(i) => i < n,
            RecSlot::Aux(i) => i < model.n_aux() && has_aux_fn,
        };
        if !ok {
            return Err(Error::internal(
                "fused kernel: recorded column out of range",
            ));
        }
    }
    let carry_len = match spec.form {
        StepForm::Adams(w) => w.len() * n,
        // Dense-output coefficients (5 vectors of n), the step's (t, h), the controller's
        // memory and the rejection count.
        StepForm::Embedded(_) => CarrySlots::of(n).len,
        _ => 0,
    };
    let mut lw = Lowerer::new(layout, bounds.clone())?;
    let (id, mut ctx) = lw.declare_loop()?;
    let mut fctx = std::mem::take(&mut lw.fctx);
    let frontend = lw.module.target_config();
    {
        let b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
        let mut g = Gen {
            lw: &mut lw,
            b,
            model,
            spec,
            n,
            exit: None,
            lp: None,
            host: None,
        };
        g.body()?;
        g.b.seal_all_blocks();
        g.b.finalize(frontend);
    }
    lw.fctx = fctx;
    let code = lw.define_loop(id, &mut ctx)?;
    let deferred = defers_dense(&model, spec, &bounds);
    Ok(FusedKernel {
        // SAFETY: `code` is the finalized function just defined with the signature
        // `fn(*mut KernelCtx) -> i64`.
        f: unsafe { std::mem::transmute::<*const u8, KernelFn>(code) },
        bounds,
        carry_len,
        n_rec: spec.record.map_or(0, <[RecSlot]>::len),
        cb_len: if host { n.max(model.n_aux()).max(1) } else { 0 },
        defers_dense: deferred,
        _code: CodeMemory::new(lw.module),
    })
}

/// The step-size controller's constants inside an adaptive loop.
struct ControlLaw {
    safety: Value,
    min_factor: Value,
    max_factor: Value,
    min_step: Value,
    dt_max: Value,
    /// The PI gain, whether it is on (`beta != 0`) and the error exponent −(1/5 − 3β/4).
    beta: Value,
    pi: Value,
    neg_alpha: Value,
    pow: cranelift_codegen::ir::FuncRef,
}

/// What the PI rule reads besides the error: the previous accepted step's error (floored)
/// and whether an attempt at this step was already rejected.
#[derive(Clone, Copy)]
struct StepHistory {
    prev_err: Value,
    rejected_before: Value,
}

/// Where a verdict goes: the next attempt, the accepted step, or out of the loop.
#[derive(Clone, Copy)]
struct Targets {
    attempt: Block,
    accept: Block,
    exit: Block,
}

/// The adaptive loop's variables and the controller's values (loaded in the entry block).
struct AdaptiveVars {
    /// The next step size.
    hv: Variable,
    /// The last accepted step's last stage, and whether it is valid (first same as last).
    fsal: Vec<Variable>,
    fsal_ok: Variable,
    t_end: Value,
    atol: Value,
    rtol: Value,
    tries: Value,
    carry: Value,
    law: ControlLaw,
}

/// The attempt block's parameters: where the step starts, its size and the tries left.
#[derive(Clone, Copy)]
struct Attempt {
    t: Value,
    h: Value,
    left: Value,
}

/// The blocks of a generated loop.
#[derive(Clone, Copy)]
struct Loop {
    head: Block,
    body: Block,
    exit: Block,
}

/// Loop-carried values of the generated loop.
struct Vars {
    y: Vec<Variable>,
    /// Adams history rows, newest first.
    hist: Vec<Vec<Variable>>,
    t: Variable,
    k: Variable,
    next_label: Variable,
    rec_n: Variable,
}

/// Values loaded once in the entry block.
struct Consts {
    ctx: Value,
    p: Vec<Value>,
    ring: Value,
    heads: Value,
    grid_t0: Value,
    dt: Value,
    k0: Value,
    k_end: Value,
    rec_every: Value,
    shift0: Value,
    shift1: Value,
}

struct Gen<'g, 'a, 'f> {
    lw: &'g mut Lowerer<'a>,
    b: FunctionBuilder<'f>,
    model: KernelModel<'g>,
    spec: &'g KernelSpec<'g>,
    n: usize,
    /// The exit block, once created (host calls that fail leave through it).
    exit: Option<Block>,
    /// The loop's blocks, once opened.
    lp: Option<Loop>,
    /// Host models: (context, parameter pointer, argument buffer, result buffer).
    host: Option<(Value, Value, Value, Value)>,
}

impl Gen<'_, '_, '_> {
    fn load(&mut self, ty: types::Type, base: Value, off: i32) -> Value {
        self.b.ins().load(ty, mem(), base, off)
    }

    fn body(&mut self) -> Result<()> {
        if let StepForm::Embedded(pair) = self.spec.form {
            return self.body_adaptive(pair);
        }
        let (c, v, Loop { head, exit, .. }) = self.open_loop()?;
        let ctx = c.ctx;
        let k = self.enter_loop(&c, &v)?;

        // body: one step.
        let t = self.fixed_time(&c, k);
        let y: Vec<Value> = v.y.iter().map(|&x| self.b.use_var(x)).collect();
        let mut frame = Frame::new(t, Src::Vals(y.clone()), Src::Vals(c.p.clone()), ctx);
        frame.lag_fields = Some((c.ring, c.heads, c.shift0));
        self.events(&mut frame, t, &y, true, exit)?;
        let hist: Vec<Vec<Value>> = v
            .hist
            .iter()
            .map(|row| row.iter().map(|&x| self.b.use_var(x)).collect())
            .collect();
        let y_new = self.step(&mut frame, t, c.dt, &y, &hist)?;
        let finite = self.all_finite(&y_new);
        let cont = self.b.create_block();
        self.exit_unless(finite, exit, 1, cont);
        let k1 = self.b.ins().iadd_imm_u(k, 1);
        let t_new = self.grid_time(&c, k1);
        frame.lag_fields = Some((c.ring, c.heads, c.shift1));
        self.events(&mut frame, t_new, &y_new, false, exit)?;
        frame.lag_fields = Some((c.ring, c.heads, c.shift0));

        // Commit: lag rings, clock, state, history.
        self.commit_lags(&c, &y_new)?;
        for (var, val) in v.y.iter().zip(&y_new) {
            self.b.def_var(*var, *val);
        }
        self.b.def_var(v.k, k1);
        if let StepForm::Adams(_) = self.spec.form {
            let f_new = self.rhs(&mut frame, t_new, y_new.clone())?;
            let mut rows = vec![f_new];
            rows.extend(hist.iter().take(hist.len() - 1).cloned());
            for (vrow, row) in v.hist.iter().zip(&rows) {
                for (var, val) in vrow.iter().zip(row) {
                    self.b.def_var(*var, *val);
                }
            }
        }
        if let Some(slots) = self.spec.record {
            self.record(&mut frame, &c, &v, slots, k1, t_new, &y_new)?;
        }
        self.stop_condition(&mut frame, t_new, &y_new, exit)?;
        self.b.ins().jump(head, &[]);

        // exit: write the carried values back.
        let code = self.close_loop()?;
        let k = self.b.use_var(v.k);
        let t_out = self.fixed_time(&c, k);
        self.b.def_var(v.t, t_out);
        self.epilogue(&c, &v)?;
        self.b.ins().return_(&[code]);
        Ok(())
    }

    /// The entry block (constants and carried variables, `prologue`) and the loop's
    /// blocks. The caller adds its own entry code, then calls `enter_loop`.
    fn open_loop(&mut self) -> Result<(Consts, Vars, Loop)> {
        let entry = self.b.create_block();
        self.b.append_block_params_for_function_params(entry);
        self.b.switch_to_block(entry);
        let ctx = self.b.block_params(entry)[0];
        let (c, v) = self.prologue(ctx)?;
        let l = Loop {
            head: self.b.create_block(),
            body: self.b.create_block(),
            exit: self.b.create_block(),
        };
        self.b.append_block_param(l.exit, types::I64);
        self.exit = Some(l.exit);
        self.lp = Some(l);
        Ok((c, v, l))
    }

    /// Jumps from the entry to the loop head, which leaves at `k_end`, and continues in
    /// the body; returns the step index `k` there.
    fn enter_loop(&mut self, c: &Consts, v: &Vars) -> Result<Value> {
        let l = self
            .lp
            .ok_or_else(|| Error::internal("kernel loop not opened"))?;
        self.b.ins().jump(l.head, &[]);
        self.b.switch_to_block(l.head);
        let k = self.b.use_var(v.k);
        let done = self
            .b
            .ins()
            .icmp(IntCC::UnsignedGreaterThanOrEqual, k, c.k_end);
        self.exit_if(done, l.exit, 0, l.body);
        Ok(k)
    }

    /// Continues in the exit block; returns the exit code.
    fn close_loop(&mut self) -> Result<Value> {
        let l = self
            .lp
            .ok_or_else(|| Error::internal("kernel loop not opened"))?;
        self.b.switch_to_block(l.exit);
        Ok(self.b.block_params(l.exit)[0])
    }

    /// Loads the constants and declares the loop-carried variables.
    fn prologue(&mut self, ctx: Value) -> Result<(Consts, Vars)> {
        let (i64t, f64t) = (types::I64, types::F64);
        let y_ptr = self.load(i64t, ctx, field!(y));
        let p_ptr = self.load(i64t, ctx, field!(p));
        if let KernelModel::Host { .. } = self.model {
            let cb_y = self.load(i64t, ctx, field!(cb_y));
            let cb_out = self.load(i64t, ctx, field!(cb_out));
            self.host = Some((ctx, p_ptr, cb_y, cb_out));
        }
        let p = (0..self.lw.bounds.n_params)
            .map(|i| Ok(self.load(f64t, p_ptr, offset(i)?)))
            .collect::<Result<Vec<_>>>()?;
        let shift0 = self.b.ins().iconst(i64t, 0);
        let shift1 = self.b.ins().iconst(i64t, 1);
        let t = self.load(f64t, ctx, field!(t));
        let k = self.load(i64t, ctx, field!(k));
        let c = Consts {
            ctx,
            p,
            ring: self.load(i64t, ctx, field!(ring)),
            heads: self.load(i64t, ctx, field!(heads)),
            grid_t0: self.load(f64t, ctx, field!(grid_t0)),
            dt: self.load(f64t, ctx, field!(dt)),
            k0: self.load(i64t, ctx, field!(k0)),
            k_end: self.load(i64t, ctx, field!(k_end)),
            rec_every: self.load(i64t, ctx, field!(rec_every)),
            shift0,
            shift1,
        };
        let var = |g: &mut Self, ty, val| {
            let v = g.b.declare_var(ty);
            g.b.def_var(v, val);
            v
        };
        let mut y = Vec::with_capacity(self.n);
        for i in 0..self.n {
            let val = self.load(f64t, y_ptr, offset(i)?);
            y.push(var(self, f64t, val));
        }
        let rows = match self.spec.form {
            StepForm::Adams(w) => w.len(),
            _ => 0,
        };
        let carry = self.load(i64t, ctx, field!(carry));
        let mut hist = Vec::with_capacity(rows);
        for r in 0..rows {
            let mut row = Vec::with_capacity(self.n);
            for i in 0..self.n {
                let val = self.load(f64t, carry, offset(r * self.n + i)?);
                row.push(var(self, f64t, val));
            }
            hist.push(row);
        }
        let next_label = self.load(i64t, ctx, field!(next_label));
        let rec_n = self.load(i64t, ctx, field!(rec_n));
        let v = Vars {
            y,
            hist,
            t: var(self, f64t, t),
            k: var(self, i64t, k),
            next_label: var(self, i64t, next_label),
            rec_n: var(self, i64t, rec_n),
        };
        Ok((c, v))
    }

    fn epilogue(&mut self, c: &Consts, v: &Vars) -> Result<()> {
        let i64t = types::I64;
        let y_ptr = self.load(i64t, c.ctx, field!(y));
        for (i, var) in v.y.iter().enumerate() {
            let val = self.b.use_var(*var);
            self.b.ins().store(mem(), val, y_ptr, offset(i)?);
        }
        let carry = self.load(i64t, c.ctx, field!(carry));
        for (r, row) in v.hist.iter().enumerate() {
            for (i, var) in row.iter().enumerate() {
                let val = self.b.use_var(*var);
                self.b
                    .ins()
                    .store(mem(), val, carry, offset(r * self.n + i)?);
            }
        }
        for (var, off) in [
            (v.t, field!(t)),
            (v.k, field!(k)),
            (v.next_label, field!(next_label)),
            (v.rec_n, field!(rec_n)),
        ] {
            let val = self.b.use_var(var);
            self.b.ins().store(mem(), val, c.ctx, off);
        }
        Ok(())
    }

    /// Branches to `exit` with `code` when `cond` holds; continues in `next` otherwise.
    fn exit_if(&mut self, cond: Value, exit: Block, code: i64, next: Block) {
        let out = self.exit_path(exit, code);
        self.b.ins().brif(cond, out, &[], next, &[]);
        self.b.switch_to_block(next);
    }

    fn exit_unless(&mut self, cond: Value, exit: Block, code: i64, next: Block) {
        let out = self.exit_path(exit, code);
        self.b.ins().brif(cond, next, &[], out, &[]);
        self.b.switch_to_block(next);
    }

    /// A block that jumps to `exit` with `code`: the code is set on the way out only, not
    /// before every branch of the loop.
    fn exit_path(&mut self, exit: Block, code: i64) -> Block {
        let here = self.b.current_block().expect("emitting into a block");
        let out = self.b.create_block();
        self.b.switch_to_block(out);
        let code = self.b.ins().iconst(types::I64, code);
        self.b.ins().jump(exit, &[code.into()]);
        self.b.switch_to_block(here);
        out
    }

    /// `grid_t0 + (k - k0) as f64 * dt`, as `SessionState::grid_time` computes it. A run
    /// spans fewer than 2^53 steps (`fixed_horizon`), so the signed conversion (one
    /// instruction) gives the same value as Rust's `u64 as f64`.
    fn grid_time(&mut self, c: &Consts, k: Value) -> Value {
        let d = self.b.ins().isub(k, c.k0);
        let d = self.b.ins().fcvt_from_sint(types::F64, d);
        let m = self.b.ins().fmul(d, c.dt);
        self.b.ins().fadd(c.grid_t0, m)
    }

    /// The time of step `k` of a fixed-step loop: the entry time before the first step, the
    /// grid's after it (what the general engine's commit sets). Not carried through the
    /// loop, so a model that does not read `t` pays nothing for it.
    fn fixed_time(&mut self, c: &Consts, k: Value) -> Value {
        let on_grid = self.grid_time(c, k);
        // Read where used (the loop never writes them) rather than kept in a register
        // through the loop, where they would push the state out of registers.
        let t_in = self.load(types::F64, c.ctx, field!(t));
        let k_in = self.load(types::I64, c.ctx, field!(k));
        let at_entry = self.b.ins().icmp(IntCC::Equal, k, k_in);
        self.b.ins().select(at_entry, t_in, on_grid)
    }

    /// Leaves the loop (for the general engine) when an event of this phase would fire on
    /// `(t, y)`; the frame's lag shift is the caller's.
    fn events(
        &mut self,
        frame: &mut Frame,
        t: Value,
        y: &[Value],
        start: bool,
        exit: Block,
    ) -> Result<()> {
        for (i, phase) in self.spec.phases.iter().enumerate() {
            let applies = if start {
                phase.in_start()
            } else {
                phase.in_end()
            };
            if !applies {
                continue;
            }
            let fires = match self.model {
                KernelModel::Programs(c) => {
                    frame.t = t;
                    frame.y = Src::Vals(y.to_vec());
                    let cond = self.lw.outputs(&mut self.b, frame, &c.events[i].cond)?[0];
                    truth(&mut self.b, cond)
                }
                KernelModel::Host { c, .. } => {
                    let Some(f) = c.event_cond else { continue };
                    self.host_event(f as usize, c.user_data as usize, i, t, y)?
                }
            };
            let next = self.b.create_block();
            self.exit_if(fires, exit, 1, next);
        }
        Ok(())
    }

    fn rhs(&mut self, frame: &mut Frame, t: Value, y: Vec<Value>) -> Result<Vec<Value>> {
        match self.model {
            KernelModel::Programs(c) => {
                frame.t = t;
                frame.y = Src::Vals(y);
                self.lw.outputs(&mut self.b, frame, &c.rhs)
            }
            KernelModel::Host { c, .. } => {
                self.host_eval(c.rhs as usize, 0, c.user_data as usize, t, &y, self.n)
            }
        }
    }

    fn aux(&mut self, frame: &mut Frame, t: Value, y: &[Value]) -> Result<Vec<Value>> {
        match self.model {
            KernelModel::Programs(c) => {
                frame.t = t;
                frame.y = Src::Vals(y.to_vec());
                self.lw.outputs(&mut self.b, frame, &c.aux)
            }
            KernelModel::Host { c, n_aux, .. } => match c.aux {
                Some(f) => self.host_eval(f as usize, 1, c.user_data as usize, t, y, n_aux),
                None => Err(Error::internal("fused kernel: no aux function")),
            },
        }
    }

    /// Stores `y` into the host argument buffer; returns (context, parameters, argument
    /// buffer, result buffer).
    fn host_args(&mut self, y: &[Value]) -> Result<(Value, Value, Value, Value)> {
        let (ctx, p, cb_y, cb_out) = self
            .host
            .ok_or_else(|| Error::internal("fused kernel: host buffers missing"))?;
        for (i, &v) in y.iter().enumerate() {
            self.b.ins().store(mem(), v, cb_y, offset(i)?);
        }
        Ok((ctx, p, cb_y, cb_out))
    }

    /// Leaves with `HostFailed` when a host call (`HOST_FNS[what]`) returned non-zero.
    fn exit_on_code(&mut self, rc: Value, what: i64) -> Result<()> {
        let exit = self
            .exit
            .ok_or_else(|| Error::internal("fused kernel: no exit block yet"))?;
        let (ctx, ..) = self
            .host
            .ok_or_else(|| Error::internal("fused kernel: host buffers missing"))?;
        let failed = self.b.ins().icmp_imm_u(IntCC::NotEqual, rc, 0);
        let fail = self.b.create_block();
        let next = self.b.create_block();
        self.b.ins().brif(failed, fail, &[], next, &[]);
        self.b.switch_to_block(fail);
        let rc64 = self.b.ins().sextend(types::I64, rc);
        self.b.ins().store(mem(), rc64, ctx, field!(cb_rc));
        let w = self.b.ins().iconst(types::I64, what);
        self.b.ins().store(mem(), w, ctx, field!(cb_what));
        let code = self.b.ins().iconst(types::I64, 4);
        self.b.ins().jump(exit, &[code.into()]);
        self.b.switch_to_block(next);
        Ok(())
    }

    /// One call `f(t, y, p, out, user_data)` of host function `HOST_FNS[what]`; returns the
    /// `n_out` results.
    #[allow(clippy::too_many_arguments)]
    fn host_eval(
        &mut self,
        f: usize,
        what: i64,
        user_data: usize,
        t: Value,
        y: &[Value],
        n_out: usize,
    ) -> Result<Vec<Value>> {
        let (i64t, f64t) = (types::I64, types::F64);
        let (_, p, cb_y, cb_out) = self.host_args(y)?;
        let mut sig = self.lw.module.make_signature();
        sig.params.push(AbiParam::new(f64t));
        for _ in 0..4 {
            sig.params.push(AbiParam::new(i64t));
        }
        sig.returns.push(AbiParam::new(types::I32));
        let sig = self.b.import_signature(sig);
        let callee = self.b.ins().iconst(i64t, f as i64);
        let ud = self.b.ins().iconst(i64t, user_data as i64);
        let call = self
            .b
            .ins()
            .call_indirect(sig, callee, &[t, cb_y, p, cb_out, ud]);
        let rc = self.b.inst_results(call)[0];
        self.exit_on_code(rc, what)?;
        (0..n_out)
            .map(|i| Ok(self.b.ins().load(f64t, mem(), cb_out, offset(i)?)))
            .collect()
    }

    /// One call `f(event, t, y, p, &fires, user_data)`; returns `fires != 0`.
    fn host_event(
        &mut self,
        f: usize,
        user_data: usize,
        event: usize,
        t: Value,
        y: &[Value],
    ) -> Result<Value> {
        let (i64t, f64t) = (types::I64, types::F64);
        let (ctx, p, cb_y, _) = self.host_args(y)?;
        let mut sig = self.lw.module.make_signature();
        sig.params.push(AbiParam::new(i64t));
        sig.params.push(AbiParam::new(f64t));
        for _ in 0..4 {
            sig.params.push(AbiParam::new(i64t));
        }
        sig.returns.push(AbiParam::new(types::I32));
        let sig = self.b.import_signature(sig);
        let callee = self.b.ins().iconst(i64t, f as i64);
        let ud = self.b.ins().iconst(i64t, user_data as i64);
        let ev = self.b.ins().iconst(i64t, event as i64);
        let zero = self.b.ins().iconst(types::I32, 0);
        self.b.ins().store(mem(), zero, ctx, field!(cb_fires));
        let fires_at = self.b.ins().iadd_imm_u(ctx, i64::from(field!(cb_fires)));
        let call = self
            .b
            .ins()
            .call_indirect(sig, callee, &[ev, t, cb_y, p, fires_at, ud]);
        let rc = self.b.inst_results(call)[0];
        self.exit_on_code(rc, 2)?;
        let fires = self.b.ins().load(types::I32, mem(), ctx, field!(cb_fires));
        Ok(self.b.ins().icmp_imm_u(IntCC::NotEqual, fires, 0))
    }

    /// `y + h (0 + Σ w_i v_i)` per state (zero weights skipped when `skip_zero`), the
    /// general engine's arithmetic, evaluated with a shorter dependency chain but the same
    /// bits as `y0 + h Σ' w_i v_i`, where `y0 = y + 0` (given by the caller) and `Σ'` is the
    /// sum without the leading `0 +` and with `1·v` taken as `v`. Why the bits agree, for
    /// `h > 0` (the kernel only runs with a positive step):
    /// - `1·v` is `v` (a signalling NaN comes out quiet, which the next operation does anyway).
    /// - `0 + x` is `x` except that `-0` becomes `+0`; so `Σ'` equals the general sum `S`
    ///   except that `Σ'` may be `-0` where `S` is `+0` (`S` is never `-0`: a sum is `-0` only
    ///   when both operands are, and `S` starts from `+0`).
    /// - `y0` equals `y` except that `-0` becomes `+0`. When `y ≠ 0`, `y0 + q = y + q` for
    ///   `q = ±0`, and for `q ≠ 0` the two products are equal. When `y = ±0`: the general
    ///   result is `y + h·S`; `h·S` is `+0` or non-zero (never `-0`), so it is `+0` or `h·S`;
    ///   ours is `+0 + h·Σ'`, also `+0` or `h·S`.
    /// - NaN payloads propagate through the same operand positions.
    fn combine(
        &mut self,
        y0: &[Value],
        h: Value,
        terms: &[(f64, &Vec<Value>)],
        skip_zero: bool,
    ) -> Vec<Value> {
        combine(&mut self.b, y0, h, terms, skip_zero, |b, c| {
            b.ins().f64const(c)
        })
    }

    /// The proposed state after one step from `(t, y)`.
    fn step(
        &mut self,
        frame: &mut Frame,
        t: Value,
        h: Value,
        y: &[Value],
        hist: &[Vec<Value>],
    ) -> Result<Vec<Value>> {
        // `y + 0` (see `combine`), once per step for every stage.
        let zero = self.b.ins().f64const(0.0);
        let y0: Vec<Value> = y.iter().map(|&v| self.b.ins().fadd(v, zero)).collect();
        match self.spec.form {
            StepForm::Map => self.rhs(frame, t, y.to_vec()),
            StepForm::Erk(tab) => {
                let mut ks: Vec<Vec<Value>> = Vec::with_capacity(tab.b.len());
                for (i, row) in tab.a.iter().enumerate() {
                    let k = if i == 0 {
                        self.rhs(frame, t, y.to_vec())?
                    } else {
                        let terms: Vec<(f64, &Vec<Value>)> = row.iter().copied().zip(&ks).collect();
                        let ys = self.combine(&y0, h, &terms, true);
                        let c = self.b.ins().f64const(tab.c[i]);
                        let ch = self.b.ins().fmul(c, h);
                        let ti = self.b.ins().fadd(t, ch);
                        self.rhs(frame, ti, ys)?
                    };
                    ks.push(k);
                }
                let terms: Vec<(f64, &Vec<Value>)> = tab.b.iter().copied().zip(&ks).collect();
                Ok(self.combine(&y0, h, &terms, true))
            }
            StepForm::Adams(w) => {
                let terms: Vec<(f64, &Vec<Value>)> = w.iter().copied().zip(hist).collect();
                Ok(self.combine(&y0, h, &terms, false))
            }
            StepForm::Embedded(_) => Err(Error::internal("an embedded pair has no fixed step")),
        }
    }

    /// The stages of `tab` from `(t, y)` with step `h`: every `k_i`, and the argument of
    /// the last stage (for a first-same-as-last pair, the new state).
    fn stages(
        &mut self,
        frame: &mut Frame,
        tab: &crate::method::Tableau,
        t: Value,
        h: Value,
        y: &[Value],
        k0: Option<&[Value]>,
    ) -> Result<(Vec<Vec<Value>>, Vec<Value>)> {
        let zero = self.b.ins().f64const(0.0);
        let y0: Vec<Value> = y.iter().map(|&v| self.b.ins().fadd(v, zero)).collect();
        let mut ks: Vec<Vec<Value>> = Vec::with_capacity(tab.a.len());
        let mut last = y.to_vec();
        for (i, row) in tab.a.iter().enumerate() {
            let k = if i == 0 {
                match k0 {
                    Some(k0) => k0.to_vec(),
                    None => self.rhs(frame, t, y.to_vec())?,
                }
            } else {
                let terms: Vec<(f64, &Vec<Value>)> = row.iter().copied().zip(&ks).collect();
                last = self.combine(&y0, h, &terms, true);
                let c = self.b.ins().f64const(tab.c[i]);
                let ch = self.b.ins().fmul(c, h);
                let ti = self.b.ins().fadd(t, ch);
                self.rhs(frame, ti, last.clone())?
            };
            ks.push(k);
        }
        Ok((ks, last))
    }

    /// `0 + Σ_j w_j k_jm` (zero weights skipped), the general engine's order.
    fn weighted(&mut self, w: &[f64], ks: &[Vec<Value>], m: usize) -> Value {
        let mut acc = self.b.ins().f64const(0.0);
        for (wj, k) in w.iter().zip(ks) {
            if *wj != 0.0 {
                let c = self.b.ins().f64const(*wj);
                let p = self.b.ins().fmul(c, k[m]);
                acc = self.b.ins().fadd(acc, p);
            }
        }
        acc
    }

    /// The error norm of an attempt (see `StepForm::Embedded`).
    #[allow(clippy::too_many_arguments)]
    fn error_norm(
        &mut self,
        pair: &EmbeddedPair,
        ks: &[Vec<Value>],
        y: &[Value],
        y5: &[Value],
        h: Value,
        atol: Value,
        rtol: Value,
    ) -> Value {
        let mut sum = self.b.ins().f64const(0.0);
        for m in 0..y.len() {
            let e = self.weighted(pair.err, ks, m);
            let a = self.b.ins().fabs(y[m]);
            let b5 = self.b.ins().fabs(y5[m]);
            // f64::max of two finite non-negative values.
            let gt = self.b.ins().fcmp(FloatCC::GreaterThan, b5, a);
            let big = self.b.ins().select(gt, b5, a);
            let rb = self.b.ins().fmul(rtol, big);
            let scale = self.b.ins().fadd(atol, rb);
            let he = self.b.ins().fmul(h, e);
            let r = self.b.ins().fdiv(he, scale);
            let rr = self.b.ins().fmul(r, r);
            sum = self.b.ins().fadd(sum, rr);
        }
        let n = self.b.ins().f64const(y.len() as f64);
        let mean = self.b.ins().fdiv(sum, n);
        self.b.ins().sqrt(mean)
    }

    /// Stores the dense-output coefficients and span of an accepted step into the carry.
    #[allow(clippy::too_many_arguments)]
    fn store_dense(
        &mut self,
        pair: &EmbeddedPair,
        ks: &[Vec<Value>],
        y: &[Value],
        y5: &[Value],
        t: Value,
        h: Value,
        carry: Value,
    ) -> Result<()> {
        let n = y.len();
        let last = ks.len() - 1;
        for m in 0..n {
            let diff = self.b.ins().fsub(y5[m], y[m]);
            let hk0 = self.b.ins().fmul(h, ks[0][m]);
            let bspl = self.b.ins().fsub(hk0, diff);
            let acc = self.weighted(pair.dense, ks, m);
            let hk6 = self.b.ins().fmul(h, ks[last][m]);
            let d3 = self.b.ins().fsub(diff, hk6);
            let d3 = self.b.ins().fsub(d3, bspl);
            let d4 = self.b.ins().fmul(h, acc);
            for (row, v) in [y[m], diff, bspl, d3, d4].into_iter().enumerate() {
                self.b.ins().store(mem(), v, carry, offset(row * n + m)?);
            }
        }
        self.b.ins().store(mem(), t, carry, offset(5 * n)?);
        self.b.ins().store(mem(), h, carry, offset(5 * n + 1)?);
        Ok(())
    }

    /// Stores where an accepted step started (see `defers_dense`): the first dense row is
    /// the start state, the span its time and size.
    fn store_step_start(&mut self, y: &[Value], t: Value, h: Value, carry: Value) -> Result<()> {
        let n = y.len();
        for (m, v) in y.iter().enumerate() {
            self.b.ins().store(mem(), *v, carry, offset(m)?);
        }
        self.b.ins().store(mem(), t, carry, offset(5 * n)?);
        self.b.ins().store(mem(), h, carry, offset(5 * n + 1)?);
        Ok(())
    }

    /// The adaptive loop: accepted steps strictly inside the horizon.
    fn body_adaptive(&mut self, pair: &'static EmbeddedPair) -> Result<()> {
        let (c, v, Loop { head, exit, .. }) = self.open_loop()?;
        let a = self.adaptive_vars(&c)?;
        let f64t = types::F64;
        let attempt = self.b.create_block();
        let a_h = self.b.append_block_param(attempt, f64t);
        let a_left = self.b.append_block_param(attempt, types::I64);
        let accept = self.b.create_block();
        let h_next = self.b.append_block_param(accept, f64t);
        let k = self.enter_loop(&c, &v)?;
        let (mut frame, t, y, k0) = self.adaptive_step_start(&c, &v, &a, exit, attempt)?;

        // attempt(h, tries left): the stages, the error norm and the controller's verdict.
        self.b.switch_to_block(attempt);
        let step = Attempt {
            t,
            h: a_h,
            left: a_left,
        };
        let (ks, y5, err) = self.adaptive_attempt(pair, &mut frame, &a, step, &y, &k0, exit)?;
        let rejected_before = self.b.ins().icmp(IntCC::NotEqual, a_left, a.tries);
        let prev_err = self.load(f64t, a.carry, offset(CarrySlots::of(self.n).prev_err)?);
        let history = StepHistory {
            prev_err,
            rejected_before,
        };
        let targets = Targets {
            attempt,
            accept,
            exit,
        };
        self.judge(&a.law, err, a_h, a_left, history, targets);

        // accept: the step ends inside the horizon and fires no event, or the general
        // engine takes it.
        self.b.switch_to_block(accept);
        let t_new = self.b.ins().fadd(t, a_h);
        let past = self.b.ins().fcmp(FloatCC::GreaterThan, t_new, a.t_end);
        let next = self.b.create_block();
        self.exit_if(past, exit, 1, next);
        frame.lag_fields = Some((c.ring, c.heads, c.shift1));
        self.events(&mut frame, t_new, &y5, false, exit)?;
        frame.lag_fields = Some((c.ring, c.heads, c.shift0));
        let h_ok = self.all_finite(&[h_next]);
        let next = self.b.create_block();
        self.exit_unless(h_ok, exit, 1, next);
        let k1 = self.b.ins().iadd_imm_u(k, 1);
        self.commit_lags(&c, &y5)?;
        for (var, val) in v.y.iter().zip(&y5) {
            self.b.def_var(*var, *val);
        }
        self.b.def_var(v.k, k1);
        self.b.def_var(v.t, t_new);
        self.b.def_var(a.hv, h_next);
        self.carry_fsal(&a, &ks);
        self.note_accepted(err, a.tries, a_left, a.carry)?;
        if defers_dense(&self.model, self.spec, &self.lw.bounds) {
            self.store_step_start(&y, t, a_h, a.carry)?;
        } else {
            self.store_dense(pair, &ks, &y, &y5, t, a_h, a.carry)?;
        }
        if let Some(slots) = self.spec.record {
            self.record(&mut frame, &c, &v, slots, k1, t_new, &y5)?;
        }
        self.stop_condition(&mut frame, t_new, &y5, exit)?;
        self.b.ins().jump(head, &[]);

        let code = self.close_loop()?;
        self.epilogue(&c, &v)?;
        let h = self.b.use_var(a.hv);
        self.b.ins().store(mem(), h, c.ctx, field!(h));
        self.b.ins().return_(&[code]);
        Ok(())
    }

    /// The adaptive loop's variables (step size, the carried last stage) and the
    /// controller's values, loaded in the entry block.
    fn adaptive_vars(&mut self, c: &Consts) -> Result<AdaptiveVars> {
        let (i64t, f64t) = (types::I64, types::F64);
        let ctx = c.ctx;
        let h_init = self.load(f64t, ctx, field!(h));
        let hv = self.b.declare_var(f64t);
        self.b.def_var(hv, h_init);
        let zero_f = self.b.ins().f64const(0.0);
        let fsal: Vec<Variable> = (0..self.n)
            .map(|_| {
                let v = self.b.declare_var(f64t);
                self.b.def_var(v, zero_f);
                v
            })
            .collect();
        let fsal_ok = self.b.declare_var(i64t);
        let no = self.b.ins().iconst(i64t, 0);
        self.b.def_var(fsal_ok, no);
        let t_end = self.load(f64t, ctx, field!(t_end));
        let ctl = self.load(i64t, ctx, field!(ctl));
        let atol = self.load(f64t, ctl, std::mem::offset_of!(Controller, atol) as i32);
        let rtol = self.load(f64t, ctl, std::mem::offset_of!(Controller, rtol) as i32);
        let tries = self.load(i64t, ctl, std::mem::offset_of!(Controller, tries) as i32);
        let carry = self.load(i64t, ctx, field!(carry));
        let law = self.control_law(ctl)?;
        Ok(AdaptiveVars {
            hv,
            fsal,
            fsal_ok,
            t_end,
            atol,
            rtol,
            tries,
            carry,
            law,
        })
    }

    /// The head of a step: leave when the horizon is reached, check events, take the first
    /// stage, and jump to the first attempt (or leave when it would end past `t_end`: the
    /// general engine takes the run's last step anyway).
    #[allow(clippy::type_complexity)]
    fn adaptive_step_start(
        &mut self,
        c: &Consts,
        v: &Vars,
        a: &AdaptiveVars,
        exit: Block,
        attempt: Block,
    ) -> Result<(Frame, Value, Vec<Value>, Vec<Value>)> {
        let t = self.b.use_var(v.t);
        let inside = self.b.ins().fcmp(FloatCC::LessThan, t, a.t_end);
        let go = self.b.create_block();
        self.exit_unless(inside, exit, 0, go);
        let y: Vec<Value> = v.y.iter().map(|&x| self.b.use_var(x)).collect();
        let mut frame = Frame::new(t, Src::Vals(y.clone()), Src::Vals(c.p.clone()), c.ctx);
        frame.lag_fields = Some((c.ring, c.heads, c.shift0));
        self.events(&mut frame, t, &y, true, exit)?;
        // The first stage f(t, y) is the same for every attempt of the step; for a model
        // without lags it is also the last stage of the previous step (first same as last:
        // f(t + 1·h, y5) with y5 the new state), which the loop carries.
        let k0 = self.first_stage(&mut frame, t, &y, &a.fsal, a.fsal_ok)?;
        let h_in = self.b.use_var(a.hv);
        // `Controller::first_step`.
        let h0 = self.rust_min(h_in, a.law.dt_max);
        let t_try = self.b.ins().fadd(t, h0);
        let crossing = self.b.ins().fcmp(FloatCC::GreaterThan, t_try, a.t_end);
        let inside = self.b.create_block();
        self.exit_if(crossing, exit, 1, inside);
        self.b.ins().jump(attempt, &[h0.into(), a.tries.into()]);
        Ok((frame, t, y, k0))
    }

    /// One attempt at the step: leave when no tries are left or h is not positive, then the
    /// stages, the error norm, and leave when anything is not finite.
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    fn adaptive_attempt(
        &mut self,
        pair: &'static EmbeddedPair,
        frame: &mut Frame,
        a: &AdaptiveVars,
        step: Attempt,
        y: &[Value],
        k0: &[Value],
        exit: Block,
    ) -> Result<(Vec<Vec<Value>>, Vec<Value>, Value)> {
        let some_left = self.b.ins().icmp_imm_u(IntCC::NotEqual, step.left, 0);
        let zero = self.zero();
        let positive = self.b.ins().fcmp(FloatCC::GreaterThan, step.h, zero);
        let ok = self.b.ins().band(some_left, positive);
        let next = self.b.create_block();
        self.exit_unless(ok, exit, 1, next);
        let (ks, y5) = self.stages(frame, &pair.tab, step.t, step.h, y, Some(k0))?;
        let err = self.error_norm(pair, &ks, y, &y5, step.h, a.atol, a.rtol);
        let finite = self.attempt_finite(pair, &ks, &y5, err);
        let next = self.b.create_block();
        self.exit_unless(finite, exit, 1, next);
        Ok((ks, y5, err))
    }

    /// An accepted step's last stage is the next step's first (for a model without lags).
    fn carry_fsal(&mut self, a: &AdaptiveVars, ks: &[Vec<Value>]) {
        if self.lw.bounds.lag_total != 0 {
            return;
        }
        let last = ks.last().expect("an embedded pair has stages");
        for (var, val) in a.fsal.iter().zip(last) {
            self.b.def_var(*var, *val);
        }
        let one = self.b.ins().iconst(types::I64, 1);
        self.b.def_var(a.fsal_ok, one);
    }

    /// The controller's constants, loaded once per call.
    fn control_law(&mut self, ctl: Value) -> Result<ControlLaw> {
        let f64t = types::F64;
        let field = |o: usize| o as i32;
        let pow = super::shims::binary(crate::model::program::Fn2::Pow)
            .ok_or_else(|| Error::internal("pow has no shim"))?
            .0;
        let beta = self.load(f64t, ctl, field(std::mem::offset_of!(Controller, beta)));
        let zero = self.zero();
        // `beta != 0.0` (true for NaN, as in Rust) and `-(0.2 - 0.75 * beta)`.
        let pi = self.b.ins().fcmp(FloatCC::NotEqual, beta, zero);
        let (c02, c075) = (self.b.ins().f64const(0.2), self.b.ins().f64const(0.75));
        let b075 = self.b.ins().fmul(c075, beta);
        let alpha = self.b.ins().fsub(c02, b075);
        let neg_alpha = self.b.ins().fneg(alpha);
        Ok(ControlLaw {
            safety: self.load(f64t, ctl, field(std::mem::offset_of!(Controller, safety))),
            min_factor: self.load(
                f64t,
                ctl,
                field(std::mem::offset_of!(Controller, min_factor)),
            ),
            max_factor: self.load(
                f64t,
                ctl,
                field(std::mem::offset_of!(Controller, max_factor)),
            ),
            min_step: self.load(f64t, ctl, field(std::mem::offset_of!(Controller, min_step))),
            dt_max: self.load(f64t, ctl, field(std::mem::offset_of!(Controller, dt_max))),
            beta,
            pi,
            neg_alpha,
            pow: self
                .lw
                .import_symbol(&mut self.b, pow, &[f64t, f64t], &[f64t])?,
        })
    }

    /// `Controller::judge` as instructions — the same IEEE operations, the same `powf` (the
    /// interpreter's, through its shim) and `f64::min`/`max`/`clamp`'s NaN rules — so a
    /// fused step is accepted or retried exactly as the general engine decides, without a
    /// call that would force every live value out of registers. Jumps to `accept(h_next)`,
    /// back to `attempt(h, tries - 1)`, or leaves with code 1 when the step would fall below
    /// `min_step` (the general engine reports it).
    fn judge(
        &mut self,
        law: &ControlLaw,
        err: Value,
        h: Value,
        left: Value,
        history: StepHistory,
        to: Targets,
    ) {
        let f64t = types::F64;
        let one = self.b.ins().f64const(1.0);
        let small = self.b.ins().fcmp(FloatCC::LessThanOrEqual, err, one);
        let floor = self.b.ins().fcmp(FloatCC::LessThanOrEqual, h, law.min_step);
        let accepted = self.b.ins().bor(small, floor);
        let (grow, shrink) = (self.b.create_block(), self.b.create_block());
        self.b.ins().brif(accepted, grow, &[], shrink, &[]);

        self.b.switch_to_block(grow);
        let zero = self.zero();
        let positive = self.b.ins().fcmp(FloatCC::GreaterThan, err, zero);
        let (scaled, factor) = (self.b.create_block(), self.b.create_block());
        let f = self.b.append_block_param(factor, f64t);
        self.b
            .ins()
            .brif(positive, scaled, &[], factor, &[law.max_factor.into()]);
        self.b.switch_to_block(scaled);
        let (classic, pi) = (self.b.create_block(), self.b.create_block());
        self.b.ins().brif(law.pi, pi, &[], classic, &[]);
        self.b.switch_to_block(classic);
        let e = self.b.ins().f64const(-0.2);
        let call = self.b.ins().call(law.pow, &[err, e]);
        let p = self.b.inst_results(call)[0];
        let raw = self.b.ins().fmul(law.safety, p);
        let clamped = self.clamp_factor(law, raw);
        self.b.ins().jump(factor, &[clamped.into()]);
        self.b.switch_to_block(pi);
        let call = self.b.ins().call(law.pow, &[err, law.neg_alpha]);
        let p = self.b.inst_results(call)[0];
        let call = self.b.ins().call(law.pow, &[history.prev_err, law.beta]);
        let q = self.b.inst_results(call)[0];
        let raw = self.b.ins().fmul(law.safety, p);
        let raw = self.b.ins().fmul(raw, q);
        let clamped = self.clamp_factor(law, raw);
        self.b.ins().jump(factor, &[clamped.into()]);
        self.b.switch_to_block(factor);
        // The PI rule does not grow a step right after a rejection: `factor.min(1.0)`.
        let capped = self.rust_min(f, one);
        let no_growth = self.b.ins().band(law.pi, history.rejected_before);
        let f = self.b.ins().select(no_growth, capped, f);
        let grown = self.b.ins().fmul(h, f);
        let h_next = self.rust_min(grown, law.dt_max);
        self.b.ins().jump(to.accept, &[h_next.into()]);

        self.b.switch_to_block(shrink);
        let classic_e = self.b.ins().f64const(-0.25);
        let e = self.b.ins().select(law.pi, law.neg_alpha, classic_e);
        let call = self.b.ins().call(law.pow, &[err, e]);
        let p = self.b.inst_results(call)[0];
        let raw = self.b.ins().fmul(law.safety, p);
        let f = self.rust_max(law.min_factor, raw);
        let h_retry = self.b.ins().fmul(h, f);
        let too_small = self.b.ins().fcmp(FloatCC::LessThan, h_retry, law.min_step);
        let retry = self.b.create_block();
        self.exit_if(too_small, to.exit, 1, retry);
        let left = self.b.ins().iadd_imm_s(left, -1);
        self.b
            .ins()
            .jump(to.attempt, &[h_retry.into(), left.into()]);
    }

    /// `f64::clamp(raw, min_factor, max_factor)`: below min -> min, then above max -> max
    /// (NaN stays).
    fn clamp_factor(&mut self, law: &ControlLaw, raw: Value) -> Value {
        let below = self.b.ins().fcmp(FloatCC::LessThan, raw, law.min_factor);
        let lo = self.b.ins().select(below, law.min_factor, raw);
        let above = self.b.ins().fcmp(FloatCC::GreaterThan, lo, law.max_factor);
        self.b.ins().select(above, law.max_factor, lo)
    }

    /// `Rk45::note_accepted`: the accepted step's error, floored, becomes the controller's
    /// memory, and the attempts it rejected (`tries - left`) are counted.
    fn note_accepted(&mut self, err: Value, tries: Value, left: Value, carry: Value) -> Result<()> {
        let slots = CarrySlots::of(self.n);
        let floor = self.b.ins().f64const(PREV_ERR_FLOOR);
        let prev = self.rust_max(err, floor);
        self.b
            .ins()
            .store(mem(), prev, carry, offset(slots.prev_err)?);
        let count = self.load(types::F64, carry, offset(slots.rejected)?);
        let rejected = self.b.ins().isub(tries, left);
        let rejected = self.b.ins().fcvt_from_uint(types::F64, rejected);
        let count = self.b.ins().fadd(count, rejected);
        self.b
            .ins()
            .store(mem(), count, carry, offset(slots.rejected)?);
        Ok(())
    }

    /// `f64::min(a, b)`: the smaller, or the other one when one is NaN.
    fn rust_min(&mut self, a: Value, b: Value) -> Value {
        let less = self.b.ins().fcmp(FloatCC::LessThan, b, a);
        let a_nan = self.b.ins().fcmp(FloatCC::Unordered, a, a);
        let take_b = self.b.ins().bor(less, a_nan);
        self.b.ins().select(take_b, b, a)
    }

    /// `f64::max(a, b)`: the larger, or the other one when one is NaN.
    fn rust_max(&mut self, a: Value, b: Value) -> Value {
        let greater = self.b.ins().fcmp(FloatCC::GreaterThan, b, a);
        let a_nan = self.b.ins().fcmp(FloatCC::Unordered, a, a);
        let take_b = self.b.ins().bor(greater, a_nan);
        self.b.ins().select(take_b, b, a)
    }

    /// `f(t, y)`, or the carried last stage of the previous step when it is valid (only
    /// models without lags carry it: their right-hand side reads nothing that a commit
    /// changes besides the state).
    fn first_stage(
        &mut self,
        frame: &mut Frame,
        t: Value,
        y: &[Value],
        fsal: &[Variable],
        fsal_ok: Variable,
    ) -> Result<Vec<Value>> {
        if self.lw.bounds.lag_total > 0 {
            return self.rhs(frame, t, y.to_vec());
        }
        let ok = self.b.use_var(fsal_ok);
        let reuse = self.b.create_block();
        let compute = self.b.create_block();
        let merge = self.b.create_block();
        let params: Vec<Value> = (0..self.n)
            .map(|_| self.b.append_block_param(merge, types::F64))
            .collect();
        self.b.ins().brif(ok, reuse, &[], compute, &[]);
        self.b.switch_to_block(reuse);
        let carried: Vec<_> = fsal.iter().map(|&v| self.b.use_var(v).into()).collect();
        self.b.ins().jump(merge, &carried);
        self.b.switch_to_block(compute);
        let k0: Vec<_> = self
            .rhs(frame, t, y.to_vec())?
            .into_iter()
            .map(Into::into)
            .collect();
        self.b.ins().jump(merge, &k0);
        self.b.switch_to_block(merge);
        Ok(params)
    }

    fn zero(&mut self) -> Value {
        self.b.ins().f64const(0.0)
    }

    /// After a committed, recorded step: leave when the stop condition holds. (A hook step
    /// is the end of the call: `run` lowers `k_end` to it.)
    fn stop_condition(
        &mut self,
        frame: &mut Frame,
        t_new: Value,
        y_new: &[Value],
        exit: Block,
    ) -> Result<()> {
        if let KernelModel::Programs(CompiledModel {
            stop: Some(stop), ..
        }) = self.model
        {
            frame.t = t_new;
            frame.y = Src::Vals(y_new.to_vec());
            let s = self.lw.outputs(&mut self.b, frame, stop)?[0];
            let fires = truth(&mut self.b, s);
            let next = self.b.create_block();
            self.exit_if(fires, exit, 2, next);
        }
        Ok(())
    }

    /// The general engine retries an attempt whose new state or any stage is not finite;
    /// the loop leaves it to the general engine then, testing fewer values: the new state,
    /// the stages the error estimate does not weigh, and the error norm. With the new state
    /// finite, the norm is finite only if every weighed stage is (a finite sum has finite
    /// terms, and each weight is finite and non-zero); a finite attempt whose norm
    /// overflows leaves too, and the general engine takes it as it would have.
    fn attempt_finite(
        &mut self,
        pair: &EmbeddedPair,
        ks: &[Vec<Value>],
        y5: &[Value],
        err: Value,
    ) -> Value {
        let unweighed = ks
            .iter()
            .zip(pair.err)
            .filter(|(_, w)| **w == 0.0)
            .flat_map(|(k, _)| k.iter().copied());
        let watched: Vec<Value> = y5.iter().copied().chain(unweighed).chain([err]).collect();
        self.all_finite(&watched)
    }

    /// True when every value is finite.
    fn all_finite(&mut self, vals: &[Value]) -> Value {
        // `v - v` is +0 for a finite v and NaN otherwise, and a sum of them is NaN iff one
        // is: one subtraction per value, where `v * 0` needed a constant too.
        let mut acc: Option<Value> = None;
        for &v in vals {
            let z = self.b.ins().fsub(v, v);
            acc = Some(match acc {
                Some(a) => self.b.ins().fadd(a, z),
                None => z,
            });
        }
        let acc = acc.unwrap_or_else(|| self.b.ins().f64const(0.0));
        self.b.ins().fcmp(FloatCC::Equal, acc, acc)
    }

    /// Pushes the new state into each lag ring: `head = (head + 1) % len; ring[off + head] = y`.
    fn commit_lags(&mut self, c: &Consts, y_new: &[Value]) -> Result<()> {
        let i64t = types::I64;
        let layout = self.lw.layout;
        for (s, slot) in layout.iter().enumerate() {
            if slot.len == 0 {
                continue;
            }
            let head = self.load(i64t, c.heads, offset(s)?);
            let head = self.b.ins().iadd_imm_u(head, 1);
            let len = self.b.ins().iconst(i64t, slot.len as i64);
            let head = self.b.ins().urem(head, len);
            self.b.ins().store(mem(), head, c.heads, offset(s)?);
            let idx = self.b.ins().iadd_imm_u(head, slot.offset as i64);
            let bytes = self.b.ins().imul_imm_u(idx, 8);
            let addr = self.b.ins().iadd(c.ring, bytes);
            self.b.ins().store(mem(), y_new[s], addr, 0);
        }
        Ok(())
    }

    /// Whether step `k1` is the next sample due (`next_label` holds a step index).
    fn sample_due(&mut self, v: &Vars, k1: Value) -> Value {
        let next = self.b.use_var(v.next_label);
        self.b.ins().icmp(IntCC::Equal, k1, next)
    }

    /// Records the committed state when its label is the next one due.
    #[allow(clippy::too_many_arguments)]
    fn record(
        &mut self,
        frame: &mut Frame,
        c: &Consts,
        v: &Vars,
        slots: &[RecSlot],
        k1: Value,
        t_new: Value,
        y_new: &[Value],
    ) -> Result<()> {
        let i64t = types::I64;
        let due = self.sample_due(v, k1);
        let next_label = self.b.use_var(v.next_label);
        let write = self.b.create_block();
        let after = self.b.create_block();
        self.b.ins().brif(due, write, &[], after, &[]);
        self.b.switch_to_block(write);
        let rec_n = self.b.use_var(v.rec_n);
        let aux = if slots.iter().any(|s| matches!(s, RecSlot::Aux(_))) {
            self.aux(frame, t_new, y_new)?
        } else {
            Vec::new()
        };
        let at = self.b.ins().imul_imm_u(rec_n, 8);
        // Loaded here, where they are used, rather than kept live through the loop.
        let time_shift = self.load(types::F64, c.ctx, field!(time_shift));
        let rec_t = self.load(i64t, c.ctx, field!(rec_t));
        let cols = self.load(i64t, c.ctx, field!(rec_cols));
        let t_rec = self.b.ins().fsub(t_new, time_shift);
        let addr = self.b.ins().iadd(rec_t, at);
        self.b.ins().store(mem(), t_rec, addr, 0);
        for (j, slot) in slots.iter().enumerate() {
            let val = match *slot {
                RecSlot::State(i) => y_new[i],
                RecSlot::Aux(i) => aux[i],
            };
            let col = self.load(i64t, cols, offset(j)?);
            let addr = self.b.ins().iadd(col, at);
            self.b.ins().store(mem(), val, addr, 0);
        }
        let rec_n1 = self.b.ins().iadd_imm_u(rec_n, 1);
        self.b.def_var(v.rec_n, rec_n1);
        let next = self.b.ins().iadd(next_label, c.rec_every);
        self.b.def_var(v.next_label, next);
        self.b.ins().jump(after, &[]);
        self.b.switch_to_block(after);
        Ok(())
    }
}

/// `Gen::combine`'s arithmetic (see there for why its bits are the general engine's) for
/// values of any float type: `konst` makes a constant of that type (a scalar, or a splat
/// for the lock-step kernels' vectors, whose lanes then get exactly the scalar operations).
pub(super) fn combine(
    b: &mut FunctionBuilder,
    y0: &[Value],
    h: Value,
    terms: &[(f64, &Vec<Value>)],
    skip_zero: bool,
    konst: impl Fn(&mut FunctionBuilder, f64) -> Value,
) -> Vec<Value> {
    (0..y0.len())
        .map(|m| {
            let mut acc: Option<Value> = None;
            for (w, v) in terms {
                if skip_zero && *w == 0.0 {
                    continue;
                }
                let prod = if *w == 1.0 {
                    v[m]
                } else {
                    let w = konst(b, *w);
                    b.ins().fmul(w, v[m])
                };
                acc = Some(match acc {
                    None => prod,
                    Some(a) => b.ins().fadd(a, prod),
                });
            }
            // No terms: `y + h·0`, i.e. `y0 + h·(+0)`.
            let acc = acc.unwrap_or_else(|| konst(b, 0.0));
            let inc = b.ins().fmul(h, acc);
            b.ins().fadd(y0[m], inc)
        })
        .collect()
}

//! Lock-step native loops for ensembles: `K` members (lanes) of one model advanced together
//! over one fixed step grid (same `t`, `dt` and step counter), each with its own state,
//! parameters and lag rings.
//!
//! A single trajectory is bound by its floating-point dependency chain; independent lanes
//! are not. Lanes go in pairs through two-wide vectors (`F64X2`: every lane of an `addpd`
//! is the IEEE operation `addsd` performs), and the `K / 2` pairs are emitted stage by stage,
//! so their chains overlap in the CPU. Between stages a pair's values are in memory (L1), not
//! registers — `K / 2` pairs of states do not fit x86's 16 vector registers — and each load
//! is emitted where its value is first used, so that it folds into that instruction as a
//! memory operand (see `Gen::program_pinned`). Per lane, every operation is the one the
//! single fused loop (`kernel.rs`) performs, in the same order, so each member gets the
//! same bits as a single `Sim` run. Functions that are not exactly rounded IEEE operations
//! call the interpreter's shims once per lane, as the single loop does.
//!
//! Host work stays on the host, per lane: the kernel takes a step for every lane and commits
//! it (after a check of all lanes, so the common step commits without masking) only for the
//! lanes that need none (no event fires, the state stays finite, the stop
//! condition does not hold). When some lane needs host work at step `k`, the others commit
//! step `k`, the kernel returns with `k` and flags those lanes, and the host takes their
//! step `k` through the ordinary single-sim path before calling the kernel again from
//! `k + 1`. Any NaN makes its lane's state non-finite, so NaN payloads (the one thing
//! vectors may order differently) never reach a committed state.
//!
//! Memory layout: states structure-of-arrays, `y[s * K + lane]`, parameters likewise
//! `p[j * K + lane]`, so a pair of lanes is one vector load; lag rings and heads lane-major
//! (`ring[lane * lag_total ..]`, `heads[lane * n ..]`), read and written per lane.
//!
//! The generated function is `fn(ctx: *mut BatchCtx) -> i64`; every access it makes is to
//! `ctx`'s fields and the arrays they point at, within the lengths `BatchKernel::run` checks.

use super::code_memory::CodeMemory;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{types, Block, FuncRef, InstBuilder, MemFlagsData, Value};
use cranelift_frontend::{FunctionBuilder, Variable};
use cranelift_module::Module;

use super::kernel::combine;
use super::lower::{mem, offset, Bounds, Lowerer};
use super::shims;
use crate::error::{Error, Result};
use crate::method::StepForm;
use crate::model::compile::CompiledModel;
use crate::model::program::{Fn1, Fn2, LagSlot, Op, Program};
use crate::model::EventPhase;

/// Lanes per vector.
pub const VECTOR_LANES: usize = 2;
/// Largest lane count a kernel is built for (the register file is long exhausted by then).
pub const MAX_LANES: usize = 64;

const V: types::Type = types::F64X2;
const MASK: types::Type = types::I64X2;

/// The kernel's view of a batch, passed by pointer (all fields 8 bytes, `#[repr(C)]`).
#[repr(C)]
struct BatchCtx {
    y: *mut f64,
    p: *const f64,
    ring: *mut f64,
    heads: *mut i64,
    flags: *mut i64,
    /// Values the kernel stores and reads back within a step (Runge-Kutta: stage values, the old state, `y + 0`; see `Gen::step`).
    scratch: *mut f64,
    /// Adams history, `carry[(r * n + s) * lanes + lane]` (row `r` newest first).
    carry: *mut f64,
    t: f64,
    /// On a flagged exit: the time of step `k + 1`.
    t_next: f64,
    grid_t0: f64,
    dt: f64,
    k: u64,
    k0: u64,
    k_end: u64,
    /// A second state buffer (scratch's tail): a Runge-Kutta step without lag rings reads
    /// the state from one buffer and writes the new one to the other, then swaps them.
    y_alt: *mut f64,
    /// Out: the buffer holding the state on return (`y` or `y_alt`).
    y_out: *mut f64,
}

macro_rules! field {
    ($f:ident) => {
        std::mem::offset_of!(BatchCtx, $f) as i32
    };
}

/// A batch's arrays and clock as one kernel call reads and updates them.
pub struct BatchIo<'a> {
    /// States, `y[s * lanes + lane]`.
    pub y: &'a mut [f64],
    /// Parameters, `p[j * lanes + lane]`.
    pub p: &'a [f64],
    /// Lag rings, `lag_total` per lane, lane after lane.
    pub ring: &'a mut [f64],
    /// Lag heads, `n` per lane, lane after lane.
    pub heads: &'a mut [i64],
    /// The method's carried history (Adams: `f` rows, newest first),
    /// `carry[(r * n + s) * lanes + lane]`; empty for the other methods.
    pub carry: &'a mut [f64],
    /// Out: non-zero for the lanes that did not take step `k` (after `Flagged`).
    pub flags: &'a mut [i64],
    /// Time of step `k` (updated).
    pub t: f64,
    pub grid_t0: f64,
    pub dt: f64,
    /// Current step (updated); the kernel stops at `k_end`.
    pub k: u64,
    pub k0: u64,
    pub k_end: u64,
}

/// How a kernel call ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BatchExit {
    /// Every lane reached `k_end`.
    Done,
    /// The flagged lanes need host work for step `k` and are still at it (time `t`); the
    /// others took step `k`, which ends at `t_next`.
    Flagged { t_next: f64 },
}

type BatchFn = unsafe extern "C" fn(*mut BatchCtx) -> i64;

/// A compiled lock-step loop for one model, method and lane count.
pub struct BatchKernel {
    /// The loop for any parameters.
    general: Compiled,
    bounds: Bounds,
    lanes: usize,
    /// Values of carried history per lane (`BatchIo::carry`).
    carry_len: usize,
    /// Scratch values per lane (see `BatchCtx::scratch`).
    scratch_len: usize,
    source: Source,
    /// Loops for batches whose lanes share some parameters, by mask (`None`: it could not
    /// be built; the general loop serves), built at first need, at most [`MAX_VARIANTS`].
    variants: Mutex<Vec<(u64, Option<Arc<Compiled>>)>>,
}

/// Most shared-parameter masks a kernel compiles loops for; batches with others take the
/// general loop.
const MAX_VARIANTS: usize = 8;

impl std::fmt::Debug for BatchKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchKernel")
            .field("bounds", &self.bounds)
            .field("lanes", &self.lanes)
            .finish_non_exhaustive()
    }
}

impl BatchKernel {
    pub fn lanes(&self) -> usize {
        self.lanes
    }

    /// Values of carried history per lane (Adams: rows x states; otherwise 0).
    pub fn carry_len(&self) -> usize {
        self.carry_len
    }

    /// Buffers for [`run`](Self::run) calls on one batch: the scratch rows and the loop
    /// chosen for the batch's parameters, kept between calls so that a batch whose lanes
    /// stop often (events) allocates nothing and takes no lock per call.
    pub fn scratch(&self) -> BatchScratch<'_> {
        BatchScratch {
            kernel: self,
            buf: vec![0.0; (self.scratch_len + self.bounds.n_states) * self.lanes],
            chosen: None,
        }
    }

    /// Runs steps until `k_end` or a flagged lane; updates `io` to where it stopped.
    /// `scratch` comes from this kernel's [`scratch`](Self::scratch).
    pub fn run(&self, io: &mut BatchIo<'_>, scratch: &mut BatchScratch<'_>) -> BatchExit {
        let (b, k) = (&self.bounds, self.lanes);
        assert!(
            io.y.len() == b.n_states * k
                && io.p.len() == b.n_params * k
                && io.ring.len() == b.lag_total * k
                && io.heads.len() == b.n_states * k
                && io.carry.len() == self.carry_len * k
                && io.flags.len() == k
                && std::ptr::eq(scratch.kernel, self),
            "lock-step kernel called with buffers that do not match its model and lanes"
        );
        let f = self.chosen_loop(io.p, scratch);
        // Every call starts from zeroed scratch, as from a new buffer.
        scratch.buf.fill(0.0);
        let (rows, alt) = scratch.buf.split_at_mut(self.scratch_len * k);
        let mut ctx = BatchCtx {
            y_alt: alt.as_mut_ptr(),
            y_out: io.y.as_mut_ptr(),
            scratch: rows.as_mut_ptr(),
            y: io.y.as_mut_ptr(),
            p: io.p.as_ptr(),
            ring: io.ring.as_mut_ptr(),
            heads: io.heads.as_mut_ptr(),
            carry: io.carry.as_mut_ptr(),
            flags: io.flags.as_mut_ptr(),
            t: io.t,
            t_next: io.t,
            grid_t0: io.grid_t0,
            dt: io.dt,
            k: io.k,
            k0: io.k0,
            k_end: io.k_end,
        };
        // SAFETY: every pointer in `ctx` comes from a live buffer whose length was checked
        // above against what the generated code touches (module docs); `scratch.chosen`
        // (or `self`, for the general loop) keeps the code `f` points into alive.
        let code = unsafe { f(&mut ctx) };
        io.t = ctx.t;
        io.k = ctx.k;
        if std::ptr::eq(ctx.y_out, alt.as_ptr()) {
            io.y.copy_from_slice(alt);
        }
        if code == 0 {
            BatchExit::Done
        } else {
            BatchExit::Flagged { t_next: ctx.t_next }
        }
    }

    /// The loop for parameters `p`: the one `scratch` holds when `p` shares the same
    /// parameters as at its last call, otherwise looked up (and kept in `scratch`).
    fn chosen_loop(&self, p: &[f64], scratch: &mut BatchScratch<'_>) -> BatchFn {
        let mask = shared_params(p, self.bounds.n_params, self.lanes);
        if scratch.chosen.as_ref().is_none_or(|c| c.mask != mask) {
            scratch.chosen = Some(Chosen {
                mask,
                variant: self.variant(mask),
            });
        }
        let chosen = scratch.chosen.as_ref().expect("just chosen");
        chosen.variant.as_ref().map_or(self.general.f, |v| v.f)
    }
}

/// Reusable buffers of a batch's kernel calls (see [`BatchKernel::scratch`]).
pub struct BatchScratch<'k> {
    /// The kernel whose loops `chosen` holds.
    kernel: &'k BatchKernel,
    /// Scratch rows, then the second state buffer (`BatchCtx::scratch`, `y_alt`).
    buf: Vec<f64>,
    chosen: Option<Chosen>,
}

/// The loop chosen at a batch's last call and what it was chosen for.
struct Chosen {
    mask: u64,
    variant: Option<Arc<Compiled>>,
}

impl BatchKernel {
    /// The loop for batches sharing the parameters of `mask` (`None`: the general one).
    fn variant(&self, mask: u64) -> Option<Arc<Compiled>> {
        if mask == 0 {
            return None;
        }
        let mut variants = self.variants.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, v)) = variants.iter().find(|(m, _)| *m == mask) {
            return v.clone();
        }
        if variants.len() >= MAX_VARIANTS {
            return None;
        }
        let v = self.source.compile(mask).ok().map(Arc::new);
        variants.push((mask, v.clone()));
        v
    }
}

/// Bit `j` set when parameter `j` (of the first 64) is bitwise the same in every lane of
/// `p` (`p[j * lanes + lane]`): a kernel can then read it once, with the same bits.
fn shared_params(p: &[f64], n_params: usize, lanes: usize) -> u64 {
    (0..n_params.min(64))
        .filter(|&j| {
            let row = &p[j * lanes..(j + 1) * lanes];
            row.iter().all(|v| v.to_bits() == row[0].to_bits())
        })
        .fold(0, |mask, j| mask | (1 << j))
}

/// Whether a lock-step kernel can be built for this model and method.
pub fn eligible(model: &CompiledModel, n_states: usize, form: StepForm) -> bool {
    matches!(form, StepForm::Map | StepForm::Erk(_) | StepForm::Adams(_))
        && n_states <= 64
        && model.rhs.ops.len() <= 4096
}

/// Compiles a lock-step loop of `lanes` lanes (a multiple of [`VECTOR_LANES`]).
pub fn build(
    model: &CompiledModel,
    layout: &[LagSlot],
    bounds: Bounds,
    form: StepForm,
    phases: &[EventPhase],
    lanes: usize,
) -> Result<BatchKernel> {
    if layout.len() != bounds.n_states || phases.len() != model.events.len() {
        return Err(Error::internal(
            "lock-step kernel: layout does not match the model",
        ));
    }
    if lanes == 0 || lanes % VECTOR_LANES != 0 || lanes > MAX_LANES {
        return Err(Error::invalid(format!(
            "lock-step lanes = {lanes}: must be a positive multiple of {VECTOR_LANES}, at most \
             {MAX_LANES}"
        )));
    }
    if !eligible(model, bounds.n_states, form) {
        return Err(Error::internal(
            "lock-step kernel: only fixed-step explicit methods",
        ));
    }
    let source = Source {
        model: model.clone(),
        layout: layout.to_vec(),
        bounds: bounds.clone(),
        form,
        phases: phases.to_vec(),
        lanes,
    };
    let general = source.compile(0)?;
    Ok(BatchKernel {
        general,
        carry_len: history_rows(form) * bounds.n_states,
        scratch_len: scratch_rows(form) * bounds.n_states,
        bounds,
        lanes,
        source,
        variants: Mutex::new(Vec::new()),
    })
}

/// What a kernel is compiled from, kept to compile its shared-parameter variants.
struct Source {
    model: CompiledModel,
    layout: Vec<LagSlot>,
    bounds: Bounds,
    form: StepForm,
    phases: Vec<EventPhase>,
    lanes: usize,
}

/// One compiled loop and the code memory it points into (freed with it).
struct Compiled {
    f: BatchFn,
    _code: CodeMemory,
}

impl Source {
    /// The loop with the parameters of `shared_mask` (bit `j`: parameter `j`) taken from
    /// lane 0 once per call instead of per lane pair and use.
    fn compile(&self, shared_mask: u64) -> Result<Compiled> {
        let (model, layout, bounds) = (&self.model, &self.layout[..], self.bounds.clone());
        let (form, phases, lanes) = (self.form, &self.phases[..], self.lanes);
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
                form,
                phases,
                lanes,
                n: bounds.n_states,
                shims: HashMap::new(),
                base: None,
                pair_commit: None,
                shared: Vec::new(),
                shared_mask,
            };
            g.body()?;
            g.b.seal_all_blocks();
            g.b.finalize(frontend);
        }
        lw.fctx = fctx;
        let code = lw.define_loop(id, &mut ctx)?;
        Ok(Compiled {
            // SAFETY: `code` is the finalized function just defined with the signature
            // `fn(*mut BatchCtx) -> i64`.
            f: unsafe { std::mem::transmute::<*const u8, BatchFn>(code) },
            _code: CodeMemory::new(lw.module),
        })
    }
}

/// Pointers loaded once in the entry block.
#[derive(Clone, Copy)]
struct Base {
    scratch: Value,
    y: Value,
    p: Value,
    ring: Value,
    heads: Value,
    carry: Value,
}

/// What one program evaluation of one lane pair reads.
struct Inputs<'v> {
    /// The lane pair.
    pair: usize,
    t: Value,
    y: StateIn<'v>,
    /// Lag reads see the ring as after a commit (1) or as it is (0); see `kernel.rs`.
    lag_shift: i64,
}

/// Where a program's state inputs come from.
#[derive(Clone, Copy)]
enum StateIn<'v> {
    /// Values already in hand.
    Ready(&'v [Value]),
    /// Runge-Kutta stage `stage` with step `h`: each state's stage input is computed when
    /// the program first reads it, from memory loaded right there (stage 0: the state;
    /// later stages: the stage rows and `y + 0`), see [`Gen::stage_input`].
    Stage { stage: usize, h: Value },
}

/// A program register during emission: a value, or an input whose loads are emitted at
/// its first use (see [`Gen::program`]).
#[derive(Clone, Copy)]
enum Reg {
    Val(Value),
    State(usize),
    Param(usize),
}

/// The loop's values and blocks a step body uses.
#[derive(Clone, Copy)]
struct Loop {
    ctx: Value,
    flags: Value,
    grid_t0: Value,
    dt: Value,
    k0: Value,
    /// Current step and its time.
    kv: Variable,
    tv: Variable,
    /// Where the next step starts, and where the kernel returns (code as block parameter).
    head: Block,
    exit: Block,
    /// The buffer holding the state, and the other one (see `BatchCtx::y_alt`).
    y_cur: Variable,
    y_other: Variable,
}

struct Gen<'g, 'a, 'f> {
    lw: &'g mut Lowerer<'a>,
    b: FunctionBuilder<'f>,
    model: &'g CompiledModel,
    form: StepForm,
    phases: &'g [EventPhase],
    lanes: usize,
    n: usize,
    /// Shims declared in this function so far.
    shims: HashMap<&'static str, FuncRef>,
    base: Option<Base>,
    /// Set while a Runge-Kutta step commits each pair as soon as its new state is known
    /// (see [`Gen::commit_pair`]).
    pair_commit: Option<PairCommit>,
    /// Parameters every lane shares (see [`BatchKernel::run`]): loaded once per call.
    shared: Vec<Option<Value>>,
    /// Bit `j`: parameter `j` is the same in every lane.
    shared_mask: u64,
}

/// What committing a pair at the end of its step needs.
struct PairCommit {
    /// Per pair: the lanes a start-of-step event holds.
    held: Vec<Option<Value>>,
    t_new: Value,
    flags: Value,
    /// Where the new state goes (the other state buffer).
    y_next: Value,
    /// Set once some lane is flagged this step (an integer, not a vector: it stays out of
    /// the vector registers the stages need).
    flagged: Variable,
}

impl Gen<'_, '_, '_> {
    fn load(&mut self, ty: types::Type, base: Value, off: i32) -> Value {
        self.b.ins().load(ty, mem(), base, off)
    }

    fn pairs(&self) -> usize {
        self.lanes / VECTOR_LANES
    }

    fn base(&self) -> Result<Base> {
        self.base
            .ok_or_else(|| Error::internal("lock-step kernel: entry block not emitted"))
    }

    fn splat(&mut self, x: f64) -> Value {
        let s = self.b.ins().f64const(x);
        self.b.ins().splat(V, s)
    }

    /// A lane mask as floats, for `bitselect` against float vectors.
    fn as_float(&mut self, mask: Value) -> Value {
        self.b.ins().bitcast(V, MemFlagsData::new(), mask)
    }

    /// Lane-wise `if mask { x } else { y }`.
    fn choose(&mut self, mask: Value, x: Value, y: Value) -> Value {
        let m = self.as_float(mask);
        self.b.ins().bitselect(m, x, y)
    }

    /// Lane-wise `x != 0.0` (NaN is true), as `lower::truth`.
    fn truth(&mut self, x: Value) -> Value {
        let zero = self.splat(0.0);
        self.b.ins().fcmp(FloatCC::NotEqual, x, zero)
    }

    /// Lane-wise 1.0 or 0.0 from a mask, as `lower::flag`.
    fn flag(&mut self, mask: Value) -> Value {
        let (one, zero) = (self.splat(1.0), self.splat(0.0));
        self.choose(mask, one, zero)
    }

    fn body(&mut self) -> Result<()> {
        let (i64t, f64t) = (types::I64, types::F64);
        let entry = self.b.create_block();
        self.b.append_block_params_for_function_params(entry);
        self.b.switch_to_block(entry);
        let ctx = self.b.block_params(entry)[0];
        let base = Base {
            scratch: self.load(i64t, ctx, field!(scratch)),
            y: self.load(i64t, ctx, field!(y)),
            p: self.load(i64t, ctx, field!(p)),
            ring: self.load(i64t, ctx, field!(ring)),
            heads: self.load(i64t, ctx, field!(heads)),
            carry: self.load(i64t, ctx, field!(carry)),
        };
        self.base = Some(base);
        self.shared = (0..self.lw.bounds.n_params)
            .map(|j| {
                if j >= 64 || self.shared_mask & (1 << j) == 0 {
                    return Ok(None);
                }
                let v = self.load(f64t, base.p, offset(j * self.lanes)?);
                Ok(Some(self.b.ins().splat(V, v)))
            })
            .collect::<Result<_>>()?;
        let flags = self.load(i64t, ctx, field!(flags));
        let grid_t0 = self.load(f64t, ctx, field!(grid_t0));
        let dt = self.load(f64t, ctx, field!(dt));
        let k0 = self.load(i64t, ctx, field!(k0));
        let k_end = self.load(i64t, ctx, field!(k_end));
        let t_init = self.load(f64t, ctx, field!(t));
        let k_init = self.load(i64t, ctx, field!(k));
        let y_alt = self.load(i64t, ctx, field!(y_alt));
        let (y_cur, y_other) = (self.b.declare_var(i64t), self.b.declare_var(i64t));
        self.b.def_var(y_cur, base.y);
        self.b.def_var(y_other, y_alt);
        let tv = self.b.declare_var(f64t);
        self.b.def_var(tv, t_init);
        let kv = self.b.declare_var(i64t);
        self.b.def_var(kv, k_init);
        let head = self.b.create_block();
        let body = self.b.create_block();
        let exit = self.b.create_block();
        self.b.append_block_param(exit, i64t);
        self.b.ins().jump(head, &[]);

        // head: stop at k_end.
        self.b.switch_to_block(head);
        let k = self.b.use_var(kv);
        let done = self
            .b
            .ins()
            .icmp(IntCC::UnsignedGreaterThanOrEqual, k, k_end);
        let zero_code = self.b.ins().iconst(i64t, 0);
        self.b
            .ins()
            .brif(done, exit, &[zero_code.into()], body, &[]);

        // body: one step of every lane.
        self.b.switch_to_block(body);
        let t = self.b.use_var(tv);
        let lp = Loop {
            ctx,
            flags,
            grid_t0,
            dt,
            k0,
            kv,
            tv,
            head,
            exit,
            y_cur,
            y_other,
        };
        self.stage_major_body(&lp, t, k)?;

        self.b.switch_to_block(exit);
        let code = self.b.block_params(exit)[0];
        let t = self.b.use_var(tv);
        let k = self.b.use_var(kv);
        self.b.ins().store(mem(), t, ctx, field!(t));
        self.b.ins().store(mem(), k, ctx, field!(k));
        let y_out = self.b.use_var(y_cur);
        self.b.ins().store(mem(), y_out, ctx, field!(y_out));
        self.b.ins().return_(&[code]);
        Ok(())
    }

    /// Whether a Runge-Kutta step commits each pair right after its last stage
    /// ([`commit_pair`](Self::commit_pair)): without lag rings, whose pushes follow the
    /// check of every lane.
    fn commits_per_pair(&self) -> bool {
        matches!(self.form, StepForm::Erk(_)) && !self.has_lags()
    }

    /// Stores pair `g`'s new state `y0 + h·(Σ b_j k_j)` (the last stage's `k` in hand) to
    /// the other state buffer as each value is computed: the common step keeps no copy of
    /// the old state (it stays in its buffer).
    fn store_pair_state(
        &mut self,
        g: usize,
        h: Value,
        b: &[f64],
        last: (usize, &[Value]),
    ) -> Result<()> {
        let y_next = self.commit_state()?.2;
        for s in 0..self.n {
            let v = self.state_sum(g, s, h, b, Some(last))?;
            let off = offset(s * self.lanes + g * VECTOR_LANES)?;
            self.b.ins().store(mem(), v, y_next, off);
        }
        Ok(())
    }

    /// `pair_commit`'s `t_new`, flags, next buffer and flagged variable.
    fn commit_state(&self) -> Result<(Value, Value, Value, Variable)> {
        self.pair_commit
            .as_ref()
            .map(|c| (c.t_new, c.flags, c.y_next, c.flagged))
            .ok_or_else(|| Error::internal("lock-step kernel: pair commit without a step"))
    }

    /// Flags pair `g`'s lanes that need host work, from its new state read back from the
    /// buffer it was stored to: used again in registers, a stored value would keep
    /// Cranelift from folding the loads of its whole operand tree into their instructions
    /// (see `program_pinned`); read right after its own store, the read would be
    /// forwarded from it, hence after the next pair's.
    fn flag_pair(&mut self, g: usize) -> Result<()> {
        let (t_new, flags, y_next, flagged) = self.commit_state()?;
        let held = self
            .pair_commit
            .as_ref()
            .and_then(|c| c.held.get(g).copied())
            .ok_or_else(|| Error::internal("lock-step kernel: no held lanes for a pair"))?;
        let y_new = self.load_row(y_next, g, self.n)?;
        let mask = self.flag_lanes_of_pair(g, t_new, &y_new, held, flags)?;
        let some = self.b.ins().vany_true(mask);
        let (set, next) = (self.b.create_block(), self.b.create_block());
        self.b.ins().brif(some, set, &[], next, &[]);
        self.b.switch_to_block(set);
        let yes = self.b.ins().iconst(types::I8, 1);
        self.b.def_var(flagged, yes);
        self.b.ins().jump(next, &[]);
        self.b.switch_to_block(next);
        Ok(())
    }

    /// `grid_t0 + (k - k0) as f64 * dt`, as `kernel.rs` and `SessionState::grid_time`.
    fn grid_time(&mut self, lp: &Loop, k: Value) -> Value {
        let d = self.b.ins().isub(k, lp.k0);
        let d = self.b.ins().fcvt_from_sint(types::F64, d);
        let m = self.b.ins().fmul(d, lp.dt);
        self.b.ins().fadd(lp.grid_t0, m)
    }

    /// Pair `g`'s `len` values of a structure-of-arrays block (`y` or `p`).
    fn load_row(&mut self, base: Value, g: usize, len: usize) -> Result<Vec<Value>> {
        (0..len)
            .map(|s| {
                let off = offset(s * self.lanes + g * VECTOR_LANES)?;
                Ok(self.load(V, base, off))
            })
            .collect()
    }

    fn store_row(&mut self, base: Value, g: usize, vals: &[Value]) -> Result<()> {
        for (s, &v) in vals.iter().enumerate() {
            let off = offset(s * self.lanes + g * VECTOR_LANES)?;
            self.b.ins().store(mem(), v, base, off);
        }
        Ok(())
    }

    /// One step of every lane, stage by stage across the pairs with their values in
    /// memory between stages (any model and method); jumps to `head` or `exit`.
    fn stage_major_body(&mut self, lp: &Loop, t: Value, k: Value) -> Result<()> {
        let Loop {
            ctx,
            flags,
            dt,
            kv,
            tv,
            head,
            exit,
            ..
        } = *lp;
        let i64t = types::I64;
        let (y_cur, y_next) = (self.b.use_var(lp.y_cur), self.b.use_var(lp.y_other));
        if self.commits_per_pair() {
            // This step reads the state from the current buffer.
            self.base = Some(Base {
                y: y_cur,
                ..self.base()?
            });
        }
        let base = self.base()?;
        let pairs = self.pairs();
        // A Runge-Kutta step loads each state where it is first used (see `step`); the
        // other methods, and start-of-step events, take them all here.
        let preload =
            !matches!(self.form, StepForm::Erk(_)) || self.phases.iter().any(|p| p.in_start());
        let mut y = Vec::with_capacity(pairs);
        for g in (0..pairs).filter(|_| preload) {
            let row = (0..self.n)
                .map(|s| {
                    let off = offset(s * self.lanes + g * VECTOR_LANES)?;
                    Ok(self.load(V, base.y, off))
                })
                .collect::<Result<Vec<_>>>()?;
            y.push(row);
        }
        let t_v = self.b.ins().splat(V, t);
        let mut held: Vec<Option<Value>> = Vec::with_capacity(pairs);
        for g in 0..pairs {
            let inp = Inputs {
                pair: g,
                t: t_v,
                y: StateIn::Ready(y.get(g).map_or(&[], |v| v.as_slice())),
                lag_shift: 0,
            };
            held.push(self.events_fire(&inp, true)?);
        }
        let hist = self.load_history()?;
        let k1 = self.b.ins().iadd_imm_u(k, 1);
        let t_new = self.grid_time(lp, k1);
        let t_new_v = self.b.ins().splat(V, t_new);
        if self.commits_per_pair() {
            let flagged = self.b.declare_var(types::I8);
            let no = self.b.ins().iconst(types::I8, 0);
            self.b.def_var(flagged, no);
            self.pair_commit = Some(PairCommit {
                held,
                t_new: t_new_v,
                flags,
                y_next,
                flagged,
            });
            self.step(t, dt, &y, &hist)?;
            self.pair_commit = None;
            let some = self.b.use_var(flagged);
            let (go_on, leave) = (self.b.create_block(), self.b.create_block());
            self.b.ins().brif(some, leave, &[], go_on, &[]);
            // go_on: every lane took the step; the buffers swap.
            self.b.switch_to_block(go_on);
            self.b.def_var(lp.y_cur, y_next);
            self.b.def_var(lp.y_other, y_cur);
            self.b.def_var(kv, k1);
            self.b.def_var(tv, t_new);
            self.b.ins().jump(head, &[]);
            // leave: the flagged lanes get their state back into the new buffer, which
            // the kernel returns; `k` and `t` stay at the flagged step.
            self.b.switch_to_block(leave);
            for g in 0..pairs {
                let mask = self.load(MASK, flags, offset(g * VECTOR_LANES)?);
                let old = self.load_row(y_cur, g, self.n)?;
                let new = self.load_row(y_next, g, self.n)?;
                let kept: Vec<Value> = old
                    .iter()
                    .zip(&new)
                    .map(|(&o, &n)| self.choose(mask, o, n))
                    .collect();
                self.store_row(y_next, g, &kept)?;
            }
            self.b.def_var(lp.y_cur, y_next);
            self.b.ins().store(mem(), t_new, ctx, field!(t_next));
            let one = self.b.ins().iconst(i64t, 1);
            self.b.ins().jump(exit, &[one.into()]);
            return Ok(());
        }
        let y_new = self.step(t, dt, &y, &hist)?;
        let mut any: Option<Value> = None;
        let mut masks = Vec::with_capacity(pairs);
        for (g, &held) in held.iter().enumerate() {
            let yg = self.new_state(g, &y_new)?;
            let mask = self.flag_lanes_of_pair(g, t_new_v, &yg, held, flags)?;
            any = Some(match any {
                None => mask,
                Some(a) => self.b.ins().bor(a, mask),
            });
            masks.push(mask);
        }
        let any = any.ok_or_else(|| Error::internal("lock-step kernel without lanes"))?;
        let flagged = self.b.ins().vany_true(any);
        let go_on = self.b.create_block();
        let leave = self.b.create_block();
        self.b.ins().brif(flagged, leave, &[], go_on, &[]);
        // go_on: every lane commits.
        self.b.switch_to_block(go_on);
        // A Runge-Kutta step stored the new state in place: only lag rings are left.
        let in_place = matches!(self.form, StepForm::Erk(_)) && !self.has_lags();
        for g in (0..pairs).filter(|_| !in_place) {
            let yg = self.new_state(g, &y_new)?;
            self.commit(g, None, &yg)?;
        }
        self.commit_history(t_new_v, &y_new, &hist, None)?;
        self.b.def_var(kv, k1);
        self.b.def_var(tv, t_new);
        self.b.ins().jump(head, &[]);
        // leave: the unflagged lanes commit; `k` and `t` stay at the flagged step.
        self.b.switch_to_block(leave);
        for (g, &mask) in masks.iter().enumerate() {
            let yg = self.new_state(g, &y_new)?;
            self.commit(g, Some(mask), &yg)?;
        }
        self.commit_history(t_new_v, &y_new, &hist, Some(&masks))?;
        self.b.ins().store(mem(), t_new, ctx, field!(t_next));
        let one = self.b.ins().iconst(i64t, 1);
        self.b.ins().jump(exit, &[one.into()]);
        Ok(())
    }

    /// Every lane pair's proposed state after one step from `(t, y)`, stage by stage
    /// across the pairs (the interleaving), with `kernel.rs`'s arithmetic per lane. A
    /// Runge-Kutta step stores it to `y` itself (the old state to its scratch row) and
    /// returns nothing; the other methods return it.
    fn step(
        &mut self,
        t: Value,
        h: Value,
        y: &[Vec<Value>],
        hist: &[Vec<Vec<Value>>],
    ) -> Result<Vec<Vec<Value>>> {
        let pairs = self.pairs();
        let t_v = self.b.ins().splat(V, t);
        let h_v = self.b.ins().splat(V, h);
        let rhs = self.model.rhs.clone();
        match self.form {
            StepForm::Map => (0..pairs)
                .map(|g| {
                    let inp = Inputs {
                        pair: g,
                        t: t_v,
                        y: StateIn::Ready(&y[g]),
                        lag_shift: 0,
                    };
                    self.program(&rhs, &inp)
                })
                .collect(),
            StepForm::Erk(tab) => {
                let stages = tab.a.len();
                for i in 0..stages {
                    let ti = if i == 0 {
                        t_v
                    } else {
                        let c = self.b.ins().f64const(tab.c[i]);
                        let ch = self.b.ins().fmul(c, h);
                        let ti = self.b.ins().fadd(t, ch);
                        self.b.ins().splat(V, ti)
                    };
                    // The last stage's values are used by the new state only: it is computed
                    // right there, with them in registers instead of a scratch row.
                    let last = i + 1 == stages;
                    for g in 0..pairs {
                        let inp = Inputs {
                            pair: g,
                            t: ti,
                            y: StateIn::Stage { stage: i, h: h_v },
                            lag_shift: 0,
                        };
                        let (k, read) = self.program_pinned(&rhs, &inp, (!last).then_some(i))?;
                        if i == 0 {
                            self.pin_y0(g, &read)?;
                        }
                        if last && self.pair_commit.is_some() {
                            self.store_pair_state(g, h_v, tab.b, (i, &k))?;
                            // A pair's state is read back after the next pair's is stored,
                            // so the read is not forwarded from the store (see `flag_pair`).
                            if g > 0 {
                                self.flag_pair(g - 1)?;
                            }
                            if g + 1 == pairs {
                                self.flag_pair(g)?;
                            }
                        } else if last {
                            self.store_new_state(g, h_v, tab.b, (i, &k))?;
                        }
                    }
                }
                Ok(Vec::new())
            }
            StepForm::Adams(w) => Ok((0..pairs)
                .map(|g| {
                    // As `kernel.rs`: `y0 + h·(Σ w_i f_{n-i})`, zero weights kept.
                    let zero = self.splat(0.0);
                    let y0: Vec<Value> = y[g].iter().map(|&v| self.b.ins().fadd(v, zero)).collect();
                    let terms: Vec<(f64, &Vec<Value>)> = w.iter().copied().zip(&hist[g]).collect();
                    combine(&mut self.b, &y0, h_v, &terms, false, splat)
                })
                .collect()),
            StepForm::Embedded(_) => Err(Error::internal(
                "lock-step kernel: only fixed-step explicit methods",
            )),
        }
    }

    /// Every pair's carried history, `hist[pair][row][state]` (empty unless Adams).
    fn load_history(&mut self) -> Result<Vec<Vec<Vec<Value>>>> {
        let base = self.base()?;
        let rows = history_rows(self.form);
        (0..self.pairs())
            .map(|g| {
                (0..rows)
                    .map(|r| {
                        (0..self.n)
                            .map(|s| {
                                let off = offset((r * self.n + s) * self.lanes + g * VECTOR_LANES)?;
                                Ok(self.load(V, base.carry, off))
                            })
                            .collect()
                    })
                    .collect()
            })
            .collect()
    }

    /// After the commit of `y_new` (and its lag rings): the Adams history moves down a row
    /// and `f(t_new, y_new)` becomes the newest, as `kernel.rs` does after its commit —
    /// with `held`, only in the lanes that committed (the others keep theirs).
    fn commit_history(
        &mut self,
        t_new: Value,
        y_new: &[Vec<Value>],
        hist: &[Vec<Vec<Value>>],
        held: Option<&[Value]>,
    ) -> Result<()> {
        let StepForm::Adams(_) = self.form else {
            return Ok(());
        };
        let base = self.base()?;
        let rhs = self.model.rhs.clone();
        for (g, (yg, old)) in y_new.iter().zip(hist).enumerate() {
            let inp = Inputs {
                pair: g,
                t: t_new,
                y: StateIn::Ready(yg),
                lag_shift: 0,
            };
            let f_new = self.program(&rhs, &inp)?;
            let mut rows = vec![f_new];
            rows.extend(old.iter().take(old.len() - 1).cloned());
            for (r, (row, old_row)) in rows.iter().zip(old).enumerate() {
                for (s, (&new, &prev)) in row.iter().zip(old_row).enumerate() {
                    let v = match held {
                        Some(masks) => self.choose(masks[g], prev, new),
                        None => new,
                    };
                    let off = offset((r * self.n + s) * self.lanes + g * VECTOR_LANES)?;
                    self.b.ins().store(mem(), v, base.carry, off);
                }
            }
        }
        Ok(())
    }

    /// Pair `g`'s new state: Runge-Kutta's, loaded from `y` where `step` stored it (so it
    /// is not held in registers from the step to the commit), otherwise `y_new`'s.
    fn new_state(&mut self, g: usize, y_new: &[Vec<Value>]) -> Result<Vec<Value>> {
        let base = self.base()?;
        match self.form {
            StepForm::Erk(_) => (0..self.n)
                .map(|s| {
                    let off = offset(s * self.lanes + g * VECTOR_LANES)?;
                    Ok(self.load(V, base.y, off))
                })
                .collect(),
            _ => y_new
                .get(g)
                .cloned()
                .ok_or_else(|| Error::internal("lock-step kernel: no new state for a pair")),
        }
    }

    /// Lanes where some event of this phase fires on the inputs (`None`: no event of
    /// this phase, no lane — and no all-zero mask for the step to keep in a register).
    fn events_fire(&mut self, inp: &Inputs<'_>, start: bool) -> Result<Option<Value>> {
        let mut mask = None;
        for (i, phase) in self.phases.iter().enumerate() {
            let applies = if start {
                phase.in_start()
            } else {
                phase.in_end()
            };
            if !applies {
                continue;
            }
            let cond = self.model.events[i].cond.clone();
            let c = self.program(&cond, inp)?[0];
            let fires = self.truth(c);
            mask = Some(self.or_lanes(mask, fires));
        }
        Ok(mask)
    }

    /// `mask | more` (`more` alone when there is no mask yet).
    fn or_lanes(&mut self, mask: Option<Value>, more: Value) -> Value {
        match mask {
            Some(m) => self.b.ins().bor(m, more),
            None => more,
        }
    }

    /// Pair `g`'s lanes to flag after its step to `t` with new state `y` (see
    /// [`Gen::flagged_lanes`]), stored in the pair's slot of `flags`.
    fn flag_lanes_of_pair(
        &mut self,
        g: usize,
        t: Value,
        y: &[Value],
        held: Option<Value>,
        flags: Value,
    ) -> Result<Value> {
        let bad = self.non_finite(y);
        let at_end = Inputs {
            pair: g,
            t,
            y: StateIn::Ready(y),
            lag_shift: 1,
        };
        let mask = self.flagged_lanes(bad, held, &at_end)?;
        self.b
            .ins()
            .store(mem(), mask, flags, offset(g * VECTOR_LANES)?);
        Ok(mask)
    }

    /// The lanes to flag at the end of a step: a non-finite state (`bad`), a start-of-step
    /// event (`held`), an end-of-step event, the stop condition.
    fn flagged_lanes(
        &mut self,
        bad: Value,
        held: Option<Value>,
        at_end: &Inputs<'_>,
    ) -> Result<Value> {
        let fires = self.events_fire(at_end, false)?;
        let stops = self.stop_holds(at_end)?;
        let mut mask = bad;
        for m in [held, fires, stops].into_iter().flatten() {
            mask = self.b.ins().bor(mask, m);
        }
        Ok(mask)
    }

    /// Lanes where the stop condition holds on the inputs (`None`: no stop condition).
    fn stop_holds(&mut self, inp: &Inputs<'_>) -> Result<Option<Value>> {
        match self.model.stop.clone() {
            Some(stop) => {
                let s = self.program(&stop, inp)?[0];
                Ok(Some(self.truth(s)))
            }
            None => Ok(None),
        }
    }

    /// Lanes where some value is inf or NaN: then `s - s` is NaN for `s = Σ v`. A sum that
    /// overflows flags finite values too; that lane's step is then the host's, which is
    /// slower but the same step.
    fn non_finite(&mut self, vals: &[Value]) -> Value {
        let mut sum = vals[0];
        for &v in &vals[1..] {
            sum = self.b.ins().fadd(sum, v);
        }
        let d = self.b.ins().fsub(sum, sum);
        self.b.ins().fcmp(FloatCC::Unordered, d, d)
    }

    /// Stores the new state of pair `g`'s lanes — with `flagged`, of the unflagged ones
    /// only (the others keep theirs) — and pushes it into their lag rings, as `kernel.rs`'s
    /// commit does.
    /// (A Runge-Kutta step has stored the new state in place already; see `step`.)
    fn commit(&mut self, g: usize, flagged: Option<Value>, y_new: &[Value]) -> Result<()> {
        let base = self.base()?;
        let in_place = matches!(self.form, StepForm::Erk(_));
        for (s, &new) in y_new.iter().enumerate() {
            let off = offset(s * self.lanes + g * VECTOR_LANES)?;
            let keep = match flagged {
                // The step's old state is still in memory: reloading it here keeps it out
                // of the registers during the step.
                Some(mask) => {
                    let old = self.old_state(g, s)?;
                    self.choose(mask, old, new)
                }
                None if in_place => continue,
                None => new,
            };
            self.b.ins().store(mem(), keep, base.y, off);
        }
        if !self.has_lags() {
            return Ok(());
        }
        let layout = self.lw.layout;
        let i64t = types::I64;
        for i in 0..VECTOR_LANES {
            let lane = g * VECTOR_LANES + i;
            let (ring, heads) = self.lane_lag(lane)?;
            let held = flagged.map(|mask| {
                let f = self.b.ins().extractlane(mask, i as u8);
                self.b.ins().icmp_imm_u(IntCC::NotEqual, f, 0)
            });
            for (s, slot) in layout.iter().enumerate() {
                if slot.len == 0 {
                    continue;
                }
                let head = self.load(i64t, heads, offset(s)?);
                let next = self.b.ins().iadd_imm_u(head, 1);
                let len = self.b.ins().iconst(i64t, slot.len as i64);
                let next = self.b.ins().urem(next, len);
                let head = match held {
                    Some(h) => self.b.ins().select(h, head, next),
                    None => next,
                };
                self.b.ins().store(mem(), head, heads, offset(s)?);
                let idx = self.b.ins().iadd_imm_u(head, slot.offset as i64);
                let bytes = self.b.ins().imul_imm_u(idx, 8);
                let addr = self.b.ins().iadd(ring, bytes);
                let new = self.b.ins().extractlane(y_new[s], i as u8);
                let v = match held {
                    Some(h) => {
                        let old = self.b.ins().load(types::F64, mem(), addr, 0);
                        self.b.ins().select(h, old, new)
                    }
                    None => new,
                };
                self.b.ins().store(mem(), v, addr, 0);
            }
        }
        Ok(())
    }

    fn has_lags(&self) -> bool {
        self.lw.layout.iter().any(|slot| slot.len > 0)
    }

    /// State `s` of pair `g` before the step: in its scratch row after a Runge-Kutta step
    /// (which overwrote `y`), otherwise still in `y`.
    fn old_state(&mut self, g: usize, s: usize) -> Result<Value> {
        match self.form {
            StepForm::Erk(tab) => self.load_scratch(tab.a.len(), s, g),
            _ => {
                let base = self.base()?;
                let off = offset(s * self.lanes + g * VECTOR_LANES)?;
                Ok(self.load(V, base.y, off))
            }
        }
    }

    /// Lane `lane`'s lag ring and heads pointers.
    fn lane_lag(&mut self, lane: usize) -> Result<(Value, Value)> {
        let base = self.base()?;
        let b = &self.lw.bounds;
        let ring_bytes = i64::try_from(lane * b.lag_total * 8)
            .map_err(|_| Error::internal("lag ring too large"))?;
        let heads_bytes = i64::try_from(lane * b.n_states * 8)
            .map_err(|_| Error::internal("state vector too large"))?;
        let ring = self.b.ins().iadd_imm_u(base.ring, ring_bytes);
        let heads = self.b.ins().iadd_imm_u(base.heads, heads_bytes);
        Ok((ring, heads))
    }

    /// Emits `prog` for one lane pair; returns its outputs (vectors).
    fn program(&mut self, prog: &Program, inp: &Inputs<'_>) -> Result<Vec<Value>> {
        Ok(self.program_pinned(prog, inp, None)?.0)
    }

    /// [`program`](Self::program), with every output stored to scratch row `pin` (if any)
    /// as soon as it is computed; also returns the state inputs it read.
    ///
    /// Loads are emitted at the first use of what they load, so they come in the order
    /// their users do: Cranelift folds a load into the arithmetic instruction that uses it
    /// (a memory operand, no register) only when no other load or store lies between
    /// them, or between them lie only loads that were folded into users in the same order.
    /// Where the orders differ the load stays a separate instruction: slower, same bits.
    /// Storing each output right away keeps the next output's loads after that store.
    fn program_pinned(
        &mut self,
        prog: &Program,
        inp: &Inputs<'_>,
        pin: Option<usize>,
    ) -> Result<(Vec<Value>, Vec<Option<Value>>)> {
        let b = self.lw.bounds.clone();
        let mut states: Vec<Option<Value>> = vec![None; self.n];
        let mut regs: Vec<Reg> = Vec::with_capacity(prog.ops.len());
        // Outputs by register, to store each when its register is computed.
        let mut outputs_of: HashMap<u32, Vec<usize>> = HashMap::new();
        for (o, &r) in prog.outputs.iter().enumerate() {
            outputs_of.entry(r).or_default().push(o);
        }
        let mut stored = vec![false; prog.outputs.len()];
        for (r, op) in prog.ops.iter().enumerate() {
            let reg = match *op {
                Op::Const(c) => Reg::Val(self.splat(c)),
                Op::Time => Reg::Val(inp.t),
                Op::State(s) if (s as usize) < b.n_states => Reg::State(s as usize),
                Op::Param(j) if (j as usize) < b.n_params => Reg::Param(j as usize),
                Op::State(_) | Op::Param(_) => {
                    return Err(Error::internal("state or parameter index out of range"))
                }
                Op::Lag { state, k } => Reg::Val(self.lag(inp, state as usize, k)?),
                Op::Unary(f, a) => {
                    let a = self.operand(&mut regs, &mut states, inp, a)?;
                    Reg::Val(self.unary(f, a)?)
                }
                Op::Binary(f, x, y) => {
                    let x = self.operand(&mut regs, &mut states, inp, x)?;
                    let y = self.operand(&mut regs, &mut states, inp, y)?;
                    Reg::Val(self.binary(f, x, y)?)
                }
                Op::Select(c, x, y) => {
                    let c = self.operand(&mut regs, &mut states, inp, c)?;
                    let c = self.truth(c);
                    let x = self.operand(&mut regs, &mut states, inp, x)?;
                    let y = self.operand(&mut regs, &mut states, inp, y)?;
                    Reg::Val(self.choose(c, x, y))
                }
            };
            regs.push(reg);
            let (Some(row), Reg::Val(v)) = (pin, reg) else {
                continue;
            };
            let r = u32::try_from(r).map_err(|_| Error::internal("program too long"))?;
            for &o in outputs_of.get(&r).map_or(&[][..], |v| v.as_slice()) {
                self.store_scratch(row, o, inp.pair, v)?;
                stored[o] = true;
            }
        }
        let mut outs = Vec::with_capacity(prog.outputs.len());
        for (o, &r) in prog.outputs.iter().enumerate() {
            let v = self.operand(&mut regs, &mut states, inp, r)?;
            if let (Some(row), false) = (pin, stored[o]) {
                self.store_scratch(row, o, inp.pair, v)?;
            }
            outs.push(v);
        }
        Ok((outs, states))
    }

    /// Register `r`'s value, emitting its loads if this is its first use.
    fn operand(
        &mut self,
        regs: &mut [Reg],
        states: &mut [Option<Value>],
        inp: &Inputs<'_>,
        r: u32,
    ) -> Result<Value> {
        let slot = regs
            .get_mut(r as usize)
            .ok_or_else(|| Error::internal("register read before it is written"))?;
        let v = match *slot {
            Reg::Val(v) => return Ok(v),
            Reg::State(s) => match states[s] {
                Some(v) => v,
                None => {
                    let v = self.state_input(inp, s)?;
                    states[s] = Some(v);
                    v
                }
            },
            Reg::Param(j) => match self.shared.get(j).copied().flatten() {
                Some(v) => v,
                None => {
                    let base = self.base()?;
                    let off = offset(j * self.lanes + inp.pair * VECTOR_LANES)?;
                    self.load(V, base.p, off)
                }
            },
        };
        *slot = Reg::Val(v);
        Ok(v)
    }

    /// State `s`'s input to the program: in hand, or (a Runge-Kutta stage) the state
    /// (stage 0) or `y0 + h·(Σ a_j k_j)` as `kernel::combine` computes it, with the stage
    /// rows' values and then `y0` loaded right before, in the order the sum uses them.
    fn state_input(&mut self, inp: &Inputs<'_>, s: usize) -> Result<Value> {
        let (stage, h) = match inp.y {
            StateIn::Ready(y) => return Ok(y[s]),
            StateIn::Stage { stage, h } => (stage, h),
        };
        if stage == 0 {
            let base = self.base()?;
            let off = offset(s * self.lanes + inp.pair * VECTOR_LANES)?;
            return Ok(self.load(V, base.y, off));
        }
        let StepForm::Erk(tab) = self.form else {
            return Err(Error::internal("stage inputs outside a Runge-Kutta step"));
        };
        let row = &tab.a[stage];
        // Only the stages already taken (an explicit tableau).
        self.state_sum(inp.pair, s, h, &row[..row.len().min(stage)], None)
    }

    /// `y0 + h·(Σ w_j k_j)` of state `s` of pair `g` (`kernel::combine`, zero weights
    /// skipped), `k_j` from stage row `j` and `y0` (`y + 0`) from its row, loaded in the
    /// order the sum uses them (see [`program_pinned`](Self::program_pinned)).
    /// With `in_hand = (j, k)`, stage `j`'s values are `k` rather than its row's.
    fn state_sum(
        &mut self,
        g: usize,
        s: usize,
        h: Value,
        w: &[f64],
        in_hand: Option<(usize, &[Value])>,
    ) -> Result<Value> {
        let mut ks = Vec::with_capacity(w.len());
        for (j, &wj) in w.iter().enumerate() {
            // A skipped term is never read: a placeholder, no load.
            ks.push(vec![match in_hand {
                _ if wj == 0.0 => h,
                Some((row, k)) if row == j => k[s],
                _ => self.load_scratch(j, s, g)?,
            }]);
        }
        let y0 = self.load_scratch(self.y0_row(), s, g)?;
        let terms: Vec<(f64, &Vec<Value>)> = w.iter().copied().zip(&ks).collect();
        Ok(combine(&mut self.b, &[y0], h, &terms, true, splat)[0])
    }

    /// Stores pair `g`'s new state `y0 + h·(Σ b_j k_j)` straight to `y` (the old one is in
    /// its scratch row for the lanes that do not commit; the caller reads the new one back),
    /// the last stage's `k` in hand.
    fn store_new_state(
        &mut self,
        g: usize,
        h: Value,
        b: &[f64],
        last: (usize, &[Value]),
    ) -> Result<()> {
        let base = self.base()?;
        for s in 0..self.n {
            let v = self.state_sum(g, s, h, b, Some(last))?;
            let off = offset(s * self.lanes + g * VECTOR_LANES)?;
            self.b.ins().store(mem(), v, base.y, off);
        }
        Ok(())
    }

    /// The scratch row of `y + 0` (Runge-Kutta; after the stage rows and the old state).
    fn y0_row(&self) -> usize {
        self.old_row() + 1
    }

    /// The scratch row of the state before the step (Runge-Kutta; after the stage rows).
    fn old_row(&self) -> usize {
        match self.form {
            StepForm::Erk(tab) => tab.a.len(),
            _ => 0,
        }
    }

    fn scratch_offset(&self, row: usize, s: usize, g: usize) -> Result<i32> {
        offset((row * self.n + s) * self.lanes + g * VECTOR_LANES)
    }

    fn store_scratch(&mut self, row: usize, s: usize, g: usize, v: Value) -> Result<()> {
        let (base, off) = (self.base()?, self.scratch_offset(row, s, g)?);
        self.b.ins().store(mem(), v, base.scratch, off);
        Ok(())
    }

    /// Stores pair `g`'s `y + 0` (see `kernel::combine`) to its row, once per step for every
    /// later stage, and its state to the old state's row (`y` gets the new state before
    /// the lanes that do not commit are known); `read` holds the states stage 0 loaded.
    fn pin_y0(&mut self, g: usize, read: &[Option<Value>]) -> Result<()> {
        let zero = self.splat(0.0);
        let base = self.base()?;
        for (s, &v) in read.iter().enumerate() {
            let v = match v {
                Some(v) => v,
                None => {
                    let off = offset(s * self.lanes + g * VECTOR_LANES)?;
                    self.load(V, base.y, off)
                }
            };
            let y0 = self.b.ins().fadd(v, zero);
            self.store_scratch(self.y0_row(), s, g, y0)?;
            if self.pair_commit.is_none() {
                self.store_scratch(self.old_row(), s, g, v)?;
            }
        }
        Ok(())
    }

    fn load_scratch(&mut self, row: usize, s: usize, g: usize) -> Result<Value> {
        let (base, off) = (self.base()?, self.scratch_offset(row, s, g)?);
        Ok(self.load(V, base.scratch, off))
    }

    /// `lag_x(k)` of each lane of the pair, as `Lowerer::lag` computes it.
    fn lag(&mut self, inp: &Inputs<'_>, state: usize, k: u32) -> Result<Value> {
        let slot = self
            .lw
            .layout
            .get(state)
            .copied()
            .filter(|s| s.len > 0)
            .ok_or_else(|| Error::internal("lag of a state without a lag ring"))?;
        let i64t = types::I64;
        let mut lanes = Vec::with_capacity(VECTOR_LANES);
        for i in 0..VECTOR_LANES {
            let (ring, heads) = self.lane_lag(inp.pair * VECTOR_LANES + i)?;
            let head = self.load(i64t, heads, offset(state)?);
            let k = self.b.ins().iconst(i64t, i64::from(k));
            let shift = self.b.ins().iconst(i64t, inp.lag_shift);
            let back = self.b.ins().isub(k, shift);
            let len = self.b.ins().iconst(i64t, slot.len as i64);
            let sum = self.b.ins().iadd(head, len);
            let pos = self.b.ins().isub(sum, back);
            let idx = self.b.ins().urem(pos, len);
            let idx = self.b.ins().iadd_imm_u(idx, slot.offset as i64);
            let bytes = self.b.ins().imul_imm_u(idx, 8);
            let addr = self.b.ins().iadd(ring, bytes);
            lanes.push(self.b.ins().load(types::F64, mem(), addr, 0));
        }
        Ok(self.gather(&lanes))
    }

    /// A vector from one scalar per lane.
    fn gather(&mut self, lanes: &[Value]) -> Value {
        let mut v = self.b.ins().scalar_to_vector(V, lanes[0]);
        for (i, &x) in lanes.iter().enumerate().skip(1) {
            v = self.b.ins().insertlane(v, x, i as u8);
        }
        v
    }

    /// The shim `name` called on each lane.
    fn per_lane(&mut self, name: &'static str, args: &[Value]) -> Result<Value> {
        let f64t = types::F64;
        let callee = match self.shims.get(name) {
            Some(r) => *r,
            None => {
                let params = vec![f64t; args.len()];
                let r = self.lw.import_symbol(&mut self.b, name, &params, &[f64t])?;
                self.shims.insert(name, r);
                r
            }
        };
        let mut out = Vec::with_capacity(VECTOR_LANES);
        for i in 0..VECTOR_LANES {
            let scalars: Vec<Value> = args
                .iter()
                .map(|&a| self.b.ins().extractlane(a, i as u8))
                .collect();
            let call = self.b.ins().call(callee, &scalars);
            out.push(self.b.inst_results(call)[0]);
        }
        Ok(self.gather(&out))
    }

    fn unary(&mut self, f: Fn1, a: Value) -> Result<Value> {
        Ok(match f {
            Fn1::Neg => self.b.ins().fneg(a),
            Fn1::Abs => self.b.ins().fabs(a),
            Fn1::Sqrt => self.b.ins().sqrt(a),
            Fn1::Not => {
                let zero = self.splat(0.0);
                let c = self.b.ins().fcmp(FloatCC::Equal, a, zero);
                self.flag(c)
            }
            _ => {
                let (name, _) = shims::unary(f)
                    .ok_or_else(|| Error::internal("no shim for a native operation"))?;
                self.per_lane(name, &[a])?
            }
        })
    }

    /// `Lowerer::binary`, lane-wise.
    fn binary(&mut self, f: Fn2, x: Value, y: Value) -> Result<Value> {
        let cmp = |g: &mut Self, cc: FloatCC| {
            let c = g.b.ins().fcmp(cc, x, y);
            g.flag(c)
        };
        Ok(match f {
            Fn2::Add => self.b.ins().fadd(x, y),
            Fn2::Sub => self.b.ins().fsub(x, y),
            Fn2::Mul => self.b.ins().fmul(x, y),
            Fn2::Div => self.b.ins().fdiv(x, y),
            Fn2::Min => {
                let c = self.b.ins().fcmp(FloatCC::LessThan, y, x);
                self.choose(c, y, x)
            }
            Fn2::Max => {
                let c = self.b.ins().fcmp(FloatCC::GreaterThan, y, x);
                self.choose(c, y, x)
            }
            Fn2::Lt => cmp(self, FloatCC::LessThan),
            Fn2::Le => cmp(self, FloatCC::LessThanOrEqual),
            Fn2::Gt => cmp(self, FloatCC::GreaterThan),
            Fn2::Ge => cmp(self, FloatCC::GreaterThanOrEqual),
            Fn2::Eq => cmp(self, FloatCC::Equal),
            Fn2::Ne => cmp(self, FloatCC::NotEqual),
            Fn2::And => {
                let tx = self.truth(x);
                self.choose(tx, y, x)
            }
            Fn2::Or => {
                let tx = self.truth(x);
                self.choose(tx, x, y)
            }
            _ => {
                let (name, _) = shims::binary(f)
                    .ok_or_else(|| Error::internal("no shim for a native operation"))?;
                self.per_lane(name, &[x, y])?
            }
        })
    }
}

/// Rows of scratch a method's loop writes (Runge-Kutta: one per stage, the old state and
/// `y + 0`).
fn scratch_rows(form: StepForm) -> usize {
    match form {
        StepForm::Erk(tab) => tab.a.len() + 2,
        _ => 0,
    }
}

/// Rows of carried history a method's loop keeps (Adams: one per weight).
fn history_rows(form: StepForm) -> usize {
    match form {
        StepForm::Adams(w) => w.len(),
        _ => 0,
    }
}

/// A vector constant, for `kernel::combine`.
fn splat(b: &mut FunctionBuilder, x: f64) -> Value {
    let s = b.ins().f64const(x);
    b.ins().splat(V, s)
}

#[cfg(test)]
mod tests {
    /// A batch's kept loop follows its parameters: after a call whose lanes shared
    /// parameters, a call whose lanes do not gets the loop a fresh lookup gives (reading a
    /// parameter once for all lanes when they differ would change their bits), and back.
    #[test]
    fn a_kept_loop_is_chosen_again_when_the_shared_parameters_change() {
        let model = crate::Model::load("builtin://ode/lorenz").unwrap();
        let info = crate::stepper::lookup("rk4").unwrap();
        let form = crate::stepper::create(info, 3).step_form().unwrap();
        let kernel = model.batch_kernel(info.name, form, 4).unwrap();
        // Parameters sigma, rho, beta; `p[j * lanes + lane]`.
        let shared = [
            10.0, 10.0, 10.0, 10.0, 28.0, 28.0, 28.0, 28.0, 2.0, 2.0, 2.0, 2.0,
        ];
        let mut rho_differs = shared;
        rho_differs[5] = 29.0;
        let mut all_differ = rho_differs;
        (all_differ[1], all_differ[9]) = (11.0, 3.0);
        let mut kept = kernel.scratch();
        let mut seen = Vec::new();
        for p in [
            &shared,
            &rho_differs,
            &all_differ,
            &shared,
            &all_differ,
            &rho_differs,
        ] {
            let got = kernel.chosen_loop(p, &mut kept) as usize;
            let fresh = kernel.chosen_loop(p, &mut kernel.scratch()) as usize;
            assert_eq!(got, fresh);
            seen.push(got);
        }
        // Three parameter sets, three loops; sharing none is the general loop.
        assert_eq!(seen[2], kernel.general.f as usize);
        assert!(seen[0] != seen[1] && seen[1] != seen[2] && seen[0] != seen[2]);
    }
}

//! Lowering of compiled programs to Cranelift IR, one function per program, all in one
//! `JITModule` per model.
//!
//! Every generated function has the C signature
//! `fn(t: f64, y: *f64, p: *f64, lag: *const LagCtx, out: *mut f64)`. Programs are already in
//! SSA order, so each instruction becomes one Cranelift value. Only exactly rounded IEEE
//! operations (+ − × ÷ √, negation, |x|) and comparisons/selects are emitted as instructions;
//! every other function is a call into `shims`, i.e. the interpreter's own code. Cranelift
//! never contracts a multiply and an add into an FMA on its own, so the arithmetic is the
//! interpreter's, operation for operation.
//!
//! Every memory access is checked here against [`Bounds`] at compile time; the unsafe caller
//! in `native.rs` relies on that.

use std::collections::HashMap;

use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{
    types, AbiParam, FuncRef, InstBuilder, MemFlagsData, Signature, Value,
};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_codegen::Context;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{default_libcall_names, FuncId, Linkage, Module};

mod chunked;

use super::shims;
use crate::error::{Error, Result};
use crate::model::compile::{CompiledModel, Target};
use crate::model::program::{Fn1, Fn2, LagSlot, Op, Program};
use chunked::CHUNK_OPS;

/// What generated code may touch: `y[..n_states]`, `p[..n_params]`, `out[..n_out]` of each
/// function, `heads[..n_states]` and `ring[..lag_total]` of the lag context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bounds {
    pub n_states: usize,
    pub n_params: usize,
    pub lag_total: usize,
}

/// Byte offsets of the `LagCtx` fields (`#[repr(C)]`: ring pointer, heads pointer, shift).
pub const LAG_RING_OFFSET: i32 = 0;
pub const LAG_HEADS_OFFSET: i32 = 8;
pub const LAG_SHIFT_OFFSET: i32 = 16;

/// One generated function before linking.
#[derive(Debug, Clone, Copy)]
pub struct FnDecl {
    pub id: FuncId,
    /// Values written to `out`.
    pub n_out: usize,
    /// Reads the lag context (otherwise it may be null).
    pub uses_lag: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct EventDecl {
    pub cond: FnDecl,
    /// Applies the action lines in order, writing `y` and `p` in place.
    pub action: FnDecl,
    pub log: FnDecl,
}

/// A model's functions, compiled but not yet finalized.
pub struct Lowered {
    pub module: JITModule,
    pub bounds: Bounds,
    pub rhs: FnDecl,
    pub aux: FnDecl,
    pub events: Vec<EventDecl>,
    pub stop: Option<FnDecl>,
    pub jacobian: Option<FnDecl>,
}

pub(super) fn cl_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::internal(format!("native code generation failed ({what}): {e}"))
}

/// What Cranelift optimises a module for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tuning {
    /// The fastest code (small models, fused loops).
    Speed,
    /// The shortest compile (models whose programs are split into chunks).
    CompileTime,
}

pub(super) fn new_module(tuning: Tuning) -> Result<JITModule> {
    if cfg!(not(target_pointer_width = "64")) {
        return Err(Error::internal(
            "native code needs a 64-bit target; use the interpreter",
        ));
    }
    let mut flags = settings::builder();
    // Cranelift's IR verifier costs a tenth (large models) to a fifth (small ones) of load
    // and compile time. Generated code is
    // checked bit for bit against the interpreter by the test suite, which runs with the
    // verifier on (.cargo/config.toml sets DYNLIB_JIT_VERIFY) so malformed IR fails there.
    let verify = cfg!(debug_assertions) || std::env::var_os("DYNLIB_JIT_VERIFY").is_some();
    flags
        .set("enable_verifier", if verify { "true" } else { "false" })
        .map_err(|e| cl_error("flags", e))?;
    // Long-range calls and absolute addresses: what cranelift-jit requires.
    flags
        .set("use_colocated_libcalls", "false")
        .map_err(|e| cl_error("flags", e))?;
    flags
        .set("is_pic", "false")
        .map_err(|e| cl_error("flags", e))?;
    // Large programs are compiled for compile time: without Cranelift's egraph pass and
    // with its single-pass register allocator, native code for a chain of 10^5 states builds
    // in about half the time and its straight-line chunks ran no slower (scale_bench
    // `100000 x phases` / `x firstrun`, README Scale). The arithmetic is the same IEEE
    // operations either way (Cranelift does no value-changing float rewrites at any level).
    let (opt_level, regalloc) = match tuning {
        Tuning::Speed => ("speed", "backtracking"),
        Tuning::CompileTime => ("none", "single_pass"),
    };
    flags
        .set("opt_level", opt_level)
        .map_err(|e| cl_error("flags", e))?;
    flags
        .set("regalloc_algorithm", regalloc)
        .map_err(|e| cl_error("flags", e))?;
    // Frames of large functions (spill areas, register spills) may exceed a guard page:
    // probe them, so running out of stack faults on the guard page instead of skipping it.
    flags
        .set("enable_probestack", "true")
        .map_err(|e| cl_error("flags", e))?;
    flags
        .set("probestack_strategy", "inline")
        .map_err(|e| cl_error("flags", e))?;
    let isa = cranelift_native::builder()
        .map_err(|e| cl_error("host machine", e))?
        .finish(settings::Flags::new(flags))
        .map_err(|e| cl_error("target", e))?;
    let mut builder = JITBuilder::with_isa(isa, default_libcall_names());
    for (name, f) in shims::all_unary() {
        builder.symbol(name, f as *const u8);
    }
    for (name, f) in shims::all_binary() {
        builder.symbol(name, f as *const u8);
    }
    Ok(JITModule::new(builder))
}

/// Lowers every program of `model`.
pub fn lower_model(model: &CompiledModel, layout: &[LagSlot], bounds: Bounds) -> Result<Lowered> {
    if layout.len() != bounds.n_states {
        return Err(Error::internal("lag layout does not match the state count"));
    }
    for slot in layout {
        if slot.len > 0 && slot.offset + slot.len > bounds.lag_total {
            return Err(Error::internal("lag slot outside the lag ring"));
        }
    }
    let large = [&model.rhs, &model.aux]
        .into_iter()
        .chain(&model.jacobian)
        .any(|p| p.ops.len() > CHUNK_OPS);
    let tuning = if large {
        Tuning::CompileTime
    } else {
        Tuning::Speed
    };
    let mut lw = Lowerer::with_tuning(layout, bounds.clone(), tuning)?;
    let rhs = lw.function(Body::Outputs(&model.rhs))?;
    let aux = lw.function(Body::Outputs(&model.aux))?;
    let mut events = Vec::new();
    for ev in &model.events {
        events.push(EventDecl {
            cond: lw.function(Body::Outputs(&ev.cond))?,
            action: lw.function(Body::Actions(&ev.actions))?,
            log: lw.function(Body::Outputs(&ev.log))?,
        });
    }
    let stop = model
        .stop
        .as_ref()
        .map(|s| lw.function(Body::Outputs(s)))
        .transpose()?;
    let jacobian = model
        .jacobian
        .as_ref()
        .map(|j| lw.function(Body::Outputs(j)))
        .transpose()?;
    Ok(Lowered {
        module: lw.module,
        bounds,
        rhs,
        aux,
        events,
        stop,
        jacobian,
    })
}

/// What a generated function does with its program(s).
enum Body<'a> {
    /// Store each output to `out[i]`.
    Outputs(&'a Program),
    /// Evaluate each program in turn and store it to its target in `y` or `p`, so later
    /// lines see earlier assignments (the interpreter's order).
    Actions(&'a [(Target, Program)]),
}

/// A shim callable from generated code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Import {
    Unary(Fn1),
    Binary(Fn2),
}

pub(super) struct Lowerer<'a> {
    pub module: JITModule,
    /// Scratch of the function builder, reused across functions.
    pub fctx: FunctionBuilderContext,
    /// Shims declared in the module so far.
    imports: HashMap<Import, FuncId>,
    pub layout: &'a [LagSlot],
    pub bounds: Bounds,
    count: u32,
}

/// Where a program reads a vector (states or parameters) from.
#[derive(Debug, Clone)]
pub(super) enum Src {
    /// Loads from memory at this base pointer.
    Ptr(Value),
    /// Values already in SSA registers (a fused loop keeps its state there).
    Vals(Vec<Value>),
}

/// Function-local view of the inputs of the program being emitted and of the shims
/// referenced so far.
pub(super) struct Frame {
    pub t: Value,
    pub y: Src,
    pub p: Src,
    pub lag: Value,
    /// (ring pointer, heads pointer, shift), loaded on first use in the function's entry
    /// block (or set by the caller), so they dominate every use.
    pub lag_fields: Option<(Value, Value, Value)>,
    refs: HashMap<Import, FuncRef>,
    pub uses_lag: bool,
}

impl Frame {
    pub fn new(t: Value, y: Src, p: Src, lag: Value) -> Frame {
        Frame {
            t,
            y,
            p,
            lag,
            lag_fields: None,
            refs: HashMap::new(),
            uses_lag: false,
        }
    }
}

impl<'a> Lowerer<'a> {
    pub fn new(layout: &'a [LagSlot], bounds: Bounds) -> Result<Self> {
        Lowerer::with_tuning(layout, bounds, Tuning::Speed)
    }

    pub fn with_tuning(layout: &'a [LagSlot], bounds: Bounds, tuning: Tuning) -> Result<Self> {
        Ok(Lowerer {
            module: new_module(tuning)?,
            fctx: FunctionBuilderContext::new(),
            imports: HashMap::new(),
            layout,
            bounds,
            count: 0,
        })
    }

    /// A fresh name for the next generated function.
    pub fn next_name(&mut self) -> String {
        let name = format!("dynlib_model_fn{}", self.count);
        self.count += 1;
        name
    }

    /// Defines the loop `id` built in `ctx`, links it and returns its code. With
    /// `DYNLIB_DUMP_KERNEL` set, the machine code is printed (to see what a loop costs).
    pub fn define_loop(&mut self, id: FuncId, ctx: &mut Context) -> Result<*const u8> {
        let dump = std::env::var_os("DYNLIB_DUMP_KERNEL").is_some();
        ctx.set_disasm(dump);
        self.module
            .define_function(id, ctx)
            .map_err(|e| cl_error("define", format!("{e:?}")))?;
        if dump {
            if let Some(code) = ctx.compiled_code().and_then(|c| c.vcode.as_ref()) {
                eprintln!("{code}");
            }
        }
        self.module
            .finalize_definitions()
            .map_err(|e| Error::internal(format!("native code linking failed: {e}")))?;
        Ok(self.module.get_finalized_function(id))
    }

    /// A new local function taking one pointer and returning an i64 (the fused and
    /// lock-step loops), declared, with its context.
    pub fn declare_loop(&mut self) -> Result<(FuncId, Context)> {
        let ptr = self.module.target_config().pointer_type();
        let mut sig = self.module.make_signature();
        sig.params.push(AbiParam::new(ptr));
        sig.returns.push(AbiParam::new(types::I64));
        self.declare_local(sig)
    }

    fn signature(&self) -> Signature {
        let ptr = self.module.target_config().pointer_type();
        let mut sig = self.module.make_signature();
        sig.params.push(AbiParam::new(types::F64));
        for _ in 0..4 {
            sig.params.push(AbiParam::new(ptr));
        }
        sig
    }

    fn function(&mut self, body: Body<'_>) -> Result<FnDecl> {
        if let Body::Outputs(prog) = body {
            if prog.ops.len() > CHUNK_OPS {
                return self.chunked_function(prog);
            }
        }
        let (id, mut ctx) = self.declare_local(self.signature())?;
        let mut fctx = std::mem::take(&mut self.fctx);
        let built = self.build(&mut ctx, &mut fctx, &body);
        self.fctx = fctx;
        let (n_out, uses_lag) = built?;
        self.module
            .define_function(id, &mut ctx)
            .map_err(|e| cl_error("define", format!("{e:?}")))?;
        Ok(FnDecl {
            id,
            n_out,
            uses_lag,
        })
    }

    /// Builds the body into `ctx.func`; returns (outputs written, uses lag).
    fn build(
        &mut self,
        ctx: &mut Context,
        fctx: &mut FunctionBuilderContext,
        body: &Body<'_>,
    ) -> Result<(usize, bool)> {
        let frontend = self.module.target_config();
        let mut b = FunctionBuilder::new(&mut ctx.func, fctx);
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        b.seal_block(entry);
        let args = b.block_params(entry).to_vec();
        let (y, p, out) = (args[1], args[2], args[4]);
        let mut frame = Frame::new(args[0], Src::Ptr(y), Src::Ptr(p), args[3]);
        let n_out = match body {
            Body::Outputs(prog) => {
                // Each output is stored as soon as its value exists, so a large model does
                // not keep every output live to the end (register allocation would then
                // grow quadratically with the model).
                let stores = output_stores(prog)?;
                self.emit_with(&mut b, &mut frame, prog, |b, r, v| {
                    for &i in &stores[r] {
                        b.ins().store(mem(), v, out, offset(i)?);
                    }
                    Ok(())
                })?;
                prog.outputs.len()
            }
            Body::Actions(actions) => {
                for (target, prog) in actions.iter() {
                    let regs = self.emit(&mut b, &mut frame, prog)?;
                    let &[r] = prog.outputs.as_slice() else {
                        return Err(Error::internal("an action program has one output"));
                    };
                    let v = reg(&regs, r)?;
                    let (base, i) = match *target {
                        Target::State(s) if s < self.bounds.n_states => (y, s),
                        Target::Param(k) if k < self.bounds.n_params => (p, k),
                        _ => return Err(Error::internal("action target out of range")),
                    };
                    b.ins().store(mem(), v, base, offset(i)?);
                }
                0
            }
        };
        b.ins().return_(&[]);
        b.finalize(frontend);
        Ok((n_out, frame.uses_lag))
    }

    /// Declares the imported function `name` with `params` → `returns` in `b`'s function.
    pub fn import_symbol(
        &mut self,
        b: &mut FunctionBuilder,
        name: &str,
        params: &[types::Type],
        returns: &[types::Type],
    ) -> Result<FuncRef> {
        let mut sig = self.module.make_signature();
        sig.params.extend(params.iter().map(|&t| AbiParam::new(t)));
        sig.returns
            .extend(returns.iter().map(|&t| AbiParam::new(t)));
        let id = self
            .module
            .declare_function(name, Linkage::Import, &sig)
            .map_err(|e| cl_error("import", e))?;
        Ok(self.module.declare_func_in_func(id, b.func))
    }

    fn import(
        &mut self,
        b: &mut FunctionBuilder,
        frame: &mut Frame,
        imp: Import,
    ) -> Result<FuncRef> {
        if let Some(r) = frame.refs.get(&imp) {
            return Ok(*r);
        }
        let id = match self.imports.get(&imp) {
            Some(id) => *id,
            None => {
                let (name, arity) = match imp {
                    Import::Unary(f) => (shims::unary(f).map(|s| s.0), 1),
                    Import::Binary(f) => (shims::binary(f).map(|s| s.0), 2),
                };
                let name = name.ok_or_else(|| Error::internal("no shim for a native operation"))?;
                let mut sig = self.module.make_signature();
                for _ in 0..arity {
                    sig.params.push(AbiParam::new(types::F64));
                }
                sig.returns.push(AbiParam::new(types::F64));
                let id = self
                    .module
                    .declare_function(name, Linkage::Import, &sig)
                    .map_err(|e| cl_error("import", e))?;
                self.imports.insert(imp, id);
                id
            }
        };
        let r = self.module.declare_func_in_func(id, b.func);
        frame.refs.insert(imp, r);
        Ok(r)
    }

    /// Emits `prog` and returns the values of its outputs, in order.
    pub fn outputs(
        &mut self,
        b: &mut FunctionBuilder,
        frame: &mut Frame,
        prog: &Program,
    ) -> Result<Vec<Value>> {
        let regs = self.emit(b, frame, prog)?;
        prog.outputs.iter().map(|&r| reg(&regs, r)).collect()
    }

    /// Emits every instruction of `prog`; returns the value of each register.
    fn emit(
        &mut self,
        b: &mut FunctionBuilder,
        frame: &mut Frame,
        prog: &Program,
    ) -> Result<Vec<Value>> {
        self.emit_with(b, frame, prog, |_, _, _| Ok(()))
    }

    /// [`Self::emit`], calling `on_value(b, register, value)` right after each register
    /// is computed.
    fn emit_with(
        &mut self,
        b: &mut FunctionBuilder,
        frame: &mut Frame,
        prog: &Program,
        mut on_value: impl FnMut(&mut FunctionBuilder, usize, Value) -> Result<()>,
    ) -> Result<Vec<Value>> {
        let mut regs: Vec<Value> = Vec::with_capacity(prog.ops.len());
        for op in &prog.ops {
            let v = self.emit_op(b, frame, *op, |r| reg(&regs, r))?;
            on_value(b, regs.len(), v)?;
            regs.push(v);
        }
        Ok(regs)
    }

    /// Emits one instruction, reading its operands through `operand`.
    fn emit_op(
        &mut self,
        b: &mut FunctionBuilder,
        frame: &mut Frame,
        op: Op,
        operand: impl Fn(u32) -> Result<Value>,
    ) -> Result<Value> {
        Ok(match op {
            Op::Const(c) => b.ins().f64const(c),
            Op::Time => frame.t,
            Op::State(s) if (s as usize) < self.bounds.n_states => read(b, &frame.y, s as usize)?,
            Op::Param(k) if (k as usize) < self.bounds.n_params => read(b, &frame.p, k as usize)?,
            Op::State(_) | Op::Param(_) => {
                return Err(Error::internal("state or parameter index out of range"))
            }
            Op::Lag { state, k } => self.lag(b, frame, state as usize, k)?,
            Op::Unary(f, a) => {
                let a = operand(a)?;
                self.unary(b, frame, f, a)?
            }
            Op::Binary(f, x, y) => {
                let x = operand(x)?;
                let y = operand(y)?;
                self.binary(b, frame, f, x, y)?
            }
            Op::Select(c, x, y) => {
                let c = truth(b, operand(c)?);
                let (x, y) = (operand(x)?, operand(y)?);
                b.ins().select(c, x, y)
            }
        })
    }

    /// `lag_x(k)`: `ring[offset + (head + len - (k - shift)) % len]`, in the wrapping `usize`
    /// arithmetic of `LagView::get`. The modulo keeps the index inside the state's slot
    /// whatever the head holds.
    fn lag(
        &self,
        b: &mut FunctionBuilder,
        frame: &mut Frame,
        state: usize,
        k: u32,
    ) -> Result<Value> {
        let slot = self
            .layout
            .get(state)
            .copied()
            .filter(|s| s.len > 0)
            .ok_or_else(|| Error::internal("lag of a state without a lag ring"))?;
        frame.uses_lag = true;
        let i64t = types::I64;
        let (ring, heads, shift) = match frame.lag_fields {
            Some(f) => f,
            None => {
                let ring = b.ins().load(i64t, mem(), frame.lag, LAG_RING_OFFSET);
                let heads = b.ins().load(i64t, mem(), frame.lag, LAG_HEADS_OFFSET);
                let shift = b.ins().load(i64t, mem(), frame.lag, LAG_SHIFT_OFFSET);
                frame.lag_fields = Some((ring, heads, shift));
                (ring, heads, shift)
            }
        };
        let head = b.ins().load(i64t, mem(), heads, offset(state)?);
        let k = b.ins().iconst(i64t, i64::from(k));
        let back = b.ins().isub(k, shift);
        let len = b.ins().iconst(i64t, slot.len as i64);
        let sum = b.ins().iadd(head, len);
        let pos = b.ins().isub(sum, back);
        let idx = b.ins().urem(pos, len);
        let slot_offset = b.ins().iconst(i64t, slot.offset as i64);
        let idx = b.ins().iadd(idx, slot_offset);
        let eight = b.ins().iconst(i64t, 8);
        let bytes = b.ins().imul(idx, eight);
        let addr = b.ins().iadd(ring, bytes);
        Ok(b.ins().load(types::F64, mem(), addr, 0))
    }

    fn unary(
        &mut self,
        b: &mut FunctionBuilder,
        frame: &mut Frame,
        f: Fn1,
        a: Value,
    ) -> Result<Value> {
        Ok(match f {
            Fn1::Neg => b.ins().fneg(a),
            Fn1::Abs => b.ins().fabs(a),
            Fn1::Sqrt => b.ins().sqrt(a),
            Fn1::Not => {
                // 1 when a == 0 (ordered: NaN is true, so its negation is 0).
                let zero = b.ins().f64const(0.0);
                let c = b.ins().fcmp(FloatCC::Equal, a, zero);
                flag(b, c)
            }
            _ => {
                let r = self.import(b, frame, Import::Unary(f))?;
                let call = b.ins().call(r, &[a]);
                b.inst_results(call)[0]
            }
        })
    }

    fn binary(
        &mut self,
        b: &mut FunctionBuilder,
        frame: &mut Frame,
        f: Fn2,
        x: Value,
        y: Value,
    ) -> Result<Value> {
        let cmp = |b: &mut FunctionBuilder, cc: FloatCC| {
            let c = b.ins().fcmp(cc, x, y);
            flag(b, c)
        };
        Ok(match f {
            Fn2::Add => b.ins().fadd(x, y),
            Fn2::Sub => b.ins().fsub(x, y),
            Fn2::Mul => b.ins().fmul(x, y),
            Fn2::Div => b.ins().fdiv(x, y),
            // `if y < x { y } else { x }`: ties and NaN resolve exactly as in `call2`.
            Fn2::Min => {
                let c = b.ins().fcmp(FloatCC::LessThan, y, x);
                b.ins().select(c, y, x)
            }
            Fn2::Max => {
                let c = b.ins().fcmp(FloatCC::GreaterThan, y, x);
                b.ins().select(c, y, x)
            }
            // Rust's `<`, `<=`, `>`, `>=`, `==` are ordered (false on NaN); `!=` is unordered.
            Fn2::Lt => cmp(b, FloatCC::LessThan),
            Fn2::Le => cmp(b, FloatCC::LessThanOrEqual),
            Fn2::Gt => cmp(b, FloatCC::GreaterThan),
            Fn2::Ge => cmp(b, FloatCC::GreaterThanOrEqual),
            Fn2::Eq => cmp(b, FloatCC::Equal),
            Fn2::Ne => cmp(b, FloatCC::NotEqual),
            // Python's `and`/`or` return an operand, as `py_and`/`py_or` do.
            Fn2::And => {
                let tx = truth(b, x);
                b.ins().select(tx, y, x)
            }
            Fn2::Or => {
                let tx = truth(b, x);
                b.ins().select(tx, x, y)
            }
            _ => {
                let r = self.import(b, frame, Import::Binary(f))?;
                let call = b.ins().call(r, &[x, y]);
                b.inst_results(call)[0]
            }
        })
    }
}

/// The output indices stored from each register of `prog`.
fn output_stores(prog: &Program) -> Result<Vec<Vec<usize>>> {
    let mut stores: Vec<Vec<usize>> = vec![Vec::new(); prog.ops.len()];
    for (i, &r) in prog.outputs.iter().enumerate() {
        stores
            .get_mut(r as usize)
            .ok_or_else(|| Error::internal("output register out of range"))?
            .push(i);
    }
    Ok(stores)
}

/// Element `i` of a vector source.
fn read(b: &mut FunctionBuilder, src: &Src, i: usize) -> Result<Value> {
    match src {
        Src::Ptr(base) => Ok(b.ins().load(types::F64, mem(), *base, offset(i)?)),
        Src::Vals(v) => v
            .get(i)
            .copied()
            .ok_or_else(|| Error::internal("vector read out of range")),
    }
}

/// Plain loads and stores: aligned, never trapping (the caller checked every length).
pub(super) fn mem() -> MemFlagsData {
    MemFlagsData::trusted()
}

pub(super) fn offset(index: usize) -> Result<i32> {
    i32::try_from(index * 8).map_err(|_| Error::internal("index too large for native code"))
}

fn reg(regs: &[Value], r: u32) -> Result<Value> {
    regs.get(r as usize)
        .copied()
        .ok_or_else(|| Error::internal("register read before it is written"))
}

/// `x != 0.0` as Rust evaluates it (NaN is true).
pub(super) fn truth(b: &mut FunctionBuilder, x: Value) -> Value {
    // Branching on a comparison's 1.0/0.0 rather than on the comparison itself looks
    // wasteful, but the direct form made Cranelift's register allocator keep Izhikevich's
    // state in memory through its loop: 6% slower (benches/vs_c), so it stays.
    let zero = b.ins().f64const(0.0);
    b.ins().fcmp(FloatCC::NotEqual, x, zero)
}

/// 1.0 or 0.0 from a comparison result.
fn flag(b: &mut FunctionBuilder, c: Value) -> Value {
    let one = b.ins().f64const(1.0);
    let zero = b.ins().f64const(0.0);
    b.ins().select(c, one, zero)
}

//! Large output programs as several generated functions.
//!
//! Cranelift's cost grows faster than linearly with the size of one function (register
//! allocation, egraph), so a program of more than [`CHUNK_OPS`] instructions is split into
//! consecutive chunks, each its own function, called in order by an entry function with the
//! usual signature. A chunk recomputes the leaves it reads from earlier chunks (constants,
//! `t`, state, parameter and lag loads); any other value it needs from an earlier chunk goes
//! through a spill area on the entry function's stack. The operations and their order are the
//! program's, and a spill is an exact f64 store and load, so results are bit-identical to one
//! function (and to the interpreter).

use std::collections::HashMap;

use cranelift_codegen::ir::{
    types, AbiParam, Function, InstBuilder, StackSlotData, StackSlotKind, UserFuncName, Value,
};
use cranelift_codegen::Context;
use cranelift_frontend::FunctionBuilder;
use cranelift_module::{FuncId, Linkage, Module};

use super::{cl_error, mem, offset, FnDecl, Frame, Lowerer, Src};
use crate::error::{Error, Result};
use crate::model::program::{Op, Program};

/// Instructions per generated function: small enough that Cranelift works in linear time,
/// large enough that the calls between chunks cost nothing next to the work in them.
pub(in crate::model::jit) const CHUNK_OPS: usize = 2048;

/// Most values passed between chunks (8 bytes each on the entry function's stack); a program
/// needing more is refused (the interpreter then evaluates it).
const MAX_SPILLS: usize = 1 << 14;

/// No spill slot.
const NONE: u32 = u32::MAX;

/// Instructions without operands: cheaper to recompute in a later chunk than to pass on.
fn is_leaf(op: Op) -> bool {
    matches!(
        op,
        Op::Const(_) | Op::Time | Op::State(_) | Op::Param(_) | Op::Lag { .. }
    )
}

/// The registers `op` reads.
fn operands(op: Op) -> impl Iterator<Item = u32> {
    let (a, b, c) = match op {
        Op::Unary(_, a) => (Some(a), None, None),
        Op::Binary(_, a, b) => (Some(a), Some(b), None),
        Op::Select(c, a, b) => (Some(c), Some(a), Some(b)),
        _ => (None, None, None),
    };
    a.into_iter().chain(b).chain(c)
}

/// Spill slot of every register read by a later chunk (`NONE` for the others) and the
/// number of slots.
fn spill_slots(prog: &Program) -> Result<(Vec<u32>, usize)> {
    let mut slot = vec![NONE; prog.ops.len()];
    let mut n = 0usize;
    for (i, &op) in prog.ops.iter().enumerate() {
        for r in operands(op) {
            let r = r as usize;
            if r >= i {
                return Err(Error::internal("register read before it is written"));
            }
            let earlier_chunk = r / CHUNK_OPS < i / CHUNK_OPS;
            if earlier_chunk && !is_leaf(prog.ops[r]) && slot[r] == NONE {
                slot[r] = n as u32;
                n += 1;
            }
        }
    }
    if n > MAX_SPILLS {
        return Err(Error::internal(format!(
            "native code: {n} values cross function chunks (at most {MAX_SPILLS})"
        )));
    }
    Ok((slot, n))
}

/// What every chunk of one program shares.
struct Plan<'p> {
    prog: &'p Program,
    /// Spill slot by register.
    slot: Vec<u32>,
    /// Output indices stored from each register.
    stores: Vec<Vec<usize>>,
}

impl Lowerer<'_> {
    /// An output program of more than [`CHUNK_OPS`] instructions as chunk functions and an
    /// entry function calling them in order.
    pub(super) fn chunked_function(&mut self, prog: &Program) -> Result<FnDecl> {
        let (slot, n_spill) = spill_slots(prog)?;
        let plan = Plan {
            prog,
            slot,
            stores: super::output_stores(prog)?,
        };
        let mut chunks = Vec::new();
        let mut uses_lag = false;
        for start in (0..prog.ops.len()).step_by(CHUNK_OPS) {
            let end = (start + CHUNK_OPS).min(prog.ops.len());
            let (id, lag) = self.chunk(&plan, start..end)?;
            chunks.push(id);
            uses_lag |= lag;
        }
        let id = self.entry_function(&chunks, n_spill)?;
        Ok(FnDecl {
            id,
            n_out: prog.outputs.len(),
            uses_lag,
        })
    }

    /// `fn(t, y, p, lag, out, spill)` computing instructions `range`; returns its id and
    /// whether it reads the lag history.
    fn chunk(&mut self, plan: &Plan<'_>, range: std::ops::Range<usize>) -> Result<(FuncId, bool)> {
        let mut sig = self.signature();
        sig.params
            .push(AbiParam::new(self.module.target_config().pointer_type()));
        let (id, mut ctx) = self.declare_local(sig)?;
        let frontend = self.module.target_config();
        let mut fctx = std::mem::take(&mut self.fctx);
        let built = {
            let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
            let r = self.chunk_body(&mut b, plan, range);
            b.finalize(frontend);
            r
        };
        self.fctx = fctx;
        let uses_lag = built?;
        self.module
            .define_function(id, &mut ctx)
            .map_err(|e| cl_error("define", format!("{e:?}")))?;
        Ok((id, uses_lag))
    }

    fn chunk_body(
        &mut self,
        b: &mut FunctionBuilder,
        plan: &Plan<'_>,
        range: std::ops::Range<usize>,
    ) -> Result<bool> {
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        b.seal_block(entry);
        let args = b.block_params(entry).to_vec();
        let (out, spill) = (args[4], args[5]);
        let mut frame = Frame::new(args[0], Src::Ptr(args[1]), Src::Ptr(args[2]), args[3]);
        let start = range.start;
        let mut local: Vec<Value> = Vec::with_capacity(range.len());
        let mut earlier: HashMap<u32, Value> = HashMap::new();
        for i in range {
            let op = plan.prog.ops[i];
            for r in operands(op) {
                if (r as usize) < start && !earlier.contains_key(&r) {
                    let v = self.value_of_earlier_chunk(b, &mut frame, plan, r, spill)?;
                    earlier.insert(r, v);
                }
            }
            let read = |r: u32| {
                let v = match (r as usize).checked_sub(start) {
                    Some(k) => local.get(k),
                    None => earlier.get(&r),
                };
                v.copied()
                    .ok_or_else(|| Error::internal("register read before it is written"))
            };
            let v = self.emit_op(b, &mut frame, op, read)?;
            if plan.slot[i] != NONE {
                b.ins()
                    .store(mem(), v, spill, offset(plan.slot[i] as usize)?);
            }
            for &o in &plan.stores[i] {
                b.ins().store(mem(), v, out, offset(o)?);
            }
            local.push(v);
        }
        b.ins().return_(&[]);
        Ok(frame.uses_lag)
    }

    /// Register `r` of an earlier chunk: recomputed when it is a leaf, loaded from its spill
    /// slot otherwise.
    fn value_of_earlier_chunk(
        &mut self,
        b: &mut FunctionBuilder,
        frame: &mut Frame,
        plan: &Plan<'_>,
        r: u32,
        spill: Value,
    ) -> Result<Value> {
        let op = plan.prog.ops[r as usize];
        if is_leaf(op) {
            return self.emit_op(b, frame, op, |_| {
                Err(Error::internal("a leaf instruction has no operands"))
            });
        }
        match plan.slot[r as usize] {
            NONE => Err(Error::internal(
                "value of an earlier chunk without a spill slot",
            )),
            s => Ok(b.ins().load(types::F64, mem(), spill, offset(s as usize)?)),
        }
    }

    /// `fn(t, y, p, lag, out)` calling every chunk with a spill area of `n_spill` values on
    /// its stack.
    fn entry_function(&mut self, chunks: &[FuncId], n_spill: usize) -> Result<FuncId> {
        let sig = self.signature();
        let ptr = self.module.target_config().pointer_type();
        let (id, mut ctx) = self.declare_local(sig)?;
        let frontend = self.module.target_config();
        let mut fctx = std::mem::take(&mut self.fctx);
        {
            let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
            let entry = b.create_block();
            b.append_block_params_for_function_params(entry);
            b.switch_to_block(entry);
            b.seal_block(entry);
            let mut args = b.block_params(entry).to_vec();
            let spill = if n_spill > 0 {
                let bytes = u32::try_from(n_spill * 8)
                    .map_err(|_| Error::internal("spill area too large"))?;
                let ss = b.create_sized_stack_slot(StackSlotData::new(
                    StackSlotKind::ExplicitSlot,
                    bytes,
                    3,
                ));
                b.ins().stack_addr(ptr, ss, 0)
            } else {
                b.ins().iconst(ptr, 0)
            };
            args.push(spill);
            for &chunk in chunks {
                let f = self.module.declare_func_in_func(chunk, b.func);
                b.ins().call(f, &args);
            }
            b.ins().return_(&[]);
            b.finalize(frontend);
        }
        self.fctx = fctx;
        self.module
            .define_function(id, &mut ctx)
            .map_err(|e| cl_error("define", format!("{e:?}")))?;
        Ok(id)
    }

    /// A new local function with `sig`, and a context to build it in.
    pub(crate) fn declare_local(
        &mut self,
        sig: cranelift_codegen::ir::Signature,
    ) -> Result<(FuncId, Context)> {
        let name = self.next_name();
        let id = self
            .module
            .declare_function(&name, Linkage::Local, &sig)
            .map_err(|e| cl_error("declare", e))?;
        let ctx = Context::for_function(Function::with_name_signature(
            UserFuncName::user(0, id.as_u32()),
            sig,
        ));
        Ok((id, ctx))
    }
}

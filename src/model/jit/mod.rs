//! Native code for model-language models (feature `jit`).
//!
//! At load, every compiled program of a model (right-hand side, aux, event conditions, actions
//! and logs, stop condition, Jacobian) is lowered to one Cranelift function. Results are
//! bit-identical to the interpreter: arithmetic is the same IEEE operations in the same order,
//! and every other math function calls the interpreter's own implementation.
//!
//! Compiled code is cached process-wide by spec hash, so loading the same model again (in any
//! session or thread) reuses it.

pub mod kernel;
mod lower;
mod native;
mod shims;

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

pub use native::NativeModel;

use crate::error::{Error, Result};
use crate::model::compile::CompiledModel;
use crate::model::program::LagSlot;
use crate::model::{Model, ModelCode};

/// Compiles `compiled` to native code (no cache).
pub(crate) fn compile_programs(
    compiled: &CompiledModel,
    layout: &[LagSlot],
    n_params: usize,
    lag_total: usize,
) -> Result<NativeModel> {
    let bounds = lower::Bounds {
        n_states: layout.len(),
        n_params,
        lag_total,
    };
    NativeModel::link(lower::lower_model(compiled, layout, bounds)?)
}

/// Fused loops of one model by (stepper name, recorded columns or `None`).
pub(crate) type KernelCache =
    Mutex<HashMap<(&'static str, Option<Vec<kernel::RecSlot>>), Option<Arc<kernel::FusedKernel>>>>;

/// Compiles a fused loop for a model-language model.
pub(crate) fn compile_kernel(
    model: kernel::KernelModel<'_>,
    layout: &[LagSlot],
    n_params: usize,
    lag_total: usize,
    spec: &kernel::KernelSpec<'_>,
) -> Result<kernel::FusedKernel> {
    let bounds = lower::Bounds {
        n_states: layout.len(),
        n_params,
        lag_total,
    };
    kernel::build(model, layout, bounds, spec)
}

/// Native code by spec hash. Entries are kept for the life of the process: a model's code
/// takes a few memory pages, and a reload (a sweep re-reading its model file) then costs
/// nothing.
static CACHE: LazyLock<Mutex<HashMap<String, Arc<NativeModel>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// Native code for a model with this spec hash, compiled on first use.
pub(crate) fn cached(
    spec_hash: &str,
    compiled: &CompiledModel,
    layout: &[LagSlot],
    n_params: usize,
    lag_total: usize,
) -> Result<Arc<NativeModel>> {
    // Held while compiling so two threads loading one model compile it once.
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(code) = cache.get(spec_hash) {
        return Ok(Arc::clone(code));
    }
    let code = Arc::new(compile_programs(compiled, layout, n_params, lag_total)?);
    cache.insert(spec_hash.to_string(), Arc::clone(&code));
    Ok(code)
}

/// Compiles a loaded model-language model to native code afresh, bypassing the cache (for
/// measuring compile time). Host models have no programs to compile.
pub fn compile(model: &Model) -> Result<NativeModel> {
    match &model.code {
        ModelCode::Compiled(c) => {
            compile_programs(c, &model.lag_layout, model.n_params(), model.lag_total)
        }
        ModelCode::Host(_) => Err(Error::invalid(
            "a host model is already native code; only model-language models are compiled",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::compile::{CompiledEvent, Target};
    use crate::model::program::{Env, LagView, Op, Program};

    fn program(ops: Vec<Op>) -> Program {
        let last = ops.len() as u32 - 1;
        Program {
            ops,
            outputs: vec![last],
        }
    }

    fn model_with_rhs(rhs: Program) -> CompiledModel {
        CompiledModel {
            rhs,
            aux: Program::default(),
            events: Vec::new(),
            stop: None,
            jacobian: None,
            lag_depth: vec![0, 0],
        }
    }

    const NO_LAG: [LagSlot; 2] = [LagSlot { offset: 0, len: 0 }; 2];

    #[test]
    fn compiles_and_runs_a_program() {
        let m = model_with_rhs(program(vec![
            Op::State(1),
            Op::Param(0),
            Op::Binary(crate::model::program::Fn2::Mul, 0, 1),
        ]));
        let code = compile_programs(&m, &NO_LAG, 1, 0).unwrap();
        let env = Env {
            t: 0.0,
            y: &[2.0, 3.0],
            p: &[0.5],
            lag: LagView::empty(),
        };
        let mut out = [0.0];
        code.rhs(&env, &mut out);
        assert_eq!(out, [1.5]);
    }

    #[test]
    fn out_of_range_accesses_are_refused_at_compile_time() {
        for bad in [Op::State(2), Op::Param(1), Op::Lag { state: 0, k: 1 }] {
            let m = model_with_rhs(program(vec![bad]));
            assert!(compile_programs(&m, &NO_LAG, 1, 0).is_err(), "{bad:?}");
        }
        let mut m = model_with_rhs(program(vec![Op::Const(1.0)]));
        m.events.push(CompiledEvent {
            cond: program(vec![Op::Const(1.0)]),
            actions: vec![(Target::Param(3), program(vec![Op::Const(1.0)]))],
            log: Program::default(),
        });
        assert!(compile_programs(&m, &NO_LAG, 1, 0).is_err());
        // A lag slot reaching past the ring.
        let m = model_with_rhs(program(vec![Op::Lag { state: 0, k: 1 }]));
        let slots = [LagSlot { offset: 0, len: 2 }, LagSlot::default()];
        assert!(compile_programs(&m, &slots, 1, 1).is_err());
        assert!(compile_programs(&m, &slots, 1, 2).is_ok());
    }

    #[test]
    #[should_panic(expected = "short buffers")]
    fn short_buffers_panic_instead_of_reading_out_of_bounds() {
        let m = model_with_rhs(program(vec![Op::State(1)]));
        let code = compile_programs(&m, &NO_LAG, 0, 0).unwrap();
        let env = Env {
            t: 0.0,
            y: &[1.0],
            p: &[],
            lag: LagView::empty(),
        };
        code.rhs(&env, &mut [0.0]);
    }

    #[test]
    #[should_panic(expected = "lag history shorter")]
    fn short_lag_history_panics() {
        let m = model_with_rhs(program(vec![Op::Lag { state: 0, k: 1 }]));
        let slots = [LagSlot { offset: 0, len: 2 }, LagSlot::default()];
        let code = compile_programs(&m, &slots, 0, 2).unwrap();
        let ring = [1.0];
        let env = Env {
            t: 0.0,
            y: &[1.0, 2.0],
            p: &[],
            lag: LagView {
                ring: &ring,
                heads: &[0, 0],
                layout: &slots,
                shift: 0,
            },
        };
        code.rhs(&env, &mut [0.0]);
    }
}

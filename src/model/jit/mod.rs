//! Native code for model-language models (feature `jit`).
//!
//! At load, every compiled program of a model (right-hand side, aux, event conditions, actions
//! and logs, stop condition, Jacobian) is lowered to one Cranelift function. Results are
//! bit-identical to the interpreter: arithmetic is the same IEEE operations in the same order,
//! and every other math function calls the interpreter's own implementation.
//!
//! Compiled code is shared process-wide by spec hash while a model uses it, so loading the same
//! model again (in any session or thread) reuses it; it is freed with the last model using it.

pub mod batch;
mod code_memory;
pub mod kernel;
mod lower;
mod native;
mod shims;

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, Weak};

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

/// Fused loops of one model by (stepper name, recorded columns or `None`). A list: a model
/// has a few (one per stepper and recorded selection), and every run looks its kernel up, so
/// the lookup compares in place rather than building and hashing a key.
pub(crate) type KernelCache = Mutex<Vec<KernelEntry>>;

/// One entry of a [`KernelCache`]: the key and the kernel (`None`: it could not be built).
pub(crate) type KernelEntry = (
    (&'static str, Option<Vec<kernel::RecSlot>>),
    Option<Arc<kernel::FusedKernel>>,
);

/// Lock-step kernels of one model by (stepper name, lanes), like [`KernelCache`]
/// (`None`: it could not be built).
pub(crate) type BatchKernelCache =
    Mutex<Vec<((&'static str, usize), Option<Arc<batch::BatchKernel>>)>>;

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

/// Compiles a lock-step loop of `lanes` lanes for a model-language model (see `batch`).
pub(crate) fn compile_batch(
    model: &Model,
    form: crate::method::StepForm,
    lanes: usize,
) -> Result<batch::BatchKernel> {
    let ModelCode::Compiled(compiled) = &model.code else {
        return Err(Error::invalid(
            "lock-step kernels are built for model-language models only",
        ));
    };
    let bounds = lower::Bounds {
        n_states: model.n_states(),
        n_params: model.n_params(),
        lag_total: model.lag_total,
    };
    let phases: Vec<crate::model::EventPhase> = model.events.iter().map(|e| e.phase).collect();
    batch::build(compiled, &model.lag_layout, bounds, form, &phases, lanes)
}

/// Native code by spec hash, shared by every loaded model with that hash. The cache holds
/// weak references only: a model's code is freed with the last model (or session) using it,
/// so a host that loads and drops many models does not grow. Dead entries are pruned when
/// the map has doubled since the last pruning, which keeps inserts amortised O(1) and the
/// map at most twice the number of live entries (plus a small constant).
struct Cache {
    entries: HashMap<String, Weak<NativeModel>>,
    /// Size of `entries` below which no pruning is done.
    prune_at: usize,
}

static CACHE: LazyLock<Mutex<Cache>> = LazyLock::new(|| {
    Mutex::new(Cache {
        entries: HashMap::new(),
        prune_at: MIN_PRUNE_AT,
    })
});

const MIN_PRUNE_AT: usize = 64;

fn lock() -> std::sync::MutexGuard<'static, Cache> {
    // Nothing panics while the lock is held (no compiling, no user code), but a poisoned
    // lock still guards a consistent map.
    CACHE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Native code for a model with this spec hash: shared when a live model already has it,
/// compiled otherwise. Compiling happens outside the cache lock, so loads of different
/// models on different threads run in parallel; two threads loading the same new model at
/// once may both compile it, and then share the code of whichever inserts first.
pub(crate) fn cached(
    spec_hash: &str,
    compiled: &CompiledModel,
    layout: &[LagSlot],
    n_params: usize,
    lag_total: usize,
) -> Result<Arc<NativeModel>> {
    if let Some(code) = lock().entries.get(spec_hash).and_then(Weak::upgrade) {
        return Ok(code);
    }
    let code = Arc::new(compile_programs(compiled, layout, n_params, lag_total)?);
    let mut cache = lock();
    if let Some(theirs) = cache.entries.get(spec_hash).and_then(Weak::upgrade) {
        // Another thread compiled it meanwhile; ours is dropped (after the lock is released).
        drop(cache);
        return Ok(theirs);
    }
    if cache.entries.len() >= cache.prune_at {
        cache.entries.retain(|_, w| w.strong_count() > 0);
        cache.prune_at = (2 * cache.entries.len()).max(MIN_PRUNE_AT);
    }
    cache
        .entries
        .insert(spec_hash.to_string(), Arc::downgrade(&code));
    Ok(code)
}

/// Sizes of the native-code cache: (entries in the map, entries whose code is still in use).
/// For tests and diagnostics.
pub fn cache_stats() -> (usize, usize) {
    let cache = lock();
    let live = cache
        .entries
        .values()
        .filter(|w| w.strong_count() > 0)
        .count();
    (cache.entries.len(), live)
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

//! Native code for model-language models (feature `jit`).
//!
//! At load, every compiled program of a model (right-hand side, aux, event conditions, actions
//! and logs, stop condition, Jacobian) is lowered to one Cranelift function. Results are
//! bit-identical to the interpreter: arithmetic is the same IEEE operations in the same order,
//! and every other math function calls the interpreter's own implementation.
//!
//! Compiled code is cached process-wide by spec hash, so loading the same model again (in any
//! session or thread) reuses it.

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

//! Opaque handles. C sees `DynlibModel *` and `DynlibSim *`; each points at a boxed Rust
//! value that starts with a type tag, so a handle of the wrong type, a freed handle (whose tag
//! is overwritten) or garbage is refused with `DYNLIB_ERR_BAD_HANDLE` instead of trusted.

use std::panic::{catch_unwind, AssertUnwindSafe};

use super::boundary::{panic_failure, panic_message, Failure, FfiResult};
use super::status::*;
use crate::model::Model;
use crate::session::Sim;

/// A loaded model (opaque). Free with `dynlib_model_free`. Sims keep their own reference, so
/// a model may be freed while sims created from it live on.
pub struct DynlibModel {
    _private: [u8; 0],
}

/// A simulation session (opaque). Free with `dynlib_sim_free`. Use from one thread at a time;
/// different sims may run on different threads concurrently.
pub struct DynlibSim {
    _private: [u8; 0],
}

const MODEL_TAG: u64 = u64::from_le_bytes(*b"dynl:mdl");
const SIM_TAG: u64 = u64::from_le_bytes(*b"dynl:sim");
const FREED_TAG: u64 = u64::from_le_bytes(*b"dynl:fre");

#[repr(C)]
pub(crate) struct ModelBox {
    tag: u64,
    pub model: Model,
    /// The stepper chosen at load (`None` = the model's default).
    pub stepper: Option<String>,
}

#[repr(C)]
pub(crate) struct SimBox {
    tag: u64,
    pub sim: Sim,
    /// Set when a call on this sim panicked: its state can no longer be trusted.
    poisoned: Option<String>,
}

pub(crate) fn new_model_handle(model: Model, stepper: Option<String>) -> *mut DynlibModel {
    Box::into_raw(Box::new(ModelBox {
        tag: MODEL_TAG,
        model,
        stepper,
    }))
    .cast()
}

pub(crate) fn new_sim_handle(sim: Sim) -> *mut DynlibSim {
    Box::into_raw(Box::new(SimBox {
        tag: SIM_TAG,
        sim,
        poisoned: None,
    }))
    .cast()
}

/// Reads the tag at `ptr`, refusing NULL and misaligned pointers.
///
/// # Safety
/// `ptr` must be NULL or point to at least 8 readable bytes (true of any handle this library
/// returned, freed or not, as long as the allocator has not unmapped it).
unsafe fn tag_of(ptr: *const u8, what: &str, type_name: &str) -> FfiResult<u64> {
    if ptr.is_null() {
        return Err(Failure::null(what));
    }
    if (ptr as usize) % std::mem::align_of::<u64>() != 0 {
        return Err(bad_handle(what, type_name));
    }
    Ok(std::ptr::read(ptr.cast::<u64>()))
}

fn bad_handle(what: &str, type_name: &str) -> Failure {
    Failure::new(
        DYNLIB_ERR_BAD_HANDLE,
        format!(
            "argument '{what}' is not a live {type_name} handle (already freed, a handle of \
             another type, or not a handle at all)"
        ),
    )
}

/// # Safety
/// `ptr` must be NULL or a pointer obtained from this library (see [`tag_of`]).
pub(crate) unsafe fn model_ref<'a>(ptr: *const DynlibModel, what: &str) -> FfiResult<&'a ModelBox> {
    if tag_of(ptr.cast(), what, "DynlibModel")? != MODEL_TAG {
        return Err(bad_handle(what, "DynlibModel"));
    }
    Ok(&*ptr.cast::<ModelBox>())
}

/// # Safety
/// As [`model_ref`].
unsafe fn sim_box<'a>(ptr: *mut DynlibSim, what: &str) -> FfiResult<&'a mut SimBox> {
    if tag_of(ptr.cast_const().cast(), what, "DynlibSim")? != SIM_TAG {
        return Err(bad_handle(what, "DynlibSim"));
    }
    Ok(&mut *ptr.cast::<SimBox>())
}

/// Runs `f` on the sim behind `ptr`. A panic inside poisons the sim: later calls on it fail
/// with `DYNLIB_ERR_BAD_HANDLE` and say why, since its state may be half-updated.
///
/// # Safety
/// As [`model_ref`]; the caller must not use the same sim from two threads at once.
pub(crate) unsafe fn with_sim<R>(
    ptr: *mut DynlibSim,
    f: impl FnOnce(&mut Sim) -> FfiResult<R>,
) -> FfiResult<R> {
    let b = sim_box(ptr, "sim")?;
    if let Some(why) = &b.poisoned {
        return Err(Failure::new(
            DYNLIB_ERR_BAD_HANDLE,
            format!(
                "this sim refuses further use: an earlier call panicked ({why}); free it and \
                 create a new one"
            ),
        ));
    }
    match catch_unwind(AssertUnwindSafe(|| f(&mut b.sim))) {
        Ok(r) => r,
        Err(payload) => {
            b.poisoned = Some(panic_message(payload.as_ref()));
            Err(panic_failure(payload.as_ref()))
        }
    }
}

/// Frees a model handle; NULL and handles that are not live models are ignored.
///
/// # Safety
/// As [`model_ref`].
pub(crate) unsafe fn free_model(ptr: *mut DynlibModel) {
    if model_ref(ptr, "model").is_ok() {
        let mut b = Box::from_raw(ptr.cast::<ModelBox>());
        std::ptr::write_volatile(&mut b.tag, FREED_TAG);
        drop(b);
    }
}

/// Frees a sim handle; NULL and handles that are not live sims are ignored.
///
/// # Safety
/// As [`model_ref`].
pub(crate) unsafe fn free_sim(ptr: *mut DynlibSim) {
    if sim_box(ptr, "sim").is_ok() {
        let mut b = Box::from_raw(ptr.cast::<SimBox>());
        std::ptr::write_volatile(&mut b.tag, FREED_TAG);
        drop(b);
    }
}

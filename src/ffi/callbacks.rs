//! Models implemented by host callbacks: a lab's existing C, C++ or Fortran right-hand side
//! runs inside a session with snapshots, resume and pins.

use std::ffi::{c_char, c_int, c_void};

use super::boundary::{boundary, Failure, FfiResult};
use super::buffers::{
    cstr, init_versioned, opt_cstr, read_versioned, slice, str_list, versioned_sizes, write_out,
};
use super::handles::{new_model_handle, DynlibModel};
use super::status::*;
use crate::model::host::HostModelDef;
use crate::model::{HostModel, Model, ModelKind};

/// Right-hand side: write dy/dt (ODE) or the next state (map) for `y` at `t` into `out`.
/// Return 0 on success; any other value stops the run with `DYNLIB_ERR_STEP_FAILED` and the
/// value in the error message.
pub type DynlibRhsFn = Option<
    unsafe extern "C" fn(
        t: f64,
        y: *const f64,
        p: *const f64,
        out: *mut f64,
        user_data: *mut c_void,
    ) -> c_int,
>;

/// Aux values (one per aux name) into `out`; return 0 on success.
pub type DynlibAuxFn = DynlibRhsFn;

/// Jacobian ∂f_i/∂y_j, row-major n×n, into `jac`; return 0 on success.
pub type DynlibJacobianFn = DynlibRhsFn;

/// Event condition: set `*fires` to non-zero when event `event` fires at (t, y, p); return 0.
pub type DynlibEventCondFn = Option<
    unsafe extern "C" fn(
        event: usize,
        t: f64,
        y: *const f64,
        p: *const f64,
        fires: *mut c_int,
        user_data: *mut c_void,
    ) -> c_int,
>;

/// Event action: change `y` and `p` in place for event `event`; return 0 on success.
pub type DynlibEventActionFn = Option<
    unsafe extern "C" fn(
        event: usize,
        t: f64,
        y: *mut f64,
        p: *mut f64,
        user_data: *mut c_void,
    ) -> c_int,
>;

/// `DynlibCallbackModel.kind`: an ODE dy/dt = f(t, y, p).
pub const DYNLIB_MODEL_ODE: i32 = 0;
/// `DynlibCallbackModel.kind`: a map y ← F(t, y, p).
pub const DYNLIB_MODEL_MAP: i32 = 1;

/// A model defined by callbacks. Initialise with `dynlib_callback_model_init`, then fill in.
/// Names and arrays are copied by `dynlib_model_from_callbacks`; `user_data` is passed to
/// every callback and must outlive every model and sim built from it. Callbacks must be pure
/// functions of their arguments (and of data that does not change) for resume to be exact;
/// if sims of this model run on several threads, the callbacks are called concurrently.
#[repr(C)]
pub struct DynlibCallbackModel {
    /// `sizeof(DynlibCallbackModel)`, set by the init function.
    pub struct_size: usize,
    /// Stable identifier; with `version` it feeds the spec hash, so snapshots of one
    /// callback model are refused by another.
    pub id: *const c_char,
    /// Version of the callback code: change it when the equations change. NULL = "".
    pub version: *const c_char,
    /// `DYNLIB_MODEL_ODE` or `DYNLIB_MODEL_MAP`.
    pub kind: i32,
    pub n_states: usize,
    pub state_names: *const *const c_char,
    pub state_init: *const f64,
    pub n_params: usize,
    pub param_names: *const *const c_char,
    pub param_init: *const f64,
    pub n_aux: usize,
    pub aux_names: *const *const c_char,
    /// Events, tested after each step in this order (the first that fires wins).
    pub n_events: usize,
    pub event_names: *const *const c_char,
    /// Default step (ODE) or time per iteration (map). Init sets 0.01 (ODE).
    pub dt: f64,
    /// Default stepper; NULL = "rk4" for ODEs, "map" for maps.
    pub stepper: *const c_char,
    /// Required.
    pub rhs: DynlibRhsFn,
    /// Required when `n_aux > 0`.
    pub aux: DynlibAuxFn,
    /// Required when `n_events > 0`.
    pub event_cond: DynlibEventCondFn,
    /// Optional: NULL = events only log.
    pub event_action: DynlibEventActionFn,
    /// Optional, for implicit steppers.
    pub jacobian: DynlibJacobianFn,
    pub user_data: *mut c_void,
}

fn callback_defaults() -> DynlibCallbackModel {
    DynlibCallbackModel {
        struct_size: std::mem::size_of::<DynlibCallbackModel>(),
        id: std::ptr::null(),
        version: std::ptr::null(),
        kind: DYNLIB_MODEL_ODE,
        n_states: 0,
        state_names: std::ptr::null(),
        state_init: std::ptr::null(),
        n_params: 0,
        param_names: std::ptr::null(),
        param_init: std::ptr::null(),
        n_aux: 0,
        aux_names: std::ptr::null(),
        n_events: 0,
        event_names: std::ptr::null(),
        dt: 0.01,
        stepper: std::ptr::null(),
        rhs: None,
        aux: None,
        event_cond: None,
        event_action: None,
        jacobian: None,
        user_data: std::ptr::null_mut(),
    }
}

/// The `struct_size` values `dynlib_model_from_callbacks` accepts (see `versioned_sizes`).
fn callback_model_sizes() -> &'static [usize] {
    static SIZES: std::sync::LazyLock<Vec<usize>> = std::sync::LazyLock::new(|| {
        versioned_sizes!(DynlibCallbackModel {
            struct_size,
            id,
            version,
            kind,
            n_states,
            state_names,
            state_init,
            n_params,
            param_names,
            param_init,
            n_aux,
            aux_names,
            n_events,
            event_names,
            dt,
            stepper,
            rhs,
            aux,
            event_cond,
            event_action,
            jacobian,
            user_data,
        })
    });
    &SIZES
}

type RawFn = unsafe extern "C" fn(f64, *const f64, *const f64, *mut f64, *mut c_void) -> c_int;

struct CallbackModel {
    rhs: RawFn,
    aux: Option<RawFn>,
    event_cond: DynlibEventCondFn,
    event_action: DynlibEventActionFn,
    jacobian: Option<RawFn>,
    user_data: *mut c_void,
}

// SAFETY: the host promises (see DynlibCallbackModel) that user_data outlives the model and
// that the callbacks may be called from the threads its sims run on.
unsafe impl Send for CallbackModel {}
unsafe impl Sync for CallbackModel {}

fn code(rc: c_int) -> Result<(), i32> {
    if rc == 0 {
        Ok(())
    } else {
        Err(rc)
    }
}

impl HostModel for CallbackModel {
    fn rhs(&self, t: f64, y: &[f64], p: &[f64], out: &mut [f64]) -> Result<(), i32> {
        // SAFETY: the slices are valid for the call; the callback contract is the host's.
        code(unsafe { (self.rhs)(t, y.as_ptr(), p.as_ptr(), out.as_mut_ptr(), self.user_data) })
    }
    fn aux(&self, t: f64, y: &[f64], p: &[f64], out: &mut [f64]) -> Result<(), i32> {
        match self.aux {
            // SAFETY: as in rhs.
            Some(f) => {
                code(unsafe { f(t, y.as_ptr(), p.as_ptr(), out.as_mut_ptr(), self.user_data) })
            }
            None => Ok(()),
        }
    }
    fn event_cond(&self, i: usize, t: f64, y: &[f64], p: &[f64]) -> Result<bool, i32> {
        let Some(f) = self.event_cond else {
            return Ok(false);
        };
        let mut fires: c_int = 0;
        // SAFETY: as in rhs; `fires` is a valid out-pointer.
        code(unsafe { f(i, t, y.as_ptr(), p.as_ptr(), &mut fires, self.user_data) })?;
        Ok(fires != 0)
    }
    fn event_action(&self, i: usize, t: f64, y: &mut [f64], p: &mut [f64]) -> Result<(), i32> {
        match self.event_action {
            // SAFETY: as in rhs.
            Some(f) => code(unsafe { f(i, t, y.as_mut_ptr(), p.as_mut_ptr(), self.user_data) }),
            None => Ok(()),
        }
    }
    fn has_jacobian(&self) -> bool {
        self.jacobian.is_some()
    }
    fn c_functions(&self) -> Option<crate::model::host::CFunctions> {
        Some(crate::model::host::CFunctions {
            rhs: self.rhs,
            aux: self.aux,
            event_cond: self.event_cond,
            user_data: self.user_data,
        })
    }
    fn jacobian(&self, t: f64, y: &[f64], p: &[f64], out: &mut [f64]) -> Option<Result<(), i32>> {
        self.jacobian.map(|f| {
            // SAFETY: as in rhs; `out` holds n×n values.
            code(unsafe { f(t, y.as_ptr(), p.as_ptr(), out.as_mut_ptr(), self.user_data) })
        })
    }
}

fn owned(list: Vec<&str>) -> Vec<String> {
    list.into_iter().map(str::to_string).collect()
}

/// # Safety
/// Every pointer in `cb` must be valid as documented on [`DynlibCallbackModel`].
unsafe fn model_from_callbacks(cb: &DynlibCallbackModel) -> FfiResult<Model> {
    let kind = match cb.kind {
        DYNLIB_MODEL_ODE => ModelKind::Ode,
        DYNLIB_MODEL_MAP => ModelKind::Map,
        k => {
            return Err(Failure::invalid(format!(
                "callback model kind is {k}; use DYNLIB_MODEL_ODE (0) or DYNLIB_MODEL_MAP (1)"
            )))
        }
    };
    let rhs = cb.rhs.ok_or_else(|| Failure::null("cb->rhs"))?;
    if cb.n_aux > 0 && cb.aux.is_none() {
        return Err(Failure::null("cb->aux (required when n_aux > 0)"));
    }
    if cb.n_events > 0 && cb.event_cond.is_none() {
        return Err(Failure::null("cb->event_cond (required when n_events > 0)"));
    }
    let def = HostModelDef {
        id: cstr(cb.id, "cb->id")?.to_string(),
        version: opt_cstr(cb.version, "cb->version")?
            .unwrap_or("")
            .to_string(),
        kind,
        state_names: owned(str_list(cb.state_names, cb.n_states, "cb->state_names")?),
        state_init: slice(cb.state_init, cb.n_states, "cb->state_init")?.to_vec(),
        param_names: owned(str_list(cb.param_names, cb.n_params, "cb->param_names")?),
        param_init: slice(cb.param_init, cb.n_params, "cb->param_init")?.to_vec(),
        aux_names: owned(str_list(cb.aux_names, cb.n_aux, "cb->aux_names")?),
        event_names: owned(str_list(cb.event_names, cb.n_events, "cb->event_names")?),
        dt: cb.dt,
        stepper: match opt_cstr(cb.stepper, "cb->stepper")? {
            Some(s) => s.to_string(),
            None if kind == ModelKind::Map => "map".to_string(),
            None => "rk4".to_string(),
        },
    };
    let code = CallbackModel {
        rhs,
        aux: cb.aux,
        event_cond: cb.event_cond,
        event_action: cb.event_action,
        jacobian: cb.jacobian,
        user_data: cb.user_data,
    };
    let model = Model::from_host(def, Box::new(code))?;
    // The default stepper must exist and fit the kind; say so now, not at the first sim.
    crate::session::sim::resolve_stepper(&model, None)?;
    Ok(model)
}

/// Fills the first `struct_size` bytes of `cb` with defaults (everything NULL or zero, `kind`
/// ODE, `dt` 0.01) and sets `cb->struct_size` to `struct_size`; nothing past them is written.
/// Pass `sizeof(DynlibCallbackModel)` as the caller's header declares it — the
/// `dynlib_callback_model_init(cb)` macro does. A size not on a field boundary of any layout
/// gives `DYNLIB_ERR_INVALID_ARGUMENT` and writes nothing.
///
/// # Safety
/// `cb` must be NULL or writable for `struct_size` bytes.
#[no_mangle]
pub unsafe extern "C" fn dynlib_callback_model_init_sized(
    cb: *mut DynlibCallbackModel,
    struct_size: usize,
) -> DynlibStatus {
    boundary(|| {
        init_versioned(
            cb,
            callback_defaults(),
            struct_size,
            callback_model_sizes(),
            "cb",
            "DynlibCallbackModel",
        )
    })
}

/// The layout every header had while `dynlib_callback_model_init` was a one-argument function
/// (through `user_data`).
const CALLBACK_MODEL_FIRST_LAYOUT: usize =
    std::mem::offset_of!(DynlibCallbackModel, user_data) + std::mem::size_of::<*mut c_void>();

/// The one-argument symbol of headers before `dynlib_callback_model_init_sized`, kept for the
/// programs built against them (the header now maps the name to a macro passing `sizeof`);
/// it initialises only the first layout, which those programs' structs have room for.
///
/// # Safety
/// `cb` must be NULL or writable for the first layout.
#[no_mangle]
pub unsafe extern "C" fn dynlib_callback_model_init(cb: *mut DynlibCallbackModel) -> DynlibStatus {
    dynlib_callback_model_init_sized(cb, CALLBACK_MODEL_FIRST_LAYOUT)
}

/// Creates a model from callbacks. On success `*model_out` owns a new handle (free it with
/// `dynlib_model_free`); on failure it is not written.
///
/// # Safety
/// `cb` must point to an initialised `DynlibCallbackModel` whose pointers are valid for the
/// call; `model_out` must be valid for writing a pointer.
#[no_mangle]
pub unsafe extern "C" fn dynlib_model_from_callbacks(
    cb: *const DynlibCallbackModel,
    model_out: *mut *mut DynlibModel,
) -> DynlibStatus {
    boundary(|| {
        let cb = read_versioned(
            cb,
            callback_defaults(),
            callback_model_sizes(),
            "cb",
            "DynlibCallbackModel",
        )?;
        if model_out.is_null() {
            return Err(Failure::null("model_out"));
        }
        let model = model_from_callbacks(&cb)?;
        write_out(model_out, new_model_handle(model, None)?, "model_out")
    })
}

//! Sessions: create, run, snapshots, assign and the live state.

use std::ffi::{c_char, c_int, c_void};

use super::boundary::{boundary, Failure, FfiResult};
use super::buffers::{
    cstr, init_versioned, opt_cstr, read_versioned, slice, str_list, versioned_sizes, write_out,
    write_slice, write_str,
};
use super::handles::{free_sim, model_ref, new_sim_handle, with_sim, DynlibModel, DynlibSim};
use super::status::*;
use crate::session::{CheckpointPolicy, Control, Every, Hook, RunOptions, Sim, Status};

/// Creates a session over `model` with the stepper chosen at load. On success `*sim_out` owns
/// a new handle (free with `dynlib_sim_free`); on failure it is not written.
///
/// # Safety
/// `model` must be a model handle; `sim_out` writable.
#[no_mangle]
pub unsafe extern "C" fn dynlib_sim_new(
    model: *const DynlibModel,
    sim_out: *mut *mut DynlibSim,
) -> DynlibStatus {
    boundary(|| {
        let m = model_ref(model, "model")?;
        if sim_out.is_null() {
            return Err(Failure::null("sim_out"));
        }
        let sim = Sim::with_stepper(&m.model, m.stepper.as_deref())?;
        write_out(sim_out, new_sim_handle(sim)?, "sim_out")
    })
}

/// Frees a session with its snapshots and results. NULL, and a handle that is not a live sim
/// (already freed, another type, garbage), are ignored. A busy sim — a call on it is in
/// progress, e.g. this is called from inside one of its callbacks or races a call on another
/// thread — is NOT freed: the free is refused, the handle stays valid (free it again once the
/// call returned), and `dynlib_last_error()` says why.
///
/// # Safety
/// None beyond the handle rules: any pointer value may be passed.
#[no_mangle]
pub unsafe extern "C" fn dynlib_sim_free(sim: *mut DynlibSim) {
    let _ = boundary(|| free_sim(sim));
}

/// Options of one `dynlib_sim_run` call. Initialise with `dynlib_run_options_init`, which
/// sets `struct_size` and marks every field "unset" (use the default): NaN for doubles, 0 for
/// counts and NULL for pointers, -1 for `record`. Later library versions only append fields.
#[repr(C)]
#[allow(non_snake_case)]
pub struct DynlibRunOptions {
    /// `sizeof(DynlibRunOptions)` as the caller knows it.
    pub struct_size: usize,
    /// End time (ODE; for maps an alternative to N). Resumed runs: absolute recorded time.
    pub T: f64,
    /// Map iterations since the recorded start; 0 = unset.
    pub N: u64,
    /// Step size (fixed-step) or first-step cap (adaptive). Not with resume.
    pub dt: f64,
    /// Start time. Not with resume.
    pub t0: f64,
    /// Initial state, `n_ic` values (all states). Not with resume.
    pub ic: *const f64,
    pub n_ic: usize,
    /// Parameter values, `n_params` values (all parameters). Not with resume.
    pub params: *const f64,
    pub n_params: usize,
    /// 1 = record samples, 0 = don't, -1 = the model's default.
    pub record: i32,
    /// Record every k-th step; 0 = unset (1).
    pub record_interval: u64,
    /// Variables to record (states, or aux as "name" or "aux.name"); NULL = all states. A
    /// non-NULL pointer with `n_record_vars = 0` records no variables, only t and step (the
    /// pointer is not read then: any non-NULL value, e.g. the address of a local, will do).
    pub record_vars: *const *const c_char,
    pub n_record_vars: usize,
    /// Warm-up time (ODE) or iterations (map) run before recording starts; NaN or 0 = none.
    pub transient: f64,
    /// Continue the session (append a segment) instead of starting a new recording.
    pub resume: bool,
    /// Segment name (made unique); NULL = run#<index>.
    pub tag: *const c_char,
    /// Step budget of this call; 0 = the model's default.
    pub max_steps: u64,
    /// Stepper knobs to set: `n_config` names and values.
    pub config_names: *const *const c_char,
    pub config_values: *const f64,
    pub n_config: usize,
    /// Directory for periodic checkpoint files; NULL = no checkpoints.
    pub checkpoint_dir: *const c_char,
    /// Write a checkpoint every this many steps (0 = unset) ...
    pub checkpoint_every_steps: u64,
    /// ... or every this much simulated time (NaN = unset).
    pub checkpoint_every_time: f64,
    /// Checkpoints to keep (the newest); 0 = 3.
    pub checkpoint_keep: u64,
    /// Progress callback (NULL = none), called at a bounded rate during the run with the
    /// committed time, step label, fraction of the horizon done and state; non-zero stops the
    /// run (`dynlib_sim_run` then returns `DYNLIB_INTERRUPTED`).
    pub progress: DynlibProgressFn,
    /// Passed to `progress` unchanged.
    pub progress_user_data: *mut c_void,
    /// Call `progress` after every step whose index is a multiple of this (0 = unset) ...
    pub progress_every_steps: u64,
    /// ... or at most this often in wall-clock seconds (the clock is read every 4096 steps;
    /// NaN = unset). Neither set: every 0.1 s. Not both.
    pub progress_every_seconds: f64,
    /// Observer callback (NULL = none), called every `observer_every_steps` steps with the
    /// committed state; non-zero stops the run like `progress`.
    pub observer: DynlibProgressFn,
    /// Passed to `observer` unchanged.
    pub observer_user_data: *mut c_void,
    /// Steps between observer calls; required (at least 1) with `observer`.
    pub observer_every_steps: u64,
}

/// A progress or observer callback: `t` and `step` of the committed state (recording
/// frame), `fraction` of the run's horizon done (0..1), the state `y` (`n_states` values, valid
/// during the call only) and the caller's `user_data`. Return 0 to continue, non-zero to stop
/// the run after this step. It runs on the thread of `dynlib_sim_run`, while the sim is busy
/// (calls on the same sim from inside it get `DYNLIB_ERR_BUSY`).
pub type DynlibProgressFn = Option<
    unsafe extern "C" fn(
        t: f64,
        step: u64,
        fraction: f64,
        y: *const f64,
        n_states: usize,
        user_data: *mut c_void,
    ) -> c_int,
>;

/// A C callback and its user data, as a core hook.
struct CHook {
    f: unsafe extern "C" fn(f64, u64, f64, *const f64, usize, *mut c_void) -> c_int,
    user_data: *mut c_void,
}

// SAFETY: the hook is called only on the thread running `dynlib_sim_run`, during that call;
// the caller owns `user_data` and promises it is valid there.
unsafe impl Send for CHook {}

impl CHook {
    fn call(&self, p: &crate::session::RunProgress<'_>) -> Control {
        // SAFETY: the caller of `dynlib_sim_run` promises `f` and `user_data` are valid.
        let stop = unsafe {
            (self.f)(
                p.t,
                p.step,
                p.fraction,
                p.state.as_ptr(),
                p.state.len(),
                self.user_data,
            )
        };
        if stop == 0 {
            Control::Continue
        } else {
            Control::Stop
        }
    }

    fn into_hook(self, every: Every) -> Hook {
        Hook::new(every, move |p| self.call(p))
    }
}

fn run_option_defaults() -> DynlibRunOptions {
    DynlibRunOptions {
        struct_size: std::mem::size_of::<DynlibRunOptions>(),
        T: f64::NAN,
        N: 0,
        dt: f64::NAN,
        t0: f64::NAN,
        ic: std::ptr::null(),
        n_ic: 0,
        params: std::ptr::null(),
        n_params: 0,
        record: -1,
        record_interval: 0,
        record_vars: std::ptr::null(),
        n_record_vars: 0,
        transient: f64::NAN,
        resume: false,
        tag: std::ptr::null(),
        max_steps: 0,
        config_names: std::ptr::null(),
        config_values: std::ptr::null(),
        n_config: 0,
        checkpoint_dir: std::ptr::null(),
        checkpoint_every_steps: 0,
        checkpoint_every_time: f64::NAN,
        checkpoint_keep: 0,
        progress: None,
        progress_user_data: std::ptr::null_mut(),
        progress_every_steps: 0,
        progress_every_seconds: f64::NAN,
        observer: None,
        observer_user_data: std::ptr::null_mut(),
        observer_every_steps: 0,
    }
}

/// The `struct_size` values `dynlib_sim_run` accepts (see `versioned_sizes`).
fn run_options_sizes() -> &'static [usize] {
    static SIZES: std::sync::LazyLock<Vec<usize>> = std::sync::LazyLock::new(|| {
        versioned_sizes!(DynlibRunOptions {
            struct_size,
            T,
            N,
            dt,
            t0,
            ic,
            n_ic,
            params,
            n_params,
            record,
            record_interval,
            record_vars,
            n_record_vars,
            transient,
            resume,
            tag,
            max_steps,
            config_names,
            config_values,
            n_config,
            checkpoint_dir,
            checkpoint_every_steps,
            checkpoint_every_time,
            checkpoint_keep,
            progress,
            progress_user_data,
            progress_every_steps,
            progress_every_seconds,
            observer,
            observer_user_data,
            observer_every_steps,
        })
    });
    &SIZES
}

fn set(x: f64) -> Option<f64> {
    (!x.is_nan()).then_some(x)
}

/// # Safety
/// The pointers in `o` must be valid as documented on [`DynlibRunOptions`].
unsafe fn run_options(o: &DynlibRunOptions) -> FfiResult<RunOptions> {
    let vector = |p: *const f64, n: usize, what: &str| -> FfiResult<Option<Vec<f64>>> {
        (n > 0)
            .then(|| slice(p, n, what).map(<[f64]>::to_vec))
            .transpose()
    };
    let record = match o.record {
        -1 => None,
        0 => Some(false),
        1 => Some(true),
        r => {
            return Err(Failure::invalid(format!(
                "opts->record is {r}; use 1 (record), 0 (don't) or -1 (model default)"
            )))
        }
    };
    let names = str_list(o.config_names, o.n_config, "opts->config_names")?;
    let values = slice(o.config_values, o.n_config, "opts->config_values")?;
    let checkpoint =
        match opt_cstr(o.checkpoint_dir, "opts->checkpoint_dir")? {
            None => None,
            Some(dir) => {
                let keep = if o.checkpoint_keep == 0 {
                    3
                } else {
                    o.checkpoint_keep as usize
                };
                Some(
                    match (o.checkpoint_every_steps, set(o.checkpoint_every_time)) {
                        (k, None) if k > 0 => CheckpointPolicy::every_steps(dir, k, keep),
                        (0, Some(dt)) => CheckpointPolicy::every_time(dir, dt, keep),
                        (0, None) => return Err(Failure::invalid(
                            "opts->checkpoint_dir is set but neither checkpoint_every_steps nor \
                         checkpoint_every_time is",
                        )),
                        _ => {
                            return Err(Failure::invalid(
                                "set checkpoint_every_steps or checkpoint_every_time, not both",
                            ))
                        }
                    },
                )
            }
        };
    Ok(RunOptions {
        t_end: set(o.T),
        n: (o.N > 0).then_some(o.N),
        dt: set(o.dt),
        t0: set(o.t0),
        ic: vector(o.ic, o.n_ic, "opts->ic")?,
        params: vector(o.params, o.n_params, "opts->params")?,
        record,
        record_interval: (o.record_interval > 0).then_some(o.record_interval),
        // NULL = all states; non-NULL with n_record_vars = 0 = record t and step only.
        record_vars: (o.n_record_vars > 0 || !o.record_vars.is_null())
            .then(|| str_list(o.record_vars, o.n_record_vars, "opts->record_vars"))
            .transpose()?
            .map(|v| v.into_iter().map(str::to_string).collect()),
        transient: set(o.transient).filter(|x| *x != 0.0),
        max_steps: (o.max_steps > 0).then_some(o.max_steps),
        tag: opt_cstr(o.tag, "opts->tag")?.map(str::to_string),
        resume: o.resume,
        config: names
            .iter()
            .map(|n| n.to_string())
            .zip(values.iter().copied())
            .collect(),
        checkpoint,
        general_engine: false,
        progress: progress_hook(o)?,
        observer: observer_hook(o)?,
    })
}

/// Reads and converts a caller's `DynlibRunOptions` (NULL = all defaults).
///
/// # Safety
/// `opts` NULL or an initialised `DynlibRunOptions` with valid pointers.
pub(crate) unsafe fn read_run_options(opts: *const DynlibRunOptions) -> FfiResult<RunOptions> {
    let o = if opts.is_null() {
        run_option_defaults()
    } else {
        read_versioned(
            opts,
            run_option_defaults(),
            run_options_sizes(),
            "opts",
            "DynlibRunOptions",
        )?
    };
    run_options(&o)
}

fn progress_hook(o: &DynlibRunOptions) -> FfiResult<Option<Hook>> {
    let every = match (o.progress_every_steps, set(o.progress_every_seconds)) {
        (0, None) => Every::Seconds(0.1),
        (k, None) => Every::Steps(k),
        (0, Some(s)) => Every::Seconds(s),
        _ => {
            return Err(Failure::invalid(
                "set progress_every_steps or progress_every_seconds, not both",
            ))
        }
    };
    let Some(f) = o.progress else {
        if o.progress_every_steps > 0 || set(o.progress_every_seconds).is_some() {
            return Err(Failure::invalid(
                "opts->progress_every_* is set but opts->progress is NULL",
            ));
        }
        return Ok(None);
    };
    let hook = CHook {
        f,
        user_data: o.progress_user_data,
    }
    .into_hook(every);
    hook.validate("opts->progress")?;
    Ok(Some(hook))
}

fn observer_hook(o: &DynlibRunOptions) -> FfiResult<Option<Hook>> {
    match (o.observer, o.observer_every_steps) {
        (None, 0) => Ok(None),
        (None, _) => Err(Failure::invalid(
            "opts->observer_every_steps is set but opts->observer is NULL",
        )),
        (Some(_), 0) => Err(Failure::invalid(
            "opts->observer is set but opts->observer_every_steps is 0 (it must be at least 1)",
        )),
        (Some(f), k) => Ok(Some(
            CHook {
                f,
                user_data: o.observer_user_data,
            }
            .into_hook(Every::Steps(k)),
        )),
    }
}

/// Sets the first `struct_size` bytes of `opts` to "unset" (every field the caller's layout
/// has) and `opts->struct_size` to `struct_size`; nothing past them is written. Pass
/// `sizeof(DynlibRunOptions)` as the caller's header declares it — the
/// `dynlib_run_options_init(opts)` macro does. A size not on a field boundary of any layout
/// (see the conventions) gives `DYNLIB_ERR_INVALID_ARGUMENT` and writes nothing.
///
/// # Safety
/// `opts` must be NULL or writable for `struct_size` bytes.
#[no_mangle]
pub unsafe extern "C" fn dynlib_run_options_init_sized(
    opts: *mut DynlibRunOptions,
    struct_size: usize,
) -> DynlibStatus {
    boundary(|| {
        init_versioned(
            opts,
            run_option_defaults(),
            struct_size,
            run_options_sizes(),
            "opts",
            "DynlibRunOptions",
        )
    })
}

/// The layout every header had while `dynlib_run_options_init` was a one-argument function
/// (through `checkpoint_keep`): the most a caller of that symbol can have room for.
const RUN_OPTIONS_FIRST_LAYOUT: usize =
    std::mem::offset_of!(DynlibRunOptions, checkpoint_keep) + std::mem::size_of::<u64>();

/// The one-argument symbol of headers before `dynlib_run_options_init_sized`, kept for the
/// programs built against them (the header now maps the name to a macro passing `sizeof`, and
/// does not declare this function). Those programs' structs can be as short as the first
/// layout, so it initialises only that much; fields added since keep their defaults.
///
/// # Safety
/// `opts` must be NULL or writable for the first layout.
#[no_mangle]
pub unsafe extern "C" fn dynlib_run_options_init(opts: *mut DynlibRunOptions) -> DynlibStatus {
    dynlib_run_options_init_sized(opts, RUN_OPTIONS_FIRST_LAYOUT)
}

/// Runs the simulation (`opts` NULL = all defaults). On failure nothing changes: the session,
/// its snapshots and earlier results stay exactly as they were. When a progress or observer
/// callback stopped the run, returns `DYNLIB_INTERRUPTED` (not a failure: the session holds
/// the run up to that step with status USER_BREAK, and a resumed run continues it exactly).
///
/// # Safety
/// `sim` must be a sim handle; `opts` NULL or an initialised `DynlibRunOptions`.
#[no_mangle]
pub unsafe extern "C" fn dynlib_sim_run(
    sim: *mut DynlibSim,
    opts: *const DynlibRunOptions,
) -> DynlibStatus {
    let mut interrupted = false;
    let status = boundary(|| {
        let options = read_run_options(opts)?;
        with_sim(sim, |s| {
            s.run(&options)?;
            interrupted = s.status() == Status::UserBreak;
            Ok(())
        })
    });
    if status == DYNLIB_OK && interrupted {
        DYNLIB_INTERRUPTED
    } else {
        status
    }
}

/// Saves the current state as snapshot `name` (`description` NULL = "").
///
/// # Safety
/// `sim` a sim handle; strings NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn dynlib_sim_create_snapshot(
    sim: *mut DynlibSim,
    name: *const c_char,
    description: *const c_char,
) -> DynlibStatus {
    boundary(|| {
        let name = cstr(name, "name")?;
        let description = opt_cstr(description, "description")?.unwrap_or("");
        with_sim(sim, |s| Ok(s.create_snapshot(name, description)?))
    })
}

/// Restores snapshot `name` (NULL = "initial"), clearing results, segments and the recording
/// selection.
///
/// # Safety
/// As `dynlib_sim_create_snapshot`.
#[no_mangle]
pub unsafe extern "C" fn dynlib_sim_reset(
    sim: *mut DynlibSim,
    name: *const c_char,
) -> DynlibStatus {
    boundary(|| {
        let name = opt_cstr(name, "name")?.unwrap_or("initial");
        with_sim(sim, |s| Ok(s.reset(name)?))
    })
}

/// The snapshots as a JSON array of `{name, t, step, created_at, description}`.
///
/// # Safety
/// `sim` a sim handle; `buf` NULL or writable for `cap` bytes; `needed` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dynlib_sim_list_snapshots_json(
    sim: *mut DynlibSim,
    buf: *mut c_char,
    cap: usize,
    needed: *mut usize,
) -> DynlibStatus {
    boundary(|| {
        with_sim(sim, |s| {
            write_str(&s.snapshots_json().to_string(), buf, cap, needed)
        })
    })
}

/// Writes `text` to the buffer, then the flag; the flag only on success.
unsafe fn flag_and_text(
    ok: bool,
    text: &str,
    flag: *mut bool,
    buf: *mut c_char,
    cap: usize,
    needed: *mut usize,
) -> FfiResult {
    if flag.is_null() {
        return Err(Failure::null("ok"));
    }
    write_str(text, buf, cap, needed)?;
    flag.write(ok);
    Ok(())
}

/// Whether snapshot `name` fits this session: `*ok`, and in `buf` the differing pins as text
/// ("" when compatible).
///
/// # Safety
/// As `dynlib_sim_list_snapshots_json`; `name` NUL-terminated; `ok` writable.
#[no_mangle]
pub unsafe extern "C" fn dynlib_sim_compat_check(
    sim: *mut DynlibSim,
    name: *const c_char,
    ok: *mut bool,
    buf: *mut c_char,
    cap: usize,
    needed: *mut usize,
) -> DynlibStatus {
    boundary(|| {
        let name = cstr(name, "name")?;
        with_sim(sim, |s| {
            let (fits, diff) = s.compat_check(name)?;
            let text = crate::session::sim::format_diff(&diff);
            flag_and_text(fits, &text, ok, buf, cap, needed)
        })
    })
}

/// Whether `resume` can continue the current state: `*ok`, and the reason in `buf` when not.
///
/// # Safety
/// As `dynlib_sim_compat_check`.
#[no_mangle]
pub unsafe extern "C" fn dynlib_sim_can_resume(
    sim: *mut DynlibSim,
    ok: *mut bool,
    buf: *mut c_char,
    cap: usize,
    needed: *mut usize,
) -> DynlibStatus {
    boundary(|| {
        with_sim(sim, |s| {
            let (fits, reason) = s.can_resume();
            flag_and_text(fits, reason.as_deref().unwrap_or(""), ok, buf, cap, needed)
        })
    })
}

/// The session summary as JSON (time, step, dt, nominal dt, time shift, status, stepper,
/// can_resume and reason, pending step, stepper config size/hash/preview).
///
/// # Safety
/// As `dynlib_sim_list_snapshots_json`.
#[no_mangle]
pub unsafe extern "C" fn dynlib_sim_summary_json(
    sim: *mut DynlibSim,
    buf: *mut c_char,
    cap: usize,
    needed: *mut usize,
) -> DynlibStatus {
    boundary(|| {
        with_sim(sim, |s| {
            write_str(&s.summary().to_string(), buf, cap, needed)
        })
    })
}

/// Sets `n` states or parameters by name (all names are checked first; nothing changes on
/// error). With `clear_history`, recorded results and segments are dropped: results calls then
/// report `DYNLIB_ERR_NO_RESULTS`, exactly as after `dynlib_sim_reset`.
///
/// # Safety
/// `names` and `values` NULL (with n = 0) or `n` valid entries.
#[no_mangle]
pub unsafe extern "C" fn dynlib_sim_assign(
    sim: *mut DynlibSim,
    names: *const *const c_char,
    values: *const f64,
    n: usize,
    clear_history: bool,
) -> DynlibStatus {
    boundary(|| {
        let names = str_list(names, n, "names")?;
        let values = slice(values, n, "values")?;
        let pairs: Vec<(&str, f64)> = names.into_iter().zip(values.iter().copied()).collect();
        with_sim(sim, |s| Ok(s.assign(&pairs, clear_history)?))
    })
}

/// Applies the model's preset `name` (parameters, then states), like `dynlib_sim_assign`.
///
/// # Safety
/// `sim` a sim handle; `name` NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn dynlib_sim_apply_preset(
    sim: *mut DynlibSim,
    name: *const c_char,
) -> DynlibStatus {
    boundary(|| {
        let name = cstr(name, "name")?;
        with_sim(sim, |s| Ok(s.apply_preset(name)?))
    })
}

/// Current absolute time.
///
/// # Safety
/// `sim` a sim handle; `t` writable.
#[no_mangle]
pub unsafe extern "C" fn dynlib_sim_time(sim: *mut DynlibSim, t: *mut f64) -> DynlibStatus {
    boundary(|| with_sim(sim, |s| write_out(t, s.time(), "t")))
}

/// Committed steps since the last fresh run (warm-up included).
///
/// # Safety
/// `sim` a sim handle; `step` writable.
#[no_mangle]
pub unsafe extern "C" fn dynlib_sim_step_count(
    sim: *mut DynlibSim,
    step: *mut u64,
) -> DynlibStatus {
    boundary(|| with_sim(sim, |s| write_out(step, s.step_count(), "step")))
}

/// Current state vector (output buffer protocol, in doubles).
///
/// # Safety
/// `buf` NULL or writable for `cap` doubles; `needed` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dynlib_sim_state(
    sim: *mut DynlibSim,
    buf: *mut f64,
    cap: usize,
    needed: *mut usize,
) -> DynlibStatus {
    boundary(|| with_sim(sim, |s| write_slice(s.state(), buf, cap, needed)))
}

/// Current parameter vector (output buffer protocol, in doubles).
///
/// # Safety
/// As `dynlib_sim_state`.
#[no_mangle]
pub unsafe extern "C" fn dynlib_sim_params(
    sim: *mut DynlibSim,
    buf: *mut f64,
    cap: usize,
    needed: *mut usize,
) -> DynlibStatus {
    boundary(|| with_sim(sim, |s| write_slice(s.params(), buf, cap, needed)))
}

/// Current value of one state or parameter by name.
///
/// # Safety
/// `name` NUL-terminated; `value` writable.
#[no_mangle]
pub unsafe extern "C" fn dynlib_sim_value(
    sim: *mut DynlibSim,
    name: *const c_char,
    value: *mut f64,
) -> DynlibStatus {
    boundary(|| {
        let name = cstr(name, "name")?;
        with_sim(sim, |s| write_out(value, s.value(name)?, "value"))
    })
}

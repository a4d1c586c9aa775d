//! Interprets bytes as a sequence of C ABI calls — create/run/snapshot/reset/assign/export/
//! import/serialize/free and getters — with arguments drawn from the bytes: NULLs, freed
//! handles, garbage handles, handles of the other type, bad `struct_size` values, small
//! buffers, truncated snapshot bytes, and callbacks that call back into their own sim.
//!
//! Shared by the cargo-fuzz target (`fuzz/fuzz_targets/abi_sequences.rs`) and the bounded,
//! seeded run of the test suite (`tests/abi_fuzz.rs`); both include this file with `#[path]`.
//! A broken rule panics with the calls made so far:
//! - no call returns `DYNLIB_ERR_INTERNAL` or a status outside the known codes;
//! - a call on a NULL, freed, garbage or wrong-type handle never succeeds (and is never
//!   `DYNLIB_ERR_BUSY`); a call on a live handle is never `BAD_HANDLE` or `BUSY`;
//! - a callback's call on its own sim gets `DYNLIB_ERR_BUSY`, and the sim is still live after;
//! - out-parameters are untouched on failure; a too-small buffer is untouched and `needed`
//!   is set beyond `cap`;
//! - a failed call on a live sim changes nothing (time, step, state, parameters, samples,
//!   segments, snapshots, bit for bit).
//!
//! Argument ranges stay inside what the library must answer quickly: horizons are short and
//! finite (no NULL options on live sims: some built-in defaults run 10^6 steps), so a
//! sequence takes milliseconds.
#![allow(dead_code)]

use std::ffi::{c_char, c_int, c_void, CStr};
use std::path::PathBuf;

use dynlib::ffi::callbacks::*;
use dynlib::ffi::config::*;
use dynlib::ffi::handles::{DynlibModel, DynlibSim};
use dynlib::ffi::model::*;
use dynlib::ffi::results::*;
use dynlib::ffi::sim::*;
use dynlib::ffi::snapshot::*;
use dynlib::ffi::status::*;

/// What out-parameters hold before a call: a failed call must leave it there.
const SENTINEL: usize = 0x5E57_0001;

/// Reads the input: every read past the end gives 0.
struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.u8() as usize % xs.len()]
    }
    fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }
    fn done(&self) -> bool {
        self.pos >= self.data.len()
    }
}

/// Counts over all sequences run.
#[derive(Default, Debug, Clone)]
pub struct Stats {
    pub sequences: u64,
    pub calls: u64,
    pub ok: u64,
    pub failed: u64,
    pub busy_in_callbacks: u64,
}

/// User data of the callback model: the rhs may call into the sim that is running.
struct Reentry {
    current: *mut DynlibSim,
    armed: u8,
    calls: u64,
    violation: Option<String>,
}

unsafe extern "C" fn reentrant_rhs(
    _t: f64,
    y: *const f64,
    p: *const f64,
    out: *mut f64,
    ud: *mut c_void,
) -> c_int {
    let r = &mut *(ud as *mut Reentry);
    *out = -*p * *y;
    if r.armed != 0 && !r.current.is_null() {
        let op = r.armed;
        r.armed = 0;
        let sim = r.current;
        let mut t = 0.0;
        let status = match op % 5 {
            0 => {
                dynlib_sim_free(sim);
                // The free is refused; the sim answers BUSY to the next call, still inside.
                dynlib_sim_time(sim, &mut t)
            }
            1 => dynlib_sim_run(sim, std::ptr::null()),
            2 => dynlib_sim_reset(sim, std::ptr::null()),
            3 => dynlib_sim_time(sim, &mut t),
            _ => {
                let name = c"k".as_ptr();
                dynlib_sim_assign(sim, &name, &2.0, 1, false)
            }
        };
        r.calls += 1;
        if status != DYNLIB_ERR_BUSY {
            r.violation = Some(format!(
                "a callback's call (op {}) on its own sim returned {status}, not DYNLIB_ERR_BUSY",
                op % 5
            ));
        }
    }
    0
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Live,
    Freed,
    Bad,
}

struct World {
    models: Vec<(*mut DynlibModel, bool)>,
    sims: Vec<(*mut DynlibSim, bool, bool)>, // handle, live, of the callback model
    reentry: Box<Reentry>,
    blobs: Vec<Vec<u8>>,
    dir: PathBuf,
    log: Vec<String>,
    stats: Stats,
    local: u64,
}

const SOURCES: &[&CStr] = &[
    c"builtin://ode/expdecay",
    c"builtin://map/logistic",
    c"builtin://ode/lorenz",
    c"builtin://ode/nothing",
    c"inline:[model]\ntype = \"ode\"\n[states]\nx = 1\n[params]\nk = 2\n[equations.rhs]\nx = \"-k*x\"\n",
    c"inline:[model]\ntype = \"ode\"\n[states]\nx = ",
    c"/no/such/model.toml",
];
const STEPPERS: &[Option<&CStr>] = &[
    None,
    None,
    Some(c"rk4"),
    Some(c"rk45"),
    Some(c"map"),
    Some(c"nope"),
];
const NAMES: &[Option<&CStr>] = &[
    None,
    Some(c"s1"),
    Some(c"s2"),
    Some(c"initial"),
    Some(c"x"),
    Some(c"\xff"),
];
const VARS: &[&CStr] = &[c"x", c"a", c"r", c"k", c"y", c"nope"];

impl World {
    fn fail(&self, what: String) -> ! {
        panic!(
            "{what}\ncalls of this sequence:\n  {}",
            self.log.join("\n  ")
        );
    }

    /// Checks the status of one call; `kind` is what the handle argument was.
    fn status(&mut self, call: &str, status: DynlibStatus, kind: Kind) -> DynlibStatus {
        self.stats.calls += 1;
        let msg = unsafe { CStr::from_ptr(dynlib::ffi::dynlib_last_error()) }
            .to_string_lossy()
            .into_owned();
        self.log.push(format!(
            "{call} -> {status}{}",
            if status == 0 {
                String::new()
            } else {
                format!(" ({msg})")
            }
        ));
        if !(0..=DYNLIB_ERR_BUSY).contains(&status) || status == DYNLIB_ERR_INTERNAL {
            self.fail(format!("{call} returned {status}: {msg}"));
        }
        let bad = match kind {
            Kind::Live => status == DYNLIB_ERR_BAD_HANDLE || status == DYNLIB_ERR_BUSY,
            Kind::Freed | Kind::Bad => status == DYNLIB_OK || status == DYNLIB_ERR_BUSY,
        };
        if bad {
            self.fail(format!(
                "{call} returned {status} for a handle that is {}: {msg}",
                match kind {
                    Kind::Live => "live",
                    Kind::Freed => "freed",
                    Kind::Bad => "NULL or not a handle",
                }
            ));
        }
        if status == DYNLIB_OK {
            self.stats.ok += 1;
        } else {
            self.stats.failed += 1;
        }
        status
    }

    fn garbage(&mut self, input: &mut Input) -> usize {
        match input.u8() % 5 {
            0 => 0,
            1 => &self.local as *const u64 as usize,
            2 => 0x10,
            3 => usize::MAX & !7,
            _ => 1,
        }
    }

    fn pick_sim(&mut self, input: &mut Input) -> (*mut DynlibSim, Kind, usize) {
        let b = input.u8();
        if b % 8 == 0 || self.sims.is_empty() {
            let wrong = self.models.iter().find(|m| m.1).map(|m| m.0 as usize);
            let v = match (b % 16 == 8, wrong) {
                (true, Some(m)) => m,
                _ => self.garbage(input),
            };
            return (v as *mut DynlibSim, Kind::Bad, usize::MAX);
        }
        let i = b as usize % self.sims.len();
        let (h, live, _) = self.sims[i];
        (h, if live { Kind::Live } else { Kind::Freed }, i)
    }

    fn pick_model(&mut self, input: &mut Input) -> (*mut DynlibModel, Kind, usize) {
        let b = input.u8();
        if b % 8 == 0 || self.models.is_empty() {
            let wrong = self.sims.iter().find(|s| s.1).map(|s| s.0 as usize);
            let v = match (b % 16 == 8, wrong) {
                (true, Some(s)) => s,
                _ => self.garbage(input),
            };
            return (v as *mut DynlibModel, Kind::Bad, usize::MAX);
        }
        let i = b as usize % self.models.len();
        let (h, live) = self.models[i];
        (h, if live { Kind::Live } else { Kind::Freed }, i)
    }

    /// Everything observable about a live sim, as bits.
    fn fingerprint(sim: *mut DynlibSim) -> Vec<u64> {
        unsafe {
            let mut v = Vec::new();
            let mut t = 0.0;
            v.push(dynlib_sim_time(sim, &mut t) as u64);
            v.push(t.to_bits());
            let mut step = 0u64;
            dynlib_sim_step_count(sim, &mut step);
            v.push(step);
            let mut buf = [0.0f64; 16];
            let mut n = 0usize;
            dynlib_sim_state(sim, buf.as_mut_ptr(), 16, &mut n);
            v.extend(buf[..n.min(16)].iter().map(|x| x.to_bits()));
            dynlib_sim_params(sim, buf.as_mut_ptr(), 16, &mut n);
            v.extend(buf[..n.min(16)].iter().map(|x| x.to_bits()));
            let mut ns = 0usize;
            v.push(dynlib_sim_n_samples(sim, &mut ns) as u64);
            v.push(ns as u64);
            dynlib_sim_n_segments(sim, &mut ns);
            v.push(ns as u64);
            let mut text = vec![0u8; 4096];
            let mut need = 0usize;
            dynlib_sim_list_snapshots_json(sim, text.as_mut_ptr().cast(), text.len(), &mut need);
            // Creation times differ between snapshots, not between calls: compare the bytes.
            v.extend(text[..need.min(4096)].iter().map(|b| u64::from(*b)));
            // The preset bank, the run defaults and the stepper configuration.
            for get in [
                |s, b: *mut c_char, c, n: *mut usize| dynlib_sim_config_json(s, b, c, n),
                |s, b: *mut c_char, c, n: *mut usize| dynlib_sim_stepper_config_json(s, b, c, n),
                |s, b: *mut c_char, c, n: *mut usize| {
                    dynlib_sim_list_presets_json(s, std::ptr::null(), b, c, n)
                },
            ] {
                let mut need = 0usize;
                v.push(get(sim, text.as_mut_ptr().cast(), text.len(), &mut need) as u64);
                v.extend(text[..need.min(4096)].iter().map(|b| u64::from(*b)));
            }
            v
        }
    }

    /// Runs a mutating call on a sim; on failure the sim must be unchanged.
    fn mutate(
        &mut self,
        call: &str,
        sim: *mut DynlibSim,
        kind: Kind,
        f: impl FnOnce() -> DynlibStatus,
    ) -> DynlibStatus {
        let before = (kind == Kind::Live).then(|| Self::fingerprint(sim));
        let status = f();
        let status = self.status(call, status, kind);
        if let Some(before) = before {
            if status != DYNLIB_OK && Self::fingerprint(sim) != before {
                self.fail(format!("failed {call} ({status}) changed the sim"));
            }
        }
        status
    }

    /// Mostly valid options (a short horizon), then 0–3 random changes, some invalid.
    fn run_options(
        &mut self,
        input: &mut Input,
        o: &mut DynlibRunOptions,
        ic: &[f64; 4],
        names: &[*const c_char; 2],
    ) {
        o.T = input.pick(&[0.3, 1.0, 2.5]);
        o.N = input.pick(&[0, 0, 7, 50]);
        o.resume = input.bool();
        let full = std::mem::size_of::<DynlibRunOptions>();
        for _ in 0..input.u8() % 4 {
            match input.u8() % 14 {
                0 => o.T = input.pick(&[f64::NAN, -1.0, 0.0, 0.05]),
                1 => o.N = input.pick(&[1, 300]),
                2 => o.dt = input.pick(&[0.01, 0.05, 0.0, -0.1]),
                3 => o.t0 = input.pick(&[0.0, 1.0, -2.0]),
                4 => match input.u8() % 3 {
                    0 => (o.ic, o.n_ic) = (ic.as_ptr(), 1),
                    1 => (o.ic, o.n_ic) = (ic.as_ptr(), 3),
                    _ => (o.ic, o.n_ic) = (std::ptr::null(), 2),
                },
                5 => match input.u8() % 3 {
                    0 => (o.params, o.n_params) = (ic.as_ptr(), 1),
                    1 => (o.params, o.n_params) = (ic.as_ptr(), 4),
                    _ => (o.params, o.n_params) = (std::ptr::null(), 1),
                },
                6 => o.record = input.pick(&[0, 1, 5]),
                7 => o.record_interval = input.pick(&[1, 3]),
                8 => match input.u8() % 3 {
                    0 => (o.record_vars, o.n_record_vars) = (names.as_ptr(), 1),
                    1 => (o.record_vars, o.n_record_vars) = (names.as_ptr(), 2),
                    _ => (o.record_vars, o.n_record_vars) = (std::ptr::null(), 1),
                },
                9 => o.transient = input.pick(&[0.0, 0.1, -1.0]),
                10 => o.tag = input.pick(NAMES).map_or(std::ptr::null(), |c| c.as_ptr()),
                11 => o.max_steps = input.pick(&[5, 100_000]),
                12 => {
                    o.config_names = names.as_ptr();
                    o.config_values = ic.as_ptr();
                    o.n_config = 1;
                }
                _ => o.struct_size = input.pick(&[0, 8, 44, 160, 161, full - 4, full + 8]),
            }
        }
    }

    fn step(&mut self, input: &mut Input) {
        let mut sentinel = [0xA5u8; 64];
        match input.u8() % 22 {
            0 | 1 => {
                let src = input.pick(SOURCES);
                let stepper = input
                    .pick(STEPPERS)
                    .map_or(std::ptr::null(), |c| c.as_ptr());
                let mut out = SENTINEL as *mut DynlibModel;
                let null_out = input.u8() % 10 == 0;
                let out_ptr = if null_out {
                    std::ptr::null_mut()
                } else {
                    &mut out
                };
                let s = unsafe { dynlib_model_load(src.as_ptr(), stepper, out_ptr) };
                let s = self.status("model_load", s, Kind::Live);
                if s == DYNLIB_OK {
                    self.models.push((out, true));
                } else if out as usize != SENTINEL {
                    self.fail("model_load wrote its out-parameter on failure".into());
                }
            }
            2 | 20 => {
                let mut cb = std::mem::MaybeUninit::<DynlibCallbackModel>::uninit();
                unsafe {
                    dynlib_callback_model_init_sized(
                        cb.as_mut_ptr(),
                        std::mem::size_of::<DynlibCallbackModel>(),
                    )
                };
                let mut cb = unsafe { cb.assume_init() };
                static STATES: [&CStr; 1] = [c"x"];
                static PARAMS: [&CStr; 1] = [c"k"];
                let states = [STATES[0].as_ptr()];
                let params = [PARAMS[0].as_ptr()];
                let init = [1.0];
                cb.id = c"fuzz/decay".as_ptr();
                cb.n_states = 1;
                cb.state_names = states.as_ptr();
                cb.state_init = init.as_ptr();
                cb.n_params = 1;
                cb.param_names = params.as_ptr();
                cb.param_init = init.as_ptr();
                cb.rhs = Some(reentrant_rhs);
                cb.user_data = (&mut *self.reentry as *mut Reentry).cast();
                let full = std::mem::size_of::<DynlibCallbackModel>();
                cb.struct_size = input.pick(&[full, full, full, 4, 8, 36, full - 4, full + 8]);
                if input.u8() % 8 == 0 {
                    cb.rhs = None;
                }
                let mut out = SENTINEL as *mut DynlibModel;
                let s = unsafe { dynlib_model_from_callbacks(&cb, &mut out) };
                if self.status("model_from_callbacks", s, Kind::Live) == DYNLIB_OK {
                    self.models.push((out, true));
                } else if out as usize != SENTINEL {
                    self.fail("model_from_callbacks wrote its out-parameter on failure".into());
                }
            }
            3 | 4 => {
                let (m, kind, i) = self.pick_model(input);
                let mut out = SENTINEL as *mut DynlibSim;
                let s = unsafe { dynlib_sim_new(m, &mut out) };
                if self.status("sim_new", s, kind) == DYNLIB_OK {
                    let callback = i != usize::MAX && self.is_callback_model(i);
                    self.sims.push((out, true, callback));
                } else if out as usize != SENTINEL {
                    self.fail("sim_new wrote its out-parameter on failure".into());
                }
            }
            5..=7 => {
                let (sim, kind, i) = self.pick_sim(input);
                let ic = [0.5, 0.25, 2.0, 1.0];
                let names = [c"x".as_ptr(), c"atol".as_ptr()];
                let mut o = std::mem::MaybeUninit::<DynlibRunOptions>::uninit();
                unsafe {
                    dynlib_run_options_init_sized(
                        o.as_mut_ptr(),
                        std::mem::size_of::<DynlibRunOptions>(),
                    )
                };
                let mut o = unsafe { o.assume_init() };
                self.run_options(input, &mut o, &ic, &names);
                // NULL options = the model's defaults, up to 10^6 steps for some built-ins: too slow for
                // thousands of sequences, so only with handles that cannot run.
                let null_opts = input.u8() % 8 == 0 && kind != Kind::Live;
                if kind == Kind::Live && self.sims[i].2 {
                    self.reentry.current = sim;
                    self.reentry.armed = if input.u8() % 4 != 0 {
                        1 + input.u8() % 5
                    } else {
                        0
                    };
                }
                let calls_before = self.reentry.calls;
                let p: *const DynlibRunOptions = if null_opts { std::ptr::null() } else { &o };
                self.mutate("sim_run", sim, kind, || unsafe { dynlib_sim_run(sim, p) });
                self.stats.busy_in_callbacks += self.reentry.calls - calls_before;
                self.reentry.armed = 0;
                self.reentry.current = std::ptr::null_mut();
                if let Some(v) = self.reentry.violation.take() {
                    self.fail(v);
                }
                if kind == Kind::Live {
                    let mut t = 0.0;
                    let s = unsafe { dynlib_sim_time(sim, &mut t) };
                    self.status("sim_time after run", s, Kind::Live);
                }
            }
            8 => {
                let (sim, kind, _) = self.pick_sim(input);
                let name = input.pick(NAMES).map_or(std::ptr::null(), |c| c.as_ptr());
                let desc = if input.bool() {
                    c"d".as_ptr()
                } else {
                    std::ptr::null()
                };
                self.mutate("create_snapshot", sim, kind, || unsafe {
                    dynlib_sim_create_snapshot(sim, name, desc)
                });
            }
            9 => {
                let (sim, kind, _) = self.pick_sim(input);
                let name = input.pick(NAMES).map_or(std::ptr::null(), |c| c.as_ptr());
                self.mutate("reset", sim, kind, || unsafe {
                    dynlib_sim_reset(sim, name)
                });
            }
            10 => {
                let (sim, kind, _) = self.pick_sim(input);
                let names = [input.pick(VARS).as_ptr(), input.pick(VARS).as_ptr()];
                let values = [input.pick(&[1.0, 0.5, f64::NAN, -3.0]), 2.0];
                let n = input.pick(&[0usize, 1, 1, 2]);
                let names_p = if input.u8() % 8 == 0 {
                    std::ptr::null()
                } else {
                    names.as_ptr()
                };
                let clear = input.bool();
                self.mutate("assign", sim, kind, || unsafe {
                    dynlib_sim_assign(sim, names_p, values.as_ptr(), n, clear)
                });
            }
            11 => {
                // Export (atomic file writes are the slowest call: keep them rare).
                if input.u8() % 3 != 0 {
                    return;
                }
                let (sim, kind, _) = self.pick_sim(input);
                let file = self
                    .dir
                    .join(input.pick(&["a.npz", "b.npz", "sub/c.npz", ""]));
                let path = std::ffi::CString::new(file.to_string_lossy().as_bytes()).unwrap();
                let name = input.pick(NAMES).map_or(std::ptr::null(), |c| c.as_ptr());
                let p = if input.u8() % 8 == 0 {
                    std::ptr::null()
                } else {
                    path.as_ptr()
                };
                self.mutate("export_snapshot", sim, kind, || unsafe {
                    dynlib_sim_export_snapshot(sim, p, name)
                });
            }
            12 => {
                let (sim, kind, _) = self.pick_sim(input);
                let file =
                    self.dir
                        .join(input.pick(&["a.npz", "b.npz", "sub/c.npz", "missing.npz", ""]));
                let path = std::ffi::CString::new(file.to_string_lossy().as_bytes()).unwrap();
                let p = if input.u8() % 8 == 0 {
                    std::ptr::null()
                } else {
                    path.as_ptr()
                };
                self.mutate("import_snapshot", sim, kind, || unsafe {
                    dynlib_sim_import_snapshot(sim, p)
                });
            }
            13 => {
                let (sim, kind, _) = self.pick_sim(input);
                let name = input.pick(NAMES).map_or(std::ptr::null(), |c| c.as_ptr());
                let mut need = usize::MAX;
                let s = unsafe {
                    dynlib_sim_serialize_snapshot(sim, name, std::ptr::null_mut(), 0, &mut need)
                };
                if self.status("serialize_snapshot(size)", s, kind) != DYNLIB_OK {
                    if need != usize::MAX {
                        self.fail("serialize_snapshot wrote needed on failure".into());
                    }
                    return;
                }
                let cap = match input.u8() % 3 {
                    0 => need.saturating_sub(1),
                    1 => need.min(64) / 2,
                    _ => need,
                };
                let mut buf = vec![0xA5u8; cap.max(1)];
                let mut need2 = 0usize;
                let s = unsafe {
                    dynlib_sim_serialize_snapshot(sim, name, buf.as_mut_ptr(), cap, &mut need2)
                };
                let s = self.status("serialize_snapshot", s, kind);
                if s == DYNLIB_ERR_BUFFER_TOO_SMALL {
                    if need2 != need || buf.iter().any(|b| *b != 0xA5) {
                        self.fail("a too-small buffer was written, or needed is wrong".into());
                    }
                } else if s == DYNLIB_OK {
                    buf.truncate(need2);
                    if self.blobs.len() < 8 {
                        self.blobs.push(buf);
                    }
                }
            }
            14 => {
                let (sim, kind, _) = self.pick_sim(input);
                let bytes: Vec<u8> = match (input.u8() % 4, self.blobs.is_empty()) {
                    (0, false) | (1, false) => {
                        self.blobs[input.u8() as usize % self.blobs.len()].clone()
                    }
                    (2, false) => {
                        let b = &self.blobs[input.u8() as usize % self.blobs.len()];
                        b[..b.len() * usize::from(input.u8()) / 256].to_vec()
                    }
                    _ => (0..input.u8()).map(|i| i.wrapping_mul(31)).collect(),
                };
                let p = if input.u8() % 8 == 0 {
                    std::ptr::null()
                } else {
                    bytes.as_ptr()
                };
                self.mutate("deserialize_snapshot", sim, kind, || unsafe {
                    dynlib_sim_deserialize_snapshot(sim, p, bytes.len())
                });
            }
            15 => {
                // Getters with small buffers.
                let (sim, kind, _) = self.pick_sim(input);
                let cap = input.pick(&[0usize, 1, 3, 64]);
                let null_buf = cap == 0 || input.u8() % 4 == 0;
                let mut need = usize::MAX;
                let which = input.u8() % 6;
                let s = unsafe {
                    let b = if null_buf {
                        std::ptr::null_mut()
                    } else {
                        sentinel.as_mut_ptr()
                    };
                    match which {
                        0 => dynlib_sim_state(sim, b.cast(), cap / 8, &mut need),
                        1 => dynlib_sim_results_t(sim, b.cast(), cap / 8, &mut need),
                        2 => dynlib_sim_summary_json(sim, b.cast(), cap, &mut need),
                        3 => dynlib_sim_events_json(sim, b.cast(), cap, &mut need),
                        4 => dynlib_sim_results_var(
                            sim,
                            input.pick(VARS).as_ptr(),
                            b.cast(),
                            cap / 8,
                            &mut need,
                        ),
                        _ => dynlib_sim_list_snapshots_json(sim, b.cast(), cap, &mut need),
                    }
                };
                let s = self.status("getter", s, kind);
                let cap_items = if matches!(which, 0 | 1 | 4) {
                    cap / 8
                } else {
                    cap
                };
                if s == DYNLIB_ERR_BUFFER_TOO_SMALL
                    && (need <= cap_items || sentinel.iter().any(|b| *b != 0xA5))
                {
                    self.fail(format!(
                        "too-small buffer: needed {need}, cap {cap_items}, buffer touched?"
                    ));
                }
                if s == DYNLIB_OK && need == usize::MAX {
                    self.fail("a getter succeeded without setting needed".into());
                }
                let mut t = -7.0;
                let s = unsafe { dynlib_sim_time(sim, &mut t) };
                if self.status("sim_time", s, kind) != DYNLIB_OK && t != -7.0 {
                    self.fail("sim_time wrote its out-parameter on failure".into());
                }
            }
            16 => {
                let (m, kind, _) = self.pick_model(input);
                let mut n = usize::MAX;
                let s = unsafe { dynlib_model_n_states(m, &mut n) };
                if self.status("model_n_states", s, kind) != DYNLIB_OK && n != usize::MAX {
                    self.fail("model_n_states wrote its out-parameter on failure".into());
                }
                let cap = input.pick(&[0usize, 1, 2, 64]);
                let mut need = 0usize;
                let b = if cap == 0 {
                    std::ptr::null_mut()
                } else {
                    sentinel.as_mut_ptr()
                };
                let s = unsafe {
                    dynlib_model_state_name(
                        m,
                        usize::from(input.u8() % 3),
                        b.cast(),
                        cap,
                        &mut need,
                    )
                };
                self.status("model_state_name", s, kind);
                let s = unsafe { dynlib_model_info_json(m, b.cast(), cap, &mut need) };
                self.status("model_info_json", s, kind);
            }
            17 | 18 => {
                let (sim, kind, i) = self.pick_sim(input);
                unsafe { dynlib_sim_free(sim) };
                self.log.push("sim_free".into());
                self.stats.calls += 1;
                if kind == Kind::Live {
                    self.sims[i].1 = false;
                }
                let mut t = 0.0;
                let s = unsafe { dynlib_sim_time(sim, &mut t) };
                let after = if kind == Kind::Bad {
                    Kind::Bad
                } else {
                    Kind::Freed
                };
                self.status("sim_time after free", s, after);
            }
            19 => {
                let (m, kind, i) = self.pick_model(input);
                unsafe { dynlib_model_free(m) };
                self.log.push("model_free".into());
                self.stats.calls += 1;
                if kind == Kind::Live {
                    self.models[i].1 = false;
                }
            }
            21 => {
                // Presets, run defaults and stepper knobs, valid and invalid.
                let (sim, kind, _) = self.pick_sim(input);
                let names = [input.pick(VARS).as_ptr(), input.pick(VARS).as_ptr()];
                let values = [input.pick(&[1.0, 0.5, f64::NAN, -3.0]), 2.0];
                let n = input.pick(&[0usize, 1, 2]);
                let preset = input.pick(&[c"p1", c"p2", c"", c"p*"]).as_ptr();
                let file = self
                    .dir
                    .join(input.pick(&["b.toml", "a.npz", "sub/x.toml"]));
                let path = std::ffi::CString::new(file.to_string_lossy().as_bytes()).unwrap();
                let mode = input.pick(&[c"append", c"replace", c"overwrite", c"keep", c"error"]);
                let json = input.pick(&[
                    c"{\"max_steps\": 50}",
                    c"{\"dt\": 0.05, \"record_interval\": 2}",
                    c"{\"atol\": 1e-9}",
                    c"{\"max_steps\": 0}",
                    c"{\"max_step\": 5}",
                    c"{\"dt\": null, \"max_steps\": null, \"record_interval\": null}",
                    c"[1]",
                ]);
                let knobs = [input.pick(&[c"atol", c"rtol", c"nope"]).as_ptr()];
                let knob_value = [input.pick(&[1e-9, f64::NAN, 1e-4])];
                let op = input.u8() % 6;
                let overwrite = input.bool();
                let call = [
                    "add_preset",
                    "apply_preset",
                    "save_presets",
                    "load_presets",
                    "config_set_json",
                    "stepper_config_set",
                ][op as usize];
                let none = std::ptr::null::<c_char>();
                self.mutate(call, sim, kind, || unsafe {
                    match op {
                        0 => dynlib_sim_add_preset(
                            sim,
                            preset,
                            names.as_ptr(),
                            values.as_ptr(),
                            n,
                            overwrite,
                        ),
                        1 => dynlib_sim_apply_preset(sim, preset),
                        2 => dynlib_sim_save_presets(
                            sim,
                            path.as_ptr(),
                            none,
                            mode.as_ptr(),
                            std::ptr::null_mut(),
                        ),
                        3 => dynlib_sim_load_presets(
                            sim,
                            path.as_ptr(),
                            none,
                            mode.as_ptr(),
                            std::ptr::null_mut(),
                        ),
                        4 => dynlib_sim_config_set_json(sim, json.as_ptr()),
                        _ => dynlib_sim_stepper_config_set(
                            sim,
                            knobs.as_ptr(),
                            knob_value.as_ptr(),
                            1,
                        ),
                    }
                });
            }
            _ => unreachable!(),
        }
    }

    fn is_callback_model(&self, i: usize) -> bool {
        let mut need = 0usize;
        let mut buf = vec![0u8; 4096];
        let s = unsafe {
            dynlib_model_info_json(
                self.models[i].0,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut need,
            )
        };
        s == DYNLIB_OK && String::from_utf8_lossy(&buf[..need]).contains("fuzz/decay")
    }
}

/// Runs one sequence of calls decoded from `data` (at most 64 calls); files go to `dir`.
pub fn run_sequence(data: &[u8], dir: &std::path::Path, stats: &mut Stats) {
    let mut input = Input { data, pos: 0 };
    let mut world = World {
        models: Vec::new(),
        sims: Vec::new(),
        reentry: Box::new(Reentry {
            current: std::ptr::null_mut(),
            armed: 0,
            calls: 0,
            violation: None,
        }),
        blobs: Vec::new(),
        dir: dir.to_path_buf(),
        log: Vec::new(),
        stats: Stats::default(),
        local: 0,
    };
    // Start from one live model and sim, so that short inputs reach the session calls.
    let source = input.pick(&SOURCES[..3]);
    let mut model = std::ptr::null_mut();
    let s = unsafe { dynlib_model_load(source.as_ptr(), std::ptr::null(), &mut model) };
    if world.status("model_load (start)", s, Kind::Live) == DYNLIB_OK {
        world.models.push((model, true));
        let mut sim = std::ptr::null_mut();
        let s = unsafe { dynlib_sim_new(model, &mut sim) };
        if world.status("sim_new (start)", s, Kind::Live) == DYNLIB_OK {
            world.sims.push((sim, true, false));
        }
    }
    let mut n = 0;
    while !input.done() && n < 64 {
        world.step(&mut input);
        n += 1;
    }
    // Free what is left; then every handle of the sequence is refused.
    for i in 0..world.sims.len() {
        if world.sims[i].1 {
            unsafe { dynlib_sim_free(world.sims[i].0) };
            world.sims[i].1 = false;
        }
    }
    for i in 0..world.models.len() {
        if world.models[i].1 {
            unsafe { dynlib_model_free(world.models[i].0) };
            world.models[i].1 = false;
        }
    }
    for i in 0..world.sims.len() {
        let mut t = 0.0;
        let s = unsafe { dynlib_sim_time(world.sims[i].0, &mut t) };
        world.status("sim_time at the end", s, Kind::Freed);
    }
    stats.sequences += 1;
    stats.calls += world.stats.calls;
    stats.ok += world.stats.ok;
    stats.failed += world.stats.failed;
    stats.busy_in_callbacks += world.stats.busy_in_callbacks;
}

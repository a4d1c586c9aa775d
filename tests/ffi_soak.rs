//! Soak and cost of the C ABI's handle layer: 10^4 sim and model create/free cycles with
//! bounded memory growth (VmRSS from /proc/self/status), and the per-call cost of handle
//! validation (registry lookup + busy flag), printed in ns per call.

use std::ffi::{c_int, c_void};
use std::time::Instant;

use dynlib::ffi::callbacks::*;
use dynlib::ffi::handles::{DynlibModel, DynlibSim};
use dynlib::ffi::model::*;
use dynlib::ffi::sim::*;
use dynlib::ffi::status::*;

/// The two tests run one at a time: the benchmark's 1001 sims would disturb the RSS numbers.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Resident set size in KiB (Linux), or None elsewhere.
fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

unsafe extern "C" fn decay(
    _t: f64,
    y: *const f64,
    p: *const f64,
    out: *mut f64,
    _ud: *mut c_void,
) -> c_int {
    *out = -*p * *y;
    0
}

fn load(source: &std::ffi::CStr) -> *mut DynlibModel {
    let mut m = std::ptr::null_mut();
    assert_eq!(
        unsafe { dynlib_model_load(source.as_ptr(), std::ptr::null(), &mut m) },
        DYNLIB_OK
    );
    m
}

fn callback_model() -> *mut DynlibModel {
    unsafe {
        let mut cb = std::mem::MaybeUninit::<DynlibCallbackModel>::uninit();
        dynlib_callback_model_init_sized(
            cb.as_mut_ptr(),
            std::mem::size_of::<DynlibCallbackModel>(),
        );
        let mut cb = cb.assume_init();
        let names = [c"x".as_ptr()];
        let pnames = [c"k".as_ptr()];
        let init = [1.0];
        cb.id = c"soak/decay".as_ptr();
        cb.n_states = 1;
        cb.state_names = names.as_ptr();
        cb.state_init = init.as_ptr();
        cb.n_params = 1;
        cb.param_names = pnames.as_ptr();
        cb.param_init = init.as_ptr();
        cb.rhs = Some(decay);
        let mut m = std::ptr::null_mut();
        assert_eq!(dynlib_model_from_callbacks(&cb, &mut m), DYNLIB_OK);
        m
    }
}

fn run_briefly(sim: *mut DynlibSim) {
    unsafe {
        let mut o = std::mem::MaybeUninit::<DynlibRunOptions>::uninit();
        dynlib_run_options_init_sized(o.as_mut_ptr(), std::mem::size_of::<DynlibRunOptions>());
        let mut o = o.assume_init();
        o.T = 0.1;
        assert_eq!(dynlib_sim_run(sim, &o), DYNLIB_OK);
    }
}

/// One cycle: a sim of `model` created, run briefly, freed; a model loaded and one built
/// from callbacks, each with a sim, all freed.
fn cycle(model: *mut DynlibModel) {
    unsafe {
        let mut sim = std::ptr::null_mut();
        assert_eq!(dynlib_sim_new(model, &mut sim), DYNLIB_OK);
        run_briefly(sim);
        dynlib_sim_free(sim);
        for m in [load(c"builtin://ode/expdecay"), callback_model()] {
            let mut s = std::ptr::null_mut();
            assert_eq!(dynlib_sim_new(m, &mut s), DYNLIB_OK);
            dynlib_model_free(m); // the sim keeps the model alive
            run_briefly(s);
            dynlib_sim_free(s);
            let mut t = 0.0;
            assert_eq!(dynlib_sim_time(s, &mut t), DYNLIB_ERR_BAD_HANDLE);
        }
    }
}

#[test]
fn ten_thousand_create_free_cycles_keep_memory_bounded() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let model = load(c"builtin://ode/lorenz");
    for _ in 0..500 {
        cycle(model); // warm-up: allocator pools, the native-code cache, the registry
    }
    let before = rss_kib();
    let start = Instant::now();
    const CYCLES: usize = 10_000;
    for _ in 0..CYCLES {
        cycle(model);
    }
    let after = rss_kib();
    unsafe { dynlib_model_free(model) };
    println!(
        "soak: {CYCLES} cycles (3 sims, 2 models each: {} sims, {} models created and freed) \
         in {:.1} s; VmRSS {} KiB -> {} KiB",
        3 * CYCLES,
        2 * CYCLES,
        start.elapsed().as_secs_f64(),
        before.map_or("?".into(), |k| k.to_string()),
        after.map_or("?".into(), |k| k.to_string()),
    );
    if let (Some(b), Some(a)) = (before, after) {
        // A leak of even 1 KiB per cycle would show as ~10 MiB; allow 16 MiB for allocator
        // noise.
        assert!(
            a.saturating_sub(b) < 16 * 1024,
            "VmRSS grew from {b} KiB to {a} KiB over {CYCLES} cycles"
        );
    }
}

/// Per-call cost of the handle layer, measured on the cheapest calls.
#[test]
fn handle_validation_is_cheap() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let model = load(c"builtin://ode/lorenz");
    let mut sim = std::ptr::null_mut();
    assert_eq!(unsafe { dynlib_sim_new(model, &mut sim) }, DYNLIB_OK);
    // Other live handles in the registry, as in a real host.
    let others: Vec<*mut DynlibSim> = (0..1000)
        .map(|_| {
            let mut s = std::ptr::null_mut();
            assert_eq!(unsafe { dynlib_sim_new(model, &mut s) }, DYNLIB_OK);
            s
        })
        .collect();
    const N: u32 = 2_000_000;
    let time_per_call = |f: &dyn Fn() -> DynlibStatus| {
        for _ in 0..10_000 {
            assert_eq!(f(), DYNLIB_OK);
        }
        let start = Instant::now();
        for _ in 0..N {
            std::hint::black_box(f());
        }
        start.elapsed().as_nanos() as f64 / f64::from(N)
    };
    let mut t = 0.0;
    let tp = &mut t as *mut f64;
    let sim_ns = time_per_call(&|| unsafe { dynlib_sim_time(sim, tp) });
    let mut n = 0usize;
    let np = &mut n as *mut usize;
    let model_ns = time_per_call(&|| unsafe { dynlib_model_n_states(model, np) });
    // Two threads, each on its own sim: the shared registry must not serialise them.
    let sims = [sim as usize, others[0] as usize];
    let start = Instant::now();
    let threads: Vec<_> = sims
        .iter()
        .map(|&s| {
            std::thread::spawn(move || {
                let mut t = 0.0;
                for _ in 0..N {
                    let st = unsafe { dynlib_sim_time(s as *mut DynlibSim, &mut t) };
                    std::hint::black_box(st);
                }
            })
        })
        .collect();
    for th in threads {
        th.join().unwrap();
    }
    let parallel_ns = start.elapsed().as_nanos() as f64 / f64::from(N);
    println!(
        "handle check: dynlib_sim_time {sim_ns:.1} ns/call (lookup + busy flag + call), \
         dynlib_model_n_states {model_ns:.1} ns/call, with 1001 live sims; two threads on two \
         sims: {parallel_ns:.1} ns per call-pair wall time"
    );
    // Generous: a lock-free fast path runs in tens of ns; a shared machine may be slower.
    assert!(sim_ns < 2000.0 && model_ns < 2000.0, "{sim_ns} {model_ns}");
    unsafe {
        for s in others {
            dynlib_sim_free(s);
        }
        dynlib_sim_free(sim);
        dynlib_model_free(model);
    }
}

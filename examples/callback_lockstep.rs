//! Would a lock-step kernel help C-callback models? It could only call the callback once per
//! lane per stage: the arithmetic inside the callback is the host compiler's, opaque to us.
//! This measures, for Lorenz rk4 written as a C callback (an `extern "C"` function the
//! optimiser cannot see into), side by side (interleaved, best of N):
//!   - one-by-one: members of a callback model through the library's fused loop, 1 thread;
//!   - the ceiling of a callback lock-step: a plain Rust rk4 loop over 8 lanes in
//!     structure-of-arrays, stage by stage across the lanes, calling the callback once per
//!     lane per stage, with no event, finiteness or commit work at all (so a real kernel
//!     could only be slower);
//!   - the same loop with 1 lane, for the chain-bound single trajectory.
//!
//! cargo run --release --example callback_lockstep [-- --reps 5]

use std::ffi::{c_int, c_void};
use std::hint::black_box;
use std::time::Instant;

use dynlib::model::host::{CFunctions, HostModel, HostModelDef};
use dynlib::model::ModelKind;
use dynlib::session::Ensemble;
use dynlib::{Model, RunOptions};

/// Lorenz as a C callback: `out = f(t, y; sigma, rho, beta)`.
#[inline(never)]
unsafe extern "C" fn lorenz(
    _t: f64,
    y: *const f64,
    p: *const f64,
    out: *mut f64,
    _user: *mut c_void,
) -> c_int {
    // SAFETY: the caller passes 3 states, 3 parameters and 3 outputs.
    let (y, p, out) = unsafe {
        (
            std::slice::from_raw_parts(y, 3),
            std::slice::from_raw_parts(p, 3),
            std::slice::from_raw_parts_mut(out, 3),
        )
    };
    out[0] = p[0] * (y[1] - y[0]);
    out[1] = y[0] * (p[1] - y[2]) - y[1];
    out[2] = y[0] * y[1] - p[2] * y[2];
    0
}

struct Lorenz;

impl HostModel for Lorenz {
    fn rhs(&self, t: f64, y: &[f64], p: &[f64], out: &mut [f64]) -> Result<(), i32> {
        // SAFETY: the slices have the lengths `lorenz` reads and writes.
        let code = unsafe {
            lorenz(
                t,
                y.as_ptr(),
                p.as_ptr(),
                out.as_mut_ptr(),
                std::ptr::null_mut(),
            )
        };
        if code == 0 {
            Ok(())
        } else {
            Err(code)
        }
    }
    fn c_functions(&self) -> Option<CFunctions> {
        Some(CFunctions {
            rhs: lorenz,
            aux: None,
            event_cond: None,
            user_data: std::ptr::null_mut(),
        })
    }
}

/// rk4 over `lanes` lanes stage by stage, the callback called once per lane per stage.
fn lockstep_ceiling(rho: &[f64], steps: u64, dt: f64) -> Vec<f64> {
    let n = rho.len();
    let f = black_box(lorenz as dynlib::model::host::CEvalFn);
    let mut y: Vec<[f64; 3]> = vec![[1.0, 1.0, 1.0]; n];
    let p: Vec<[f64; 3]> = rho.iter().map(|&r| [10.0, r, 8.0 / 3.0]).collect();
    let mut k = vec![[[0.0; 3]; 4]; n];
    let mut ys = vec![[0.0; 3]; n];
    let call = |f: dynlib::model::host::CEvalFn,
                t: f64,
                y: &[f64; 3],
                p: &[f64; 3],
                out: &mut [f64; 3]| {
        // SAFETY: 3 states, 3 parameters, 3 outputs.
        unsafe {
            f(
                t,
                y.as_ptr(),
                p.as_ptr(),
                out.as_mut_ptr(),
                std::ptr::null_mut(),
            )
        };
    };
    for step in 0..steps {
        let t = step as f64 * dt;
        for l in 0..n {
            call(f, t, &y[l], &p[l], &mut k[l][0]);
        }
        for (stage, c) in [(1usize, 0.5), (2, 0.5), (3, 1.0)] {
            for l in 0..n {
                for m in 0..3 {
                    ys[l][m] = y[l][m] + dt * (c * k[l][stage - 1][m]);
                }
                let (prev, rest) = k[l].split_at_mut(stage);
                let _ = prev;
                call(f, t + c * dt, &ys[l], &p[l], &mut rest[0]);
            }
        }
        for l in 0..n {
            for m in 0..3 {
                let s = k[l][0][m] / 6.0 + k[l][1][m] / 3.0 + k[l][2][m] / 3.0 + k[l][3][m] / 6.0;
                y[l][m] += dt * s;
            }
        }
    }
    y.into_iter().flatten().collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let reps = args
        .iter()
        .position(|a| a == "--reps")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(5usize);
    let def = HostModelDef {
        id: "lorenz-callback".into(),
        version: "1".into(),
        kind: ModelKind::Ode,
        state_names: vec!["x".into(), "y".into(), "z".into()],
        state_init: vec![1.0, 1.0, 1.0],
        param_names: vec!["sigma".into(), "rho".into(), "beta".into()],
        param_init: vec![10.0, 28.0, 8.0 / 3.0],
        aux_names: vec![],
        event_names: vec![],
        dt: 0.001,
        stepper: "rk4".into(),
    };
    let model = Model::from_host(def, Box::new(Lorenz)).expect("callback model");
    let (members, steps, dt) = (64usize, 20_000u64, 0.001);
    let rho: Vec<f64> = (0..members)
        .map(|i| 10.0 + 10.0 * i as f64 / members as f64)
        .collect();
    let opts = RunOptions::new()
        .t(steps as f64 * dt)
        .dt(dt)
        .record(false)
        .max_steps(steps + 10);
    let mut best = [f64::INFINITY; 3];
    for _ in 0..reps {
        let mut ens = Ensemble::with_stepper(&model, Some("rk4"), members).unwrap();
        ens.set_param_column("rho", &rho).unwrap();
        let start = Instant::now();
        ens.run(&opts, 1).unwrap();
        best[0] = best[0].min(start.elapsed().as_secs_f64());
        assert_eq!(
            ens.last_run_lockstep_steps(),
            0,
            "callback models do not go lock-step"
        );
        for (i, chunk) in [8usize, 1].into_iter().enumerate() {
            let start = Instant::now();
            for lanes in rho.chunks(chunk) {
                black_box(lockstep_ceiling(lanes, steps, dt));
            }
            best[i + 1] = best[i + 1].min(start.elapsed().as_secs_f64());
        }
    }
    let work = (members as u64 * steps) as f64;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "Lorenz rk4 as a C callback, {members} members x {steps} steps, 1 thread, best of {reps} \
         (load average {})",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    for (label, secs) in [
        "one-by-one (library fused loop)",
        "callback lock-step ceiling, 8 lanes",
        "same loop, 1 lane",
    ]
    .iter()
    .zip(best)
    {
        println!("  {label:<38} {:>6.2} ns/member-step", secs * 1e9 / work);
    }
    println!(
        "  ceiling of a callback lock-step kernel: {:.2}x one-by-one",
        best[0] / best[1]
    );
}

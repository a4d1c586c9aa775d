//! Ensemble throughput: member-steps per second for Izhikevich rk4 (10^4 members x 1,000 ms,
//! dt 0.01: 10^9 member-steps) and Lorenz rk4 (10^4 members x 10 time units, dt 0.001),
//! reduction-only (record = false), measured side by side in one run (interleaved, best of
//! N) for:
//!   - one-by-one: every member through its own single-sim fused loop (lock-step off), 1 thread;
//!   - lock-step:  the lock-step kernel, 1 thread, and on every core.
//!
//! It prints the lock-step throughput per core relative to one-by-one, the scaling efficiency
//! per core (lock-step on every core vs 1 thread), the resident memory per member, and checks
//! that every configuration gives the same final states, bit for bit. A last line measures the
//! machine itself: two equal jobs of independent floating-point chains (no allocation, no
//! library code) on 1 thread one after the other vs on every core at once — the scaling the
//! cores give right now, against which to read the ensemble's: once for latency-bound chains
//! in registers, once for throughput-bound chains through L1 (as the lock-step kernel runs),
//! once for add-throughput-bound chains in registers (no memory).
//!
//! cargo run --release --example ensemble_bench                 (the full sizes above, best of 3)
//! cargo run --release --example ensemble_bench -- --quick      (10x fewer steps)
//! cargo run --release --example ensemble_bench -- --reps 5 --lanes 16
//! cargo run --release --example ensemble_bench -- --quick --sweep-lanes   (choose the lane count)
//! cargo run --release --example ensemble_bench -- --case lorenz            (one case only)
//! cargo run --release --example ensemble_bench -- --members 100 --sweep-lanes (fewer members)
//! cargo run --release --example ensemble_bench -- --no-reference   (skip the machine line)
//! cargo run --release --example ensemble_bench -- --members 96 --steps 1041667  (equal work)
//! cargo run --release --features phase-timers --example ensemble_bench -- --case lorenz --phases
//!                                               (per-thread phases of the lock-step runs)

use std::time::Instant;

use dynlib::session::ensemble::default_lockstep_lanes;
use dynlib::session::Ensemble;
use dynlib::{Model, RunOptions};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU time used so far by every thread of this process, in ns (`/proc/self/task/*/schedstat`).
/// On a machine shared with other jobs, wall time measures the share the scheduler gave us;
/// CPU time of a one-thread run measures the code. Threads that ended are not counted, so
/// only differences over a run whose threads all live (the pools here) mean anything.
fn cpu_ns() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// CPU time of the whole process so far, in seconds (`/proc/self/stat` utime + stime, in
/// the kernel's 100 Hz ticks): it includes threads that have ended (every ensemble starts
/// its own pool), so differences over a run are its CPU time at 10 ms resolution. On a
/// machine shared with other jobs, a one-thread run's CPU time measures the code where its
/// wall time measures the share the scheduler gave it.
fn process_cpu_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    f.iter().sum::<f64>() / 100.0
}

struct Case {
    name: &'static str,
    source: &'static str,
    param: &'static str,
    range: (f64, f64),
    t_end: f64,
    dt: f64,
}

/// One measured configuration: lanes (0 = one by one) and threads (0 = every core).
#[derive(Clone, Copy)]
struct Config {
    label: &'static str,
    lanes: usize,
    threads: usize,
}

fn arg_value(name: &str) -> Option<usize> {
    let args: Vec<String> = std::env::args().collect();
    let i = args.iter().position(|a| a == name)?;
    args.get(i + 1)?.parse().ok()
}

fn arg_text(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    let i = args.iter().position(|a| a == name)?;
    args.get(i + 1).cloned()
}

fn main() {
    // Time what a user's program gets: no IR verifier (.cargo/config.toml turns it on for
    // everything cargo runs).
    std::env::remove_var("DYNLIB_JIT_VERIFY");
    let only = arg_text("--case").map(|c| c.to_lowercase());
    let quick = std::env::args().any(|a| a == "--quick");
    let sweep = std::env::args().any(|a| a == "--sweep-lanes");
    let reps = arg_value("--reps").unwrap_or(3).max(1);
    let lanes_arg = arg_value("--lanes");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let members = arg_value("--members").unwrap_or(10_000).max(1);
    // Steps per member (default: the case's t_end / dt), so that member counts can be
    // compared at equal member-steps.
    let steps_arg = arg_value("--steps").map(|s| s as u64);
    let cases = [
        Case {
            name: "Izhikevich rk4",
            source: "builtin://ode/izhikevich",
            param: "I",
            range: (0.0, 20.0),
            t_end: if quick { 100.0 } else { 1000.0 },
            dt: 0.01,
        },
        Case {
            name: "Lorenz rk4",
            source: "builtin://ode/lorenz",
            param: "rho",
            range: (10.0, 40.0),
            t_end: if quick { 1.0 } else { 10.0 },
            dt: 0.001,
        },
    ];
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "ensemble benchmark: {members} members, record = false, {cores} core(s), lanes = {}, \
         best of {reps} (interleaved){}; load average before: {}",
        lanes_arg.map_or("the model's default".to_string(), |l| l.to_string()),
        if quick { ", --quick" } else { "" },
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let chosen = cases.iter().filter(|c| {
        only.as_ref()
            .is_none_or(|o| c.name.to_lowercase().contains(o.as_str()))
    });
    for case in chosen {
        let model = Model::load(case.source).expect("built-in model");
        let lanes = lanes_arg.unwrap_or_else(|| default_lockstep_lanes(&model));
        let values: Vec<f64> = (0..members)
            .map(|i| case.range.0 + (case.range.1 - case.range.0) * i as f64 / members as f64)
            .collect();
        let steps = steps_arg.unwrap_or((case.t_end / case.dt).round() as u64);
        let work = members as f64 * steps as f64;
        let opts = RunOptions::new()
            .t(steps as f64 * case.dt)
            .dt(case.dt)
            .record(false)
            .max_steps(steps + 10);
        let make = |lanes: usize| {
            let mut ens = Ensemble::with_stepper(&model, Some("rk4"), members).unwrap();
            ens.set_param_column(case.param, &values).unwrap();
            ens.set_lockstep_lanes(lanes).unwrap();
            ens
        };
        if sweep {
            sweep_lanes(case, &make, &opts, work, reps);
            continue;
        }
        let configs = [
            Config {
                label: "one-by-one",
                lanes: 0,
                threads: 1,
            },
            Config {
                label: "lock-step",
                lanes,
                threads: 1,
            },
            Config {
                label: "lock-step",
                lanes,
                threads: 0,
            },
        ];
        let mut best = vec![f64::INFINITY; configs.len()];
        let mut best_cpu = vec![f64::INFINITY; configs.len()];
        let mut reference: Option<Vec<u64>> = None;
        let mut kernel_share = 0.0;
        // Per member-run costs outside the stepping (starting the run, packing, finishing):
        // a lock-step run of one step of fresh members, made and timed as the others.
        let one_step = RunOptions::new()
            .t(case.dt)
            .dt(case.dt)
            .record(false)
            .max_steps(10);
        let mut best_fixed = f64::INFINITY;
        let mut best_phases: Vec<Option<PhaseReport>> = vec![None; configs.len()];
        let (mut before, mut built, mut after) = (0, 0, 0);
        for rep in 0..reps {
            // Fresh members every repetition (a fresh run starts from the current state);
            // the fixed-cost run's first, so that they are as cold as the others at its run
            // and outside the memory figures.
            let mut fixed = make(lanes);
            let b = rss_kib();
            let mut ensembles: Vec<Ensemble> = configs.iter().map(|c| make(c.lanes)).collect();
            if rep == 0 {
                (before, built) = (b, rss_kib());
            }
            for (i, (c, ens)) in configs.iter().zip(&mut ensembles).enumerate() {
                let (start, cpu) = (Instant::now(), process_cpu_s());
                ens.run(&opts, c.threads).unwrap();
                let secs = start.elapsed().as_secs_f64();
                if secs < best[i] {
                    best_phases[i] = phase_report();
                }
                best[i] = best[i].min(secs);
                best_cpu[i] = best_cpu[i].min(process_cpu_s() - cpu);
                if c.lanes > 0 {
                    kernel_share = ens.last_run_lockstep_steps() as f64 / work;
                }
                let bits: Vec<u64> = ens.final_states().iter().map(|v| v.to_bits()).collect();
                match &reference {
                    None => reference = Some(bits),
                    Some(r) => assert!(r == &bits, "{} changed the results", c.label),
                }
            }
            if rep == 0 {
                after = rss_kib().max(built);
            }
            let start = Instant::now();
            fixed.run(&one_step, 1).unwrap();
            best_fixed = best_fixed.min(start.elapsed().as_secs_f64());
        }
        let rates: Vec<f64> = best.iter().map(|s| work / s).collect();
        for ((c, (secs, rate)), cpu) in configs.iter().zip(best.iter().zip(&rates)).zip(&best_cpu) {
            println!(
                "  {:<15} {:<10} threads = {:<2} {:>8.3} s  {:>7.1} M member-steps/s  {:>6.2} ns/member-step  (CPU time {:>6.2} ns/member-step)",
                case.name,
                c.label,
                if c.threads == 0 { cores } else { c.threads },
                secs,
                rate / 1e6,
                1e9 / rate,
                1e9 * cpu / work,
            );
        }
        println!(
            "  {:<15} by CPU time on 1 thread (what the scheduler's share does not move): \
             lock-step {:.2}x one-by-one",
            case.name,
            best_cpu[0] / best_cpu[1]
        );
        println!(
            "  {:<15} fixed cost per member-run (a 1-step lock-step run, 1 thread): {:.2} us \
             = {:.2} ns per member-step at {steps} steps ({:.1}% of the lock-step time)",
            case.name,
            1e6 * best_fixed / members as f64,
            1e9 * best_fixed / work,
            100.0 * best_fixed / best[1],
        );
        if std::env::args().any(|a| a == "--phases") {
            if cfg!(not(feature = "phase-timers")) {
                println!("  --phases: build with --features phase-timers");
            }
            for ((c, p), secs) in configs.iter().zip(&best_phases).zip(&best) {
                if let Some(p) = p.as_ref().filter(|_| c.lanes > 0) {
                    print_phases(case.name, c, *secs, work, p);
                }
            }
        }
        let speedup = rates[2] / rates[1];
        println!(
            "  {:<15} lock-step ({lanes} lanes) per core vs one-by-one: {:.2}x; scaling on {cores} cores: {:.2}x \
             = {:.2} per core; {:.1}% of member-steps in the kernel; memory/member {:.2} KiB \
             built, +{:.3} KiB after a run (final states identical in every configuration)",
            case.name,
            rates[1] / rates[0],
            speedup,
            speedup / cores as f64,
            100.0 * kernel_share,
            built.saturating_sub(before) as f64 / (members * configs.len()) as f64,
            after.saturating_sub(built) as f64 / (members * configs.len()) as f64,
        );
    }
    if !sweep && !std::env::args().any(|a| a == "--no-reference") {
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        println!(
            "  machine reference: {cores} equal floating-point jobs at once vs one after the \
             other scale {:.2} per core bound by latency, {:.2} bound by throughput through \
             L1, {:.2} bound by the add pipes in registers (load average after: {})",
            machine_scaling(cores, reps, fp_chains),
            machine_scaling(cores, reps, fp_throughput),
            machine_scaling(cores, reps, fp_registers),
            load.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
}

/// One job of the machine reference: 16 independent multiply-add chains, `rounds` rounds
/// (not inlined, so every job is the same machine code). Bound by the chains' latency.
#[inline(never)]
fn fp_chains(rounds: u64, seed: f64) -> f64 {
    let mut x: [f64; 16] = std::array::from_fn(|i| seed + i as f64 * 1e-3);
    let (a, b) = (std::hint::black_box(0.999_999), std::hint::black_box(1e-7));
    for _ in 0..rounds {
        for v in x.iter_mut() {
            *v = *v * a + b;
        }
    }
    x.iter().sum()
}

/// The other job of the machine reference: 256 independent chains kept in L1 memory, each
/// round a load, a multiply, an add and a store per value — bound by the core's load/store
/// and floating-point throughput, as the lock-step kernel is, not by latency.
#[inline(never)]
fn fp_throughput(rounds: u64, seed: f64) -> f64 {
    let mut x: Vec<f64> = (0..256).map(|i| seed + i as f64 * 1e-3).collect();
    let (a, b) = (std::hint::black_box(0.999_999), std::hint::black_box(1e-7));
    // 4x fp_chains's operations: it runs ~4x faster, and a job this long keeps the
    // scheduler's noise out of the ratio.
    for _ in 0..rounds / 4 {
        for v in x.iter_mut() {
            *v = *v * a + b;
        }
        std::hint::black_box(&mut x);
    }
    x.iter().sum()
}

/// The third job: 24 independent add chains held in registers (12 two-wide vectors, no
/// memory operation in the loop), bound by the floating-point add pipes alone. Two cores
/// scale it ~1.0; two SMT threads of one physical core, sharing those pipes, ~0.5 — so
/// beside the L1 job it tells whether a lower figure there comes from shared pipes.
#[cfg(target_arch = "x86_64")]
#[inline(never)]
fn fp_registers(rounds: u64, seed: f64) -> f64 {
    use std::arch::x86_64::{__m128d, _mm_add_pd, _mm_cvtsd_f64, _mm_set1_pd, _mm_set_pd};
    // SAFETY: SSE2 is part of x86_64.
    unsafe {
        let mut x: [__m128d; 12] =
            std::array::from_fn(|i| _mm_set_pd(seed + i as f64, seed - i as f64));
        let b = _mm_set1_pd(std::hint::black_box(1e-9));
        for _ in 0..rounds * 2 {
            for v in x.iter_mut() {
                *v = _mm_add_pd(*v, b);
            }
        }
        x.iter().map(|&v| _mm_cvtsd_f64(v)).sum()
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(never)]
fn fp_registers(rounds: u64, seed: f64) -> f64 {
    let mut x: [f64; 24] = std::array::from_fn(|i| seed + i as f64);
    let b = std::hint::black_box(1e-9);
    for _ in 0..rounds * 2 {
        for v in x.iter_mut() {
            *v += b;
        }
    }
    x.iter().sum()
}

/// Scaling per core of `cores` equal jobs `job` run at once vs one after the other
/// (interleaved, best of `reps`).
fn machine_scaling(cores: usize, reps: usize, job: fn(u64, f64) -> f64) -> f64 {
    let rounds = std::hint::black_box(20_000_000);
    let (mut serial, mut parallel) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..reps {
        let start = Instant::now();
        for j in 0..cores {
            std::hint::black_box(job(rounds, j as f64));
        }
        serial = serial.min(start.elapsed().as_secs_f64());
        let start = Instant::now();
        std::thread::scope(|s| {
            for j in 0..cores {
                s.spawn(move || std::hint::black_box(job(rounds, j as f64)));
            }
        });
        parallel = parallel.min(start.elapsed().as_secs_f64());
    }
    serial / parallel / cores as f64
}

#[cfg(feature = "phase-timers")]
type PhaseReport = dynlib::session::ensemble::phases::RunPhases;
#[cfg(not(feature = "phase-timers"))]
type PhaseReport = ();

/// The phases of the run just finished (feature `phase-timers`).
fn phase_report() -> Option<PhaseReport> {
    #[cfg(feature = "phase-timers")]
    return dynlib::session::ensemble::phases::take();
    #[cfg(not(feature = "phase-timers"))]
    None
}

/// Per pool thread: batches, wall time starting / stepping / finishing the members' runs,
/// its first batch's start and last batch's end, and its CPU time over that span, so that
/// a serial phase, a straggler or a thread that lost its core shows.
#[cfg(feature = "phase-timers")]
fn print_phases(case: &str, c: &Config, secs: f64, work: f64, r: &PhaseReport) {
    let per = |s: f64| 1e9 * s / work;
    println!(
        "  {case:<15} {} threads = {}: {secs:.3} s wall, setup (options, pool) {:.2} ms, \
         parallel part ends at {:.3} s; per thread (ns per member-step of the whole run):",
        c.label,
        r.threads.len(),
        1e3 * r.setup,
        r.parallel_end
    );
    let mut threads = r.threads.clone();
    threads.sort_by(|a, b| a.thread.cmp(&b.thread));
    for t in &threads {
        println!(
            "    {:<18} {:>4} batches: start {:.3} kernel {:.3} finish {:.3}; first batch at \
             {:.2} ms, last ends at {:.3} s (then idle {:.1} ms); CPU {:.3} s of {:.3} s",
            t.thread,
            t.batches,
            per(t.start),
            per(t.kernel),
            per(t.finish),
            1e3 * t.first,
            t.last,
            1e3 * (r.parallel_end - t.last),
            t.cpu,
            t.last - t.first,
        );
    }
}

#[cfg(not(feature = "phase-timers"))]
fn print_phases(_: &str, _: &Config, _: f64, _: f64, _: &PhaseReport) {}

/// Lock-step throughput on 1 thread for several lane counts, interleaved, best of `reps`.
fn sweep_lanes(
    case: &Case,
    make: &dyn Fn(usize) -> Ensemble,
    opts: &RunOptions,
    work: f64,
    reps: usize,
) {
    let choices = [0usize, 2, 4, 6, 8, 12, 16, 32];
    let mut best = vec![f64::INFINITY; choices.len()];
    let mut best_cpu = vec![f64::INFINITY; choices.len()];
    for _ in 0..reps {
        let mut ensembles: Vec<Ensemble> = choices.iter().map(|&l| make(l)).collect();
        for (i, ens) in ensembles.iter_mut().enumerate() {
            let (start, cpu) = (Instant::now(), cpu_ns());
            ens.run(opts, 1).unwrap();
            best[i] = best[i].min(start.elapsed().as_secs_f64());
            best_cpu[i] = best_cpu[i].min((cpu_ns() - cpu) as f64 * 1e-9);
        }
    }
    for ((lanes, secs), cpu) in choices.iter().zip(&best).zip(&best_cpu) {
        println!(
            "  {:<15} lanes = {:<2} 1 thread  {:>7.3} s  {:>6.2} ns/member-step  {:.2}x one-by-one \
             (CPU time: {:>6.2} ns/member-step, {:.2}x)",
            case.name,
            lanes,
            secs,
            1e9 * secs / work,
            best[0] / secs,
            1e9 * cpu / work,
            best_cpu[0] / cpu
        );
    }
}

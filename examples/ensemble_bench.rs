//! Ensemble throughput: member-steps per second on 1 thread and on every core, and the scaling
//! efficiency per core, for Izhikevich rk4 (10^4 members x 1,000 ms, dt 0.01: 10^9 member-
//! steps) and Lorenz rk4 (10^4 members x 10 time units, dt 0.001). Reduction-only runs
//! (record = false): also the resident memory per member before and after the run.
//!
//! cargo run --release --example ensemble_bench            (the full sizes above)
//! cargo run --release --example ensemble_bench -- --quick (10x fewer steps)

use std::time::Instant;

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

struct Case {
    name: &'static str,
    source: &'static str,
    param: &'static str,
    range: (f64, f64),
    t_end: f64,
    dt: f64,
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let members = 10_000usize;
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
    println!(
        "ensemble benchmark: {members} members, record = false, {cores} core(s) available{}",
        if quick { " (--quick)" } else { "" }
    );
    for case in &cases {
        let model = Model::load(case.source).expect("built-in model");
        let values: Vec<f64> = (0..members)
            .map(|i| case.range.0 + (case.range.1 - case.range.0) * i as f64 / members as f64)
            .collect();
        let steps = (case.t_end / case.dt).round() as u64;
        let work = members as f64 * steps as f64;
        let mut rates = Vec::new();
        let mut reference: Option<Vec<u64>> = None;
        for threads in [1usize, 0] {
            let before = rss_kib();
            let mut ens = Ensemble::with_stepper(&model, Some("rk4"), members).unwrap();
            ens.set_param_column(case.param, &values).unwrap();
            let built = rss_kib();
            let opts = RunOptions::new()
                .t(case.t_end)
                .dt(case.dt)
                .record(false)
                .max_steps(steps + 10);
            let start = Instant::now();
            ens.run(&opts, threads).unwrap();
            let secs = start.elapsed().as_secs_f64();
            let after = rss_kib();
            let bits: Vec<u64> = ens.final_states().iter().map(|v| v.to_bits()).collect();
            match &reference {
                None => reference = Some(bits),
                Some(r) => assert!(r == &bits, "thread count changed the results"),
            }
            let rate = work / secs;
            rates.push(rate);
            println!(
                "  {:<15} threads = {:<3} {:>8.3} s  {:>7.1} M member-steps/s  {:>5.1} ns/member-step  \
                 memory/member: {:.2} KiB built, +{:.3} KiB after the run",
                case.name,
                if threads == 0 { cores } else { threads },
                secs,
                rate / 1e6,
                1e9 / rate,
                (built.saturating_sub(before)) as f64 / members as f64,
                (after.saturating_sub(built)) as f64 / members as f64,
            );
            drop(ens);
        }
        let speedup = rates[1] / rates[0];
        println!(
            "  {:<15} speed-up {:.2}x on {cores} cores, scaling efficiency {:.2} per core \
             (final states identical for 1 and {cores} threads)",
            case.name,
            speedup,
            speedup / cores as f64
        );
    }
}

//! Steps per second for Lorenz and Izhikevich (with its reset event), rk4 and rk45 first, then
//! the other explicit steppers: the same equations hand-written in Rust (a host model), in the
//! model language compiled to native code, and in the model language interpreted — side by
//! side in one run, through the same session loop. Also the native compile time of every
//! built-in model.
//!
//! cargo run --release --example bench

use std::time::Instant;

use dynlib::model::builtin::BUILTINS;
use dynlib::model::host::{HostModel, HostModelDef};
use dynlib::model::{jit, ModelKind};
use dynlib::{Backend, Model, RunOptions, Sim};

struct Lorenz;
impl HostModel for Lorenz {
    fn rhs(&self, _t: f64, y: &[f64], p: &[f64], out: &mut [f64]) -> Result<(), i32> {
        out[0] = p[0] * (y[1] - y[0]);
        out[1] = y[0] * (p[1] - y[2]) - y[1];
        out[2] = y[0] * y[1] - p[2] * y[2];
        Ok(())
    }
}

struct Izhikevich;
impl HostModel for Izhikevich {
    fn rhs(&self, _t: f64, y: &[f64], p: &[f64], out: &mut [f64]) -> Result<(), i32> {
        let (v, u) = (y[0], y[1]);
        out[0] = 0.04 * v * v + 5.0 * v + 140.0 - u + p[4];
        out[1] = p[0] * (p[1] * v - u);
        Ok(())
    }
    fn event_cond(&self, _i: usize, _t: f64, y: &[f64], p: &[f64]) -> Result<bool, i32> {
        Ok(y[0] >= p[5])
    }
    fn event_action(&self, _i: usize, _t: f64, y: &mut [f64], p: &mut [f64]) -> Result<(), i32> {
        y[0] = p[2];
        y[1] += p[3];
        Ok(())
    }
}

fn host(model: &Model, events: &[&str], code: Box<dyn HostModel>) -> Model {
    let def = HostModelDef {
        id: format!("bench/{}", model.name),
        version: "1".into(),
        kind: ModelKind::Ode,
        state_names: model.state_names.clone(),
        state_init: model.state_init.clone(),
        param_names: model.param_names.clone(),
        param_init: model.param_init.clone(),
        aux_names: Vec::new(),
        event_names: events.iter().map(|s| s.to_string()).collect(),
        dt: model.sim.dt,
        stepper: "rk4".into(),
    };
    Model::from_host(def, code).unwrap()
}

/// Steps per second of each model (best of seven runs) and its final state. The models take
/// turns run by run, so a change in machine load hits them alike.
fn steps_per_second(models: &[&Model], stepper: &str, t_end: f64, dt: f64) -> Vec<(f64, Vec<f64>)> {
    let mut best = vec![(0.0, Vec::new()); models.len()];
    for _ in 0..7 {
        for (model, best) in models.iter().zip(&mut best) {
            let mut sim = Sim::with_stepper(model, Some(stepper)).unwrap();
            let start = Instant::now();
            sim.run(
                &RunOptions::new()
                    .t(t_end)
                    .dt(dt)
                    .record(false)
                    .max_steps(u64::MAX),
            )
            .unwrap();
            let rate = sim.step_count() as f64 / start.elapsed().as_secs_f64();
            if rate > best.0 {
                *best = (rate, sim.state().to_vec());
            }
        }
    }
    best
}

fn main() {
    // Time what a user's program gets: no IR verifier (.cargo/config.toml turns it on for
    // everything cargo runs).
    std::env::remove_var("DYNLIB_JIT_VERIFY");
    println!("native compile time per built-in model (uncached):");
    for (id, _) in BUILTINS {
        let model = Model::load_with(&format!("builtin://{id}"), Backend::Interpreter).unwrap();
        let start = Instant::now();
        let code = jit::compile(&model).unwrap();
        let ms = start.elapsed().as_secs_f64() * 1e3;
        drop(code);
        println!("  {id:<22} {ms:>7.2} ms");
    }
    println!();
    println!(
        "{:<12} {:<6} {:>14} {:>14} {:>14} {:>10} {:>10}",
        "model", "method", "hand-written/s", "native/s", "interpreted/s", "native×", "interp×"
    );
    for (uri, events, t_end, dt) in [
        ("builtin://ode/lorenz", vec![], 1000.0, 1e-3),
        ("builtin://ode/izhikevich", vec!["reset"], 1000.0, 0.01),
    ] {
        let native = Model::load_with(uri, Backend::Native).unwrap();
        let interp = native.with_backend(Backend::Interpreter).unwrap();
        let code: Box<dyn HostModel> = if events.is_empty() {
            Box::new(Lorenz)
        } else {
            Box::new(Izhikevich)
        };
        let hand = host(&native, &events, code);
        let name = uri.rsplit('/').next().unwrap_or(uri);
        for stepper in ["rk4", "rk45", "euler", "rk2", "ab2", "ab3"] {
            let rates = steps_per_second(&[&hand, &native, &interp], stepper, t_end, dt);
            let [(hand_rate, a), (native_rate, b), (interp_rate, c)] = &rates[..] else {
                unreachable!("one result per model")
            };
            println!(
                "{name:<12} {stepper:<6} {hand_rate:>14.3e} {native_rate:>14.3e} {interp_rate:>14.3e} {:>10.3} {:>10.3}",
                native_rate / hand_rate,
                interp_rate / hand_rate
            );
            // Native code and interpreter are bit-identical by design.
            if b.iter().zip(c).any(|(x, y)| x.to_bits() != y.to_bits()) {
                eprintln!("error: {name}/{stepper}: native and interpreted final states differ");
                std::process::exit(1);
            }
            // The hand-written version groups constants differently, so only closeness holds.
            let rel = a
                .iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs() / x.abs().max(1.0))
                .fold(0.0, f64::max);
            if name == "izhikevich" && rel > 1e-6 {
                eprintln!("warning: izhikevich/{stepper} final states differ by {rel:e}");
            }
        }
    }
}

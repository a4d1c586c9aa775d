//! Steps per second for Lorenz and Izhikevich with rk4: the model-language version (compiled
//! to a flat program, interpreted) beside the same equations hand-written in Rust and plugged
//! in as a host model, measured side by side in one run through the same session loop.
//!
//! cargo run --release --example bench

use std::time::Instant;

use dynlib::model::host::{HostModel, HostModelDef};
use dynlib::model::ModelKind;
use dynlib::{Model, RunOptions, Sim};

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

fn steps_per_second(model: &Model, t_end: f64, dt: f64) -> (f64, Vec<f64>) {
    let mut best = f64::INFINITY;
    let mut state = Vec::new();
    let mut steps = 0;
    for _ in 0..3 {
        let mut sim = Sim::with_stepper(model, Some("rk4")).unwrap();
        let start = Instant::now();
        sim.run(
            &RunOptions::new()
                .t(t_end)
                .dt(dt)
                .record(false)
                .max_steps(u64::MAX),
        )
        .unwrap();
        best = best.min(start.elapsed().as_secs_f64());
        steps = sim.step_count();
        state = sim.state().to_vec();
    }
    (steps as f64 / best, state)
}

fn main() {
    println!(
        "{:<12} {:>16} {:>16} {:>8}",
        "model", "hand-written/s", "model-lang/s", "ratio"
    );
    for (uri, events, t_end, dt) in [
        ("builtin://ode/lorenz", vec![], 1000.0, 1e-3),
        ("builtin://ode/izhikevich", vec!["reset"], 1000.0, 0.01),
    ] {
        let dsl = Model::load(uri).unwrap();
        let code: Box<dyn HostModel> = if events.is_empty() {
            Box::new(Lorenz)
        } else {
            Box::new(Izhikevich)
        };
        let native = host(&dsl, &events, code);
        let (native_rate, a) = steps_per_second(&native, t_end, dt);
        let (dsl_rate, b) = steps_per_second(&dsl, t_end, dt);
        let name = uri.rsplit('/').next().unwrap_or(uri);
        println!(
            "{name:<12} {native_rate:>16.3e} {dsl_rate:>16.3e} {:>8.3}",
            dsl_rate / native_rate
        );
        // Same equations, so the trajectories agree closely (the DSL folds constants in
        // another order, so bits may differ).
        let rel = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs() / x.abs().max(1.0))
            .fold(0.0, f64::max);
        if name == "izhikevich" && rel > 1e-6 {
            eprintln!("warning: izhikevich final states differ by {rel:e}");
        }
    }
}

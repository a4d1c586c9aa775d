//! The seed workflow on a built-in model, as `dynlib demo` (and `cargo run --release --example
//! demo`) runs it: run, snapshot, resume, branch — and a check that the resumed run is
//! bit-identical to an uninterrupted one.

use std::io::Write;

use crate::{Error, Model, Result, RunOptions, Sim};

/// Runs the demo, writing its report to `out`; `Ok(true)` when the split run was
/// bit-identical to the uninterrupted one.
pub fn run(out: &mut dyn Write) -> Result<bool> {
    let io = |e: std::io::Error| Error::io(format!("demo: cannot write its output: {e}"));
    let model = Model::load("builtin://ode/izhikevich")?;
    let mut sim = Sim::new(&model)?;
    writeln!(
        out,
        "model: {} ({} states: {}; stepper {})",
        model.name,
        model.n_states(),
        model.state_names.join(", "),
        sim.stepper().name
    )
    .map_err(io)?;

    sim.run(&RunOptions::new().t(200.0).tag("phase-1"))?;
    sim.create_snapshot("phase-1", "after the first 200 ms")?;
    writeln!(
        out,
        "phase-1: t = {}, step {}, v = {:.4}",
        sim.time(),
        sim.step_count(),
        sim.state()[0]
    )
    .map_err(io)?;

    sim.run(&RunOptions::new().t(500.0).resume(true).tag("phase-2"))?;
    let rec = sim.results()?;
    writeln!(
        out,
        "phase-2 resumed: t = {}, {} samples, {} spikes so far",
        sim.time(),
        rec.len(),
        rec.events.len()
    )
    .map_err(io)?;
    for (i, seg) in sim.segments().iter().enumerate() {
        writeln!(
            out,
            "  segment {:<8} t {:>6} .. {:<6} steps {:>6} .. {:<6} samples {:>6}  resume={}",
            sim.segment_name(i.into())?,
            seg.t_start,
            seg.t_end,
            seg.step_start,
            seg.step_end,
            seg.sample_len,
            seg.resume
        )
        .map_err(io)?;
    }

    // Exactness: one uninterrupted run to 500 ms gives the same bits.
    let mut whole = Sim::new(&model)?;
    whole.run(&RunOptions::new().t(500.0))?;
    let a = whole.results()?.column("v")?;
    let b = sim.results()?.column("v")?;
    let identical = a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
    writeln!(
        out,
        "split run == uninterrupted run, bit for bit: {identical}"
    )
    .map_err(io)?;

    // Branch: back to the snapshot, stronger input current.
    sim.reset("phase-1")?;
    sim.assign(&[("I", 15.0)], false)?;
    sim.run(&RunOptions::new().t(500.0).resume(true).tag("I=15"))?;
    writeln!(
        out,
        "branch I=15 from phase-1: {} spikes between 200 and 500 ms (baseline: {})",
        sim.results()?.events.len(),
        whole
            .results()?
            .events
            .iter()
            .filter(|e| e.t > 200.0)
            .count()
    )
    .map_err(io)?;
    Ok(identical)
}

//! rk45 snapshot files written before the PI controller (its `beta` knob and the `facold`
//! workspace array): they must still import, and a resume from them must give the bits the
//! build that wrote them gave.
//!
//! The fixtures in tests/fixtures/ were written by `write_rk45_legacy_fixtures` below, run on
//! commit 5eb10d5 (before the change) with `DYNLIB_WRITE_RK45_FIXTURES=1 cargo test --release
//! --test rk45_legacy write_rk45_legacy_fixtures -- --ignored`. Each `.json` holds what that
//! build computed from its `.npz`: the final state, time, step count and every recorded
//! sample of the continuation, as f64 bits.

use std::path::PathBuf;

use dynlib::{Model, RunOptions, Sim};

mod common;

/// One fixture: a model, where its first run stops, and how far the continuation goes.
struct Case {
    file: &'static str,
    model: &'static str,
    seam_t: f64,
    end_t: f64,
}

const CASES: [Case; 2] = [
    // Lag-free: FSAL and the fused loop when the model has native code.
    Case {
        file: "rk45_legacy_lorenz",
        model: "builtin://ode/lorenz",
        seam_t: 3.7,
        end_t: 9.0,
    },
    // Lags, aux, an event: the general engine, a pending step at the seam.
    Case {
        file: "rk45_legacy_lagged",
        model: common::LAGGED_ODE,
        seam_t: 7.3,
        end_t: 20.0,
    },
];

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn hex(v: f64) -> String {
    format!("{:016x}", v.to_bits())
}

/// What a continuation produced, as bits: final (t, step, y) and every recorded sample.
fn continuation_bits(sim: &Sim) -> serde_json::Value {
    let rec = sim.results().unwrap();
    let samples: Vec<Vec<String>> = (0..rec.len())
        .map(|i| {
            std::iter::once(hex(rec.t[i]))
                .chain(rec.columns.iter().map(|c| hex(c[i])))
                .collect()
        })
        .collect();
    serde_json::json!({
        "t": hex(sim.time()),
        "step": sim.step_count(),
        "y": sim.state().iter().map(|v| hex(*v)).collect::<Vec<_>>(),
        "samples": samples,
    })
}

fn first_run(case: &Case) -> Sim {
    let model = Model::load(case.model).unwrap();
    let mut sim = Sim::with_stepper(&model, Some("rk45")).unwrap();
    sim.run(&RunOptions::new().t(case.seam_t).config("rtol", 1e-5))
        .unwrap();
    sim
}

fn continue_run(sim: &mut Sim, case: &Case) {
    sim.run(
        &RunOptions::new()
            .t(case.end_t)
            .resume(true)
            .config("rtol", 1e-5),
    )
    .unwrap();
}

/// Writes the fixtures (run once, on the build before the change; see the module comment).
#[test]
#[ignore]
fn write_rk45_legacy_fixtures() {
    if std::env::var_os("DYNLIB_WRITE_RK45_FIXTURES").is_none() {
        return;
    }
    std::fs::create_dir_all(fixture("")).unwrap();
    for case in &CASES {
        let mut sim = first_run(case);
        let npz = fixture(&format!("{}.npz", case.file));
        sim.export_snapshot(&npz, None).unwrap();
        continue_run(&mut sim, case);
        let json = serde_json::to_string_pretty(&continuation_bits(&sim)).unwrap();
        std::fs::write(fixture(&format!("{}.json", case.file)), json).unwrap();
    }
}

fn load_expected(case: &Case) -> serde_json::Value {
    let text = std::fs::read_to_string(fixture(&format!("{}.json", case.file))).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The continuation from the file is the tail of what the writing build computed: its
/// samples (bit for bit), final time, step count and state.
fn assert_matches_fixture(sim: &Sim, case: &Case) {
    let got = continuation_bits(sim);
    let want = load_expected(case);
    let (g, w) = (
        got["samples"].as_array().unwrap(),
        want["samples"].as_array().unwrap(),
    );
    assert!(
        !g.is_empty() && g.len() <= w.len(),
        "{}: {} samples, the fixture has {}",
        case.file,
        g.len(),
        w.len()
    );
    let tail = &w[w.len() - g.len()..];
    if let Some(i) = (0..g.len()).find(|&i| g[i] != tail[i]) {
        panic!(
            "{}: sample {i} of {} differs: {} vs the fixture's {}",
            case.file,
            g.len(),
            g[i],
            tail[i]
        );
    }
    for key in ["t", "step", "y"] {
        assert_eq!(got[key], want[key], "{}: final '{key}' differs", case.file);
    }
}

#[test]
fn rk45_files_from_before_the_pi_controller_import_and_resume_with_the_old_bits() {
    for case in &CASES {
        let model = Model::load(case.model).unwrap();
        let mut sim = Sim::with_stepper(&model, Some("rk45")).unwrap();
        sim.import_snapshot(fixture(&format!("{}.npz", case.file)))
            .unwrap_or_else(|e| panic!("{}: import failed: {e}", case.file));
        continue_run(&mut sim, case);
        assert_matches_fixture(&sim, case);
    }
}

/// Today's build run in one piece from the start gives the same bits as the fixture's
/// writer (the default controller is unchanged).
#[test]
fn rk45_default_controller_reproduces_the_fixtures_in_one_piece() {
    for case in &CASES {
        let model = Model::load(case.model).unwrap();
        let mut sim = Sim::with_stepper(&model, Some("rk45")).unwrap();
        sim.run(&RunOptions::new().t(case.end_t).config("rtol", 1e-5))
            .unwrap();
        let got = continuation_bits(&sim);
        let want = load_expected(case);
        for key in ["t", "step", "y"] {
            assert_eq!(got[key], want[key], "{}: final '{key}' differs", case.file);
        }
    }
}

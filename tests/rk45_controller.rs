//! rk45's step controllers: the PI controller (knob `beta`) against the classic one, its
//! knob checks and its rejection counter; and rk45 snapshot files written before the PI
//! controller (no `beta` knob, no `prev_error` / `rejected_attempts` workspace arrays):
//! they must still import, and a resume from them must give the bits the build that wrote
//! them gave.
//!
//! The fixtures in tests/fixtures/ were written by `write_rk45_legacy_fixtures` below, run on
//! commit 5eb10d5 (before the change; the file was then tests/rk45_legacy.rs) with
//! `DYNLIB_WRITE_RK45_FIXTURES=1 cargo test --release --test rk45_controller
//! write_rk45_legacy_fixtures -- --ignored`. Each `.json` holds what that
//! build computed from its `.npz`: the final state, time, step count and every recorded
//! sample of the continuation, as f64 bits.

use std::path::PathBuf;

use dynlib::persist::npy::{NpyArray, NpyData};
use dynlib::persist::npz::{read_npz, write_npz, Limits};
use dynlib::{ErrorKind, Model, RunOptions, Sim};

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

/// A legacy file exported again is a file of today's layout (beta = 0 in its config), and a
/// resume from that one gives the old bits too.
#[test]
fn a_reexported_legacy_file_has_todays_layout_and_the_same_continuation() {
    let dir = tempfile::tempdir().unwrap();
    for case in &CASES {
        let model = Model::load(case.model).unwrap();
        let mut sim = Sim::with_stepper(&model, Some("rk45")).unwrap();
        sim.import_snapshot(fixture(&format!("{}.npz", case.file)))
            .unwrap();
        let again = dir.path().join(format!("{}.npz", case.file));
        sim.export_snapshot(&again, None).unwrap();
        let meta = dynlib::session::inspect_snapshot(&again).unwrap();
        let names = meta["stepper_config_names"].as_array().unwrap();
        assert_eq!(names.last().unwrap(), "beta", "{}: {names:?}", case.file);
        assert_eq!(sim.stepper_config().last(), Some(&0.0));
        let mut other = Sim::with_stepper(&model, Some("rk45")).unwrap();
        other.import_snapshot(&again).unwrap();
        continue_run(&mut other, case);
        assert_matches_fixture(&other, case);
    }
}

/// Rewrites one member of a snapshot file.
fn with_member(
    src: &std::path::Path,
    dst: &std::path::Path,
    name: &str,
    edit: impl Fn(&mut NpyArray),
) {
    let mut members = read_npz(&std::fs::read(src).unwrap(), &Limits::default()).unwrap();
    let m = members
        .iter_mut()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no member '{name}'"));
    edit(&mut m.1);
    std::fs::write(dst, write_npz(&members).unwrap()).unwrap();
}

/// Only a file that is exactly of the legacy layout is read as one: a legacy config with a
/// changed workspace signature, or a legacy file's knob values with a NaN, are refused with
/// the reason, and the session is unchanged.
#[test]
fn damaged_legacy_files_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let case = &CASES[0];
    let model = Model::load(case.model).unwrap();
    let src = fixture(&format!("{}.npz", case.file));
    let bad_sig = dir.path().join("sig.npz");
    with_member(&src, &bad_sig, "meta.json", |a| {
        let NpyData::U8(bytes) = &mut a.data else {
            panic!("meta.json is bytes")
        };
        let text = String::from_utf8(bytes.clone()).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let sig = v["pins"]["workspace_sig"].as_str().unwrap().to_string();
        *bytes = text.replace(&sig, "0123456789abcdef").into_bytes();
    });
    let bad_cfg = dir.path().join("cfg.npz");
    with_member(&src, &bad_cfg, "stepper_config", |a| {
        let NpyData::F64(v) = &mut a.data else {
            panic!("stepper_config is float64")
        };
        v[2] = f64::NAN;
    });
    for (path, kind, says) in [
        (&bad_sig, ErrorKind::Incompatible, "workspace_sig"),
        (&bad_cfg, ErrorKind::CorruptSnapshot, "safety"),
    ] {
        let mut sim = Sim::with_stepper(&model, Some("rk45")).unwrap();
        sim.run(&RunOptions::new().t(0.5)).unwrap();
        let before = sim.session_state().clone();
        let err = sim.import_snapshot(path).unwrap_err();
        assert_eq!(err.kind(), kind, "{err}");
        assert!(err.to_string().contains(says), "{err}");
        assert!(sim.session_state().bits_eq(&before));
    }
}

fn lorenz_run(knobs: &[(&str, f64)], general: bool) -> Sim {
    let model = Model::load("builtin://ode/lorenz").unwrap();
    let mut sim = Sim::with_stepper(&model, Some("rk45")).unwrap();
    let mut o = RunOptions::new().t(10.0).general_engine(general);
    for (k, v) in knobs {
        o = o.config(k, *v);
    }
    sim.run(&o).unwrap();
    sim
}

fn rejected(sim: &Sim) -> i64 {
    sim.summary()["stepper_stats"]["rejected_attempts"]
        .as_i64()
        .expect("rk45 reports its rejected attempts")
}

/// Hairer's PI controller (beta = 0.04) rejects fewer attempts than the classic one on
/// Lorenz at every tolerance tried, and the fused loop counts the same rejections (and
/// takes the same steps) as the general engine.
#[test]
fn the_pi_controller_rejects_fewer_attempts_than_the_classic_one() {
    for rtol in [1e-3, 1e-4, 1e-5, 1e-6] {
        let atol = 1e-3 * rtol;
        let classic = lorenz_run(&[("rtol", rtol), ("atol", atol)], false);
        let pi = lorenz_run(&[("rtol", rtol), ("atol", atol), ("beta", 0.04)], false);
        let pi_general = lorenz_run(&[("rtol", rtol), ("atol", atol), ("beta", 0.04)], true);
        assert!(pi.last_run_stats().fused_steps > 0, "the fused loop ran");
        assert!(pi.session_state().bits_eq(pi_general.session_state()));
        let (c, p) = (rejected(&classic), rejected(&pi));
        assert!(
            c > 0,
            "rtol {rtol}: the classic controller rejected nothing"
        );
        assert!(
            p < c,
            "rtol {rtol}: PI rejected {p} attempts, classic {c} (steps {} vs {})",
            pi.step_count(),
            classic.step_count()
        );
        assert_ne!(pi.state(), classic.state(), "beta changes the steps");
    }
}

/// beta outside [0, 0.1] (or NaN) is refused naming the knob; nothing changes.
#[test]
fn beta_out_of_range_is_refused() {
    let model = Model::load("builtin://ode/lorenz").unwrap();
    let mut sim = Sim::with_stepper(&model, Some("rk45")).unwrap();
    sim.run(&RunOptions::new().t(0.5)).unwrap();
    let before = sim.session_state().clone();
    for beta in [-0.01, 0.11, 0.2, f64::NAN, f64::INFINITY] {
        let err = sim
            .run(&RunOptions::new().t(1.0).resume(true).config("beta", beta))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
        assert!(err.to_string().contains("beta"), "{beta}: {err}");
        assert!(sim.session_state().bits_eq(&before), "{beta}");
    }
    sim.run(&RunOptions::new().t(1.0).resume(true).config("beta", 0.1))
        .unwrap();
}

/// The largest beta allowed still grows the step when the error is far below the tolerance
/// (above it the PI rule can shrink such steps until a run stalls: at beta 0.19 this model
/// took 4361 steps to t = 3 at rtol 1e-3 and ran out of 100000 at 1e-8, against 11 and 59
/// for the classic controller).
#[test]
fn the_largest_beta_does_not_stall_a_run_with_tiny_errors() {
    let model = Model::load(common::LAGGED_ODE).unwrap();
    for rtol in [1e-3, 1e-5, 1e-8] {
        let steps = |beta: f64| {
            let mut sim = Sim::with_stepper(&model, Some("rk45")).unwrap();
            let o = RunOptions::new().t(3.0).max_steps(100_000);
            sim.run(&o.config("beta", beta).config("rtol", rtol))
                .unwrap();
            sim.step_count()
        };
        let (classic, pi) = (steps(0.0), steps(0.1));
        assert!(
            pi <= 4 * classic,
            "rtol {rtol}: beta 0.1 took {pi} steps, the classic controller {classic}"
        );
    }
}

/// An ensemble checkpoint of the legacy rk45 layout (today's checkpoint taken back to it:
/// the legacy knob names and signature, no `beta`, no controller history) imports, and the
/// ensemble resumes with the bits of the uninterrupted one (beta = 0 reads no history).
#[test]
fn legacy_rk45_ensemble_checkpoints_import_and_resume_bit_for_bit() {
    use dynlib::persist::npy::NpyData;
    use dynlib::session::Ensemble;
    let legacy_sig = {
        let members = read_npz(
            &std::fs::read(fixture("rk45_legacy_lorenz.npz")).unwrap(),
            &Limits::default(),
        )
        .unwrap();
        let (_, meta) = members.iter().find(|(k, _)| k == "meta.json").unwrap();
        let NpyData::U8(raw) = &meta.data else {
            panic!("meta")
        };
        let meta: serde_json::Value = serde_json::from_slice(raw).unwrap();
        meta["pins"]["workspace_sig"].as_str().unwrap().to_string()
    };
    let model = Model::load("builtin://ode/lorenz").unwrap();
    let template = Sim::with_stepper(&model, Some("rk45")).unwrap();
    let n = 3;
    let rho: Vec<f64> = (0..n).map(|i| 20.0 + 4.0 * i as f64).collect();
    let mut whole = Ensemble::from_sim(&template, n).unwrap();
    whole.set_param_column("rho", &rho).unwrap();
    whole
        .run(&RunOptions::new().t(2.5).record(false), 1)
        .unwrap();
    let today = whole.serialize_checkpoint().unwrap();
    let mut members = read_npz(&today, &Limits::default()).unwrap();
    members.retain(|(k, _)| {
        k != "workspace/stepper/prev_error" && k != "workspace/stepper/rejected_attempts"
    });
    let legacy_names = [
        "atol",
        "rtol",
        "safety",
        "min_factor",
        "max_factor",
        "max_tries",
        "min_step",
        "dt_max",
    ];
    for (k, a) in members.iter_mut() {
        if k == "stepper_config" {
            let NpyData::F64(v) = &mut a.data else {
                panic!("config")
            };
            let width = a.shape[1];
            assert_eq!(
                width,
                legacy_names.len() + 1,
                "today's knobs are the legacy ones + beta"
            );
            *v = v
                .chunks(width)
                .flat_map(|row| row[..width - 1].to_vec())
                .collect();
            a.shape[1] = width - 1;
        }
        if k == "meta.json" {
            let NpyData::U8(raw) = &mut a.data else {
                panic!("meta")
            };
            let mut meta: serde_json::Value = serde_json::from_slice(raw).unwrap();
            meta["stepper_config_names"] = serde_json::json!(legacy_names);
            meta["pins"]["workspace_sig"] = legacy_sig.clone().into();
            *raw = serde_json::to_vec(&meta).unwrap();
            a.shape = vec![raw.len()];
        }
    }
    let legacy = write_npz(&members).unwrap();
    let mut resumed = Ensemble::from_sim(&template, n).unwrap();
    resumed.deserialize_checkpoint(&legacy).unwrap();
    let next = RunOptions::new().t(6.0).resume(true).record(false);
    resumed.run(&next, 1).unwrap();
    whole.run(&next, 1).unwrap();
    let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&resumed.final_states()), bits(&whole.final_states()));
    assert_eq!(resumed.step_counts(), whole.step_counts());
}

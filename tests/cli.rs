//! The `dynlib` command-line tool, run as a user runs it: exit codes (0 ok, 1 run failed,
//! 2 usage/model error), messages on stderr, outputs that read back bit for bit, and
//! checkpoints, resume, inspect and diff.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use dynlib::{Model, RunOptions, Sim};

fn dynlib(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dynlib"))
        .args(args)
        .output()
        .expect("the dynlib binary runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs and checks the exit code; returns stdout.
fn expect(args: &[&str], code: i32) -> (String, String) {
    let out = dynlib(args);
    let (so, se) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(code),
        "dynlib {args:?}\nstdout:\n{so}\nstderr:\n{se}"
    );
    (so, se)
}

fn work(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("cli")
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The values of the `state:` line of `dynlib run`.
fn state_line(stdout: &str) -> Vec<f64> {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("state: "))
        .unwrap_or_else(|| panic!("no state line in:\n{stdout}"));
    line.split(", ")
        .map(|kv| kv.split(" = ").nth(1).unwrap().parse().unwrap())
        .collect()
}

#[test]
fn validate_reports_ok_and_model_errors_with_positions() {
    let (so, se) = expect(&["validate", "builtin://ode/lorenz"], 0);
    assert!(so.starts_with("ok: builtin://ode/lorenz"), "{so}");
    assert!(so.contains("3 states (x, y, z)"), "{so}");
    assert!(se.is_empty(), "{se}");
    let dir = work("validate");
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "[model]\ntype = \"ode\"\n[states]\nx = 1\n[equations.rhs]\nx = \"-kk*x\"\n",
    )
    .unwrap();
    let (so, se) = expect(&["validate", s(&bad)], 2);
    assert!(so.is_empty(), "{so}");
    assert!(se.starts_with("dynlib: error: "), "{se}");
    assert!(
        se.contains("[equations.rhs].x") && se.contains("unknown identifier 'kk'"),
        "{se}"
    );
    assert!(se.contains("column 2") && se.contains('^'), "{se}");
    let (_, se) = expect(&["validate", s(&dir.join("missing.toml"))], 2);
    assert!(se.contains("missing"), "{se}");
}

#[test]
fn models_and_steppers_are_listed() {
    let (so, _) = expect(&["models"], 0);
    assert_eq!(so.lines().count(), dynlib::model::builtin::BUILTINS.len());
    assert!(so.contains("builtin://ode/izhikevich") && so.contains("Izhikevich Neuron"));
    assert!(so.contains("builtin://map/henon"));
    let (so, _) = expect(&["steppers"], 0);
    for st in dynlib::stepper::all() {
        assert!(
            so.lines().any(|l| l.starts_with(st.name)),
            "{} missing:\n{so}",
            st.name
        );
    }
    let rk45 = so.lines().skip_while(|l| !l.starts_with("rk45")).nth(1);
    assert!(
        rk45.is_some_and(|l| l.trim_start().starts_with("atol")),
        "{so}"
    );
    assert!(so.contains("dopri5"));
}

#[test]
fn run_writes_csv_that_matches_the_library_bit_for_bit() {
    let dir = work("csv");
    let csv = dir.join("out.csv");
    let (so, se) = expect(
        &[
            "run",
            "builtin://ode/lorenz",
            "--t-end",
            "2",
            "--dt",
            "0.001",
            "--record-vars",
            "x,z",
            "--set",
            "rho=20",
            "--out",
            s(&csv),
        ],
        0,
    );
    // Not a terminal: plain output, no progress bar.
    assert!(se.is_empty(), "{se}");
    assert!(
        so.contains("step 2000") && so.contains("status Done"),
        "{so}"
    );
    let model = Model::load("builtin://ode/lorenz").unwrap();
    let mut sim = Sim::new(&model).unwrap();
    sim.assign(&[("rho", 20.0)], false).unwrap();
    sim.run(&RunOptions::new().t(2.0).dt(0.001).record_vars(&["x", "z"]))
        .unwrap();
    let rec = sim.results().unwrap();
    let body = std::fs::read_to_string(&csv).unwrap();
    let mut lines = body.lines();
    assert_eq!(lines.next(), Some("t,step,x,z"));
    let rows: Vec<Vec<f64>> = lines
        .map(|l| l.split(',').map(|v| v.parse().unwrap()).collect())
        .collect();
    assert_eq!(rows.len(), rec.len());
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r[0].to_bits(), rec.t[i].to_bits(), "t[{i}]");
        assert_eq!(r[1] as u64, rec.step.get(i));
        assert_eq!(r[2].to_bits(), rec.columns[0][i].to_bits(), "x[{i}]");
        assert_eq!(r[3].to_bits(), rec.columns[1][i].to_bits(), "z[{i}]");
    }
    let y = state_line(&so);
    assert!(y
        .iter()
        .zip(sim.state())
        .all(|(a, b)| a.to_bits() == b.to_bits()));
}

#[test]
fn run_writes_npz_with_presets_and_map_iterations() {
    let dir = work("npz");
    let npz = dir.join("out.npz");
    let (so, _) = expect(
        &[
            "run",
            "builtin://map/logistic",
            "--t-end",
            "50",
            "--out",
            s(&npz),
        ],
        0,
    );
    assert!(so.contains("step 50"), "{so}");
    let bytes = std::fs::read(&npz).unwrap();
    let members =
        dynlib::persist::npz::read_npz(&bytes, &dynlib::persist::snapshot::snapshot_limits())
            .unwrap();
    let names: Vec<&str> = members.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(&names[..2], &["t", "step"]);
    assert_eq!(members[0].1.shape, vec![51]);
    let (_, se) = expect(&["run", "builtin://map/logistic", "--t-end", "2.5"], 2);
    assert!(se.contains("whole number of iterations"), "{se}");
}

#[test]
fn checkpoints_resume_inspect_and_diff() {
    let dir = work("checkpoints");
    let ck = dir.join("ck");
    let args = [
        "run",
        "builtin://ode/lorenz",
        "--stepper",
        "rk4",
        "--t-end",
        "3",
        "--checkpoint-dir",
        s(&ck),
        "--checkpoint-every",
        "100",
    ];
    expect(&args, 0);
    let cps = dynlib::session::list_checkpoints(&ck).unwrap();
    assert!(cps.len() >= 2, "{cps:?}");
    let latest = dynlib::session::latest_checkpoint(&ck).unwrap().unwrap();
    let (so, _) = expect(
        &[
            "run",
            "builtin://ode/lorenz",
            "--stepper",
            "rk4",
            "--t-end",
            "6",
            "--resume-from",
            s(&latest),
        ],
        0,
    );
    // The resumed run lands where an uninterrupted run to 6 does, bit for bit.
    let model = Model::load("builtin://ode/lorenz").unwrap();
    let mut whole = Sim::with_stepper(&model, Some("rk4")).unwrap();
    whole.run(&RunOptions::new().t(6.0)).unwrap();
    let y = state_line(&so);
    assert_eq!(y.len(), 3);
    for (a, b) in y.iter().zip(whole.state()) {
        assert_eq!(a.to_bits(), b.to_bits(), "{so}");
    }

    let (human, _) = expect(&["inspect", s(&latest)], 0);
    assert!(human.contains("dynlib-snapshot-v1"), "{human}");
    assert!(human.contains("rk4"), "{human}");
    let (json, _) = expect(&["inspect", "--json", s(&latest)], 0);
    let meta: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(meta, dynlib::session::inspect_snapshot(&latest).unwrap());

    let (so, _) = expect(&["diff", s(&latest), s(&latest)], 0);
    assert!(so.contains("identical"), "{so}");
    let older = &cps[0].1;
    let (so, _) = expect(&["diff", s(older), s(&latest)], 1);
    assert!(
        so.contains("array y:") && so.contains("values differ"),
        "{so}"
    );
    assert!(so.contains("difference(s)"), "{so}");
    let (_, se) = expect(&["inspect", s(&dir.join("nope.npz"))], 2);
    assert!(se.contains("nope.npz"), "{se}");
    // A snapshot of another model is refused before anything runs.
    let (_, se) = expect(
        &[
            "run",
            "builtin://ode/vanderpol",
            "--resume-from",
            s(&latest),
        ],
        2,
    );
    assert!(se.contains("the model has 2"), "{se}");
}

#[test]
fn exit_codes_and_messages() {
    // Usage errors: clap's own, and the library's refusals before the run.
    let (_, se) = expect(&["run"], 2);
    assert!(se.contains("MODEL") || se.contains("<MODEL>"), "{se}");
    let (_, se) = expect(&["run", "builtin://ode/lorenz", "--set", "rho"], 2);
    assert!(se.contains("NAME=VALUE"), "{se}");
    let (_, se) = expect(&["run", "builtin://ode/lorenz", "--set", "nosuch=1"], 2);
    assert!(se.contains("nosuch"), "{se}");
    let (_, se) = expect(&["run", "builtin://ode/lorenz", "--stepper", "rk99"], 2);
    assert!(se.contains("rk99"), "{se}");
    let (_, se) = expect(&["run", "builtin://ode/lorenz", "--preset", "nope"], 2);
    assert!(se.contains("nope"), "{se}");
    let (_, se) = expect(&["run", "builtin://ode/lorenz", "--out", "x.txt"], 2);
    assert!(se.contains(".csv or .npz"), "{se}");
    let (_, se) = expect(&["run", "builtin://ode/lorenz", "--dt", "-1"], 2);
    assert!(se.starts_with("dynlib: error: "), "{se}");
    let (_, se) = expect(&["run", "builtin://ode/nope"], 2);
    assert!(se.contains("no built-in model"), "{se}");
    // A run that fails: the state blows up.
    let blowup =
        "inline:[model]\ntype = \"ode\"\n[states]\nx = 1.0\n[equations.rhs]\nx = \"x*x\"\n";
    let (_, se) = expect(&["run", blowup, "--t-end", "5", "--dt", "0.01"], 1);
    assert!(se.starts_with("dynlib: error: "), "{se}");
    assert!(
        se.to_lowercase().contains("finite") || se.contains("inf"),
        "{se}"
    );
}

#[test]
fn demo_runs_the_readme_workflow() {
    let (so, _) = expect(&["demo"], 0);
    assert!(
        so.contains("split run == uninterrupted run, bit for bit: true"),
        "{so}"
    );
    assert!(so.contains("branch I=15"), "{so}");
}

#[test]
fn mods_apply_to_validate_and_run() {
    let dir = work("mods");
    let out = dir.join("mod.csv");
    let with_mod = |m: &str| {
        let (stdout, _) = expect(
            &[
                "run",
                "builtin://ode/lorenz",
                "--t-end",
                "0.1",
                "--mod",
                m,
                "--out",
                out.to_str().unwrap(),
                "--quiet",
            ],
            0,
        );
        (stdout, std::fs::read_to_string(&out).unwrap())
    };
    let (_, base) = with_mod("inline:[mod]\nname = \"noop\"\n");
    let (_, changed) = with_mod("inline:[mod]\nname = \"rho\"\nset.params = { rho = 10.0 }\n");
    assert_ne!(base, changed, "the mod changed nothing");
    let (_, err) = expect(
        &[
            "validate",
            "builtin://ode/lorenz",
            "--mod",
            "inline:[mod]\nset.params = { rhoo = 1.0 }\n",
        ],
        2,
    );
    assert!(err.contains("rhoo"), "{err}");
}

//! `examples/mpi/sweep.c` under Open MPI: 2 ranks give the same final-state bits as 1, a sweep
//! killed part-way (`--stop-after`, an abrupt exit after a checkpoint) and restarted from its
//! checkpoints finishes with the same bits, and members match single sims run in Rust.
//!
//! Needs `mpicc` and `mpirun` (`apt-get install -y openmpi-bin libopenmpi-dev`); without them
//! the test prints SKIPPED with the reason. `DYNLIB_SKIP_MPI=1` skips it too.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use dynlib::{Model, RunOptions, Sim};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn build_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().join("mpi-tests");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn output(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn check(out: &Output, what: &str) -> String {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{text}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

const N: usize = 400;
const T: &str = "100";
const EVERY: &str = "2500";

fn mpirun(exe: &Path, np: u32, dir: &Path, out: &Path, extra: &[&str]) -> Output {
    output(
        Command::new("mpirun")
            .args(["--allow-run-as-root", "--oversubscribe", "-np"])
            .arg(np.to_string())
            .arg(exe)
            .args(["--n", &N.to_string(), "--T", T, "--every", EVERY, "--dir"])
            .arg(dir)
            .arg("--out")
            .arg(out)
            .args(extra),
    )
}

#[test]
fn mpi_sweep_is_bit_identical_across_ranks_and_restarts() {
    if std::env::var("DYNLIB_SKIP_MPI").is_ok_and(|v| v == "1") {
        eprintln!("SKIPPED mpi_sweep: DYNLIB_SKIP_MPI=1");
        return;
    }
    let missing: Vec<&str> = ["mpicc", "mpirun"]
        .into_iter()
        .filter(|t| !have(t))
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "\n*** SKIPPED mpi_sweep: {} not found; install Open MPI with \
             `apt-get install -y openmpi-bin libopenmpi-dev` (.ci/run does) ***\n",
            missing.join(" and ")
        );
        return;
    }
    let lib = common::c_library_dir();
    let dir = build_dir();
    let exe = dir.join("sweep");
    check(
        &output(
            Command::new("mpicc")
                .args(["-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-I"])
                .arg(repo().join("include"))
                .arg(repo().join("examples/mpi/sweep.c"))
                .arg("-o")
                .arg(&exe)
                .arg("-L")
                .arg(&lib)
                .arg(format!("-Wl,-rpath,{}", lib.display()))
                .args(["-ldynlib", "-lm"]),
        ),
        "mpicc",
    );

    let run_ok = |np: u32, name: &str, extra: &[&str]| -> (Vec<u8>, String) {
        let out_file = dir.join(format!("{name}.bin"));
        let text = check(
            &mpirun(&exe, np, &dir.join(name), &out_file, extra),
            &format!("mpirun -np {np} ({name})"),
        );
        (std::fs::read(&out_file).unwrap(), text)
    };
    let (two, text) = run_ok(2, "np2", &[]);
    eprintln!("{text}");
    assert!(text.contains("2 rank(s)"), "{text}");
    assert_eq!(two.len(), N * 2 * 8);
    let (one, _) = run_ok(1, "np1", &[]);
    assert!(one == two, "1 rank and 2 ranks give different final states");

    // Killed part-way: every rank exits abruptly after its second checkpoint (of 3).
    let crash = mpirun(
        &exe,
        2,
        &dir.join("crash"),
        &dir.join("crash.bin"),
        &["--stop-after", "2"],
    );
    assert!(!crash.status.success(), "the crash stand-in must fail");
    assert!(!dir.join("crash.bin").exists(), "no output after a crash");
    let files: Vec<_> = std::fs::read_dir(dir.join("crash"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        files.iter().any(|f| f == "rank-0000-of-0002.npz")
            && files.iter().any(|f| f == "rank-0001-of-0002.npz"),
        "{files:?}"
    );
    let (restarted, text) = run_ok(2, "crash", &[]);
    assert!(
        text.contains("restarted from") && text.contains("at step 5000"),
        "{text}"
    );
    assert!(
        restarted == two,
        "the restarted sweep differs from the uninterrupted one"
    );

    // Members equal single sims (rk4, dt 0.01, I_j = 20 j / N).
    let model = Model::load("builtin://ode/izhikevich").unwrap();
    for j in [0usize, 137, 201, N - 1] {
        let mut s = Sim::with_stepper(&model, Some("rk4")).unwrap();
        s.assign(&[("I", 20.0 * j as f64 / N as f64)], false)
            .unwrap();
        s.run(&RunOptions::new().t(100.0).dt(0.01).record(false))
            .unwrap();
        let got: Vec<u8> = s.state().iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(&two[j * 16..(j + 1) * 16], &got[..], "member {j}");
    }
    eprintln!("mpi_sweep: np=1 == np=2 == killed+restarted, bit for bit ({N} members)");
}

//! `dynlib`: the command-line tool of the dynlib engine.
//!
//! Exit codes: 0 ok, 1 the run failed (or, for `diff`, the files differ), 2 a usage or model
//! error (bad arguments, a model that does not load, an unknown name, an incompatible
//! snapshot). Errors go to stderr with the library's message.

mod snapshots;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use dynlib::model::ModelKind;
use dynlib::session::{CheckpointPolicy, Control, Every, Hook, Status};
use dynlib::{ErrorKind, Model, RunOptions, Sim};

#[derive(Parser)]
#[command(
    name = "dynlib",
    version,
    about = "Dynamical-systems simulations with exact resume"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Load a model and report every error with its position (exit 2 when it does not load).
    Validate {
        /// A model file, `builtin://ode/NAME` or `inline:` + TOML.
        model: String,
        /// Apply this mod (a name in the model's [mods], a mod file, or `inline:` TOML);
        /// repeatable, applied in order.
        #[arg(long = "mod", value_name = "MOD")]
        mods: Vec<String>,
    },
    /// List the built-in models.
    Models,
    /// List the steppers with their aliases and knobs.
    Steppers,
    /// Run a model and write the recorded series.
    Run(RunArgs),
    /// Show a snapshot file's metadata (no session needed).
    Inspect {
        snapshot: PathBuf,
        /// Print meta.json as JSON instead of a summary.
        #[arg(long)]
        json: bool,
    },
    /// Compare two snapshot files: pins, metadata and every array, bit for bit (exit 1 when
    /// they differ).
    Diff { a: PathBuf, b: PathBuf },
    /// Run, snapshot, resume and branch on a built-in model (the README's first command).
    Demo,
}

#[derive(clap::Args)]
struct RunArgs {
    /// A model file, `builtin://ode/NAME` or `inline:` + TOML.
    model: String,
    /// Stepper name or alias (default: the model's).
    #[arg(long)]
    stepper: Option<String>,
    /// End time (ODE; for a map the number of iterations). Default: the model's t_end.
    #[arg(long = "t-end", value_name = "T", allow_hyphen_values = true)]
    t_end: Option<f64>,
    /// Step size (default: the model's dt). Not with --resume-from.
    #[arg(long, allow_hyphen_values = true)]
    dt: Option<f64>,
    /// Variables to record, comma-separated (states or aux; default all states).
    #[arg(long = "record-vars", value_delimiter = ',', value_name = "A,B")]
    record_vars: Vec<String>,
    /// Set a state or parameter before the run (repeatable).
    #[arg(long = "set", value_name = "NAME=VALUE", value_parser = parse_assignment)]
    set: Vec<(String, f64)>,
    /// Apply the model's preset before the run (before --set).
    #[arg(long)]
    preset: Option<String>,
    /// Write the recorded series to FILE.csv or FILE.npz.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Write checkpoints into this directory during the run.
    #[arg(
        long = "checkpoint-dir",
        value_name = "D",
        requires = "checkpoint_every"
    )]
    checkpoint_dir: Option<PathBuf>,
    /// A checkpoint every N steps (with --checkpoint-dir).
    #[arg(
        long = "checkpoint-every",
        value_name = "N",
        requires = "checkpoint_dir"
    )]
    checkpoint_every: Option<u64>,
    /// Import this snapshot and resume from it (the run continues it exactly).
    #[arg(long = "resume-from", value_name = "SNAPSHOT.npz")]
    resume_from: Option<PathBuf>,
    /// Apply this mod (a name in the model's [mods], a mod file, or `inline:` TOML);
    /// repeatable, applied in order.
    #[arg(long = "mod", value_name = "MOD")]
    mods: Vec<String>,
    /// No progress bar, even on a terminal.
    #[arg(long)]
    quiet: bool,
}

fn parse_assignment(s: &str) -> Result<(String, f64), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| format!("'{s}' is not NAME=VALUE"))?;
    let v: f64 = value
        .trim()
        .parse()
        .map_err(|e| format!("'{value}' in '{s}' is not a number: {e}"))?;
    Ok((name.trim().to_string(), v))
}

/// A failure and its exit code.
pub struct Fail {
    code: u8,
    message: String,
}

impl Fail {
    pub fn usage(message: impl Into<String>) -> Fail {
        Fail {
            code: 2,
            message: message.into(),
        }
    }
    pub fn run(message: impl Into<String>) -> Fail {
        Fail {
            code: 1,
            message: message.into(),
        }
    }
}

/// A library error before the run starts: a usage or model error.
fn usage(e: dynlib::Error) -> Fail {
    Fail::usage(e.message())
}

/// A library error of the run itself: refusals of the options are usage errors, everything
/// else (a step failed, a file could not be written, …) a failed run.
fn run_error(e: dynlib::Error) -> Fail {
    match e.kind() {
        ErrorKind::InvalidArgument
        | ErrorKind::UnknownName
        | ErrorKind::Model
        | ErrorKind::Incompatible => Fail::usage(e.message()),
        _ => Fail::run(e.message()),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Validate { model, mods } => validate(&model, &mods),
        Command::Models => models(),
        Command::Steppers => steppers(),
        Command::Run(args) => run(&args),
        Command::Inspect { snapshot, json } => snapshots::inspect(&snapshot, json),
        Command::Diff { a, b } => snapshots::diff(&a, &b),
        Command::Demo => demo(),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            eprintln!("dynlib: error: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

fn out_error(e: std::io::Error) -> Fail {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        // `dynlib steppers | head`: the reader has what it wanted.
        std::process::exit(0);
    }
    Fail::run(format!("cannot write to stdout: {e}"))
}

/// A model with its mods applied.
fn load(source: &str, mods: &[String]) -> Result<Model, Fail> {
    let mods: Vec<&str> = mods.iter().map(String::as_str).collect();
    Model::load_with_mods(source, &mods, dynlib::Backend::Auto).map_err(usage)
}

fn validate(source: &str, mods: &[String]) -> Result<u8, Fail> {
    let m = load(source, mods)?;
    println!(
        "ok: {} — {} model '{}': {} states ({}), {} params, {} aux, {} events",
        source,
        kind_name(m.kind),
        m.name,
        m.n_states(),
        m.state_names.join(", "),
        m.param_names.len(),
        m.aux_names.len(),
        m.events.len()
    );
    Ok(0)
}

fn kind_name(k: ModelKind) -> &'static str {
    match k {
        ModelKind::Ode => "ode",
        ModelKind::Map => "map",
    }
}

fn models() -> Result<u8, Fail> {
    let mut out = std::io::stdout().lock();
    for (id, _) in dynlib::model::builtin::BUILTINS {
        let source = format!("builtin://{id}");
        let m = Model::load(&source).map_err(usage)?;
        writeln!(
            out,
            "{source:<32} {:<28} {} states, {} params",
            m.name,
            m.n_states(),
            m.param_names.len()
        )
        .map_err(out_error)?;
    }
    Ok(0)
}

fn steppers() -> Result<u8, Fail> {
    let mut out = std::io::stdout().lock();
    for s in dynlib::stepper::all() {
        let order = match s.embedded_order {
            Some(e) => format!("{}({e})", s.order),
            None => s.order.to_string(),
        };
        writeln!(
            out,
            "{:<10} {} {} {}{} order {order}{}: {}",
            s.name,
            kind_name(s.kind),
            if s.adaptive { "adaptive" } else { "fixed-step" },
            if s.implicit { "implicit" } else { "explicit" },
            if s.dense_output { ", dense output" } else { "" },
            if s.aliases.is_empty() {
                String::new()
            } else {
                format!(" (aliases: {})", s.aliases.join(", "))
            },
            s.description
        )
        .map_err(out_error)?;
        for k in s.config {
            writeln!(out, "    {:<16} = {:<10} {}", k.name, k.default, k.help)
                .map_err(out_error)?;
        }
    }
    Ok(0)
}

fn demo() -> Result<u8, Fail> {
    let identical = dynlib::demo::run(&mut std::io::stdout().lock()).map_err(run_error)?;
    if identical {
        Ok(0)
    } else {
        Err(Fail::run(
            "the split run differs from the uninterrupted run",
        ))
    }
}

fn run(a: &RunArgs) -> Result<u8, Fail> {
    let model = load(&a.model, &a.mods)?;
    let mut sim = Sim::with_stepper(&model, a.stepper.as_deref()).map_err(usage)?;
    if let Some(p) = &a.resume_from {
        sim.import_snapshot(p).map_err(usage)?;
    }
    if let Some(p) = &a.preset {
        sim.apply_preset(p).map_err(usage)?;
    }
    if !a.set.is_empty() {
        let pairs: Vec<(&str, f64)> = a.set.iter().map(|(n, v)| (n.as_str(), *v)).collect();
        sim.assign(&pairs, false).map_err(usage)?;
    }
    if let Some(out) = &a.out {
        output_format(out)?;
    }
    let mut opts = RunOptions::new().resume(a.resume_from.is_some());
    match (a.t_end, model.kind) {
        (Some(t), ModelKind::Ode) => opts = opts.t(t),
        (Some(n), ModelKind::Map) => {
            if !(n >= 1.0 && n.fract() == 0.0) {
                return Err(Fail::usage(format!(
                    "--t-end {n}: a map runs a whole number of iterations (at least 1)"
                )));
            }
            opts = opts.n(n as u64);
        }
        (None, _) => {}
    }
    if let Some(dt) = a.dt {
        opts = opts.dt(dt);
    }
    if !a.record_vars.is_empty() {
        let vars: Vec<&str> = a.record_vars.iter().map(String::as_str).collect();
        opts = opts.record_vars(&vars);
    }
    if let (Some(dir), Some(k)) = (&a.checkpoint_dir, a.checkpoint_every) {
        opts = opts.checkpoint(CheckpointPolicy::every_steps(dir, k, 3));
    }
    let bar = (!a.quiet && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new(1000);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {percent:>3}% {msg}",
            )
            .expect("a valid template"),
        );
        bar
    });
    if let Some(bar) = &bar {
        let b = bar.clone();
        opts = opts.progress(Hook::new(Every::Seconds(0.1), move |p| {
            b.set_position((p.fraction * 1000.0).round() as u64);
            b.set_message(format!("t = {:.6} step {}", p.t, p.step));
            Control::Continue
        }));
    }
    let started = std::time::Instant::now();
    let result = sim.run(&opts);
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    result.map_err(run_error)?;
    let rec = sim.results().map_err(run_error)?;
    let stats = sim.last_run_stats();
    println!(
        "run: {} with {}: t = {}, step {}, {} steps in {:.3} s, {} samples, {} events, status {}",
        model.name,
        sim.stepper().name,
        sim.time(),
        sim.step_count(),
        stats.steps,
        started.elapsed().as_secs_f64(),
        rec.len(),
        rec.events.len(),
        status_name(sim.status())
    );
    let state: Vec<String> = model
        .state_names
        .iter()
        .zip(sim.state())
        .map(|(n, v)| format!("{n} = {v}"))
        .collect();
    println!("state: {}", state.join(", "));
    if let Some(out) = &a.out {
        write_results(out, rec)?;
        println!("wrote {}", out.display());
    }
    Ok(0)
}

fn status_name(s: Status) -> String {
    format!("{s:?}")
}

enum Format {
    Csv,
    Npz,
}

fn output_format(path: &Path) -> Result<Format, Fail> {
    match path.extension().and_then(|e| e.to_str()) {
        Some(e) if e.eq_ignore_ascii_case("csv") => Ok(Format::Csv),
        Some(e) if e.eq_ignore_ascii_case("npz") => Ok(Format::Npz),
        _ => Err(Fail::usage(format!(
            "--out {}: the file name must end in .csv or .npz",
            path.display()
        ))),
    }
}

/// Writes the recording: CSV with a header `t,step,<vars>` (numbers in Rust's shortest
/// round-trip form, so they read back bit for bit), or `.npz` with arrays `t`, `step` and one
/// per variable. Both atomically.
fn write_results(path: &Path, rec: &dynlib::session::Recording) -> Result<(), Fail> {
    let bytes = match output_format(path)? {
        Format::Csv => {
            let mut s = String::from("t,step");
            for n in rec.names.iter() {
                s.push(',');
                s.push_str(n);
            }
            s.push('\n');
            for i in 0..rec.len() {
                s.push_str(&format!("{:?},{}", rec.t[i], rec.step.get(i)));
                for c in &rec.columns {
                    s.push_str(&format!(",{:?}", c[i]));
                }
                s.push('\n');
            }
            s.into_bytes()
        }
        Format::Npz => {
            use dynlib::persist::npy::NpyArray;
            let n = rec.len();
            let mut members = vec![
                ("t".to_string(), NpyArray::f64(vec![n], rec.t.to_vec())),
                (
                    "step".to_string(),
                    NpyArray::i64(vec![n], rec.step.iter().map(|s| s as i64).collect()),
                ),
            ];
            for (name, c) in rec.names.iter().zip(&rec.columns) {
                members.push((name.clone(), NpyArray::f64(vec![n], c.to_vec())));
            }
            let members: Vec<(String, NpyArray)> = members
                .into_iter()
                .map(|(k, v)| v.map(|v| (k, v)))
                .collect::<dynlib::Result<_>>()
                .map_err(run_error)?;
            dynlib::persist::npz::write_npz(&members).map_err(run_error)?
        }
    };
    dynlib::persist::atomic::write_atomic(path, &bytes).map_err(|e| Fail::run(e.message()))
}

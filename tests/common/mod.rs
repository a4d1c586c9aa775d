//! Helpers shared by the integration tests: a map that exercises every part of the state, and
//! bit-level views of a recording for exactness comparisons.
#![allow(dead_code)] // each test file uses its own subset

use std::path::PathBuf;
use std::process::Command;

use dynlib::session::Recording;

/// A logistic map with lag feedback, an aux variable and an event that counts in a parameter.
pub const LAGGED_MAP: &str = r#"inline:
[model]
type = "map"
[states]
x = 0.3
[params]
r = 3.9
n = 0.0
[aux]
dx = "x - lag_x(1)"
[equations.rhs]
x = "r*x*(1 - x) + 0.01*lag_x(3)"
[events.high]
cond = "x > 0.95"
action = "n = n + 1"
log = ["x", "n"]
"#;

/// Lag feedback, aux, an event with a log, and a stop condition far away.
pub const LAGGED_ODE: &str = r#"inline:
[model]
type = "ode"
[states]
x = 1.0
y = 0.0
[params]
k = 4.0
c = 0.0
[aux]
energy = "x^2 + y^2/k"
[equations.rhs]
x = "y"
y = "-k*x - 0.1*y + 0.3*lag_x(2) + 0.01*sin(t)"
[events.kick]
cond = "cross_up(x, 0.2)"
action = """
y = y + 0.05
c = c + 1
"""
log = ["t", "x", "c", "aux:energy"]
[sim]
stop = "c > 1e9"
"#;

/// Every function and operator of the language, NaN-prone ones included.
pub const ALL_FUNCTIONS: &str = r#"inline:
[model]
type = "ode"
[states]
a = 0.3
b = -0.7
[params]
q = 1.5
[aux]
u1 = "exp(a) + expm1(b) + log(q) + log10(q) + log2(q) + log1p(a) + sqrt(q)"
u2 = "sin(a) + cos(b) + tan(a) + asin(a/2) + acos(b/2) + atan(b)"
u3 = "sinh(a) + cosh(b) + tanh(a) + asinh(b) + acosh(q) + atanh(a/2)"
u4 = "floor(b*3) + ceil(a*3) + trunc(b*3) + round(a*5) + erf(a) + erfc(b) + sign(b) + abs(b)"
u5 = "atan2(a, b) + hypot(a, b) + copysign(q, b) + pow(q, a) + a ** 1.7 + b // 0.3 + b % 0.3"
u6 = "min(a, b, q) + max(a, b) + clip(b, -0.5, 0.5) + relu(b) + heaviside(a) + log(q, 3)"
u7 = "(a < b) + (a <= b) + (a > b) + (a >= b) + (a == b) + (a != b) + (a and b) + (b or 0) + (not a)"
u8 = "a if b > 0 else -q"
u9 = "sqrt(b) + log(b)"
u10 = "min(sqrt(b), a) + max(a, sqrt(b)) + (sqrt(b) < a) + (sqrt(b) != a) + (sqrt(b) and 1)"
u11 = "a and b"
u12 = "b or a"
u13 = "(a - a) and q"
u14 = "(b - b) or (a - a)"
u15 = "a % b"
u16 = "b % q"
u17 = "(a - a) % -q"
u18 = "(b - b) % q"
u19 = "b // a"
u20 = "(a - a) // -q"
u21 = "sqrt(b) or a"
u22 = "not (a and b)"
[equations.rhs]
a = "-0.1*a + 0.01*u2"
b = "0.05*cos(t) - 0.2*b"
[equations.jacobian]
expr = [["-0.1", "0"], ["0", "-0.2"]]
"#;

/// Start-phase and both-phase events reading lags, aux, and a stop condition that ends the
/// run part-way.
pub const START_EVENTS_ODE: &str = r#"inline:
[model]
type = "ode"
[states]
x = 1.0
v = 0.0
n = 0.0
[params]
k = 9.0
[aux]
energy = "0.5*v^2 + 0.5*k*x^2"
[equations.rhs]
x = "v"
v = "-k*x - 0.05*v + 0.2*lag_x(3)"
n = "0"
[events.kick]
phase = "start"
cond = "cross_down(x, 0.0)"
action = """
v = v - 0.3
n = n + 1
"""
log = ["t", "n", "aux:energy"]
[events.clip]
phase = "both"
cond = "v > 2.5"
action = "v = 2.5"
[sim]
stop = "n >= 6"
"#;

/// Signed zeros everywhere: states that start at -0 with derivatives of -0, a parameter of
/// -0, so that every `0 +` and `y + 0` of the steppers' arithmetic decides a sign.
pub const SIGNED_ZEROS_ODE: &str = r#"inline:
[model]
type = "ode"
[states]
a = -0.0
b = -0.0
c = 0.0
[params]
q = -0.0
[equations.rhs]
a = "-a*a"
b = "q*b"
c = "q - c*c"
"#;

pub fn sources() -> Vec<String> {
    let mut s: Vec<String> = dynlib::model::builtin::BUILTINS
        .iter()
        .map(|(id, _)| format!("builtin://{id}"))
        .collect();
    s.extend(
        [
            LAGGED_ODE,
            ALL_FUNCTIONS,
            LAGGED_MAP,
            START_EVENTS_ODE,
            SIGNED_ZEROS_ODE,
        ]
        .map(String::from),
    );
    s
}

/// One sample as raw bits: (t, step label, interpolated, column values).
pub type Sample = (u64, u64, bool, Vec<u64>);

/// Every sample as raw bits.
pub fn all_samples(rec: &Recording) -> Vec<Sample> {
    (0..rec.len())
        .map(|i| {
            (
                rec.t[i].to_bits(),
                rec.step.get(i),
                rec.interpolated.get(i),
                rec.columns.iter().map(|c| c[i].to_bits()).collect(),
            )
        })
        .collect()
}

/// Samples at committed steps (interpolated seam samples left out) as (t, step, values) bits.
pub fn committed_samples(rec: &Recording) -> Vec<(u64, u64, Vec<u64>)> {
    all_samples(rec)
        .into_iter()
        .filter(|s| !s.2)
        .map(|(t, step, _, v)| (t, step, v))
        .collect()
}

/// One event-log entry as raw bits: (event, t, step, owning sample index, values).
pub type Logged = (usize, u64, u64, Option<usize>, Vec<u64>);

pub fn event_bits(rec: &Recording) -> Vec<Logged> {
    rec.events
        .iter()
        .map(|e| {
            (
                e.event,
                e.t.to_bits(),
                e.step,
                e.sample,
                e.values.iter().map(|v| v.to_bits()).collect(),
            )
        })
        .collect()
}

/// Where two sequences first differ, for assertion messages.
pub fn first_difference<T: PartialEq + std::fmt::Debug>(a: &[T], b: &[T]) -> String {
    match a.iter().zip(b).position(|(x, y)| x != y) {
        Some(i) => format!("first difference at index {i}: {:?} vs {:?}", a[i], b[i]),
        None => format!("lengths {} vs {}", a.len(), b.len()),
    }
}

/// A directory holding an up-to-date `libdynlib.so` and `libdynlib.a`, for the tests that
/// drive C, C++, Python and Octave code.
///
/// `cargo test` compiles the library with all its crate types into `target/<profile>/deps/`
/// (next to the test executables) but copies them up to `target/<profile>/` only on
/// `cargo build`; so `deps/` is used when it has both files, and otherwise the libraries are
/// built once per test process with the same cargo, profile and target directory.
///
/// Cargo runs tests with `LD_LIBRARY_PATH` holding `target/<profile>/` too, where an older
/// `cargo build` may have left a stale copy that the dynamic loader would find first; the
/// variable is pointed at the chosen directory for every process the tests start.
pub fn c_library_dir() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = find_or_build_c_libraries();
        std::env::set_var("LD_LIBRARY_PATH", &dir);
        dir
    })
    .clone()
}

fn find_or_build_c_libraries() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap().to_path_buf();
    if ["libdynlib.so", "libdynlib.a"]
        .iter()
        .all(|f| deps.join(f).exists())
    {
        return deps;
    }
    let dir = deps.parent().unwrap().to_path_buf();
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["build", "--lib", "--quiet"]);
    if dir.file_name().is_some_and(|p| p == "release") {
        cmd.arg("--release");
    }
    if let Some(target) = dir.parent() {
        cmd.env("CARGO_TARGET_DIR", target);
    }
    let out = cmd.output().expect("cargo runs");
    assert!(
        out.status.success(),
        "building the C libraries failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

/// Reports a skipped test part where `cargo test` shows it: straight to the process's stderr,
/// which the test harness does not capture (eprintln! output of a passing test is hidden).
/// A skipped part is never a silent pass.
pub fn skip(what: &str, why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED {what}: {why}");
}

/// A line for the `cargo test` output (not captured), e.g. what an external suite ran.
pub fn report(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

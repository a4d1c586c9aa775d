//! The model language is strict: every unknown table and key, reserved name and bad value is
//! an error at its file position, all of a file's errors are reported at once, and the
//! expression semantics are Python's.

use dynlib::{ErrorKind, Model, RunOptions, Sim};

fn err(toml: &str) -> dynlib::Error {
    let e = Model::from_toml(toml).expect_err("the model should be rejected");
    assert_eq!(e.kind(), ErrorKind::Model, "{e}");
    e
}

fn has(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "message lacks {p:?}:\n{msg}");
    }
}

const BASE: &str = "[model]\ntype = \"ode\"\n[states]\nx = 1.0\n[params]\ng = 2.0\n[equations.rhs]\nx = \"-g*x\"\n";

#[test]
fn unknown_keys_and_tables_are_named_with_line_column_and_suggestion() {
    let cases = [
        (
            "[sim]\ndtt = 0.001\n",
            "unknown key 'dtt' in [sim] (did you mean 'dt'?)",
            10,
            1,
        ),
        ("[sim]\nrtoll = 1e-6\n", "(did you mean 'rtol'?)", 10, 1),
        ("[sim]\nt_ned = 5\n", "(did you mean 't_end'?)", 10, 1),
        (
            "[auxx]\na = \"x\"\n",
            "unknown table 'auxx' in the model file (did you mean 'aux'?)",
            9,
            2,
        ),
        (
            "[equations.rhss]\n",
            "unknown key 'rhss' in [equations] (did you mean 'rhs'?)",
            9,
            12,
        ),
    ];
    for (extra, msg, line, col) in cases {
        let e = err(&format!("{BASE}{extra}"));
        has(e.message(), &[msg]);
        let d = &e.diagnostics()[0];
        assert_eq!((d.line, d.column), (line, col), "{extra}: {e}");
    }
    let e =
        err("[model]\ntype = \"ode\"\nnmae = \"x\"\n[states]\nx = 1\n[equations.rhs]\nx = \"0\"\n");
    has(
        e.message(),
        &[
            "line 3, column 1",
            "unknown key 'nmae' in [model] (did you mean 'name'?)",
        ],
    );
}

#[test]
fn a_misspelt_table_is_reported_as_such_not_as_its_consequences() {
    let e = err("[model]\ntype = \"ode\"\n[states]\nx = 1.0\n[param]\ng = 2.0\n[equations.rhs]\nx = \"-g*x\"\n");
    has(
        e.message(),
        &[
            "unknown table 'param'",
            "did you mean 'params'",
            "line 5, column 2",
        ],
    );
    assert!(!e.message().contains("unknown identifier"), "{e}");
    let e = err("[model]\ntype = \"ode\"\n[states]\nx = 1.0\n[equation.rhs]\nx = \"-x\"\n");
    has(
        e.message(),
        &["unknown table 'equation'", "did you mean 'equations'"],
    );
    assert!(!e.message().contains("missing required"), "{e}");
}

#[test]
fn sim_values_are_checked_at_load() {
    has(
        err(&format!("{BASE}[sim]\nstepper = \"rk-4\"\n")).message(),
        &["[sim].stepper", "unknown stepper 'rk-4'", "line 10"],
    );
    has(
        err(&format!("{BASE}[sim]\nt_end = nan\n")).message(),
        &["[sim].t_end must be finite"],
    );
    has(
        err(&format!("{BASE}[sim]\nt0 = nan\n")).message(),
        &["[sim].t0 must be finite"],
    );
    has(
        err(&format!("{BASE}[sim]\nstepper = \"map\"\n")).message(),
        &["for map models"],
    );
    // A knob of some stepper is accepted as an extra key; anything else is not.
    Model::from_toml(&format!(
        "{BASE}[sim]\nstepper = \"rk45\"\nmax_factor = 3.0\n"
    ))
    .unwrap();
}

#[test]
fn positions_inside_expression_strings_are_file_positions() {
    let e = err(&format!(
        "{BASE}[aux]\nk = \"\"\"\n  1 +\n    sigam\"\"\"\n"
    ));
    let d = &e.diagnostics()[0];
    assert_eq!((d.line, d.column), (12, 5), "{e}");
    has(
        e.message(),
        &["line 12, column 5", "unknown identifier 'sigam'"],
    );
    let e = err("[model]\ntype = \"ode\"\n[states]\nx = 1\n[equations]\nexpr = \"\"\"\ndx = -x\n  dy = 2\n\"\"\"\n");
    assert_eq!(e.diagnostics()[0].line, 8, "{e}");
    let e = err("[model]\ntype = \"ode\"\n[states]\nx = 1\n[equations.rhs]\nx = \"x + (\"\n");
    let d = &e.diagnostics()[0];
    assert_eq!((d.line, d.column), (6, 11), "{e}");
}

#[test]
fn every_independent_error_is_reported_at_once() {
    let text = "[model]\ntype = \"ode\"\n[states]\nx = 1.0\ny = 2\n[params]\na = \"1 +\"\n[aux]\nq = \"x +* 2\"\n[equations.rhs]\nx = \"-a*x + bogus\"\ny = \"siin(y)\"\n[sim]\ndtt = 1\n[events.e]\ncond = \"x > 1\"\nphse = \"end\"\n";
    let e = err(text);
    let d = e.diagnostics();
    assert!(d.len() >= 5, "{e}");
    has(
        e.message(),
        &[
            "errors in the model",
            "[params].a",
            "[aux].q",
            "bogus",
            "siin",
            "dtt",
            "phse",
        ],
    );
    let lines: Vec<usize> = d.iter().map(|d| d.line).collect();
    let mut sorted = lines.clone();
    sorted.sort();
    assert_eq!(lines, sorted, "in file order: {e}");
    assert!(lines.iter().all(|l| *l > 0), "{e}");
    // The list is bounded.
    let mut many = String::from(
        "[model]\ntype = \"ode\"\n[states]\nx = 1\n[equations.rhs]\nx = \"0\"\n[sim]\n",
    );
    for i in 0..100 {
        many.push_str(&format!("bad{i} = 1\n"));
    }
    let e = err(&many);
    assert_eq!(e.diagnostics().len(), dynlib::error::MAX_DIAGNOSTICS);
    has(e.message(), &["100 errors", "and 80 more"]);
}

#[test]
fn reserved_words_and_builtin_names_cannot_be_declared() {
    for (table, name) in [
        ("params", "True"),
        ("states", "and"),
        ("states", "not"),
        ("params", "if"),
        ("aux", "sin"),
        ("constants", "exp"),
        ("params", "clip"),
        ("params", "cross_up"),
        ("params", "min"),
    ] {
        let value = if table == "aux" { "\"x\"" } else { "1.0" };
        let text = format!(
            "[model]\ntype = \"ode\"\n[states]\nx = 1.0\n[{table}]\n{name} = {value}\n[equations.rhs]\nx = \"-x\"\n"
        );
        let text = if table == "states" {
            format!("[model]\ntype = \"ode\"\n[states]\nx = 1.0\n{name} = 1.0\n[equations.rhs]\nx = \"-x\"\n")
        } else {
            text
        };
        let e = err(&text);
        has(e.message(), &[&format!("'{name}'"), "cannot"]);
    }
    for f in ["sin", "exp", "clip", "cross_up"] {
        let e = err(&format!(
            "{BASE}[functions.{f}]\nargs = [\"u\"]\nexpr = \"u\"\n"
        ));
        has(e.message(), &[&format!("[functions].{f}"), "built-in"]);
    }
}

fn value_in(expr: &str, backend: dynlib::Backend) -> f64 {
    let m = Model::from_toml_with(
        &format!("[model]\ntype = \"map\"\n[states]\nx = 0.0\n[equations.rhs]\nx = \"{expr}\"\n"),
        backend,
    )
    .unwrap();
    let mut sim = Sim::new(&m).unwrap();
    sim.run(&RunOptions::new().n(1)).unwrap();
    sim.session_state().y[0]
}

#[test]
fn and_or_return_an_operand_and_modulo_follows_python() {
    for backend in [dynlib::Backend::Interpreter, dynlib::Backend::Auto] {
        let value_of = |e: &str| value_in(e, backend);
        assert_eq!(value_of("2 and 3"), 3.0, "{backend:?}");
        assert_eq!(value_of("0 or 5"), 5.0);
        assert_eq!(value_of("2 or 5"), 2.0);
        assert_eq!(value_of("0 and 5"), 0.0);
        assert_eq!(value_of("(x + 2) and (x + 3)"), 3.0);
        assert_eq!(value_of("x or (x + 5)"), 5.0);
        assert_eq!(value_of("(x - 0.0*1) % 5").to_bits(), 0.0f64.to_bits());
        assert_eq!(value_of("(-x) % 5").to_bits(), 0.0f64.to_bits());
        assert_eq!(value_of("-7.5 % 2"), 0.5);
    }
}

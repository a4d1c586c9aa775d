//! One test per model-error class: each message says what is wrong and where.

use dynlib::{ErrorKind, Model};

fn err(toml: &str) -> String {
    let e = Model::from_toml(toml).expect_err("the model should be rejected");
    assert_eq!(e.kind(), ErrorKind::Model, "{e}");
    e.message().to_string()
}

fn has(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "message lacks {p:?}:\n{msg}");
    }
}

const HEAD: &str = "[model]\ntype = \"ode\"\n[states]\nx = 1.0\n[params]\nsigma = 2.0\n";

#[test]
fn toml_syntax_error_gives_line_and_column() {
    has(&err("[model\ntype = 1"), &["TOML syntax error", "line 1"]);
}

#[test]
fn expression_syntax_error_points_at_the_column() {
    let m = err(&format!("{HEAD}[equations.rhs]\nx = \"sigma * (x + \"\n"));
    has(&m, &["[equations.rhs].x", "unexpected end"]);
}

#[test]
fn unknown_identifier_suggests_the_closest_name() {
    let m = err(&format!("{HEAD}[equations.rhs]\nx = \"-sigam*x\"\n"));
    has(
        &m,
        &[
            "[equations.rhs].x",
            "unknown identifier 'sigam' at column 2",
            "did you mean 'sigma'",
            "^^^^^",
        ],
    );
}

#[test]
fn duplicate_names_are_reported_with_both_places() {
    let m = err("[model]\ntype = \"ode\"\n[states]\nx = 1.0\n[params]\nx = 2.0\n[equations.rhs]\nx = \"-x\"\n");
    has(&m, &["duplicate name 'x'", "[states]", "[params]"]);
}

#[test]
fn state_without_equation() {
    let m =
        err("[model]\ntype = \"ode\"\n[states]\nx = 1.0\ny = 2.0\n[equations.rhs]\nx = \"-x\"\n");
    has(&m, &["state 'y' has no equation"]);
}

#[test]
fn equation_for_unknown_state() {
    let m = err(&format!(
        "{HEAD}[equations]\nexpr = \"\"\"\ndx = -x\ndz = 1\n\"\"\"\n"
    ));
    has(&m, &["'dz'", "not a declared state"]);
}

#[test]
fn wrong_arity() {
    let m = err(&format!("{HEAD}[equations.rhs]\nx = \"atan2(x)\"\n"));
    has(&m, &["atan2() takes 2 arguments, but 1 was given"]);
    let m = err(&format!("{HEAD}[functions.f]\nargs = [\"a\", \"b\"]\nexpr = \"a*b\"\n[equations.rhs]\nx = \"f(1)\"\n"));
    has(&m, &["f() takes 2 arguments"]);
}

#[test]
fn cyclic_aux_definitions() {
    let m = err(&format!(
        "{HEAD}[aux]\na = \"b + 1\"\nb = \"a*2\"\n[equations.rhs]\nx = \"a\"\n"
    ));
    has(&m, &["cyclic definition", "a -> b -> a"]);
}

#[test]
fn unsupported_dtype() {
    let m = err("[model]\ntype = \"ode\"\ndtype = \"float32\"\n[states]\nx = 1.0\n[equations.rhs]\nx = \"-x\"\n");
    has(&m, &["dtype 'float32' is not supported", "float64"]);
}

#[test]
fn bad_model_type_and_missing_tables() {
    has(
        &err("[model]\ntype = \"sde\"\n[states]\nx=1\n"),
        &["\"ode\" or \"map\"", "sde"],
    );
    has(
        &err("[states]\nx = 1\n"),
        &["missing required table [model]"],
    );
}

#[test]
fn reserved_names_and_bad_event_phase() {
    has(
        &err("[model]\ntype = \"map\"\n[states]\nx = 1.0\n[params]\npi = 3.0\n[equations.rhs]\nx = \"x\"\n"),
        &["'pi' is reserved"],
    );
    has(
        &err(&format!(
            "{HEAD}[equations.rhs]\nx = \"-x\"\n[events.e]\ncond = \"x > 1\"\nphase = \"pre\"\n"
        )),
        &["deprecated", "start"],
    );
}

#[test]
fn derivative_notation_in_a_map_and_bad_action_target() {
    has(
        &err("[model]\ntype = \"map\"\n[states]\nx = 1.0\n[equations]\nexpr = \"dx = x/2\"\n"),
        &["derivative notation", "map"],
    );
    has(
        &err(&format!("{HEAD}[aux]\nq = \"x\"\n[equations.rhs]\nx = \"-x\"\n[events.e]\ncond = \"x > 1\"\naction = \"q = 0\"\n")),
        &["only states and params", "'q'"],
    );
}

#[test]
fn numeric_values_are_constant_arithmetic() {
    let m = Model::from_toml("[model]\ntype=\"ode\"\n[constants]\nk = \"2*pi\"\n[states]\nx = \"k/2\"\n[equations.rhs]\nx = \"0\"\n").unwrap();
    assert_eq!(m.state_init[0], std::f64::consts::PI);
    has(
        &err("[model]\ntype=\"ode\"\n[states]\nx = \"sqrt(2)\"\n[equations.rhs]\nx = \"0\"\n"),
        &["[states].x", "function call 'sqrt'"],
    );
}

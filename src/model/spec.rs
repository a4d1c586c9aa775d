//! The model language: TOML text → a validated, ordered `ModelSpec`.
//!
//! This layer checks structure (tables, keys, types, names) and evaluates the numeric-literal
//! values of `[constants]`, `[states]` and `[params]`. Expressions stay as text here; the
//! compiler (`compile.rs`) parses and resolves them, so every expression error is reported with
//! the TOML key it came from.

use serde::Serialize;
use toml::{Table, Value};

use super::expr::ast::{BinaryOp, Expr, UnaryOp};
use super::expr::parser;
use crate::error::{suggestion_suffix, Error, Result};

/// Continuous-time (ODE) or discrete-time (map) model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    Ode,
    Map,
}

impl ModelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelKind::Ode => "ode",
            ModelKind::Map => "map",
        }
    }
}

/// When an event is tested within a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventPhase {
    /// Before the step, at the committed state.
    Start,
    /// After the step, on the proposed state, before it is committed.
    End,
    /// Both.
    Both,
}

impl EventPhase {
    pub fn in_start(self) -> bool {
        matches!(self, EventPhase::Start | EventPhase::Both)
    }
    pub fn in_end(self) -> bool {
        matches!(self, EventPhase::End | EventPhase::Both)
    }
}

/// An expression with the place it came from, for error messages.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Source {
    /// Where in the TOML document, e.g. `[equations.rhs].x` or `[events.reset].cond`.
    pub location: String,
    pub text: String,
}

/// One state equation: derivative (ODE) or next value (map).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Equation {
    pub state: usize,
    pub expr: Source,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FunctionSpec {
    pub name: String,
    pub args: Vec<String>,
    pub expr: Source,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventSpec {
    pub name: String,
    pub phase: EventPhase,
    pub cond: Source,
    /// Sequential assignments `target = expr`; a later line sees earlier assignments.
    pub actions: Vec<(String, Source)>,
    /// Logged fields: `t`, a state/param/aux name, or `state:x`, `param:p`, `aux:a`.
    pub log: Vec<String>,
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PresetSpec {
    pub name: String,
    pub params: Vec<(String, f64)>,
    pub states: Vec<(String, f64)>,
}

/// `[sim]` defaults.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimDefaults {
    pub t0: f64,
    pub t_end: f64,
    pub dt: f64,
    pub stepper: String,
    pub record: bool,
    pub atol: f64,
    pub rtol: f64,
    pub max_steps: u64,
    pub stop: Option<Source>,
    /// Any other numeric key: a stepper-config default (e.g. `max_factor = 3.0`).
    pub extra: Vec<(String, f64)>,
}

/// A fully structured model, in declaration order. Its canonical JSON form is what the spec
/// hash is computed over.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelSpec {
    pub kind: ModelKind,
    pub name: String,
    pub dtype: String,
    pub constants: Vec<(String, f64)>,
    pub states: Vec<(String, f64)>,
    pub params: Vec<(String, f64)>,
    pub equations: Vec<Equation>,
    pub jacobian: Option<Vec<Vec<Source>>>,
    pub aux: Vec<(String, Source)>,
    pub functions: Vec<FunctionSpec>,
    pub events: Vec<EventSpec>,
    pub sim: SimDefaults,
    pub presets: Vec<PresetSpec>,
}

const RESERVED: [&str; 3] = ["t", "pi", "e"];

/// Parses and structurally validates a model from TOML text.
pub fn parse_model(text: &str) -> Result<ModelSpec> {
    let doc: Table = text
        .parse::<Table>()
        .map_err(|e| Error::model(format!("TOML syntax error: {e}")))?;
    ModelBuilder::default().build(&doc)
}

#[derive(Default)]
struct ModelBuilder {
    constants: Vec<(String, f64)>,
}

fn table<'a>(doc: &'a Table, key: &str) -> Result<Option<&'a Table>> {
    match doc.get(key) {
        None => Ok(None),
        Some(Value::Table(t)) => Ok(Some(t)),
        Some(other) => Err(Error::model(format!(
            "[{key}] must be a table, found {}",
            other.type_str()
        ))),
    }
}

fn string_at(v: &Value, location: &str) -> Result<String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        other => Err(Error::model(format!(
            "{location} must be a string expression, found {}",
            other.type_str()
        ))),
    }
}

fn number_at(v: &Value, location: &str) -> Result<f64> {
    match v {
        Value::Integer(i) => Ok(*i as f64),
        Value::Float(f) => Ok(*f),
        other => Err(Error::model(format!(
            "{location} must be a number, found {}",
            other.type_str()
        ))),
    }
}

fn string_list(v: &Value, location: &str) -> Result<Vec<String>> {
    let arr = v.as_array().ok_or_else(|| {
        Error::model(format!(
            "{location} must be a list of strings, found {}",
            v.type_str()
        ))
    })?;
    arr.iter()
        .map(|x| {
            x.as_str().map(str::to_string).ok_or_else(|| {
                Error::model(format!(
                    "{location} must be a list of strings, found an entry of type {}",
                    x.type_str()
                ))
            })
        })
        .collect()
}

fn check_unknown_keys(t: &Table, allowed: &[&str], location: &str) -> Result<()> {
    for key in t.keys() {
        if !allowed.contains(&key.as_str()) {
            return Err(Error::model(format!(
                "unknown key '{key}' in {location}{}; allowed keys: {}",
                suggestion_suffix(key, allowed.iter().copied()),
                allowed.join(", ")
            )));
        }
    }
    Ok(())
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl ModelBuilder {
    fn build(mut self, doc: &Table) -> Result<ModelSpec> {
        let model =
            table(doc, "model")?.ok_or_else(|| Error::model("missing required table [model]"))?;
        if model.contains_key("label") {
            return Err(Error::model(
                "[model].label is no longer supported; use [model].name",
            ));
        }
        let kind = match model.get("type") {
            Some(Value::String(s)) if s == "ode" => ModelKind::Ode,
            Some(Value::String(s)) if s == "map" => ModelKind::Map,
            Some(Value::String(s)) => {
                return Err(Error::model(format!(
                    "[model].type must be \"ode\" or \"map\", found \"{s}\""
                )))
            }
            Some(other) => {
                return Err(Error::model(format!(
                    "[model].type must be the string \"ode\" or \"map\", found {}",
                    other.type_str()
                )))
            }
            None => {
                return Err(Error::model(
                    "[model].type is required (\"ode\" or \"map\")",
                ))
            }
        };
        let name = match model.get("name") {
            None => String::new(),
            Some(v) => string_at(v, "[model].name")?,
        };
        let dtype = match model.get("dtype") {
            None => "float64".to_string(),
            Some(v) => {
                let d = string_at(v, "[model].dtype")?;
                match d.as_str() {
                    "float64" | "float" | "double" | "f64" => "float64".to_string(),
                    _ => {
                        return Err(Error::model(format!(
                            "[model].dtype '{d}' is not supported: this library computes in \
                             float64 only (write dtype = \"float64\" or leave it out)"
                        )))
                    }
                }
            }
        };

        // Constants first: states and params may refer to them.
        if let Some(c) = table(doc, "constants")? {
            for (k, v) in c {
                let loc = format!("[constants].{k}");
                let value = self.numeric_value(v, &loc)?;
                self.constants.push((k.clone(), value));
            }
        }
        let states_t =
            table(doc, "states")?.ok_or_else(|| Error::model("missing required table [states]"))?;
        if states_t.is_empty() {
            return Err(Error::model("[states] must declare at least one state"));
        }
        let mut states = Vec::new();
        for (k, v) in states_t {
            states.push((k.clone(), self.numeric_value(v, &format!("[states].{k}"))?));
        }
        let mut params = Vec::new();
        if let Some(p) = table(doc, "params")? {
            for (k, v) in p {
                params.push((k.clone(), self.numeric_value(v, &format!("[params].{k}"))?));
            }
        }

        let mut aux = Vec::new();
        if let Some(a) = table(doc, "aux")? {
            for (k, v) in a {
                let loc = format!("[aux].{k}");
                aux.push((
                    k.clone(),
                    Source {
                        text: string_at(v, &loc)?,
                        location: loc,
                    },
                ));
            }
        }

        let mut functions = Vec::new();
        if let Some(f) = table(doc, "functions")? {
            for (k, v) in f {
                functions.push(parse_function(k, v)?);
            }
        }

        let state_names: Vec<&str> = states.iter().map(|(n, _)| n.as_str()).collect();
        let (equations, jacobian) = parse_equations(doc, kind, &state_names)?;

        let mut events = Vec::new();
        if let Some(e) = table(doc, "events")? {
            for (k, v) in e {
                events.push(parse_event(k, v)?);
            }
        }

        let sim = parse_sim(table(doc, "sim")?, kind)?;

        let mut presets = Vec::new();
        if let Some(p) = table(doc, "presets")? {
            for (k, v) in p {
                presets.push(parse_preset(k, v)?);
            }
        }

        let spec = ModelSpec {
            kind,
            name,
            dtype,
            constants: self.constants,
            states,
            params,
            equations,
            jacobian,
            aux,
            functions,
            events,
            sim,
            presets,
        };
        check_names(&spec)?;
        Ok(spec)
    }

    /// A number, or a string holding constant arithmetic over numbers, `pi`, `e` and constants
    /// declared earlier.
    fn numeric_value(&self, v: &Value, location: &str) -> Result<f64> {
        match v {
            Value::Integer(_) | Value::Float(_) => number_at(v, location),
            Value::Boolean(b) => Ok(f64::from(u8::from(*b))),
            Value::String(s) => {
                if s.trim().is_empty() {
                    return Err(Error::model(format!("{location} is an empty string")));
                }
                let expr = parser::parse(s).map_err(|e| {
                    Error::model(format!("{location}: {}", parser::render_error(s, &e)))
                })?;
                self.eval_constant(&expr, s, location)
            }
            other => Err(Error::model(format!(
                "{location} must be a number or a numeric expression string, found {}",
                other.type_str()
            ))),
        }
    }

    fn eval_constant(&self, e: &Expr, text: &str, location: &str) -> Result<f64> {
        let fail = |msg: String| Error::model(format!("{location}: {msg} in '{text}'"));
        Ok(match e {
            Expr::Number(x) => *x,
            Expr::Bool(b) => f64::from(u8::from(*b)),
            Expr::Name { name, span } => match name.as_str() {
                "pi" => std::f64::consts::PI,
                "e" => std::f64::consts::E,
                _ => match self.constants.iter().find(|(n, _)| n == name) {
                    Some((_, v)) => *v,
                    None => {
                        let known: Vec<&str> = ["pi", "e"]
                            .into_iter()
                            .chain(self.constants.iter().map(|(n, _)| n.as_str()))
                            .collect();
                        return Err(fail(format!(
                            "unknown identifier '{name}' at column {}{}; a numeric value may use \
                             numbers, pi, e and constants declared before it ({})",
                            span.col,
                            suggestion_suffix(name, known.iter().copied()),
                            known.join(", ")
                        )));
                    }
                },
            },
            Expr::Unary { op, operand } => {
                let x = self.eval_constant(operand, text, location)?;
                match op {
                    UnaryOp::Neg => -x,
                    UnaryOp::Plus => x,
                    UnaryOp::Not => {
                        return Err(fail("'not' is not allowed in a numeric value".into()))
                    }
                }
            }
            Expr::Chain { first, rest } => {
                let mut a = self.eval_constant(first, text, location)?;
                for (op, rhs) in rest {
                    let b = self.eval_constant(rhs, text, location)?;
                    a = constant_binop(*op, a, b).map_err(fail)?;
                }
                a
            }
            Expr::Binary { op, lhs, rhs } => {
                let a = self.eval_constant(lhs, text, location)?;
                let b = self.eval_constant(rhs, text, location)?;
                constant_binop(*op, a, b).map_err(fail)?
            }
            Expr::Call { name, span, .. } => {
                return Err(fail(format!(
                    "function call '{name}' at column {} is not allowed; numeric values are \
                     arithmetic over numbers and constants",
                    span.col
                )))
            }
            Expr::Compare { .. } | Expr::IfElse { .. } => {
                return Err(fail(
                    "comparisons and conditionals are not allowed in a numeric value".into(),
                ))
            }
        })
    }
}

fn constant_binop(op: BinaryOp, a: f64, b: f64) -> std::result::Result<f64, String> {
    Ok(match op {
        BinaryOp::Add => a + b,
        BinaryOp::Sub => a - b,
        BinaryOp::Mul => a * b,
        BinaryOp::Div | BinaryOp::FloorDiv | BinaryOp::Mod if b == 0.0 => {
            return Err("division by zero".into())
        }
        BinaryOp::Div => a / b,
        BinaryOp::FloorDiv => super::program::py_floordiv(a, b),
        BinaryOp::Mod => super::program::py_mod(a, b),
        BinaryOp::Pow => a.powf(b),
        BinaryOp::And | BinaryOp::Or => {
            return Err("'and'/'or' are not allowed in a numeric value".into())
        }
    })
}

fn parse_function(name: &str, v: &Value) -> Result<FunctionSpec> {
    let loc = format!("[functions.{name}]");
    let t = v
        .as_table()
        .ok_or_else(|| Error::model(format!("{loc} must be a table with args and expr")))?;
    check_unknown_keys(t, &["args", "expr"], &loc)?;
    let args = match t.get("args") {
        None => Vec::new(),
        Some(a) => string_list(a, &format!("{loc}.args"))?,
    };
    for (i, a) in args.iter().enumerate() {
        if !is_identifier(a) {
            return Err(Error::model(format!(
                "{loc}.args: '{a}' is not a valid identifier"
            )));
        }
        if args[..i].contains(a) {
            return Err(Error::model(format!(
                "{loc}.args: argument '{a}' is listed twice"
            )));
        }
    }
    let expr = t
        .get("expr")
        .ok_or_else(|| Error::model(format!("{loc}.expr is required")))?;
    Ok(FunctionSpec {
        name: name.to_string(),
        args,
        expr: Source {
            text: string_at(expr, &format!("{loc}.expr"))?,
            location: format!("{loc}.expr"),
        },
    })
}

/// Splits a block of `target = expr` lines. Blank lines and `#` comment lines are skipped.
fn block_lines(text: &str, location: &str) -> Result<Vec<(String, String, usize)>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let (target, expr) = parser::split_assignment(trimmed).ok_or_else(|| {
            Error::model(format!(
                "{location}, line {}: '{trimmed}' must have the form 'target = expression'",
                i + 1
            ))
        })?;
        out.push((target.trim().to_string(), expr.trim().to_string(), i + 1));
    }
    Ok(out)
}

/// Resolves the left-hand side of a block equation line to a state index.
fn equation_target(
    target: &str,
    kind: ModelKind,
    states: &[&str],
    location: &str,
) -> Result<usize> {
    let find = |n: &str| states.iter().position(|s| *s == n);
    if let Some(i) = find(target) {
        return Ok(i);
    }
    let derivative = target
        .strip_prefix("d(")
        .and_then(|r| r.strip_suffix(')'))
        .map(str::trim)
        .or_else(|| target.strip_prefix('d'));
    if let Some(inner) = derivative {
        if let Some(i) = find(inner) {
            if kind == ModelKind::Map {
                return Err(Error::model(format!(
                    "{location}: '{target}' uses derivative notation, but a map's equations \
                     give the next value: write '{inner} = ...'"
                )));
            }
            return Ok(i);
        }
    }
    Err(Error::model(format!(
        "{location}: equation for '{target}', which is not a declared state{}; states: {}",
        suggestion_suffix(target, states.iter().copied()),
        states.join(", ")
    )))
}

type Jacobian = Option<Vec<Vec<Source>>>;

fn parse_equations(
    doc: &Table,
    kind: ModelKind,
    states: &[&str],
) -> Result<(Vec<Equation>, Jacobian)> {
    let eq = table(doc, "equations")?
        .ok_or_else(|| Error::model("missing required table [equations]"))?;
    if eq.contains_key("exprs") {
        return Err(Error::model(
            "unknown key 'exprs' in [equations]: the key is singular, 'expr'",
        ));
    }
    check_unknown_keys(eq, &["rhs", "expr", "jacobian"], "[equations]")?;
    let mut equations: Vec<Equation> = Vec::new();
    let mut defined_at: Vec<Option<String>> = vec![None; states.len()];
    let mut define = |state: usize, location: String, text: String| -> Result<()> {
        if let Some(prev) = &defined_at[state] {
            return Err(Error::model(format!(
                "state '{}' has two equations: {prev} and {location}",
                states[state]
            )));
        }
        defined_at[state] = Some(location.clone());
        equations.push(Equation {
            state,
            expr: Source { location, text },
        });
        Ok(())
    };
    if let Some(rhs) = eq.get("rhs") {
        let rhs = rhs.as_table().ok_or_else(|| {
            Error::model("[equations.rhs] must be a table of state = \"expression\"")
        })?;
        for (k, v) in rhs {
            let loc = format!("[equations.rhs].{k}");
            let Some(i) = states.iter().position(|s| s == k) else {
                return Err(Error::model(format!(
                    "{loc}: equation for '{k}', which is not a declared state{}; states: {}",
                    suggestion_suffix(k, states.iter().copied()),
                    states.join(", ")
                )));
            };
            define(i, loc.clone(), string_at(v, &loc)?)?;
        }
    }
    if let Some(block) = eq.get("expr") {
        let text = string_at(block, "[equations].expr")?;
        for (target, expr, line) in block_lines(&text, "[equations].expr")? {
            let loc = format!("[equations].expr line {line} ({target})");
            let i = equation_target(&target, kind, states, &loc)?;
            define(i, loc, expr)?;
        }
    }
    if let Some((i, _)) = defined_at.iter().enumerate().find(|(_, d)| d.is_none()) {
        return Err(Error::model(format!(
            "state '{}' has no equation: give it one in [equations.rhs] or [equations].expr{}",
            states[i],
            if kind == ModelKind::Ode {
                " (write \"0\" for a constant state)"
            } else {
                ""
            }
        )));
    }
    // Equations are evaluated in state order whatever the order they were written in.
    equations.sort_by_key(|e| e.state);

    let jacobian = match eq.get("jacobian") {
        None => None,
        Some(j) => {
            let j = j
                .as_table()
                .ok_or_else(|| Error::model("[equations.jacobian] must be a table with 'expr'"))?;
            if j.contains_key("exprs") {
                return Err(Error::model(
                    "unknown key 'exprs' in [equations.jacobian]: the key is singular, 'expr'",
                ));
            }
            check_unknown_keys(j, &["expr"], "[equations.jacobian]")?;
            let rows = j
                .get("expr")
                .and_then(Value::as_array)
                .ok_or_else(|| Error::model("[equations.jacobian].expr must be a list of rows"))?;
            let n = states.len();
            if rows.len() != n {
                return Err(Error::model(format!(
                    "[equations.jacobian].expr has {} rows; the model has {n} states",
                    rows.len()
                )));
            }
            let mut out = Vec::with_capacity(n);
            for (i, row) in rows.iter().enumerate() {
                let row = row.as_array().ok_or_else(|| {
                    Error::model(format!("[equations.jacobian].expr row {i} is not a list"))
                })?;
                if row.len() != n {
                    return Err(Error::model(format!(
                        "[equations.jacobian].expr row {i} has {} entries; the model has {n} states",
                        row.len()
                    )));
                }
                let mut r = Vec::with_capacity(n);
                for (jx, v) in row.iter().enumerate() {
                    let location = format!("[equations.jacobian].expr[{i}][{jx}]");
                    let text = match v {
                        Value::String(s) => s.clone(),
                        Value::Integer(x) => format!("{x}"),
                        Value::Float(x) => format!("{x:?}"),
                        other => {
                            return Err(Error::model(format!(
                                "{location} must be a string or number, found {}",
                                other.type_str()
                            )))
                        }
                    };
                    r.push(Source { location, text });
                }
                out.push(r);
            }
            Some(out)
        }
    };
    Ok((equations, jacobian))
}

fn parse_event(name: &str, v: &Value) -> Result<EventSpec> {
    let loc = format!("[events.{name}]");
    let t = v
        .as_table()
        .ok_or_else(|| Error::model(format!("{loc} must be a table")))?;
    if t.contains_key("record") {
        return Err(Error::model(format!(
            "{loc}.record is not supported; use log = [\"t\", ...] to log values when the \
             event fires"
        )));
    }
    check_unknown_keys(t, &["cond", "phase", "action", "log", "tags"], &loc)?;
    let cond = t
        .get("cond")
        .ok_or_else(|| Error::model(format!("{loc}.cond is required")))?;
    let cond = Source {
        text: string_at(cond, &format!("{loc}.cond"))?,
        location: format!("{loc}.cond"),
    };
    let phase = match t.get("phase") {
        None => EventPhase::End,
        Some(p) => match string_at(p, &format!("{loc}.phase"))?.as_str() {
            "start" => EventPhase::Start,
            "end" => EventPhase::End,
            "both" => EventPhase::Both,
            old @ ("pre" | "post") => {
                return Err(Error::model(format!(
                    "{loc}.phase '{old}' is deprecated; use \"{}\"",
                    if old == "pre" { "start" } else { "end" }
                )))
            }
            other => {
                return Err(Error::model(format!(
                    "{loc}.phase must be \"start\", \"end\" or \"both\", found \"{other}\""
                )))
            }
        },
    };
    let mut actions = Vec::new();
    match t.get("action") {
        None => {}
        Some(Value::String(block)) => {
            for (target, expr, line) in block_lines(block, &format!("{loc}.action"))? {
                actions.push((
                    target.clone(),
                    Source {
                        location: format!("{loc}.action line {line} ({target})"),
                        text: expr,
                    },
                ));
            }
        }
        Some(Value::Table(keyed)) => {
            for (target, v) in keyed {
                let l = format!("{loc}.action.{target}");
                actions.push((
                    target.clone(),
                    Source {
                        text: string_at(v, &l)?,
                        location: l,
                    },
                ));
            }
        }
        Some(other) => {
            return Err(Error::model(format!(
                "{loc}.action must be a string block or a table, found {}",
                other.type_str()
            )))
        }
    }
    let log = match t.get("log") {
        None => Vec::new(),
        Some(l) => string_list(l, &format!("{loc}.log"))?,
    };
    let mut tags = match t.get("tags") {
        None => Vec::new(),
        Some(l) => string_list(l, &format!("{loc}.tags"))?,
    };
    for tag in &tags {
        let ok = tag
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && tag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !ok {
            return Err(Error::model(format!(
                "{loc}.tags: '{tag}' is not a valid tag (letters, digits, '_' and '-', not \
                 starting with a digit or '-')"
            )));
        }
    }
    tags.sort();
    tags.dedup();
    Ok(EventSpec {
        name: name.to_string(),
        phase,
        cond,
        actions,
        log,
        tags,
    })
}

fn parse_sim(t: Option<&Table>, kind: ModelKind) -> Result<SimDefaults> {
    let mut sim = SimDefaults {
        t0: 0.0,
        t_end: 1.0,
        dt: 0.01,
        stepper: match kind {
            ModelKind::Ode => "rk4".into(),
            ModelKind::Map => "map".into(),
        },
        record: true,
        atol: 1e-8,
        rtol: 1e-5,
        max_steps: 1_000_000,
        stop: None,
        extra: Vec::new(),
    };
    let Some(t) = t else { return Ok(sim) };
    for (k, v) in t {
        let loc = format!("[sim].{k}");
        match k.as_str() {
            "t0" => sim.t0 = number_at(v, &loc)?,
            "t_end" => sim.t_end = number_at(v, &loc)?,
            "dt" => {
                sim.dt = number_at(v, &loc)?;
                if !(sim.dt > 0.0 && sim.dt.is_finite()) {
                    return Err(Error::model(format!("{loc} must be positive and finite")));
                }
            }
            "atol" => sim.atol = number_at(v, &loc)?,
            "rtol" => sim.rtol = number_at(v, &loc)?,
            "stepper" => sim.stepper = string_at(v, &loc)?,
            "record" => {
                sim.record = v
                    .as_bool()
                    .ok_or_else(|| Error::model(format!("{loc} must be true or false")))?
            }
            "max_steps" => {
                let n = v
                    .as_integer()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| Error::model(format!("{loc} must be a positive integer")))?;
                sim.max_steps = n as u64;
            }
            "stop" => {
                let (cond, phase) = match v {
                    Value::String(s) => (s.clone(), "post".to_string()),
                    Value::Table(st) => {
                        check_unknown_keys(st, &["cond", "phase"], "[sim.stop]")?;
                        let c = st
                            .get("cond")
                            .ok_or_else(|| Error::model("[sim.stop].cond is required"))?;
                        let p = match st.get("phase") {
                            None => "post".to_string(),
                            Some(p) => string_at(p, "[sim.stop].phase")?,
                        };
                        (string_at(c, "[sim.stop].cond")?, p)
                    }
                    other => {
                        return Err(Error::model(format!(
                            "[sim].stop must be a condition string or a table, found {}",
                            other.type_str()
                        )))
                    }
                };
                if phase != "post" && phase != "end" {
                    return Err(Error::model(format!(
                        "[sim.stop].phase must be \"post\" (tested after each committed step), \
                         found \"{phase}\""
                    )));
                }
                if cond.trim().is_empty() {
                    return Err(Error::model("[sim.stop].cond is empty"));
                }
                sim.stop = Some(Source {
                    location: "[sim].stop".into(),
                    text: cond,
                });
            }
            _ => match v {
                Value::Integer(_) | Value::Float(_) => {
                    sim.extra.push((k.clone(), number_at(v, &loc)?))
                }
                Value::String(s) => {
                    // Enumerated stepper knobs, e.g. jacobian_mode = "external".
                    let x = match s.as_str() {
                        "internal" => 0.0,
                        "external" => 1.0,
                        _ => {
                            return Err(Error::model(format!(
                                "{loc}: extra [sim] keys are stepper-config defaults and must \
                                 be numbers, found the string \"{s}\""
                            )))
                        }
                    };
                    sim.extra.push((k.clone(), x));
                }
                other => {
                    return Err(Error::model(format!(
                        "{loc}: extra [sim] keys are stepper-config defaults and must be \
                         numbers, found {}",
                        other.type_str()
                    )))
                }
            },
        }
    }
    Ok(sim)
}

fn parse_preset(name: &str, v: &Value) -> Result<PresetSpec> {
    let loc = format!("[presets.{name}]");
    let t = v
        .as_table()
        .ok_or_else(|| Error::model(format!("{loc} must be a table")))?;
    check_unknown_keys(t, &["params", "states"], &loc)?;
    let read = |key: &str| -> Result<Vec<(String, f64)>> {
        match t.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Table(vals)) => vals
                .iter()
                .map(|(k, v)| Ok((k.clone(), number_at(v, &format!("{loc}.{key}.{k}"))?)))
                .collect(),
            Some(other) => Err(Error::model(format!(
                "{loc}.{key} must be a table, found {}",
                other.type_str()
            ))),
        }
    };
    let p = PresetSpec {
        name: name.to_string(),
        params: read("params")?,
        states: read("states")?,
    };
    if p.params.is_empty() && p.states.is_empty() {
        return Err(Error::model(format!("{loc} is empty")));
    }
    Ok(p)
}

/// Reserved, duplicate and preset names.
fn check_names(spec: &ModelSpec) -> Result<()> {
    let mut seen: Vec<(&str, &str)> = Vec::new();
    let groups: [(&str, Vec<&str>); 5] = [
        (
            "constants",
            spec.constants.iter().map(|(n, _)| n.as_str()).collect(),
        ),
        (
            "states",
            spec.states.iter().map(|(n, _)| n.as_str()).collect(),
        ),
        (
            "params",
            spec.params.iter().map(|(n, _)| n.as_str()).collect(),
        ),
        ("aux", spec.aux.iter().map(|(n, _)| n.as_str()).collect()),
        (
            "functions",
            spec.functions.iter().map(|f| f.name.as_str()).collect(),
        ),
    ];
    for (group, names) in &groups {
        for name in names {
            if RESERVED.contains(name) {
                return Err(Error::model(format!(
                    "[{group}].{name}: '{name}' is reserved (t, pi and e are built in)"
                )));
            }
            if !is_identifier(name) {
                return Err(Error::model(format!(
                    "[{group}].{name}: '{name}' is not a valid identifier"
                )));
            }
            if name.starts_with("lag_") {
                return Err(Error::model(format!(
                    "[{group}].{name}: names starting with 'lag_' are reserved for lagged values"
                )));
            }
            if let Some((other, _)) = seen.iter().find(|(n, _)| n == name).map(|(_, g)| (*g, ())) {
                return Err(Error::model(format!(
                    "duplicate name '{name}': declared in [{other}] and in [{group}]"
                )));
            }
            seen.push((name, group));
        }
    }
    for p in &spec.presets {
        for (k, _) in &p.params {
            if !spec.params.iter().any(|(n, _)| n == k) {
                return Err(Error::model(format!(
                    "[presets.{}].params.{k}: '{k}' is not a declared parameter{}",
                    p.name,
                    suggestion_suffix(k, spec.params.iter().map(|(n, _)| n.as_str()))
                )));
            }
        }
        for (k, _) in &p.states {
            if !spec.states.iter().any(|(n, _)| n == k) {
                return Err(Error::model(format!(
                    "[presets.{}].states.{k}: '{k}' is not a declared state{}",
                    p.name,
                    suggestion_suffix(k, spec.states.iter().map(|(n, _)| n.as_str()))
                )));
            }
        }
    }
    Ok(())
}

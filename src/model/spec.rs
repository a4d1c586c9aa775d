//! The model language: TOML text → a validated, ordered `ModelSpec`.
//!
//! This layer checks structure (tables, keys, types, names) and evaluates the numeric-literal
//! values of `[constants]`, `[states]` and `[params]`. Expressions stay as text here; the
//! compiler (`compile.rs`) parses and resolves them, so every expression error is reported with
//! the TOML key it came from.

use super::toml_pieces::{Bulk, Entries};
use serde::Serialize;
use toml::{Table, Value};

use super::expr::ast::{BinaryOp, Expr, UnaryOp};
use super::expr::parser;
use super::names::{first_positions, NameIndex};
use super::pos::{DocIndex, Origin};
use crate::error::{did_you_mean, shorten, suggestion_suffix, Diagnostic, Error, Result};
// Seeded fast hashing: every declared name is hashed once or twice per load.
use foldhash::{HashMap, HashMapExt, HashSet};
use std::sync::Arc;

pub use crate::method::ModelKind;

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
    /// Where the text sits in the file (not part of the spec's identity or hash).
    #[serde(skip)]
    pub origin: Origin,
}

impl Source {
    /// An expression without a file position.
    pub fn new(location: impl Into<String>, text: impl Into<String>) -> Source {
        Source {
            location: location.into(),
            text: text.into(),
            origin: Origin::default(),
        }
    }
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
    #[serde(serialize_with = "hash_floats::named")]
    pub params: Vec<(String, f64)>,
    #[serde(serialize_with = "hash_floats::named")]
    pub states: Vec<(String, f64)>,
}

/// `[sim]` defaults.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimDefaults {
    #[serde(serialize_with = "hash_floats::one")]
    pub t0: f64,
    #[serde(serialize_with = "hash_floats::one")]
    pub t_end: f64,
    #[serde(serialize_with = "hash_floats::one")]
    pub dt: f64,
    pub stepper: String,
    pub record: bool,
    #[serde(serialize_with = "hash_floats::one")]
    pub atol: f64,
    #[serde(serialize_with = "hash_floats::one")]
    pub rtol: f64,
    pub max_steps: u64,
    pub stop: Option<Source>,
    /// Any other numeric key: a stepper-config default (e.g. `max_factor = 3.0`).
    #[serde(serialize_with = "hash_floats::named")]
    pub extra: Vec<(String, f64)>,
}

impl SimDefaults {
    /// The config vector a stepper starts with for this model: knob defaults, overridden by
    /// `[sim]` atol/rtol and any extra `[sim]` key with a knob's name.
    pub fn stepper_config(&self, info: &crate::stepper::StepperInfo) -> Vec<f64> {
        info.config
            .iter()
            .map(|k| match k.name {
                "atol" => self.atol,
                "rtol" => self.rtol,
                name => self
                    .extra
                    .iter()
                    .find(|(n, _)| n == name)
                    .map_or(k.default, |(_, v)| *v),
            })
            .collect()
    }
}

/// A fully structured model, in declaration order. Its canonical JSON form is what the spec
/// hash is computed over.
///
/// Every `f64` in it (here and in the types it holds) must be serialised with
/// [`hash_floats`]: serde_json writes NaN, inf and -inf all as `null`, which would give models
/// that compute differently the same hash (and the same cached native code).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelSpec {
    pub kind: ModelKind,
    pub name: String,
    pub dtype: String,
    #[serde(serialize_with = "hash_floats::named")]
    pub constants: Vec<(String, f64)>,
    #[serde(serialize_with = "hash_floats::named")]
    pub states: Vec<(String, f64)>,
    #[serde(serialize_with = "hash_floats::named")]
    pub params: Vec<(String, f64)>,
    pub equations: Vec<Equation>,
    pub jacobian: Option<Vec<Vec<Source>>>,
    pub aux: Vec<(String, Source)>,
    pub functions: Vec<FunctionSpec>,
    pub events: Vec<EventSpec>,
    pub sim: SimDefaults,
    pub presets: Vec<PresetSpec>,
    /// Names of the mods applied, in order (empty for the base model; part of the hash).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mods: Vec<String>,
}

/// Serialisation of floats for the canonical (hashed) form of a spec: finite values as JSON
/// numbers (serde_json prints the shortest text that reads back to the same bits, and keeps the
/// sign of zero), non-finite ones as strings carrying their bit pattern (`"inf"`, `"-inf"`,
/// `"NaN:0x7ff8000000000000"`). A string never equals a number, so the form is injective on
/// float bit patterns, and hashes of models with only finite values are unchanged.
pub(crate) mod hash_floats {
    use serde::ser::{SerializeSeq, SerializeTuple, Serializer};

    /// The serialisable stand-in of one float.
    pub(crate) enum Canonical {
        Number(f64),
        Text(String),
    }

    pub(crate) fn canonical(v: f64) -> Canonical {
        if v.is_finite() {
            Canonical::Number(v)
        } else if v.is_nan() {
            Canonical::Text(format!("NaN:{:#018x}", v.to_bits()))
        } else if v > 0.0 {
            Canonical::Text("inf".into())
        } else {
            Canonical::Text("-inf".into())
        }
    }

    impl serde::Serialize for Canonical {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            match self {
                Canonical::Number(v) => s.serialize_f64(*v),
                Canonical::Text(t) => s.serialize_str(t),
            }
        }
    }

    pub(crate) fn one<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        serde::Serialize::serialize(&canonical(*v), s)
    }

    /// `[(name, value), …]`, as serde writes a `Vec<(String, f64)>`: a list of 2-lists.
    pub(crate) fn named<S: Serializer>(v: &[(String, f64)], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(v.len()))?;
        for (name, x) in v {
            seq.serialize_element(&Pair(name, *x))?;
        }
        seq.end()
    }

    struct Pair<'a>(&'a str, f64);

    impl serde::Serialize for Pair<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut t = s.serialize_tuple(2)?;
            t.serialize_element(self.0)?;
            t.serialize_element(&canonical(self.1))?;
            t.end()
        }
    }
}

const RESERVED: [&str; 3] = ["t", "pi", "e"];

/// Python keywords and the language's literal names: never names of model variables.
const KEYWORDS: [&str; 38] = [
    "and", "or", "not", "if", "else", "elif", "True", "False", "None", "true", "false", "lambda",
    "is", "in", "for", "while", "def", "class", "return", "import", "from", "as", "with", "pass",
    "break", "continue", "del", "global", "nonlocal", "assert", "yield", "try", "except",
    "finally", "raise", "async", "await", "match",
];

/// The tables a model file may have.
const TOP_LEVEL: [&str; 12] = [
    "model",
    "states",
    "params",
    "constants",
    "equations",
    "aux",
    "functions",
    "events",
    "presets",
    "sim",
    "mod",
    "mods",
];

/// The keys of `[sim]` other than stepper knobs.
const SIM_KEYS: [&str; 9] = [
    "t0",
    "t_end",
    "dt",
    "stepper",
    "record",
    "atol",
    "rtol",
    "max_steps",
    "stop",
];

/// Parses and structurally validates a model from TOML text; the error lists every problem
/// found (with file positions).
pub fn parse_model(text: &str) -> Result<ModelSpec> {
    let parsed = parse_lenient(text, None)?;
    if parsed.errors.is_empty() {
        parsed
            .spec
            .ok_or_else(|| Error::internal("a model without errors has a spec"))
    } else {
        Err(Error::from_diagnostics(parsed.errors))
    }
}

/// The result of reading a model that may have errors: the spec as far as it could be built
/// (items with errors left out or given placeholders), every problem found, and the names
/// whose declarations failed (uses of them are not reported again).
pub struct Parsed {
    pub spec: Option<ModelSpec>,
    pub errors: Vec<Diagnostic>,
    pub poisoned: Vec<String>,
}

/// Parses `text` (with `doc` already parsed by the caller, e.g. after applying mods) and
/// collects every independent problem. Only a TOML syntax error is returned as `Err`.
pub fn parse_lenient(text: &str, doc: Option<(Table, DocIndex)>) -> Result<Parsed> {
    if doc.is_none() {
        if let Some(d) = super::toml_pieces::parse_with_bulk(text, &is_bulk_section) {
            let parsed = build_parsed(d.table, d.bulk, DocIndex::new(text));
            // Repeated keys of bulk sections are errors here too, but worded by this reader,
            // not the TOML parser: a document with any error is read again whole.
            if parsed.errors.is_empty() {
                return Ok(parsed);
            }
        }
    }
    let (doc, ix) = match doc {
        Some(d) => d,
        None => parse_toml_indexed(text)?,
    };
    Ok(build_parsed(doc, Bulk::default(), ix))
}

/// The sections whose long bodies [`ModelBuilder`] reads as bulk entries: each refuses a
/// repeated key (a state or parameter declared twice is a duplicate name, a state with two
/// equations is an error of its own).
fn is_bulk_section(path: &[String]) -> bool {
    matches!(
        path,
        [s] if s == "states" || s == "params"
    ) || matches!(path, [e, r] if e == "equations" && r == "rhs")
}

fn build_parsed(doc: Table, bulk: Bulk, ix: DocIndex) -> Parsed {
    let cx = Cx { ix: Arc::new(ix) };
    let mut b = ModelBuilder {
        constants: Vec::new(),
        constant_index: HashMap::new(),
        errors: Vec::new(),
        poisoned: Vec::new(),
        cx,
    };
    let spec = b.build(&doc, bulk);
    let mut errors: Vec<Diagnostic> = Vec::new();
    for e in b.errors {
        for d in e.diagnostics() {
            if !errors.contains(&d) {
                errors.push(d);
            }
        }
    }
    Parsed {
        spec,
        errors,
        poisoned: b.poisoned,
    }
}

/// TOML text → table and its position index, parsing the text once.
pub fn parse_toml_indexed(text: &str) -> Result<(Table, DocIndex)> {
    use serde::Deserialize;
    if let Some(table) = super::toml_pieces::parse(text) {
        return Ok((table, DocIndex::new(text)));
    }
    let Ok(parsed) = toml::de::DeTable::parse(text) else {
        // The error as `parse_toml` words it.
        return parse_toml(text).map(|t| (t, DocIndex::new(text)));
    };
    let ix = DocIndex::new(text);
    match Table::deserialize(toml::de::Deserializer::from(parsed)) {
        Ok(table) => Ok((table, ix)),
        Err(_) => parse_toml(text).map(|t| (t, ix)),
    }
}

/// TOML text → table, with the syntax error's line and column.
pub fn parse_toml(text: &str) -> Result<Table> {
    if let Some(table) = super::toml_pieces::parse(text) {
        return Ok(table);
    }
    text.parse::<Table>().map_err(|e| {
        let ix = DocIndex::new(text);
        let (line, column) = e.span().map_or((0, 0), |s| ix.line_col(s.start));
        Error::model_at(Diagnostic {
            message: format!("TOML syntax error: {}", e.message().trim_end()),
            location: String::new(),
            line,
            column,
        })
    })
}

/// Positions of the document being read.
pub(crate) struct Cx {
    pub ix: Arc<DocIndex>,
}

impl Cx {
    /// A model error at the key `path`.
    pub fn err(&self, path: &[&str], message: impl Into<String>) -> Error {
        super::pos::error_at(&self.ix, path, message.into())
    }

    /// `r`, with an error lacking a position placed at the key `path`.
    pub fn at<T>(&self, path: &[&str], r: Result<T>) -> Result<T> {
        r.map_err(|e| {
            if e.positioned().is_empty() && e.kind() == crate::error::ErrorKind::Model {
                self.err(path, e.message().to_string())
            } else {
                e
            }
        })
    }

    /// The expression string at `path` (its value must be the string `text`).
    pub fn source(&self, path: &[&str], location: String, text: String) -> Source {
        Source {
            location,
            text,
            origin: Origin {
                doc: Some(self.ix.clone()),
                path_key: Some(super::pos::key(path)),
                skip_chars: 0,
            },
        }
    }

    /// A parse error of the string value at `path`, placed at the error's column.
    pub fn parse_error(
        &self,
        path: &[&str],
        location: &str,
        text: &str,
        e: &super::expr::ast::ParseError,
    ) -> Error {
        let origin = self.source(path, String::new(), String::new()).origin;
        let (line, column) = origin.position(e.span.col);
        Error::model_at(Diagnostic {
            message: format!("{location}: {}", parser::render_error(text, e)),
            location: location.to_string(),
            line,
            column,
        })
    }
}

struct ModelBuilder {
    constants: Vec<(String, f64)>,
    /// Constant name → its index in `constants` (first declaration wins): one lookup per
    /// use, whatever the number of constants.
    constant_index: HashMap<String, usize>,
    errors: Vec<Error>,
    poisoned: Vec<String>,
    cx: Cx,
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
        other => Err(not_a_string(other, location)),
    }
}

/// [`string_at`] of an owned value (the string moves, not copied).
fn into_string_at(v: Value, location: &str) -> Result<String> {
    match v {
        Value::String(s) => Ok(s),
        other => Err(not_a_string(&other, location)),
    }
}

fn not_a_string(v: &Value, location: &str) -> Error {
    Error::model(format!(
        "{location} must be a string expression, found {}",
        v.type_str()
    ))
}

/// The value when it is a plain number (what [`ModelBuilder::numeric_value`] gives it,
/// without building the location its errors would name).
fn plain_number(v: &Value) -> Option<f64> {
    match v {
        Value::Integer(i) => Some(*i as f64),
        Value::Float(f) => Some(*f),
        _ => None,
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

fn finite_at(v: &Value, location: &str) -> Result<f64> {
    let x = number_at(v, location)?;
    if x.is_finite() {
        Ok(x)
    } else {
        Err(Error::model(format!(
            "{location} must be finite, found {x}"
        )))
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

/// Every key of `t` not in `allowed` is an error at that key, with a did-you-mean.
fn unknown_keys(cx: &Cx, t: &Table, allowed: &[&str], path: &[&str]) -> Vec<Error> {
    unknown_keys_but(cx, t, allowed, &[], path)
}

/// [`unknown_keys`], passing over the keys in `reported` too (reported elsewhere, with
/// their own message; not offered as allowed).
fn unknown_keys_but(
    cx: &Cx,
    t: &Table,
    allowed: &[&str],
    reported: &[&str],
    path: &[&str],
) -> Vec<Error> {
    let location = if path.is_empty() {
        "the model file".to_string()
    } else {
        format!("[{}]", path.join("."))
    };
    let mut out = Vec::new();
    for key in t.keys() {
        if !allowed.contains(&key.as_str()) && !reported.contains(&key.as_str()) {
            let mut p = path.to_vec();
            p.push(key);
            let what = if path.is_empty() { "table" } else { "key" };
            out.push(cx.err(
                &p,
                format!(
                    "unknown {what} '{}' in {location}{}; allowed: {}",
                    shorten(key),
                    suggestion_suffix(key, allowed.iter().copied()),
                    allowed.join(", ")
                ),
            ));
        }
    }
    out
}

fn check_unknown_keys(cx: &Cx, t: &Table, allowed: &[&str], path: &[&str]) -> Result<()> {
    match unknown_keys(cx, t, allowed, path).into_iter().next() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl ModelBuilder {
    fn keep<T>(&mut self, path: &[&str], r: Result<T>) -> Option<T> {
        match self.cx.at(path, r) {
            Ok(v) => Some(v),
            Err(e) => {
                self.errors.push(e);
                None
            }
        }
    }

    fn table<'d>(&mut self, doc: &'d Table, key: &str) -> Option<&'d Table> {
        let r = table(doc, key);
        self.keep(&[key], r).flatten()
    }

    fn build(&mut self, doc: &Table, mut bulk: Bulk) -> Option<ModelSpec> {
        let misspelt_required = self.check_top_level(doc);
        let missing = |this: &mut Self, what: &str| {
            if !misspelt_required.contains(&what) {
                this.errors
                    .push(Error::model(format!("missing required table [{what}]")));
            }
        };
        let model = self.table(doc, "model");
        if model.is_none() && !doc.contains_key("model") {
            missing(self, "model");
        }
        let empty = Table::new();
        let (kind, name, dtype) = self.model_header(doc, model.unwrap_or(&empty));
        // Constants first: states and params may refer to them.
        self.read_constants(doc);
        let states = self.read_numbers(doc, bulk.take(&["states"]), "states");
        let params = self.read_numbers(doc, bulk.take(&["params"]), "params");
        let aux = self.read_aux(doc);
        let functions = self.read_functions(doc);
        let state_names: Vec<&str> = states.iter().map(|(n, _)| n.as_str()).collect();
        let rhs = bulk.take(&["equations", "rhs"]);
        let (equations, jacobian) = match self.read_equations(doc, rhs, kind, &state_names) {
            Err(()) => {
                missing(self, "equations");
                (Vec::new(), None)
            }
            Ok(read) => read,
        };
        let events = self.read_each(doc, "events", parse_event);
        let sim_t = self.table(doc, "sim");
        let (sim, errs) = parse_sim(&self.cx, sim_t, kind);
        self.errors.extend(errs);
        let presets = self.read_each(doc, "presets", parse_preset);
        let spec = ModelSpec {
            kind,
            name,
            dtype,
            constants: {
                self.constant_index.clear();
                std::mem::take(&mut self.constants)
            },
            states,
            params,
            equations,
            jacobian,
            aux,
            functions,
            events,
            sim,
            presets,
            mods: Vec::new(),
        };
        self.check_mods(doc);
        let errs = check_names(&self.cx, &spec);
        self.errors.extend(errs);
        Some(spec)
    }

    /// Unknown top-level tables are errors; the names declared under one are not reported
    /// again where they are used. Returns the required tables those names may stand for
    /// (not reported missing as well).
    fn check_top_level(&mut self, doc: &Table) -> Vec<&'static str> {
        let cx_unknown = unknown_keys(&self.cx, doc, &TOP_LEVEL, &[]);
        let mut misspelt_required = Vec::new();
        for (k, v) in doc {
            if !TOP_LEVEL.contains(&k.as_str()) {
                if let Some(t) = v.as_table() {
                    self.poisoned.extend(t.keys().cloned());
                }
                if let Some(m) = did_you_mean(k, TOP_LEVEL) {
                    misspelt_required.push(m);
                }
            }
        }
        self.errors.extend(cx_unknown);
        misspelt_required
    }

    /// `[model]`: its kind, name and dtype (defaults where absent or wrong, with the error
    /// recorded).
    fn model_header(&mut self, doc: &Table, model: &Table) -> (ModelKind, String, String) {
        let errs = unknown_keys(
            &self.cx,
            model,
            &["type", "name", "dtype", "label"],
            &["model"],
        );
        self.errors.extend(errs);
        if model.contains_key("label") {
            let e = self.cx.err(
                &["model", "label"],
                "[model].label is no longer supported; use [model].name",
            );
            self.errors.push(e);
        }
        let kind = self.model_kind(doc, model);
        let name = match model.get("name") {
            None => String::new(),
            Some(v) => {
                let r = string_at(v, "[model].name");
                self.keep(&["model", "name"], r).unwrap_or_default()
            }
        };
        let dtype = match model.get("dtype") {
            None => "float64".to_string(),
            Some(v) => {
                let r = string_at(v, "[model].dtype").and_then(|d| match d.as_str() {
                    "float64" | "float" | "double" | "f64" => Ok("float64".to_string()),
                    _ => Err(Error::model(format!(
                        "[model].dtype '{}' is not supported: this library computes in \
                         float64 only (write dtype = \"float64\" or leave it out)",
                        shorten(&d)
                    ))),
                });
                self.keep(&["model", "dtype"], r)
                    .unwrap_or_else(|| "float64".into())
            }
        };
        (kind, name, dtype)
    }

    fn model_kind(&mut self, doc: &Table, model: &Table) -> ModelKind {
        let problem = match model.get("type") {
            Some(Value::String(s)) if s == "ode" => return ModelKind::Ode,
            Some(Value::String(s)) if s == "map" => return ModelKind::Map,
            Some(Value::String(s)) => format!(
                "[model].type must be \"ode\" or \"map\", found \"{}\"",
                shorten(s)
            ),
            Some(other) => format!(
                "[model].type must be the string \"ode\" or \"map\", found {}",
                other.type_str()
            ),
            None if doc.contains_key("model") => {
                let e = self
                    .cx
                    .err(&["model"], "[model].type is required (\"ode\" or \"map\")");
                self.errors.push(e);
                return ModelKind::Ode;
            }
            None => return ModelKind::Ode,
        };
        let e = self.cx.err(&["model", "type"], problem);
        self.errors.push(e);
        ModelKind::Ode
    }

    fn read_constants(&mut self, doc: &Table) {
        let Some(c) = self.table(doc, "constants") else {
            return;
        };
        for (k, v) in c {
            let loc = format!("[constants].{k}");
            let value = self.numeric_value(v, &["constants", k], &loc);
            if value.is_none() {
                self.poisoned.push(k.clone());
            }
            let index = self.constants.len();
            self.constant_index.entry(k.clone()).or_insert(index);
            self.constants.push((k.clone(), value.unwrap_or(0.0)));
        }
    }

    /// `[states]` or `[params]`: names with numbers (or constant arithmetic). A model without
    /// states (parameters only) is valid: it serves presets, assign and snapshots; a run
    /// refuses it.
    fn read_numbers(&mut self, doc: &Table, more: Entries, section: &str) -> Vec<(String, f64)> {
        let Some(t) = self.table(doc, section) else {
            return Vec::new();
        };
        // Sized once: at 10^6 states each doubling would copy tens of MB.
        let mut out = Vec::with_capacity(t.len() + more.len());
        for (k, v) in t {
            let x = self.number_entry(section, k, v);
            out.push((k.clone(), x));
        }
        // Bulk entries are owned: their names move into the spec.
        for (k, v) in more {
            let x = self.number_entry(section, &k, &v);
            out.push((k, x));
        }
        out
    }

    fn number_entry(&mut self, section: &str, k: &str, v: &Value) -> f64 {
        plain_number(v)
            .or_else(|| self.numeric_value(v, &[section, k], &format!("[{section}].{k}")))
            .unwrap_or(0.0)
    }

    fn read_aux(&mut self, doc: &Table) -> Vec<(String, Source)> {
        let Some(a) = self.table(doc, "aux") else {
            return Vec::new();
        };
        let mut aux = Vec::with_capacity(a.len());
        for (k, v) in a {
            let loc = format!("[aux].{k}");
            let r = string_at(v, &loc);
            let text = self.keep(&["aux", k], r);
            if text.is_none() {
                self.poisoned.push(k.clone());
            }
            let src = self
                .cx
                .source(&["aux", k], loc, text.unwrap_or_else(|| "0".into()));
            aux.push((k.clone(), src));
        }
        aux
    }

    fn read_functions(&mut self, doc: &Table) -> Vec<FunctionSpec> {
        let Some(f) = self.table(doc, "functions") else {
            return Vec::new();
        };
        let mut functions = Vec::with_capacity(f.len());
        for (k, v) in f {
            let r = parse_function(&self.cx, k, v);
            match self.keep(&["functions", k], r) {
                Some(f) => functions.push(f),
                None => self.poisoned.push(k.clone()),
            }
        }
        functions
    }

    /// `[equations]` (with its errors recorded); `Err(())` when the table is missing and
    /// required.
    #[allow(clippy::type_complexity)]
    fn read_equations(
        &mut self,
        doc: &Table,
        rhs: Entries,
        kind: ModelKind,
        state_names: &[&str],
    ) -> std::result::Result<(Vec<Equation>, Option<Vec<Vec<Source>>>), ()> {
        let had_table = doc.contains_key("equations");
        if state_names.is_empty() && !had_table {
            return Ok((Vec::new(), None));
        }
        match parse_equations(&self.cx, doc, rhs, kind, state_names) {
            Ok((eqs, jac, errs)) => {
                for e in errs {
                    let e = self.cx.at(&["equations"], Err::<(), _>(e)).unwrap_err();
                    self.errors.push(e);
                }
                Ok((eqs, jac))
            }
            Err(e) if !had_table && e.message().contains("missing required table") => Err(()),
            Err(e) if !had_table => {
                self.errors.push(e);
                Ok((Vec::new(), None))
            }
            Err(e) => {
                let e = self.cx.at(&["equations"], Err::<(), _>(e)).unwrap_err();
                self.errors.push(e);
                Ok((Vec::new(), None))
            }
        }
    }

    /// Every entry of the table `section`, read by `parse` (errors recorded, entries in
    /// error left out).
    fn read_each<T>(
        &mut self,
        doc: &Table,
        section: &str,
        parse: fn(&Cx, &str, &Value) -> Result<T>,
    ) -> Vec<T> {
        let Some(t) = self.table(doc, section) else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(t.len());
        for (k, v) in t {
            let r = parse(&self.cx, k, v);
            if let Some(x) = self.keep(&[section, k], r) {
                out.push(x);
            }
        }
        out
    }

    /// The structure of every mod table; `[mods]` entries must be tables.
    fn check_mods(&mut self, doc: &Table) {
        for m in super::mods::defined(doc) {
            if let Some(path) = &m.path {
                let refs: Vec<&str> = path.iter().map(String::as_str).collect();
                let errs = super::mods::check_structure(&self.cx.ix, &m.table, &refs);
                self.errors.extend(errs);
            }
        }
        let Some(t) = doc.get("mods").and_then(Value::as_table) else {
            return;
        };
        for (k, v) in t {
            if !v.is_table() {
                let e = self
                    .cx
                    .err(&["mods", k], format!("[mods].{k} must be a table"));
                self.errors.push(e);
            }
        }
    }

    /// A number, or a string holding constant arithmetic over numbers, `pi`, `e` and constants
    /// declared earlier; `None` (with the error recorded) when it is not.
    fn numeric_value(&mut self, v: &Value, path: &[&str], location: &str) -> Option<f64> {
        let r = match v {
            Value::String(s) if !s.trim().is_empty() => match parser::parse(s) {
                Ok(expr) => self.eval_constant(&expr, s, location),
                Err(e) => Err(self.cx.parse_error(path, location, s, &e)),
            },
            _ => self.numeric_plain(v, location),
        };
        self.keep(path, r)
    }

    fn numeric_plain(&self, v: &Value, location: &str) -> Result<f64> {
        match v {
            Value::Integer(_) | Value::Float(_) => number_at(v, location),
            Value::Boolean(b) => Ok(f64::from(u8::from(*b))),
            Value::String(_) => Err(Error::model(format!("{location} is an empty string"))),
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
                _ => match self.constant_index.get(name.as_str()) {
                    Some(&i) => self.constants[i].1,
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

fn parse_function(cx: &Cx, name: &str, v: &Value) -> Result<FunctionSpec> {
    let loc = format!("[functions.{name}]");
    let t = v
        .as_table()
        .ok_or_else(|| Error::model(format!("{loc} must be a table with args and expr")))?;
    check_unknown_keys(cx, t, &["args", "expr"], &["functions", name])?;
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
    let text = cx.at(
        &["functions", name, "expr"],
        string_at(expr, &format!("{loc}.expr")),
    )?;
    Ok(FunctionSpec {
        name: name.to_string(),
        args,
        expr: cx.source(&["functions", name, "expr"], format!("{loc}.expr"), text),
    })
}

/// One `target = expr` line of a block: target, expression, line number within the block,
/// and the character offset of the expression in the block.
type BlockLine = (String, String, usize, usize);

/// Splits a block of `target = expr` lines. Blank lines and `#` comment lines are skipped.
fn block_lines(cx: &Cx, path: &[&str], text: &str, location: &str) -> Result<Vec<BlockLine>> {
    let mut out = Vec::new();
    let mut line_start = 0usize; // in characters
    for (i, line) in text.split('\n').enumerate() {
        let n_line = line.chars().count();
        let this_start = line_start;
        line_start += n_line + 1;
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let lead = line.chars().count() - line.trim_start().chars().count();
        let Some((target, expr)) = parser::split_assignment(trimmed) else {
            let origin = cx.source(path, String::new(), String::new()).origin;
            let (l, c) = origin.offset(this_start + lead).position(1);
            return Err(Error::model_at(Diagnostic {
                message: format!(
                    "{location}, line {}: '{}' must have the form 'target = expression'",
                    i + 1,
                    shorten(trimmed)
                ),
                location: location.to_string(),
                line: l,
                column: c,
            }));
        };
        // Character offset of the trimmed expression within the block.
        let before_expr = trimmed.chars().count() - expr.chars().count();
        let expr_lead = expr.chars().count() - expr.trim_start().chars().count();
        let offset = this_start + lead + before_expr + expr_lead;
        out.push((
            target.trim().to_string(),
            expr.trim().to_string(),
            i + 1,
            offset,
        ));
    }
    Ok(out)
}

/// Resolves the left-hand side of a block equation line to a state index.
fn equation_target(
    target: &str,
    kind: ModelKind,
    states: &[&str],
    state_index: &StateLookup<'_>,
    location: &str,
) -> Result<usize> {
    let find = |n: &str| state_index.get(n);
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

/// States by name, for equations. Equations usually come in the order of their states, so
/// the state after the last one found is tried first and the hash index is built only for
/// a name out of that order: at 10^6 states building and probing it are cache misses, a
/// superlinear part of loading. (State names are the keys of one TOML table, so unique: a
/// position found in order is the name's only one.)
struct StateLookup<'a> {
    states: &'a [&'a str],
    next: std::cell::Cell<usize>,
    index: std::cell::OnceCell<NameIndex<'a, usize>>,
}

impl<'a> StateLookup<'a> {
    fn new(states: &'a [&'a str]) -> Self {
        StateLookup {
            states,
            next: std::cell::Cell::new(0),
            index: std::cell::OnceCell::new(),
        }
    }

    fn get(&self, name: &str) -> Option<usize> {
        let next = self.next.get();
        let found = if self.states.get(next) == Some(&name) {
            Some(next)
        } else {
            let index = self
                .index
                .get_or_init(|| first_positions(self.states.iter().copied()));
            index.get(name).copied()
        };
        if let Some(i) = found {
            self.next.set(i + 1);
        }
        found
    }
}

type EquationsRead = (Vec<Equation>, Jacobian, Vec<Error>);

fn parse_equations(
    cx: &Cx,
    doc: &Table,
    more_rhs: Entries,
    kind: ModelKind,
    states: &[&str],
) -> Result<EquationsRead> {
    // Optional only for a model without states (parameters only).
    let empty = Table::new();
    let eq = match table(doc, "equations")? {
        Some(eq) => eq,
        None if states.is_empty() => &empty,
        None => return Err(Error::model("missing required table [equations]")),
    };
    let mut errs: Vec<Error> = Vec::new();
    if eq.contains_key("exprs") {
        errs.push(cx.err(
            &["equations", "exprs"],
            "unknown key 'exprs' in [equations]: the key is singular, 'expr'",
        ));
    }
    // `exprs` has its own message above. (The table is not copied to leave it out: it holds
    // every equation of the model.)
    errs.extend(unknown_keys_but(
        cx,
        eq,
        &["rhs", "expr", "jacobian"],
        &["exprs"],
        &["equations"],
    ));
    let mut set = EquationSet::new(cx, states);
    if let Some(rhs) = eq.get("rhs") {
        set.read_rhs_table(rhs, more_rhs, &mut errs);
    }
    if let Some(block) = eq.get("expr") {
        set.read_expr_block(block, kind, &mut errs);
    }
    if errs.is_empty() {
        errs.extend(set.missing_equations(kind));
    }
    let equations = set.into_state_order();
    let jacobian = match read_jacobian(cx, eq, states.len()) {
        Ok(j) => j,
        Err(e) => {
            errs.push(
                cx.at(&["equations", "jacobian"], Err::<(), _>(e))
                    .unwrap_err(),
            );
            None
        }
    };
    Ok((equations, jacobian, errs))
}

/// The equations read so far, at most one per state.
struct EquationSet<'a> {
    cx: &'a Cx,
    states: &'a [&'a str],
    state_index: StateLookup<'a>,
    equations: Vec<Equation>,
    /// Index into `equations` of each state's equation (its location names the first one).
    defined_at: Vec<Option<usize>>,
}

impl<'a> EquationSet<'a> {
    fn new(cx: &'a Cx, states: &'a [&'a str]) -> Self {
        EquationSet {
            cx,
            states,
            state_index: StateLookup::new(states),
            // Sized once for the usual case, one equation per state.
            equations: Vec::with_capacity(states.len()),
            defined_at: vec![None; states.len()],
        }
    }

    fn define(&mut self, state: usize, src: Source, path: &[&str]) -> Result<()> {
        if let Some(prev) = self.defined_at[state] {
            return Err(self.cx.err(
                path,
                format!(
                    "state '{}' has two equations: {} and {}",
                    self.states[state], self.equations[prev].expr.location, src.location
                ),
            ));
        }
        self.defined_at[state] = Some(self.equations.len());
        self.equations.push(Equation { state, expr: src });
        Ok(())
    }

    /// `[equations.rhs]`: state = "expression".
    fn read_rhs_table(&mut self, rhs: &Value, more: Entries, errs: &mut Vec<Error>) {
        let cx = self.cx;
        let Some(rhs) = rhs.as_table() else {
            errs.push(cx.err(
                &["equations", "rhs"],
                "[equations.rhs] must be a table of state = \"expression\"",
            ));
            return;
        };
        for (k, v) in rhs {
            self.rhs_entry(k, |loc| string_at(v, loc), errs);
        }
        // Bulk entries are owned: their expression strings move into the spec.
        for (k, v) in more {
            self.rhs_entry(&k, |loc| into_string_at(v, loc), errs);
        }
    }

    fn rhs_entry(
        &mut self,
        k: &str,
        text: impl FnOnce(&str) -> Result<String>,
        errs: &mut Vec<Error>,
    ) {
        let cx = self.cx;
        let loc = format!("[equations.rhs].{k}");
        let path = ["equations", "rhs", k];
        let Some(i) = self.state_index.get(k) else {
            errs.push(cx.err(
                &path,
                format!(
                    "{loc}: equation for '{}', which is not a declared state{}; \
                     states: {}",
                    shorten(k),
                    suggestion_suffix(k, self.states.iter().copied()),
                    self.states.join(", ")
                ),
            ));
            return;
        };
        let r = cx
            .at(&path, text(&loc))
            .and_then(|text| self.define(i, cx.source(&path, loc, text), &path));
        if let Err(e) = r {
            errs.push(e);
        }
    }

    /// `[equations].expr`: a block of `target = expression` lines.
    fn read_expr_block(&mut self, block: &Value, kind: ModelKind, errs: &mut Vec<Error>) {
        let cx = self.cx;
        let path = ["equations", "expr"];
        let lines = cx
            .at(&path, string_at(block, "[equations].expr"))
            .and_then(|text| block_lines(cx, &path, &text, "[equations].expr"));
        let lines = match lines {
            Err(e) => return errs.push(e),
            Ok(lines) => lines,
        };
        for (target, expr, line, offset) in lines {
            let loc = format!("[equations].expr line {line} ({target})");
            let mut src = cx.source(&path, loc.clone(), expr);
            src.origin = src.origin.offset(offset);
            let (l, c) = src.origin.position(1);
            let here = |e: Error| {
                if e.positioned().is_empty() {
                    Error::model_at(Diagnostic {
                        message: e.message().to_string(),
                        location: loc.clone(),
                        line: l,
                        column: c,
                    })
                } else {
                    e
                }
            };
            let r = equation_target(&target, kind, self.states, &self.state_index, &loc)
                .and_then(|i| self.define(i, src, &path));
            if let Err(e) = r {
                errs.push(here(e));
            }
        }
    }

    /// A state without an equation is an error at its declaration.
    fn missing_equations(&self, kind: ModelKind) -> Vec<Error> {
        let states = self.states;
        let unset = self
            .defined_at
            .iter()
            .enumerate()
            .filter(|(_, d)| d.is_none());
        unset
            .map(|(i, _)| {
                self.cx.err(
                    &["states", states[i]],
                    format!(
                        "state '{}' has no equation: give it one in [equations.rhs] or \
                         [equations].expr{}",
                        states[i],
                        if kind == ModelKind::Ode {
                            " (write \"0\" for a constant state)"
                        } else {
                            ""
                        }
                    ),
                )
            })
            .collect()
    }

    /// Equations are evaluated in state order whatever the order they were written in
    /// (usually that order already: then no sort, whose scratch is half the list).
    fn into_state_order(self) -> Vec<Equation> {
        let mut equations = self.equations;
        if !equations.is_sorted_by_key(|e| e.state) {
            equations.sort_by_key(|e| e.state);
        }
        equations
    }
}

/// `[equations.jacobian].expr`: n rows of n strings or numbers.
fn read_jacobian(cx: &Cx, eq: &Table, n: usize) -> Result<Jacobian> {
    let Some(j) = eq.get("jacobian") else {
        return Ok(None);
    };
    let j = j
        .as_table()
        .ok_or_else(|| Error::model("[equations.jacobian] must be a table with 'expr'"))?;
    if j.contains_key("exprs") {
        return Err(Error::model(
            "unknown key 'exprs' in [equations.jacobian]: the key is singular, 'expr'",
        ));
    }
    check_unknown_keys(cx, j, &["expr"], &["equations", "jacobian"])?;
    let rows = j
        .get("expr")
        .and_then(Value::as_array)
        .ok_or_else(|| Error::model("[equations.jacobian].expr must be a list of rows"))?;
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
            r.push(jacobian_entry(cx, v, i, jx)?);
        }
        out.push(r);
    }
    Ok(Some(out))
}

fn jacobian_entry(cx: &Cx, v: &Value, i: usize, jx: usize) -> Result<Source> {
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
    let (si, sj) = (i.to_string(), jx.to_string());
    let path = ["equations", "jacobian", "expr", si.as_str(), sj.as_str()];
    Ok(cx.source(&path, location, text))
}

fn parse_event(cx: &Cx, name: &str, v: &Value) -> Result<EventSpec> {
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
    check_unknown_keys(
        cx,
        t,
        &["cond", "phase", "action", "log", "tags"],
        &["events", name],
    )?;
    let cond = t
        .get("cond")
        .ok_or_else(|| Error::model(format!("{loc}.cond is required")))?;
    let cond_path = ["events", name, "cond"];
    let cond = cx.source(
        &cond_path,
        format!("{loc}.cond"),
        cx.at(&cond_path, string_at(cond, &format!("{loc}.cond")))?,
    );
    let phase = match t.get("phase") {
        None => EventPhase::End,
        Some(p) => event_phase(&string_at(p, &format!("{loc}.phase"))?, &loc)?,
    };
    let actions = match t.get("action") {
        None => Vec::new(),
        Some(a) => event_actions(cx, name, &loc, a)?,
    };
    let log = match t.get("log") {
        None => Vec::new(),
        Some(l) => string_list(l, &format!("{loc}.log"))?,
    };
    let tags = match t.get("tags") {
        None => Vec::new(),
        Some(l) => event_tags(string_list(l, &format!("{loc}.tags"))?, &loc)?,
    };
    Ok(EventSpec {
        name: name.to_string(),
        phase,
        cond,
        actions,
        log,
        tags,
    })
}

fn event_phase(phase: &str, loc: &str) -> Result<EventPhase> {
    match phase {
        "start" => Ok(EventPhase::Start),
        "end" => Ok(EventPhase::End),
        "both" => Ok(EventPhase::Both),
        old @ ("pre" | "post") => Err(Error::model(format!(
            "{loc}.phase '{old}' is deprecated; use \"{}\"",
            if old == "pre" { "start" } else { "end" }
        ))),
        other => Err(Error::model(format!(
            "{loc}.phase must be \"start\", \"end\" or \"both\", found \"{other}\""
        ))),
    }
}

/// An event's `action`: a block of `target = expression` lines, or a table of them.
fn event_actions(cx: &Cx, name: &str, loc: &str, action: &Value) -> Result<Vec<(String, Source)>> {
    let mut actions = Vec::new();
    match action {
        Value::String(block) => {
            let path = ["events", name, "action"];
            for (target, expr, line, offset) in
                block_lines(cx, &path, block, &format!("{loc}.action"))?
            {
                let mut src =
                    cx.source(&path, format!("{loc}.action line {line} ({target})"), expr);
                src.origin = src.origin.offset(offset);
                actions.push((target.clone(), src));
            }
        }
        Value::Table(keyed) => {
            for (target, v) in keyed {
                let l = format!("{loc}.action.{target}");
                let path = ["events", name, "action", target.as_str()];
                let text = cx.at(&path, string_at(v, &l))?;
                actions.push((target.clone(), cx.source(&path, l, text)));
            }
        }
        other => {
            return Err(Error::model(format!(
                "{loc}.action must be a string block or a table, found {}",
                other.type_str()
            )))
        }
    }
    Ok(actions)
}

/// An event's tags, checked, sorted and without repeats.
fn event_tags(mut tags: Vec<String>, loc: &str) -> Result<Vec<String>> {
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
    Ok(tags)
}

/// Every knob name of every stepper: the extra keys `[sim]` accepts.
pub fn knob_names() -> Vec<&'static str> {
    let mut v: Vec<&'static str> = crate::stepper::all()
        .iter()
        .flat_map(|i| i.config.iter().map(|k| k.name))
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

fn parse_sim(cx: &Cx, t: Option<&Table>, kind: ModelKind) -> (SimDefaults, Vec<Error>) {
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
    let mut errs = Vec::new();
    let Some(t) = t else { return (sim, errs) };
    let knobs = knob_names();
    for (k, v) in t {
        let r = sim_key(cx, &mut sim, kind, &knobs, k, v);
        if let Err(e) = cx.at(&["sim", k.as_str()], r) {
            errs.push(e);
        }
    }
    (sim, errs)
}

/// One `[sim]` key into `sim`.
fn sim_key(
    cx: &Cx,
    sim: &mut SimDefaults,
    kind: ModelKind,
    knobs: &[&'static str],
    k: &str,
    v: &Value,
) -> Result<()> {
    let loc = format!("[sim].{k}");
    let positive = |x: f64| {
        if x > 0.0 && x.is_finite() {
            Ok(x)
        } else {
            Err(Error::model(format!(
                "{loc} must be positive and finite, found {x}"
            )))
        }
    };
    match k {
        "t0" => sim.t0 = finite_at(v, &loc)?,
        "t_end" => sim.t_end = finite_at(v, &loc)?,
        "dt" => sim.dt = positive(number_at(v, &loc)?)?,
        "atol" => sim.atol = positive(number_at(v, &loc)?)?,
        "rtol" => sim.rtol = positive(number_at(v, &loc)?)?,
        "stepper" => sim.stepper = sim_stepper(v, &loc, kind)?,
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
        "stop" => sim.stop = Some(parse_stop(cx, v)?),
        _ if knobs.contains(&k) => sim.extra.push((k.to_string(), knob_default(v, &loc)?)),
        _ => return Err(unknown_sim_key(k, knobs)),
    }
    Ok(())
}

/// `[sim].stepper`: a known stepper for this kind of model.
fn sim_stepper(v: &Value, loc: &str, kind: ModelKind) -> Result<String> {
    let name = string_at(v, loc)?;
    let info = crate::stepper::lookup(&name)
        .map_err(|e| Error::model(format!("{loc}: {}", e.message())))?;
    if info.kind != kind {
        return Err(Error::model(format!(
            "{loc}: stepper '{}' is for {} models, but this is a {} model",
            info.name,
            info.kind.as_str(),
            kind.as_str()
        )));
    }
    Ok(name)
}

/// A stepper knob's default in `[sim]`: a number, or an enumerated value.
fn knob_default(v: &Value, loc: &str) -> Result<f64> {
    match v {
        Value::Integer(_) | Value::Float(_) => finite_at(v, loc),
        // Enumerated stepper knobs, e.g. jacobian_mode = "external".
        Value::String(s) if s == "internal" => Ok(0.0),
        Value::String(s) if s == "external" => Ok(1.0),
        other => Err(Error::model(format!(
            "{loc}: extra [sim] keys are stepper-config defaults and must be numbers, \
             found {}",
            other.type_str()
        ))),
    }
}

fn unknown_sim_key(k: &str, knobs: &[&str]) -> Error {
    let all: Vec<&str> = SIM_KEYS
        .iter()
        .copied()
        .chain(knobs.iter().copied())
        .collect();
    Error::model(format!(
        "unknown key '{}' in [sim]{}; [sim] keys are {} and the knobs of the steppers ({})",
        shorten(k),
        suggestion_suffix(k, all.iter().copied()),
        SIM_KEYS.join(", "),
        knobs.join(", ")
    ))
}

fn parse_stop(cx: &Cx, v: &Value) -> Result<Source> {
    let (cond, phase, path) = match v {
        Value::String(s) => (s.clone(), "post".to_string(), vec!["sim", "stop"]),
        Value::Table(st) => {
            check_unknown_keys(cx, st, &["cond", "phase"], &["sim", "stop"])?;
            let c = st
                .get("cond")
                .ok_or_else(|| Error::model("[sim.stop].cond is required"))?;
            let p = match st.get("phase") {
                None => "post".to_string(),
                Some(p) => string_at(p, "[sim.stop].phase")?,
            };
            (
                string_at(c, "[sim.stop].cond")?,
                p,
                vec!["sim", "stop", "cond"],
            )
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
             found \"{}\"",
            shorten(&phase)
        )));
    }
    if cond.trim().is_empty() {
        return Err(Error::model("[sim.stop].cond is empty"));
    }
    Ok(cx.source(&path, "[sim].stop".into(), cond))
}

fn parse_preset(cx: &Cx, name: &str, v: &Value) -> Result<PresetSpec> {
    let loc = format!("[presets.{name}]");
    let t = v
        .as_table()
        .ok_or_else(|| Error::model(format!("{loc} must be a table")))?;
    check_unknown_keys(cx, t, &["params", "states"], &["presets", name])?;
    let read = |key: &str| -> Result<Vec<(String, f64)>> {
        match t.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Table(vals)) => vals
                .iter()
                .map(|(k, v)| {
                    let x = number_at(v, &format!("{loc}.{key}.{k}"));
                    Ok((k.clone(), cx.at(&["presets", name, key, k], x)?))
                })
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

/// Why `name`, declared in `group`, cannot be used (`None` when it can).
fn name_problem(
    group: &str,
    name: &str,
    builtins: &HashSet<&str>,
    prior: Option<&str>,
) -> Option<String> {
    // The usual case first: a valid, new name (no message built, nothing allocated).
    let valid = !RESERVED.contains(&name)
        && !KEYWORDS.contains(&name)
        && !builtins.contains(name)
        && is_identifier(name)
        && !name.starts_with("lag_");
    if valid && prior.is_none() {
        return None;
    }
    let shown = shorten(name);
    Some(if RESERVED.contains(&name) {
        format!("[{group}].{shown}: '{shown}' is reserved (t, pi and e are built in)")
    } else if KEYWORDS.contains(&name) {
        format!(
            "[{group}].{shown}: '{shown}' is a reserved word of the expression \
             language and cannot name a model variable"
        )
    } else if builtins.contains(name) {
        format!(
            "[{group}].{shown}: '{shown}' is a built-in function or macro and cannot \
             be redefined; choose another name"
        )
    } else if !is_identifier(name) {
        format!("[{group}].{shown}: '{shown}' is not a valid identifier")
    } else if name.starts_with("lag_") {
        format!("[{group}].{shown}: names starting with 'lag_' are reserved for lagged values")
    } else {
        let other = prior?;
        format!("duplicate name '{shown}': declared in [{other}] and in [{group}]")
    })
}

/// Reserved, duplicate and preset names; every problem is reported.
fn check_names(cx: &Cx, spec: &ModelSpec) -> Vec<Error> {
    let mut errs = Vec::new();
    let builtins: HashSet<&str> = super::reserved::builtin_names().into_iter().collect();
    let mut seen: NameIndex<&str> = NameIndex::with_capacity(
        spec.constants.len()
            + spec.states.len()
            + spec.params.len()
            + spec.aux.len()
            + spec.functions.len(),
    );
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
            let path = [*group, *name];
            let prior = seen.first_or_insert(name, group).copied();
            if let Some(p) = name_problem(group, name, &builtins, prior) {
                errs.push(cx.err(&path, p));
            }
        }
    }
    if spec.presets.is_empty() {
        // The indexes below are for presets only (at 10^6 names, two maps built for nothing).
        return errs;
    }
    let params = first_positions(spec.params.iter().map(|(n, _)| n.as_str()));
    let states = first_positions(spec.states.iter().map(|(n, _)| n.as_str()));
    for p in &spec.presets {
        for (k, _) in &p.params {
            if !params.contains(k.as_str()) {
                errs.push(cx.err(
                    &["presets", &p.name, "params", k],
                    format!(
                        "[presets.{}].params.{k}: '{k}' is not a declared parameter{}",
                        p.name,
                        suggestion_suffix(k, spec.params.iter().map(|(n, _)| n.as_str()))
                    ),
                ));
            }
        }
        for (k, _) in &p.states {
            if !states.contains(k.as_str()) {
                errs.push(cx.err(
                    &["presets", &p.name, "states", k],
                    format!(
                        "[presets.{}].states.{k}: '{k}' is not a declared state{}",
                        p.name,
                        suggestion_suffix(k, spec.states.iter().map(|(n, _)| n.as_str()))
                    ),
                ));
            }
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chain model large enough to be read in pieces, with `extra` appended to its
    /// `[states]` body and `extra_eq` to its `[equations.rhs]` body.
    fn chain(n: usize, extra: &str, extra_eq: &str) -> String {
        let mut s = String::from("[model]\ntype = \"ode\"\n\n[states]\n");
        for i in 0..n {
            s += &format!("x{i} = {}\n", i % 3);
        }
        s += extra;
        s += "\n[params]\nk = 0.5\n\n[equations.rhs]\nx0 = \"-k*x0\"\n";
        for i in 1..n {
            s += &format!("x{i} = \"k*(x{} - x{i})\"\n", i - 1);
        }
        s += extra_eq;
        s
    }

    fn whole(text: &str) -> Parsed {
        let doc = text.parse::<Table>().map_err(|e| e.to_string());
        let doc = doc.expect("valid TOML");
        parse_lenient(text, Some((doc, DocIndex::new(text)))).unwrap()
    }

    #[test]
    fn bulk_sections_read_as_the_whole_document_reads() {
        let text = chain(60_000, "", "");
        let d = super::super::toml_pieces::parse_with_bulk(&text, &is_bulk_section)
            .expect("read in pieces");
        assert!(d.bulk.get(&["states"]).len() > 50_000);
        assert!(d.bulk.get(&["equations", "rhs"]).len() > 50_000);
        let (pieces, whole) = (parse_lenient(&text, None).unwrap(), whole(&text));
        assert!(pieces.errors.is_empty(), "{:?}", pieces.errors);
        // Specs compare in order: states, params and equations as declared.
        assert_eq!(pieces.spec, whole.spec);
        let spec = pieces.spec.unwrap();
        assert_eq!(spec.states.len(), 60_000);
        assert_eq!(spec.states[59_999].0, "x59999");
        assert_eq!(spec.equations[59_999].expr.text, "k*(x59998 - x59999)");
    }

    #[test]
    fn repeated_keys_in_bulk_sections_give_the_whole_documents_errors() {
        let cases = [
            (chain(60_000, "x7 = 1.0\n", ""), "duplicate key"),
            (chain(60_000, "", "x59990 = \"0\"\n"), "duplicate key"),
            (chain(60_000, "", "y = \"0\"\n"), "not a declared state"),
            (chain(60_000, "k = 1.0\n", ""), "duplicate name 'k'"),
        ];
        for (text, expected) in &cases {
            let errors = |r: Result<Parsed>| match r {
                Ok(p) => p.errors,
                Err(e) => e.diagnostics(),
            };
            let pieces = errors(parse_lenient(text, None));
            let whole = match text.parse::<Table>() {
                Ok(_) => whole(text).errors,
                Err(_) => parse_toml(text).unwrap_err().diagnostics(),
            };
            assert_eq!(pieces, whole);
            assert!(
                pieces.iter().any(|d| d.message.contains(expected)),
                "{pieces:?}"
            );
        }
    }
}

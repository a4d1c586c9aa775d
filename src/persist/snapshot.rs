//! The snapshot file format `dynlib-snapshot-v1`: a NumPy `.npz` archive that opens with
//! `numpy.load` and describes itself.
//!
//! Members (zip name = key + `.npy`):
//!
//! | key | content |
//! |---|---|
//! | `meta.json` | UTF-8 JSON (pretty-printed) as a 1-D `uint8` array |
//! | `y` | state vector, `float64[n_state]` |
//! | `params` | parameter vector, `float64[n_params]` |
//! | `stepper_config` | the stepper's knob values, `float64[n_knobs]` |
//! | `workspace/stepper/<field>` | every array the stepper carries between steps |
//! | `workspace/runtime/<field>` | the session clock, counters, lag rings and pending step |
//!
//! The arrays are authoritative and bit-exact; the numbers in `meta.json` are there for people
//! and other tools, and a reader checks that the two agree. This module only encodes and
//! decodes: whether a file fits a given session is decided by the session.

use std::collections::HashMap;
use std::path::Path;

use serde_json::{json, Map, Value};

use super::npy::{NpyArray, NpyData};
use super::npz::{read_npz, read_npz_admitting, write_npz_storing, Admit, Limits};
use crate::error::{Error, Result};
use crate::stepper::{Workspace, WsArray, WsData};

/// The `schema` value of files this module writes and reads.
pub const SCHEMA: &str = "dynlib-snapshot-v1";

/// The `schema` of the compact files written for large models (more than
/// [`COMPACT_ABOVE_NAMES`] states and parameters): as v1, except that
/// - `meta.json` is compact JSON without `state_names` and `param_names` (the `spec_hash` pin
///   identifies the model, names included; a reader takes the names from the model),
/// - workspace arrays whose values are all zero bits are not stored: `meta.json`'s
///   `zero_members` maps each such member to its `dtype` and `shape`.
///
/// Readers read both versions; small models keep writing v1, so their files are read by
/// every earlier reader.
pub const SCHEMA_V2: &str = "dynlib-snapshot-v2";

/// Models with more states and parameters than this get v2 files: their names and unused
/// arrays would otherwise take more room and time than the state itself.
pub const COMPACT_ABOVE_NAMES: usize = 4096;

/// Largest snapshot file [`read_file`] accepts (decompressed members are bounded separately).
pub const MAX_FILE_BYTES: u64 = 4 << 30;

/// Largest `meta.json` member (its `.npy` file). It holds the names of states, parameters and
/// knobs, the snapshot's name and description: 64 MiB is room for millions of names.
pub const MAX_META_BYTES: u64 = 64 << 20;

/// Most bytes of text a snapshot's name and description may have together.
pub const MAX_TEXT_BYTES: u64 = 1 << 20;

/// Most members a snapshot file has (its workspace arrays plus four).
pub const MAX_MEMBERS: usize = 4096;

/// Room for the `.npy` header of an array member beyond its data (NumPy's own headers are
/// under 64 KiB for any shape).
const NPY_HEADER_SLACK: u64 = 64 << 10;

/// The limits the writer and the reader share, so that every file [`encode`] writes is one
/// [`decode_for`] reads and every file it refuses is refused at export, with the reason.
/// [`FileLimits::default`] holds the real limits; tests lower them to check both sides of a
/// boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileLimits {
    /// Most bytes the snapshot's name and description may have together.
    pub max_text_bytes: u64,
    /// Most bytes the `meta.json` member may take (its whole `.npy` file), whatever the model.
    pub max_meta_bytes: u64,
    /// Most bytes the whole file may take.
    pub max_file_bytes: u64,
}

impl Default for FileLimits {
    fn default() -> Self {
        FileLimits {
            max_text_bytes: MAX_TEXT_BYTES,
            max_meta_bytes: MAX_META_BYTES,
            max_file_bytes: MAX_FILE_BYTES,
        }
    }
}

/// Bounds for reading snapshots without knowing the session they are for ([`decode`]): as large
/// as anything [`encode`] writes (a file of at most [`MAX_FILE_BYTES`]). Importing into a
/// session uses [`decode_for`], which bounds each member by its expected size instead.
pub fn snapshot_limits() -> Limits {
    Limits {
        max_members: MAX_MEMBERS,
        max_member_bytes: MAX_FILE_BYTES,
        max_total_bytes: MAX_FILE_BYTES,
    }
}

/// Compatibility pins as stored in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilePins {
    pub spec_hash: String,
    pub stepper_name: String,
    pub workspace_sig: String,
    pub dtype_token: String,
    pub dynlib_version: String,
}

/// The descriptive part of a snapshot file (`meta.json`).
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotMeta {
    pub created_at: String,
    pub name: String,
    pub description: String,
    pub pins: FilePins,
    pub state_names: Vec<String>,
    pub param_names: Vec<String>,
    pub t_curr: f64,
    pub dt_curr: f64,
    pub step_count: u64,
    pub status: i64,
    pub time_shift: f64,
    pub nominal_dt: f64,
    pub stepper_config_names: Vec<String>,
}

/// Everything a snapshot file holds.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotFile {
    pub meta: SnapshotMeta,
    pub y: Vec<f64>,
    pub params: Vec<f64>,
    pub config: Vec<f64>,
    pub stepper_ws: Workspace,
    pub runtime_ws: Workspace,
}

const STEPPER_PREFIX: &str = "workspace/stepper/";
const RUNTIME_PREFIX: &str = "workspace/runtime/";

/// JSON has no infinity or NaN: such values are written as the strings "inf", "-inf", "NaN".
fn json_number(v: f64) -> Value {
    if v.is_finite() {
        json!(v)
    } else if v.is_nan() {
        json!("NaN")
    } else if v > 0.0 {
        json!("inf")
    } else {
        json!("-inf")
    }
}

fn meta_json(file: &SnapshotFile, compact: Option<&Map<String, Value>>) -> Value {
    let m = &file.meta;
    let mut v = json!({
        "schema": if compact.is_some() { SCHEMA_V2 } else { SCHEMA },
        "created_at": m.created_at,
        "name": m.name,
        "description": m.description,
        "pins": {
            "spec_hash": m.pins.spec_hash,
            "stepper_name": m.pins.stepper_name,
            "workspace_sig": m.pins.workspace_sig,
            "dtype_token": m.pins.dtype_token,
            "dynlib_version": m.pins.dynlib_version,
        },
        "n_state": file.y.len(),
        "n_params": file.params.len(),
        "state_names": [],
        "param_names": [],
        "t_curr": json_number(m.t_curr),
        "dt_curr": json_number(m.dt_curr),
        "step_count": m.step_count,
        "status": m.status,
        "time_shift": json_number(m.time_shift),
        "nominal_dt": json_number(m.nominal_dt),
        "stepper_config_names": m.stepper_config_names,
        "stepper_config_values": file.config.iter().map(|v| json_number(*v)).collect::<Vec<_>>(),
    });
    let obj = v.as_object_mut().expect("a JSON object");
    match compact {
        None => {
            obj["state_names"] = json!(m.state_names);
            obj["param_names"] = json!(m.param_names);
        }
        Some(zero) => {
            obj.shift_remove("state_names");
            obj.shift_remove("param_names");
            obj.insert("zero_members".into(), Value::Object(zero.clone()));
        }
    }
    v
}

/// Whether a snapshot of a model with these sizes is written as [`SCHEMA_V2`] (then its
/// image need not carry the names).
pub fn compact_sizes(n_states: usize, n_params: usize) -> bool {
    n_states + n_params > COMPACT_ABOVE_NAMES
}

fn compact_file(file: &SnapshotFile) -> bool {
    compact_sizes(file.y.len(), file.params.len())
}

/// Whether every value of `a` is zero bits (+0.0 or 0), so a v2 file need not store it.
fn all_zero(a: &WsArray) -> bool {
    match &a.data {
        WsData::F64(v) => !v.is_empty() && v.iter().all(|x| x.to_bits() == 0),
        WsData::I64(v) => !v.is_empty() && v.iter().all(|x| *x == 0),
    }
}

/// `zero_members` of a v2 file: member key → dtype and shape.
fn zero_members(file: &SnapshotFile) -> Map<String, Value> {
    let mut out = Map::new();
    for (prefix, ws) in [
        (STEPPER_PREFIX, &file.stepper_ws),
        (RUNTIME_PREFIX, &file.runtime_ws),
    ] {
        for a in ws.iter().filter(|a| all_zero(a)) {
            let dtype = match a.data {
                WsData::F64(_) => "float64",
                WsData::I64(_) => "int64",
            };
            out.insert(
                format!("{prefix}{}", a.name),
                json!({ "dtype": dtype, "shape": a.shape }),
            );
        }
    }
    out
}

fn ws_member(prefix: &str, a: &WsArray) -> Result<(String, NpyArray)> {
    let array = match &a.data {
        WsData::F64(v) => NpyArray::f64(a.shape.clone(), v.clone()),
        WsData::I64(v) => NpyArray::i64(a.shape.clone(), v.clone()),
    }
    .map_err(|e| e.context(format!("workspace array '{}'", a.name)))?;
    Ok((format!("{prefix}{}", a.name), array))
}

/// Encodes a snapshot as `.npz` bytes, refusing (with
/// [`InvalidArgument`](crate::error::ErrorKind::InvalidArgument) and the sizes) a file that a
/// reader would refuse: see [`FileLimits`].
pub fn encode(file: &SnapshotFile) -> Result<Vec<u8>> {
    encode_with(file, &FileLimits::default())
}

/// [`encode`] with explicit limits.
pub fn encode_with(file: &SnapshotFile, limits: &FileLimits) -> Result<Vec<u8>> {
    let text_len = file.meta.name.len() as u64 + file.meta.description.len() as u64;
    if text_len > limits.max_text_bytes {
        return Err(Error::invalid(format!(
            "cannot write the snapshot: its name and description have {text_len} bytes; \
             snapshot files allow at most {} (name {} bytes, description {} bytes)",
            limits.max_text_bytes,
            file.meta.name.len(),
            file.meta.description.len()
        )));
    }
    let compact = compact_file(file);
    let zero = if compact {
        zero_members(file)
    } else {
        Map::new()
    };
    let meta = meta_json(file, compact.then_some(&zero));
    let text = if compact {
        serde_json::to_string(&meta)
    } else {
        serde_json::to_string_pretty(&meta)
    }
    .map_err(|e| Error::internal(format!("cannot serialise meta.json: {e}")))?;
    let meta_array = NpyArray::u8(vec![text.len()], text.into_bytes())?;
    let meta_npy = super::npy::encoded_len(&meta_array) as u64;
    let allowed = meta_allowance(file, limits);
    if meta_npy > allowed {
        return Err(Error::invalid(format!(
            "cannot write the snapshot: its meta.json would take {meta_npy} bytes ({} state and \
             {} parameter names); snapshot files allow at most {allowed} bytes for it",
            file.meta.state_names.len(),
            file.meta.param_names.len(),
        )));
    }
    let n_members = 4 + file.stepper_ws.len() + file.runtime_ws.len();
    if n_members > MAX_MEMBERS {
        return Err(Error::invalid(format!(
            "cannot write the snapshot: it would have {n_members} members, at most \
             {MAX_MEMBERS} are allowed"
        )));
    }
    let vector = |v: &[f64]| NpyArray::f64(vec![v.len()], v.to_vec());
    let mut members = vec![
        ("meta.json".to_string(), meta_array),
        ("y".to_string(), vector(&file.y)?),
        ("params".to_string(), vector(&file.params)?),
        ("stepper_config".to_string(), vector(&file.config)?),
    ];
    for (prefix, ws) in [
        (STEPPER_PREFIX, &file.stepper_ws),
        (RUNTIME_PREFIX, &file.runtime_ws),
    ] {
        for a in ws {
            if !zero.contains_key(&format!("{prefix}{}", a.name)) {
                members.push(ws_member(prefix, a)?);
            }
        }
    }
    // Every member is stored uncompressed. Deflate costs more than everything else in a
    // snapshot (setting up a compressor per member dominates small files), and float state
    // barely compresses. It also keeps sizes fixed: meta.json's text has a fixed length for a
    // given state (the timestamp has fixed width), so re-serializing the same state gives the
    // same size. Readers accept deflated members too (numpy.savez_compressed writes them).
    let bytes = write_npz_storing(&members, |_| true)?;
    if bytes.len() as u64 > limits.max_file_bytes {
        return Err(Error::invalid(format!(
            "cannot write the snapshot: the file would take {} bytes; snapshot files are \
             limited to {} bytes",
            bytes.len(),
            limits.max_file_bytes
        )));
    }
    Ok(bytes)
}

/// The most bytes the `meta.json` member of a file for a session like `template` may take:
/// fixed fields, the name and description at their limit and every name of the model, each
/// at its worst JSON escaping (6 bytes per byte) — capped by `limits.max_meta_bytes`. The
/// writer refuses a larger one, so the two sides agree.
pub fn meta_allowance(template: &SnapshotFile, limits: &FileLimits) -> u64 {
    FileLayout::of(template).meta_allowance(limits)
}

/// What a session expects of a snapshot file, without its values: the sizes and names of its
/// vectors and the dtype and shape of each workspace member. [`decode_for_layout`] bounds and
/// checks a file by it; a session builds it without allocating state-sized arrays.
#[derive(Debug, Clone, PartialEq)]
pub struct FileLayout<'a> {
    pub n_states: usize,
    pub n_params: usize,
    /// The names a file lists (empty for compact files of large models).
    pub state_names: &'a [String],
    pub param_names: &'a [String],
    pub config_names: Vec<&'a str>,
    /// Workspace members by key (`workspace/<bucket>/<field>`): dtype and shape.
    pub members: Vec<(String, &'static str, Vec<usize>)>,
}

impl<'a> FileLayout<'a> {
    /// The layout of `template`, a file image of any state of the session.
    pub fn of(template: &'a SnapshotFile) -> Self {
        let mut members = Vec::new();
        for (prefix, ws) in [
            (STEPPER_PREFIX, &template.stepper_ws),
            (RUNTIME_PREFIX, &template.runtime_ws),
        ] {
            members.extend(ws.iter().map(|a| Self::member(prefix, a)));
        }
        FileLayout {
            n_states: template.y.len(),
            n_params: template.params.len(),
            state_names: &template.meta.state_names,
            param_names: &template.meta.param_names,
            config_names: template
                .meta
                .stepper_config_names
                .iter()
                .map(String::as_str)
                .collect(),
            members,
        }
    }

    /// The layout entry of workspace array `a` of bucket `stepper` or `runtime`.
    pub fn workspace_member(bucket: &str, a: &WsArray) -> (String, &'static str, Vec<usize>) {
        let prefix = if bucket == "stepper" {
            STEPPER_PREFIX
        } else {
            RUNTIME_PREFIX
        };
        Self::member(prefix, a)
    }

    fn member(prefix: &str, a: &WsArray) -> (String, &'static str, Vec<usize>) {
        (format!("{prefix}{}", a.name), a.dtype(), a.shape.clone())
    }

    /// See [`meta_allowance`].
    fn meta_allowance(&self, limits: &FileLimits) -> u64 {
        let names = self
            .state_names
            .iter()
            .chain(self.param_names)
            .map(String::as_str)
            .chain(self.config_names.iter().copied())
            .fold(0u64, |acc, n| acc.saturating_add(6 * n.len() as u64 + 16));
        let numbers = 32 * self.config_names.len() as u64;
        (64u64 << 10)
            .saturating_add(limits.max_text_bytes.saturating_mul(6))
            .saturating_add(names)
            .saturating_add(numbers)
            .min(limits.max_meta_bytes)
    }
}

/// The most bytes each member of a file for a session of `layout` may take, by key: arrays
/// their exact data size plus header room, `meta.json` the meta limit.
fn member_allowances(layout: &FileLayout<'_>, limits: &FileLimits) -> HashMap<String, u64> {
    let vector = |n: usize| n as u64 * 8 + NPY_HEADER_SLACK;
    let mut out = HashMap::new();
    out.insert("meta.json".to_string(), layout.meta_allowance(limits));
    out.insert("y".to_string(), vector(layout.n_states));
    out.insert("params".to_string(), vector(layout.n_params));
    out.insert(
        "stepper_config".to_string(),
        vector(layout.config_names.len()),
    );
    for (key, _, shape) in &layout.members {
        out.insert(key.clone(), vector(shape.iter().product()));
    }
    out
}

/// Most JSON values (numbers, strings, lists, objects, ...) in the meta.json of a file for a
/// session of `layout`: one per name and knob value, and room for the fixed fields.
fn meta_value_budget(layout: &FileLayout<'_>) -> usize {
    layout.n_states + layout.n_params + 2 * layout.config_names.len() + 256
}

/// Reads a snapshot file into memory, refusing what is not a regular file or is too large.
pub fn read_file(path: &Path) -> Result<Vec<u8>> {
    let fail = |e: std::io::Error| {
        Error::io(format!(
            "cannot read snapshot file '{}': {e}",
            path.display()
        ))
    };
    let md = std::fs::metadata(path).map_err(fail)?;
    if !md.is_file() {
        return Err(Error::io(format!(
            "cannot read snapshot file '{}': not a regular file",
            path.display()
        )));
    }
    if md.len() > MAX_FILE_BYTES {
        return Err(Error::corrupt(format!(
            "snapshot file '{}' is {} bytes; files above {MAX_FILE_BYTES} bytes are refused",
            path.display(),
            md.len()
        )));
    }
    std::fs::read(path).map_err(fail)
}

/// The parsed `meta.json` of a snapshot, checked only for being a JSON object with the
/// supported schema. Nothing else is required, so damaged files can still be inspected. Only
/// `meta.json` is decompressed (at most [`MAX_META_BYTES`]); other members are skipped.
pub fn decode_meta(bytes: &[u8]) -> Result<Value> {
    let limits = Limits {
        max_members: MAX_MEMBERS,
        max_member_bytes: MAX_META_BYTES,
        max_total_bytes: MAX_META_BYTES,
    };
    let members = read_npz_admitting(bytes, &limits, |key| {
        Ok(if key == "meta.json" {
            Admit::Read(MAX_META_BYTES)
        } else {
            Admit::Skip
        })
    })?;
    let meta = members
        .iter()
        .find(|(k, _)| k == "meta.json")
        .map(|(_, a)| a)
        .ok_or_else(|| missing("meta.json"))?;
    // Legitimate files hold about one value per 16 bytes of text or fewer; a crafted one of
    // tiny values ("[0,0,0,...]") would take 16 times its size in memory as a JSON tree.
    let budget = (1 << 20) + meta.data.len() / 16;
    parse_meta_json(meta, budget)
}

fn missing(key: &str) -> Error {
    Error::corrupt(format!("missing member '{key}' in the snapshot file"))
}

/// Counts the values of a JSON document without building it, failing past a budget.
struct CountValues<'a>(&'a std::cell::Cell<usize>);

impl CountValues<'_> {
    fn tick<E: serde::de::Error>(&self) -> std::result::Result<(), E> {
        match self.0.get().checked_sub(1) {
            Some(left) => {
                self.0.set(left);
                Ok(())
            }
            None => Err(E::custom("value budget exceeded")),
        }
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for CountValues<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for CountValues<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> std::result::Result<(), E> {
        self.tick()
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> std::result::Result<(), E> {
        self.tick()
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> std::result::Result<(), E> {
        self.tick()
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> std::result::Result<(), E> {
        self.tick()
    }
    fn visit_str<E: serde::de::Error>(self, _: &str) -> std::result::Result<(), E> {
        self.tick()
    }
    fn visit_unit<E: serde::de::Error>(self) -> std::result::Result<(), E> {
        self.tick()
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> std::result::Result<(), A::Error> {
        self.tick()?;
        while seq.next_element_seed(CountValues(self.0))?.is_some() {}
        Ok(())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<(), A::Error> {
        self.tick()?;
        while map.next_key::<serde::de::IgnoredAny>()?.is_some() {
            map.next_value_seed(CountValues(self.0))?;
        }
        Ok(())
    }
}

fn parse_meta_json(meta: &NpyArray, max_values: usize) -> Result<Value> {
    let NpyData::U8(raw) = &meta.data else {
        return Err(Error::corrupt(format!(
            "member 'meta.json' must be a uint8 array holding JSON text, found {}",
            meta.dtype_name()
        )));
    };
    if meta.shape.len() != 1 {
        return Err(Error::corrupt(format!(
            "member 'meta.json' must be a 1-D uint8 array, found rank {}",
            meta.shape.len()
        )));
    }
    let text = std::str::from_utf8(raw).map_err(|e| {
        Error::corrupt(format!(
            "meta.json is not UTF-8 text (invalid byte at offset {})",
            e.valid_up_to()
        ))
    })?;
    // Count first: the JSON tree takes several times the text's size in memory.
    let budget = std::cell::Cell::new(max_values);
    let mut counter = serde_json::Deserializer::from_str(text);
    let counted = serde::de::DeserializeSeed::deserialize(CountValues(&budget), &mut counter);
    if counted.is_err() && budget.get() == 0 {
        return Err(Error::corrupt(format!(
            "meta.json holds more than {max_values} values; a snapshot has one per name and \
             knob value and a few dozen more"
        )));
    }
    let value: Value = serde_json::from_str(text).map_err(|e| {
        let full = e.to_string();
        let what = full.split(" at line ").next().unwrap_or(&full);
        Error::corrupt(format!(
            "meta.json is not valid JSON at line {} column {}: {what}",
            e.line(),
            e.column()
        ))
    })?;
    let Some(obj) = value.as_object() else {
        return Err(Error::corrupt("meta.json must hold a JSON object"));
    };
    match obj.get("schema") {
        Some(Value::String(s)) if s == SCHEMA || s == SCHEMA_V2 => Ok(value),
        Some(Value::String(s)) => Err(Error::corrupt(format!(
            "unsupported schema '{}' (this version reads '{SCHEMA}' and '{SCHEMA_V2}')",
            s.escape_debug()
        ))),
        Some(other) => Err(Error::corrupt(format!(
            "meta.json: 'schema' must be a string, found {other}"
        ))),
        None => Err(Error::corrupt("meta.json has no 'schema' field")),
    }
}

/// Typed access to `meta.json` fields, each failure naming the field.
struct MetaReader<'a>(&'a Map<String, Value>);

impl MetaReader<'_> {
    fn get(&self, key: &str) -> Result<&Value> {
        self.0
            .get(key)
            .ok_or_else(|| Error::corrupt(format!("meta.json has no '{key}' field")))
    }
    fn bad(key: &str, want: &str, v: &Value) -> Error {
        let mut shown = v.to_string();
        if shown.len() > 60 {
            shown.truncate(57);
            shown.push_str("...");
        }
        Error::corrupt(format!("meta.json: '{key}' must be {want}, found {shown}"))
    }
    fn string(&self, key: &str) -> Result<String> {
        match self.get(key)? {
            Value::String(s) => Ok(s.clone()),
            v => Err(Self::bad(key, "a string", v)),
        }
    }
    fn count(&self, key: &str) -> Result<u64> {
        let v = self.get(key)?;
        v.as_u64()
            .ok_or_else(|| Self::bad(key, "a non-negative integer", v))
    }
    fn integer(&self, key: &str) -> Result<i64> {
        let v = self.get(key)?;
        v.as_i64().ok_or_else(|| Self::bad(key, "an integer", v))
    }
    fn number(&self, key: &str) -> Result<f64> {
        number_value(self.get(key)?).ok_or_else(|| {
            Self::bad(
                key,
                "a number (or \"inf\", \"-inf\", \"NaN\")",
                self.0.get(key).unwrap_or(&Value::Null),
            )
        })
    }
    fn strings(&self, key: &str) -> Result<Vec<String>> {
        let v = self.get(key)?;
        let list = v
            .as_array()
            .ok_or_else(|| Self::bad(key, "a list of strings", v))?;
        list.iter()
            .map(|s| {
                s.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| Self::bad(key, "a list of strings", v))
            })
            .collect()
    }
    fn numbers(&self, key: &str) -> Result<Vec<f64>> {
        let v = self.get(key)?;
        let list = v
            .as_array()
            .ok_or_else(|| Self::bad(key, "a list of numbers", v))?;
        list.iter()
            .map(|x| number_value(x).ok_or_else(|| Self::bad(key, "a list of numbers", v)))
            .collect()
    }
}

fn number_value(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.as_str() {
            "inf" | "Infinity" => Some(f64::INFINITY),
            "-inf" | "-Infinity" => Some(f64::NEG_INFINITY),
            "NaN" | "nan" => Some(f64::NAN),
            _ => None,
        },
        _ => None,
    }
}

fn same_number(a: f64, b: f64) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

fn vector(key: &str, a: NpyArray) -> Result<Vec<f64>> {
    match (a.shape.len(), a.data) {
        (1, NpyData::F64(v)) => Ok(v),
        (rank, data) => Err(Error::corrupt(format!(
            "member '{key}' must be a 1-D float64 array, found a {}-D {} array",
            rank,
            match data {
                NpyData::F64(_) => "float64",
                NpyData::I64(_) => "int64",
                NpyData::U8(_) => "uint8",
            }
        ))),
    }
}

/// The values of workspace member `key`: float64 or int64.
pub(crate) fn workspace_data(key: &str, data: NpyData) -> Result<WsData> {
    match data {
        NpyData::F64(v) => Ok(WsData::F64(v)),
        NpyData::I64(v) => Ok(WsData::I64(v)),
        NpyData::U8(_) => Err(Error::corrupt(format!(
            "member '{key}' is uint8; workspace arrays are float64 or int64"
        ))),
    }
}

fn ws_array(key: &str, name: &str, a: NpyArray) -> Result<WsArray> {
    if name.is_empty() || name.contains('/') {
        return Err(Error::corrupt(format!(
            "member '{key}' does not name a workspace field (expected workspace/<bucket>/<field>)"
        )));
    }
    let data = workspace_data(key, a.data)?;
    Ok(WsArray {
        name: name.to_string(),
        shape: a.shape,
        data,
    })
}

/// Decodes `.npz` bytes into a [`SnapshotFile`], checking the archive, the members, their
/// dtypes and shapes, the schema, every `meta.json` field, and that `meta.json` agrees with the
/// arrays. Every error is [`CorruptSnapshot`](crate::error::ErrorKind::CorruptSnapshot) and names
/// what was wrong.
pub fn decode(bytes: &[u8]) -> Result<SnapshotFile> {
    let members = read_npz(bytes, &snapshot_limits())?;
    let zeros = ZeroRestore {
        layout: None,
        lazy: &[],
        deferred: &mut Vec::new(),
    };
    decode_members(members, usize::MAX, None, zeros)
}

/// [`decode`] for a session whose own state is `template` (any state of it: only the shapes
/// matter). Before anything is decompressed, members this session has no use for are refused,
/// and each member is bounded by the size it has in such a session, so a small crafted file
/// cannot make the reader allocate more than the session's own state (plus meta.json).
pub fn decode_for(bytes: &[u8], template: &SnapshotFile) -> Result<SnapshotFile> {
    decode_for_with(bytes, template, &FileLimits::default())
}

/// [`decode_for`] with explicit limits.
pub fn decode_for_with(
    bytes: &[u8],
    template: &SnapshotFile,
    limits: &FileLimits,
) -> Result<SnapshotFile> {
    decode_for_layout(bytes, &FileLayout::of(template), limits)
}

/// [`decode_for_with`] for a session described by its [`FileLayout`].
pub fn decode_for_layout(
    bytes: &[u8],
    layout: &FileLayout<'_>,
    limits: &FileLimits,
) -> Result<SnapshotFile> {
    decode_for_layout_deferring(bytes, layout, limits, &[]).map(|(file, _)| file)
}

/// [`decode_for_layout`] leaving out the members of `lazy` (keys of the layout's workspace
/// members) that a v2 file lists as all-zero: every check of them runs, but the arrays are
/// not made; the keys of those left out are returned, for the caller to make them when it
/// needs them (a state-sized zero array costs clearing its memory, and a session needs
/// `runtime/pending_y` only for a pending step).
pub fn decode_for_layout_deferring(
    bytes: &[u8],
    layout: &FileLayout<'_>,
    limits: &FileLimits,
    lazy: &[&str],
) -> Result<(SnapshotFile, Vec<String>)> {
    if bytes.len() as u64 > limits.max_file_bytes {
        return Err(Error::corrupt(format!(
            "snapshot is {} bytes; files above {} bytes are refused",
            bytes.len(),
            limits.max_file_bytes
        )));
    }
    let allowances = member_allowances(layout, limits);
    let read_limits = Limits {
        max_members: MAX_MEMBERS,
        max_member_bytes: limits.max_file_bytes,
        max_total_bytes: allowances.values().fold(0u64, |a, b| a.saturating_add(*b)),
    };
    let members = read_npz_admitting(bytes, &read_limits, |key| {
        if let Some(n) = allowances.get(key) {
            return Ok(Admit::Read(*n));
        }
        for (prefix, bucket) in [(STEPPER_PREFIX, "stepper"), (RUNTIME_PREFIX, "runtime")] {
            if let Some(name) = key.strip_prefix(prefix) {
                return Err(Error::corrupt(format!(
                    "workspace array '{bucket}/{}' is not part of this stepper's workspace",
                    name.escape_debug()
                )));
            }
        }
        Err(Error::corrupt(format!(
            "unexpected member '{}' in the snapshot file",
            key.escape_debug()
        )))
    })?;
    // `y` and `params` are checked against the session's names first (an Incompatible
    // error naming the vector); a missing `stepper_config` is accepted when meta.json lists
    // no knobs.
    let names = (
        (layout.n_states, layout.state_names),
        (layout.n_params, layout.param_names),
    );
    let shapes: MemberLayout = layout
        .members
        .iter()
        .map(|(key, dtype, shape)| (key.as_str(), (*dtype, shape.as_slice())))
        .collect();
    let mut deferred = Vec::new();
    let zeros = ZeroRestore {
        layout: Some(&shapes),
        lazy,
        deferred: &mut deferred,
    };
    let file = decode_members(members, meta_value_budget(layout), Some(names), zeros)?;
    Ok((file, deferred))
}

/// dtype and shape of every workspace member of a session, by key.
type MemberLayout<'a> = HashMap<&'a str, (&'static str, &'a [usize])>;

/// How [`restore_zero_members`] checks and restores a file's all-zero members.
struct ZeroRestore<'a> {
    /// The session's members: each zero member must be one of them, with its dtype and
    /// shape (`None`: any workspace member, within [`MAX_FILE_BYTES`] in all).
    layout: Option<&'a MemberLayout<'a>>,
    /// Keys checked but not made (see [`decode_for_layout_deferring`]) ...
    lazy: &'a [&'a str],
    /// ... and those of them the file lists.
    deferred: &'a mut Vec<String>,
}

/// Adds the all-zero workspace arrays a v2 file lists in `zero_members` instead of storing
/// them (those of `zeros.lazy` only checked and noted in `zeros.deferred`). With a session
/// layout, each must be one of its arrays with its dtype and shape; without, together they
/// may not exceed what a file of [`MAX_FILE_BYTES`] could hold.
fn restore_zero_members(
    r: &MetaReader<'_>,
    stepper_ws: &mut Workspace,
    runtime_ws: &mut Workspace,
    zeros: ZeroRestore<'_>,
) -> Result<()> {
    let layout = zeros.layout;
    let Some(listed) = r.0.get("zero_members") else {
        return Ok(());
    };
    let listed = listed
        .as_object()
        .ok_or_else(|| MetaReader::bad("zero_members", "an object", listed))?;
    let mut budget = MAX_FILE_BYTES / 8;
    for (key, spec) in listed {
        let shown = key.escape_debug();
        let bad = || {
            Error::corrupt(format!(
                "meta.json: zero member '{shown}' must be {{\"dtype\": \"float64\" or \"int64\", \
                 \"shape\": [sizes]}}"
            ))
        };
        let dtype = spec.get("dtype").and_then(Value::as_str).ok_or_else(bad)?;
        let shape: Vec<usize> = spec
            .get("shape")
            .and_then(Value::as_array)
            .filter(|dims| dims.len() <= 8)
            .ok_or_else(bad)?
            .iter()
            .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
            .collect::<Option<_>>()
            .ok_or_else(bad)?;
        let n = shape
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
            .filter(|&n| n <= budget)
            .ok_or_else(|| {
                Error::corrupt(format!(
                    "meta.json: zero member '{shown}' of shape {shape:?} is larger than a \
                     snapshot can be"
                ))
            })?;
        budget -= n;
        if let Some(layout) = layout {
            if layout.get(key.as_str()) != Some(&(dtype, shape.as_slice())) {
                return Err(Error::corrupt(format!(
                    "meta.json: zero member '{shown}' ({dtype} {shape:?}) is not an array of \
                     this session's workspace"
                )));
            }
        }
        let (list, name) = if let Some(name) = key.strip_prefix(STEPPER_PREFIX) {
            (&mut *stepper_ws, name)
        } else if let Some(name) = key.strip_prefix(RUNTIME_PREFIX) {
            (&mut *runtime_ws, name)
        } else {
            return Err(Error::corrupt(format!(
                "meta.json: zero member '{shown}' is not a workspace array"
            )));
        };
        if name.is_empty() || name.contains('/') {
            return Err(bad());
        }
        if list.iter().any(|a| a.name == name) {
            return Err(Error::corrupt(format!(
                "member '{shown}' is stored and also listed in zero_members"
            )));
        }
        if !matches!(dtype, "float64" | "int64") {
            return Err(bad());
        }
        if zeros.lazy.contains(&key.as_str()) {
            zeros.deferred.push(key.clone());
            continue;
        }
        let data = match dtype {
            "float64" => WsData::F64(vec![0.0; n as usize]),
            _ => WsData::I64(vec![0; n as usize]),
        };
        list.push(WsArray {
            name: name.to_string(),
            shape,
            data,
        });
    }
    Ok(())
}

/// A session's size and names of one vector (states or parameters); compact images of large
/// models carry no names.
type VectorOf<'a> = (usize, &'a [String]);

fn decode_members(
    members: Vec<(String, NpyArray)>,
    max_values: usize,
    model: Option<(VectorOf<'_>, VectorOf<'_>)>,
    zeros: ZeroRestore<'_>,
) -> Result<SnapshotFile> {
    let mut meta = None;
    let (mut y, mut params, mut config) = (None, None, None);
    let (mut stepper_ws, mut runtime_ws) = (Vec::new(), Vec::new());
    for (key, array) in members {
        match key.as_str() {
            "meta.json" => meta = Some(array),
            "y" => y = Some(vector("y", array)?),
            "params" => params = Some(vector("params", array)?),
            "stepper_config" => config = Some(vector("stepper_config", array)?),
            k => {
                if let Some(name) = k.strip_prefix(STEPPER_PREFIX) {
                    stepper_ws.push(ws_array(k, name, array)?);
                } else if let Some(name) = k.strip_prefix(RUNTIME_PREFIX) {
                    runtime_ws.push(ws_array(k, name, array)?);
                } else {
                    return Err(Error::corrupt(format!(
                        "unexpected member '{}' in the snapshot file",
                        k.escape_debug()
                    )));
                }
            }
        }
    }
    let meta = parse_meta_json(&meta.ok_or_else(|| missing("meta.json"))?, max_values)?;
    let y = y.ok_or_else(|| missing("y"))?;
    let params = params.ok_or_else(|| missing("params"))?;
    if let Some((states, params_names)) = model {
        for (key, what, v, names) in [
            ("y", "state", &y, states),
            ("params", "parameter", &params, params_names),
        ] {
            let (n, names) = names;
            if v.len() != n {
                // Compact images of large models carry no names to list.
                let listed = if names.is_empty() {
                    String::new()
                } else {
                    format!(" ({what}s: {})", names.join(", "))
                };
                return Err(Error::new(
                    crate::error::ErrorKind::Incompatible,
                    format!(
                        "member '{key}': {what} vector has {} entries, the model has {n}{listed}",
                        v.len(),
                    ),
                ));
            }
        }
    }
    let obj = meta.as_object().expect("checked by parse_meta_json");
    let r = MetaReader(obj);
    let v2 = obj.get("schema").and_then(Value::as_str) == Some(SCHEMA_V2);
    if v2 {
        restore_zero_members(&r, &mut stepper_ws, &mut runtime_ws, zeros)?;
    }
    if runtime_ws.is_empty() {
        return Err(missing("workspace/runtime/clock"));
    }
    let pins_value = r.get("pins")?;
    let pins_obj = pins_value
        .as_object()
        .ok_or_else(|| MetaReader::bad("pins", "an object", pins_value))?;
    let p = MetaReader(pins_obj);
    let pin = |key: &str| p.string(key).map_err(|e| e.context("meta.json 'pins'"));
    let pins = FilePins {
        spec_hash: pin("spec_hash")?,
        stepper_name: pin("stepper_name")?,
        workspace_sig: pin("workspace_sig")?,
        dtype_token: pin("dtype_token")?,
        dynlib_version: pin("dynlib_version")?,
    };
    let n_state = r.count("n_state")?;
    let n_params = r.count("n_params")?;
    // v2 files leave the names out (empty here): they are the model's, which the spec_hash
    // pin identifies.
    let names = |key: &str| -> Result<Vec<String>> {
        if v2 && !obj.contains_key(key) {
            Ok(Vec::new())
        } else {
            r.strings(key)
        }
    };
    let file_meta = SnapshotMeta {
        created_at: r.string("created_at")?,
        name: r.string("name")?,
        description: r.string("description")?,
        pins,
        state_names: names("state_names")?,
        param_names: names("param_names")?,
        t_curr: r.number("t_curr")?,
        dt_curr: r.number("dt_curr")?,
        step_count: r.count("step_count")?,
        status: r.integer("status")?,
        time_shift: r.number("time_shift")?,
        nominal_dt: r.number("nominal_dt")?,
        stepper_config_names: r.strings("stepper_config_names")?,
    };
    let config_values = r.numbers("stepper_config_values")?;
    let config = match config {
        Some(c) => c,
        None if file_meta.stepper_config_names.is_empty() => Vec::new(),
        None => return Err(missing("stepper_config")),
    };

    let disagree = |what: &str, member: usize, meta_key: &str, meta_len: u64| {
        Error::corrupt(format!(
            "member '{what}' has {member} entries but meta.json says {meta_key} = {meta_len}"
        ))
    };
    if y.len() as u64 != n_state {
        return Err(disagree("y", y.len(), "n_state", n_state));
    }
    if params.len() as u64 != n_params {
        return Err(disagree("params", params.len(), "n_params", n_params));
    }
    for (key, names, n) in [
        ("state_names", &file_meta.state_names, n_state),
        ("param_names", &file_meta.param_names, n_params),
    ] {
        let left_out = v2 && !obj.contains_key(key);
        if names.len() as u64 != n && !left_out {
            return Err(Error::corrupt(format!(
                "meta.json: '{key}' lists {} names for {n} values",
                names.len()
            )));
        }
    }
    if config.len() != file_meta.stepper_config_names.len() || config.len() != config_values.len() {
        return Err(Error::corrupt(format!(
            "stepper config sizes disagree: member 'stepper_config' has {}, meta.json has {} \
             names and {} values",
            config.len(),
            file_meta.stepper_config_names.len(),
            config_values.len()
        )));
    }
    if let Some(i) = (0..config.len()).find(|&i| !same_number(config[i], config_values[i])) {
        return Err(Error::corrupt(format!(
            "stepper config '{}' is {} in member 'stepper_config' but {} in meta.json",
            file_meta.stepper_config_names[i], config[i], config_values[i]
        )));
    }
    Ok(SnapshotFile {
        meta: file_meta,
        y,
        params,
        config,
        stepper_ws,
        runtime_ws,
    })
}

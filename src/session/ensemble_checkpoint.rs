//! Reading an ensemble checkpoint (`dynlib-ensemble-v1`): every member's session state,
//! checked whole before an ensemble changes — schema, member count, pins, names, layouts
//! and values (each member through the single-sim snapshot checks).

use serde_json::Value;

use super::sim::Sim;
use super::snapshot_file::{legacy_workspace_sigs, state_from_file};
use super::state::{SessionPins, SessionState};
use crate::error::{Error, ErrorKind, Result};
use crate::persist::npy::{NpyArray, NpyData};
use crate::persist::npz::{read_npz, Limits};
use crate::persist::snapshot::{self, FilePins, SnapshotFile, SnapshotMeta};
use crate::stepper::{WsArray, WsData};

pub const ENSEMBLE_SCHEMA: &str = "dynlib-ensemble-v1";

const LIMITS: Limits = Limits {
    max_members: 4096,
    max_member_bytes: 1 << 30,
    max_total_bytes: 4 << 30,
};

/// What a checkpoint holds for `n` members.
pub(super) struct DecodedCheckpoint {
    pub states: Vec<SessionState>,
    pub event_counts: Vec<u64>,
    /// Each member's failure recorded before the checkpoint, if any.
    pub errors: Vec<Option<Error>>,
}

/// The checkpoint `bytes` decoded for `n` members of `template`'s model, stepper and pins.
pub(super) fn decode(template: &Sim, n: usize, bytes: &[u8]) -> Result<DecodedCheckpoint> {
    let mut arrays = Members(read_npz(bytes, &LIMITS)?);
    let legacy_sigs = legacy_workspace_sigs(template.model(), template.stepper());
    let meta = Meta::read(&arrays.take("meta.json")?, n, template.pins(), &legacy_sigs)?;
    let y = MemberRows::of("y", arrays.take("y")?, n)?;
    let params = MemberRows::of("params", arrays.take("params")?, n)?;
    let config = MemberRows::of("stepper_config", arrays.take("stepper_config")?, n)?;
    if y.shape.len() != 1 || params.shape.len() != 1 || config.shape.len() != 1 {
        return Err(Error::corrupt(
            "members 'y', 'params' and 'stepper_config' must be 2-D",
        ));
    }
    let event_counts = event_counts(arrays.take("event_counts")?, n)?;
    let _ = arrays.take("t"); // for people; the clock is in workspace/runtime/clock
    let ws = workspace_columns(template, arrays.0, n)?;
    let states = (0..n)
        .map(|i| {
            let file = SnapshotFile {
                y: y.row(i),
                params: params.row(i),
                config: config.row(i),
                ..member_file(template, &meta, &ws, i)?
            };
            state_from_file(template.model(), template.stepper(), template.pins(), &file)
                .map_err(|e| e.context(format!("member {i}")))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(DecodedCheckpoint {
        states,
        event_counts,
        errors: meta.member_errors,
    })
}

/// The npz members not yet taken.
struct Members(Vec<(String, NpyArray)>);

impl Members {
    fn take(&mut self, key: &str) -> Result<NpyArray> {
        let i = self.0.iter().position(|(k, _)| k == key).ok_or_else(|| {
            Error::corrupt(format!("missing member '{key}' in the ensemble checkpoint"))
        })?;
        Ok(self.0.swap_remove(i).1)
    }
}

/// meta.json, checked against the ensemble.
struct Meta {
    pins: FilePins,
    state_names: Vec<String>,
    param_names: Vec<String>,
    knob_names: Vec<String>,
    member_errors: Vec<Option<Error>>,
}

impl Meta {
    fn read(
        array: &NpyArray,
        n: usize,
        ours: &SessionPins,
        legacy_sigs: &[String],
    ) -> Result<Meta> {
        let NpyData::U8(raw) = &array.data else {
            return Err(Error::corrupt("member 'meta.json' must be a uint8 array"));
        };
        let meta: Value = serde_json::from_slice(raw)
            .map_err(|e| Error::corrupt(format!("meta.json is not valid JSON: {e}")))?;
        let field = |k: &str| {
            meta.get(k)
                .ok_or_else(|| Error::corrupt(format!("meta.json has no '{k}' field")))
        };
        check_schema(field("schema")?)?;
        check_member_count(field("n_members")?, n)?;
        let pins = file_pins(field("pins")?)?;
        // A legacy layout is upgraded member by member (by the single-sim reader).
        let mut comparable = pins.clone();
        if legacy_sigs.contains(&pins.workspace_sig) {
            comparable.workspace_sig = ours.workspace_sig.clone();
        }
        check_pins(ours, &comparable)?;
        let strings = |k: &str| -> Result<Vec<String>> {
            field(k)?
                .as_array()
                .and_then(|a| a.iter().map(|s| s.as_str().map(str::to_string)).collect())
                .ok_or_else(|| Error::corrupt(format!("meta.json '{k}' must be a list of strings")))
        };
        Ok(Meta {
            pins,
            state_names: strings("state_names")?,
            param_names: strings("param_names")?,
            knob_names: strings("stepper_config_names")?,
            member_errors: member_errors(meta.get("member_errors"), n),
        })
    }
}

fn check_schema(schema: &Value) -> Result<()> {
    match schema.as_str() {
        Some(ENSEMBLE_SCHEMA) => Ok(()),
        Some(s) if s == snapshot::SCHEMA => Err(Error::corrupt(format!(
            "this is a single-sim snapshot ('{s}'), not an ensemble checkpoint \
             ('{ENSEMBLE_SCHEMA}')"
        ))),
        other => Err(Error::corrupt(format!(
            "unsupported schema {other:?} (this version reads '{ENSEMBLE_SCHEMA}')"
        ))),
    }
}

fn check_member_count(count: &Value, n: usize) -> Result<()> {
    let file_n = count
        .as_u64()
        .ok_or_else(|| Error::corrupt("meta.json 'n_members' must be a count"))?;
    if file_n != n as u64 {
        return Err(Error::new(
            ErrorKind::Incompatible,
            format!(
                "the checkpoint holds {file_n} members, this ensemble has {n}; create the \
                 ensemble with {file_n} members to import it"
            ),
        ));
    }
    Ok(())
}

fn file_pins(pins: &Value) -> Result<FilePins> {
    let pin = |k: &str| -> Result<String> {
        pins.get(k)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| Error::corrupt(format!("meta.json 'pins.{k}' must be a string")))
    };
    Ok(FilePins {
        spec_hash: pin("spec_hash")?,
        stepper_name: pin("stepper_name")?,
        workspace_sig: pin("workspace_sig")?,
        dtype_token: pin("dtype_token")?,
        dynlib_version: pin("dynlib_version")?,
    })
}

fn check_pins(ours: &SessionPins, file: &FilePins) -> Result<()> {
    let diff = ours.diff(&SessionPins {
        spec_hash: file.spec_hash.clone(),
        stepper_name: file.stepper_name.clone(),
        workspace_sig: file.workspace_sig.clone(),
        dtype: file.dtype_token.clone(),
        dynlib_version: file.dynlib_version.clone(),
    });
    if diff.is_empty() {
        return Ok(());
    }
    let parts: Vec<String> = diff
        .iter()
        .map(|(n, ours, theirs)| format!("{n} is '{theirs}' in the file, '{ours}' here"))
        .collect();
    Err(Error::new(
        ErrorKind::Incompatible,
        format!("incompatible ensemble checkpoint: {}", parts.join("; ")),
    ))
}

/// The failures recorded before the checkpoint (none when the list is absent or malformed:
/// they are informational).
fn member_errors(list: Option<&Value>, n: usize) -> Vec<Option<Error>> {
    match list {
        Some(Value::Array(list)) if list.len() == n => list
            .iter()
            .map(|v| {
                v.get("message").and_then(Value::as_str).map(|msg| {
                    Error::new(
                        ErrorKind::StepFailed,
                        format!("(before the checkpoint) {msg}"),
                    )
                })
            })
            .collect(),
        _ => vec![None; n],
    }
}

/// A float64 array stacked along the member axis.
struct MemberRows {
    /// The shape of one member's row.
    shape: Vec<usize>,
    data: Vec<f64>,
}

impl MemberRows {
    fn of(key: &str, a: NpyArray, n: usize) -> Result<MemberRows> {
        match a.data {
            NpyData::F64(data) if a.shape.first() == Some(&n) => Ok(MemberRows {
                shape: a.shape[1..].to_vec(),
                data,
            }),
            _ => Err(Error::corrupt(format!(
                "member '{key}' must be a float64 array with {n} rows (one per member)"
            ))),
        }
    }

    fn row(&self, i: usize) -> Vec<f64> {
        let w: usize = self.shape.iter().product();
        self.data[i * w..(i + 1) * w].to_vec()
    }
}

fn event_counts(a: NpyArray, n: usize) -> Result<Vec<u64>> {
    match a.data {
        NpyData::I64(v) if v.len() == n && v.iter().all(|x| *x >= 0) => {
            Ok(v.into_iter().map(|x| x as u64).collect())
        }
        _ => Err(Error::corrupt(format!(
            "member 'event_counts' must be {n} non-negative int64 values"
        ))),
    }
}

/// One `workspace/<bucket>/<name>` array of every member.
struct WsColumn {
    bucket: String,
    name: String,
    /// One member's shape (the template's when the widths agree, so the single-sim checks
    /// see the layout they expect).
    shape: Vec<usize>,
    data: WsData,
}

/// The remaining npz members, which must all be workspace arrays with one row per member.
fn workspace_columns(
    template: &Sim,
    arrays: Vec<(String, NpyArray)>,
    n: usize,
) -> Result<Vec<WsColumn>> {
    let boot = SessionState::bootstrap(template.model(), template.stepper());
    let (template_stepper, template_runtime) = (boot.stepper_ws.clone(), boot.runtime_ws());
    let mut columns = Vec::with_capacity(arrays.len());
    for (key, a) in arrays {
        let (bucket, name) = match key
            .strip_prefix("workspace/")
            .and_then(|r| r.split_once('/'))
        {
            Some((b, name)) if (b == "stepper" || b == "runtime") && !name.contains('/') => {
                (b.to_string(), name.to_string())
            }
            _ => {
                return Err(Error::corrupt(format!(
                    "unexpected member '{}' in the ensemble checkpoint",
                    key.escape_debug()
                )))
            }
        };
        if a.shape.first() != Some(&n) {
            return Err(Error::corrupt(format!(
                "member '{key}' must have {n} rows (one per member)"
            )));
        }
        let width: usize = a.shape[1..].iter().product();
        let data = snapshot::workspace_data(&key, a.data)?;
        let known = if bucket == "stepper" {
            template_stepper.iter().find(|t| t.name == name)
        } else {
            template_runtime.iter().find(|t| t.name == name)
        };
        let shape = match known {
            Some(t) if t.shape.iter().product::<usize>() == width => t.shape.clone(),
            _ => vec![width],
        };
        columns.push(WsColumn {
            bucket,
            name,
            shape,
            data,
        });
    }
    Ok(columns)
}

/// Member `i`'s workspace arrays of `bucket`.
fn member_ws(ws: &[WsColumn], bucket: &str, i: usize) -> Vec<WsArray> {
    ws.iter()
        .filter(|c| c.bucket == bucket)
        .map(|c| {
            let w: usize = c.shape.iter().product();
            WsArray {
                name: c.name.clone(),
                shape: c.shape.clone(),
                data: match &c.data {
                    WsData::F64(v) => WsData::F64(v[i * w..(i + 1) * w].to_vec()),
                    WsData::I64(v) => WsData::I64(v[i * w..(i + 1) * w].to_vec()),
                },
            }
        })
        .collect()
}

/// Member `i` as a single-sim snapshot file (its y, params and config left empty for the
/// caller), so that the single-sim checks apply to it. The per-member meta repeats the
/// clock from the member's runtime workspace.
fn member_file(template: &Sim, meta: &Meta, ws: &[WsColumn], i: usize) -> Result<SnapshotFile> {
    let stepper_ws = member_ws(ws, "stepper", i);
    let runtime_ws = member_ws(ws, "runtime", i);
    let mut probe = SessionState::bootstrap(template.model(), template.stepper());
    probe
        .load_runtime_ws(&runtime_ws, template.model())
        .map_err(|e| e.context(format!("member {i}")))?;
    Ok(SnapshotFile {
        meta: SnapshotMeta {
            created_at: String::new(),
            name: format!("member {i}"),
            description: String::new(),
            pins: meta.pins.clone(),
            state_names: meta.state_names.clone(),
            param_names: meta.param_names.clone(),
            t_curr: probe.t,
            dt_curr: probe.dt,
            step_count: probe.step,
            status: probe.status.code(),
            time_shift: probe.time_shift,
            nominal_dt: probe.nominal_dt,
            stepper_config_names: meta.knob_names.clone(),
        },
        y: Vec::new(),
        params: Vec::new(),
        config: Vec::new(),
        stepper_ws,
        runtime_ws,
    })
}

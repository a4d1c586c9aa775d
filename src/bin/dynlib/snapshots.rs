//! `dynlib inspect` and `dynlib diff`: snapshot files without a session.

use std::collections::BTreeMap;
use std::path::Path;

use dynlib::persist::npy::{NpyArray, NpyData};
use dynlib::persist::{npz, snapshot};
use serde_json::Value;

use crate::Fail;

fn fail(e: dynlib::Error) -> Fail {
    Fail::usage(e.message())
}

pub fn inspect(path: &Path, json: bool) -> Result<u8, Fail> {
    let meta = dynlib::session::inspect_snapshot(path).map_err(fail)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&meta).expect("JSON values serialize")
        );
        return Ok(0);
    }
    println!("{}", path.display());
    for (key, value) in flatten(&meta) {
        println!("  {key:<28} {}", show(&value));
    }
    Ok(0)
}

/// `key.sub.sub` → value for every leaf (arrays are leaves).
fn flatten(v: &Value) -> BTreeMap<String, Value> {
    fn walk(prefix: &str, v: &Value, out: &mut BTreeMap<String, Value>) {
        match v {
            Value::Object(m) if !m.is_empty() => {
                for (k, x) in m {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, x, out);
                }
            }
            _ => {
                out.insert(prefix.to_string(), v.clone());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk("", v, &mut out);
    out
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(a) if a.len() > 12 => format!(
            "[{}, … ({} items)]",
            a[..6].iter().map(show).collect::<Vec<_>>().join(", "),
            a.len()
        ),
        Value::Array(a) => format!("[{}]", a.iter().map(show).collect::<Vec<_>>().join(", ")),
        other => other.to_string(),
    }
}

type Flat = BTreeMap<String, Value>;
type Members = Vec<(String, NpyArray)>;

/// Keys of meta.json that say when or by whom, not what: reported, never a difference.
const INFORMATIONAL: &[&str] = &["created_at"];

pub fn diff(a: &Path, b: &Path) -> Result<u8, Fail> {
    let read = |p: &Path| -> Result<(Flat, Members), Fail> {
        let bytes = snapshot::read_file(p).map_err(fail)?;
        let meta = snapshot::decode_meta(&bytes)
            .map_err(|e| Fail::usage(format!("'{}': {}", p.display(), e.message())))?;
        let members = npz::read_npz(&bytes, &snapshot::snapshot_limits())
            .map_err(|e| Fail::usage(format!("'{}': {}", p.display(), e.message())))?;
        Ok((flatten(&meta), members))
    };
    let (ma, xa) = read(a)?;
    let (mb, xb) = read(b)?;
    let mut differences = 0usize;

    // Pins first (what decides whether a snapshot fits a session), then the rest of meta.json.
    let keys: std::collections::BTreeSet<&String> = ma.keys().chain(mb.keys()).collect();
    let (pins, rest): (Vec<&String>, Vec<&String>) =
        keys.into_iter().partition(|k| k.contains("pin"));
    for (title, keys) in [("pins", pins), ("meta", rest)] {
        for k in keys {
            let (va, vb) = (ma.get(k), mb.get(k));
            if va == vb {
                continue;
            }
            let informational = INFORMATIONAL.iter().any(|i| k.ends_with(i));
            if !informational {
                differences += 1;
            }
            println!(
                "{title} {k}{}: {} | {}",
                if informational {
                    " (informational)"
                } else {
                    ""
                },
                va.map_or("(missing)".to_string(), show),
                vb.map_or("(missing)".to_string(), show)
            );
        }
    }

    // Every array member, bit for bit.
    let by_name = |x: &[(String, NpyArray)]| -> BTreeMap<String, NpyArray> {
        x.iter()
            .filter(|(k, _)| k != "meta.json")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let (aa, ab) = (by_name(&xa), by_name(&xb));
    let names: std::collections::BTreeSet<&String> = aa.keys().chain(ab.keys()).collect();
    for name in names {
        match (aa.get(name), ab.get(name)) {
            (Some(x), Some(y)) => {
                if let Some(what) = array_difference(x, y) {
                    differences += 1;
                    println!("array {name}: {what}");
                }
            }
            (x, _) => {
                differences += 1;
                println!(
                    "array {name}: only in {}",
                    if x.is_some() { "A" } else { "B" }
                );
            }
        }
    }
    if differences == 0 {
        println!("identical: same pins, metadata and arrays (bit for bit)");
        Ok(0)
    } else {
        println!("{differences} difference(s)");
        Ok(1)
    }
}

fn array_difference(x: &NpyArray, y: &NpyArray) -> Option<String> {
    if x.shape != y.shape {
        return Some(format!("shape {:?} | {:?}", x.shape, y.shape));
    }
    if x.data.dtype_name() != y.data.dtype_name() {
        return Some(format!(
            "dtype {} | {}",
            x.data.dtype_name(),
            y.data.dtype_name()
        ));
    }
    let differing: Vec<(usize, String, String)> = match (&x.data, &y.data) {
        (NpyData::F64(p), NpyData::F64(q)) => p
            .iter()
            .zip(q)
            .enumerate()
            .filter(|(_, (u, v))| u.to_bits() != v.to_bits())
            .map(|(i, (u, v))| (i, format!("{u:?}"), format!("{v:?}")))
            .collect(),
        (NpyData::I64(p), NpyData::I64(q)) => p
            .iter()
            .zip(q)
            .enumerate()
            .filter(|(_, (u, v))| u != v)
            .map(|(i, (u, v))| (i, u.to_string(), v.to_string()))
            .collect(),
        (NpyData::U8(p), NpyData::U8(q)) => p
            .iter()
            .zip(q)
            .enumerate()
            .filter(|(_, (u, v))| u != v)
            .map(|(i, (u, v))| (i, u.to_string(), v.to_string()))
            .collect(),
        _ => return Some("dtypes differ".to_string()),
    };
    if differing.is_empty() {
        return None;
    }
    let shown: Vec<String> = differing
        .iter()
        .take(5)
        .map(|(i, u, v)| format!("[{i}] {u} | {v}"))
        .collect();
    Some(format!(
        "{} of {} values differ: {}{}",
        differing.len(),
        x.data.len(),
        shown.join(", "),
        if differing.len() > 5 { ", …" } else { "" }
    ))
}

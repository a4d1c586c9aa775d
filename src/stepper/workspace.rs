//! Named arrays a stepper carries between steps. The session snapshots them; files store them
//! as `workspace/stepper/<name>` members.

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq)]
pub enum WsData {
    F64(Vec<f64>),
    I64(Vec<i64>),
}

/// One named array (row-major when 2-D).
#[derive(Debug, Clone, PartialEq)]
pub struct WsArray {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: WsData,
}

impl WsArray {
    pub fn f64(name: &str, data: Vec<f64>) -> Self {
        WsArray {
            name: name.to_string(),
            shape: vec![data.len()],
            data: WsData::F64(data),
        }
    }
    pub fn i64(name: &str, data: Vec<i64>) -> Self {
        WsArray {
            name: name.to_string(),
            shape: vec![data.len()],
            data: WsData::I64(data),
        }
    }
    pub fn matrix(name: &str, rows: usize, cols: usize, data: Vec<f64>) -> Self {
        WsArray {
            name: name.to_string(),
            shape: vec![rows, cols],
            data: WsData::F64(data),
        }
    }
    pub fn dtype(&self) -> &'static str {
        match self.data {
            WsData::F64(_) => "float64",
            WsData::I64(_) => "int64",
        }
    }
    /// Bitwise equality (NaN payloads included), for exactness checks.
    pub fn bits_eq(&self, other: &WsArray) -> bool {
        self.name == other.name
            && self.shape == other.shape
            && match (&self.data, &other.data) {
                (WsData::F64(a), WsData::F64(b)) => {
                    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
                }
                (WsData::I64(a), WsData::I64(b)) => a == b,
                _ => false,
            }
    }
}

/// An ordered list of named arrays.
pub type Workspace = Vec<WsArray>;

fn find<'a>(ws: &'a [WsArray], name: &str) -> Result<&'a WsArray> {
    ws.iter()
        .find(|a| a.name == name)
        .ok_or_else(|| Error::corrupt(format!("workspace array '{name}' is missing")))
}

/// Copies f64 array `name` into `dst`, checking its length.
pub fn load_f64(ws: &[WsArray], name: &str, dst: &mut [f64]) -> Result<()> {
    match &find(ws, name)?.data {
        WsData::F64(v) if v.len() == dst.len() => {
            dst.copy_from_slice(v);
            Ok(())
        }
        WsData::F64(v) => Err(Error::corrupt(format!(
            "workspace array '{name}' has {} entries, expected {}",
            v.len(),
            dst.len()
        ))),
        WsData::I64(_) => Err(Error::corrupt(format!(
            "workspace array '{name}' is int64, expected float64"
        ))),
    }
}

/// Copies i64 array `name` into `dst`, checking its length.
pub fn load_i64(ws: &[WsArray], name: &str, dst: &mut [i64]) -> Result<()> {
    match &find(ws, name)?.data {
        WsData::I64(v) if v.len() == dst.len() => {
            dst.copy_from_slice(v);
            Ok(())
        }
        WsData::I64(v) => Err(Error::corrupt(format!(
            "workspace array '{name}' has {} entries, expected {}",
            v.len(),
            dst.len()
        ))),
        WsData::F64(_) => Err(Error::corrupt(format!(
            "workspace array '{name}' is float64, expected int64"
        ))),
    }
}

/// Checks that `ws` has exactly the layout (names, dtypes, shapes) of `template`.
pub fn check_layout(ws: &[WsArray], template: &[WsArray], bucket: &str) -> Result<()> {
    for t in template {
        let a = ws.iter().find(|a| a.name == t.name).ok_or_else(|| {
            Error::corrupt(format!("workspace array '{bucket}/{}' is missing", t.name))
        })?;
        if a.dtype() != t.dtype() || a.shape != t.shape {
            return Err(Error::corrupt(format!(
                "workspace array '{bucket}/{}' is {} {:?}, expected {} {:?}",
                t.name,
                a.dtype(),
                a.shape,
                t.dtype(),
                t.shape
            )));
        }
    }
    if let Some(extra) = ws
        .iter()
        .find(|a| !template.iter().any(|t| t.name == a.name))
    {
        return Err(Error::corrupt(format!(
            "workspace array '{bucket}/{}' is not part of this stepper's workspace",
            extra.name
        )));
    }
    // Every name is the template's, so a longer list repeats one (a file's upgrade from a
    // legacy layout adds arrays: a file that had them already must not pass).
    if let Some((_, a)) = ws
        .iter()
        .enumerate()
        .find(|(i, a)| ws[..*i].iter().any(|b| b.name == a.name))
    {
        return Err(Error::corrupt(format!(
            "workspace array '{bucket}/{}' appears more than once",
            a.name
        )));
    }
    Ok(())
}

/// Checks that every float in `ws` is finite (NaN and ±inf in carried history only ever come
/// from a damaged or crafted file: a stepper never commits a non-finite step).
pub fn check_finite(ws: &[WsArray], bucket: &str) -> Result<()> {
    for a in ws {
        if let WsData::F64(v) = &a.data {
            if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                return Err(Error::corrupt(format!(
                    "workspace array '{bucket}/{}' holds {} at index {i}; carried values must be \
                     finite",
                    a.name, v[i]
                )));
            }
        }
    }
    Ok(())
}

/// A structural digest of a workspace layout: names, dtypes and shapes, not values.
pub fn layout_signature(parts: &[(&str, &[WsArray])]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for (bucket, arrays) in parts {
        for a in *arrays {
            h.update(format!("{bucket}/{}:{}:{:?};", a.name, a.dtype(), a.shape).as_bytes());
        }
    }
    h.finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

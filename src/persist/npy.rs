//! Reading and writing single arrays in NumPy's `.npy` format.
//!
//! Only what snapshots need is supported: little-endian `float64`, `int64` and `uint8` arrays of
//! rank 0, 1 or 2 in C order. The writer produces byte-for-byte what `numpy.save` writes for the
//! same array (format 1.0). The reader accepts what NumPy writes (format 1.0, 2.0 and 3.0, any
//! key order and spacing in the header dict) and treats its input as untrusted: every malformed
//! header, unsupported dtype, absurd shape or wrong data length is an error, never a panic, and
//! nothing is allocated beyond the size of the input.
//!
//! Format reference: <https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html>.

use crate::error::{Error, Result};

/// The highest rank (number of dimensions) this module reads or constructs.
pub const MAX_RANK: usize = 2;

/// `\x93NUMPY`, the first six bytes of every `.npy` file.
const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// NumPy aligns the start of the data to this many bytes (so files can be memory-mapped).
const ARRAY_ALIGN: usize = 64;

/// NumPy pads the header so that the first axis can grow to this many digits in place; the
/// writer copies that so its output is identical to `numpy.save`.
const GROWTH_AXIS_MAX_DIGITS: usize = 21;

/// Longest header the reader accepts. NumPy refuses longer headers by default too
/// (`max_header_size=10000`); ours are about 128 bytes.
const MAX_HEADER_LEN: usize = 10_000;

/// The elements of an array, in C order, with their dtype.
#[derive(Debug, Clone, PartialEq)]
pub enum NpyData {
    /// `float64` (`'<f8'`), stored bit-exactly (NaN payloads and signed zeros survive).
    F64(Vec<f64>),
    /// `int64` (`'<i8'`).
    I64(Vec<i64>),
    /// `uint8` (`'|u1'`).
    U8(Vec<u8>),
}

impl NpyData {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            NpyData::F64(v) => v.len(),
            NpyData::I64(v) => v.len(),
            NpyData::U8(v) => v.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// NumPy's name for the dtype: `"float64"`, `"int64"` or `"uint8"`.
    pub fn dtype_name(&self) -> &'static str {
        self.dtype().name()
    }

    fn dtype(&self) -> Dtype {
        match self {
            NpyData::F64(_) => Dtype::F64,
            NpyData::I64(_) => Dtype::I64,
            NpyData::U8(_) => Dtype::U8,
        }
    }
}

/// An n-dimensional array (rank 0 to [`MAX_RANK`]) as stored in one `.npy` member.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyArray {
    /// The dimensions; empty for a scalar (rank 0, one element).
    pub shape: Vec<usize>,
    /// The elements in C (row-major) order; their number is the product of `shape`.
    pub data: NpyData,
}

impl NpyArray {
    /// A `float64` array. Fails if the rank exceeds [`MAX_RANK`] or the number of elements is
    /// not the product of `shape`.
    pub fn f64(shape: Vec<usize>, data: Vec<f64>) -> Result<Self> {
        Self::new(shape, NpyData::F64(data))
    }

    /// An `int64` array; see [`NpyArray::f64`].
    pub fn i64(shape: Vec<usize>, data: Vec<i64>) -> Result<Self> {
        Self::new(shape, NpyData::I64(data))
    }

    /// A `uint8` array; see [`NpyArray::f64`].
    pub fn u8(shape: Vec<usize>, data: Vec<u8>) -> Result<Self> {
        Self::new(shape, NpyData::U8(data))
    }

    fn new(shape: Vec<usize>, data: NpyData) -> Result<Self> {
        let array = NpyArray { shape, data };
        array.validate()?;
        Ok(array)
    }

    /// Checks what the constructors check, for arrays built from the public fields: the rank is
    /// at most [`MAX_RANK`] and the number of elements is the product of the shape.
    pub fn validate(&self) -> Result<()> {
        if self.shape.len() > MAX_RANK {
            return Err(Error::invalid(format!(
                "array of shape {} has rank {}; at most {MAX_RANK} dimensions are supported",
                shape_repr(&self.shape),
                self.shape.len()
            )));
        }
        let expected = self.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        if expected != Some(self.data.len()) {
            return Err(Error::invalid(format!(
                "array of shape {} cannot hold {} elements",
                shape_repr(&self.shape),
                self.data.len()
            )));
        }
        Ok(())
    }

    /// Number of elements (1 for a scalar).
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the array has no elements (some dimension is 0).
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// NumPy's name for the dtype: `"float64"`, `"int64"` or `"uint8"`.
    pub fn dtype_name(&self) -> &'static str {
        self.data.dtype_name()
    }
}

/// The supported element types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dtype {
    F64,
    I64,
    U8,
}

impl Dtype {
    fn name(self) -> &'static str {
        match self {
            Dtype::F64 => "float64",
            Dtype::I64 => "int64",
            Dtype::U8 => "uint8",
        }
    }

    /// The descriptor NumPy writes for this dtype (`np.dtype(...).str`).
    fn descr(self) -> &'static str {
        match self {
            Dtype::F64 => "<f8",
            Dtype::I64 => "<i8",
            Dtype::U8 => "|u1",
        }
    }

    fn item_size(self) -> usize {
        match self {
            Dtype::F64 | Dtype::I64 => 8,
            Dtype::U8 => 1,
        }
    }

    fn from_descr(descr: &str) -> Result<Self> {
        match descr {
            "<f8" => Ok(Dtype::F64),
            "<i8" => Ok(Dtype::I64),
            // Byte order is meaningless for one byte; NumPy writes '|u1' but accepts the others.
            "|u1" | "<u1" | "u1" => Ok(Dtype::U8),
            d if d.starts_with('>') => Err(Error::corrupt(format!(
                "array has big-endian dtype '{}'; only little-endian float64, int64 or uint8 \
                 are supported",
                d.escape_debug()
            ))),
            d => Err(Error::corrupt(format!(
                "array has dtype '{}'; expected float64, int64 or uint8",
                d.escape_debug()
            ))),
        }
    }
}

/// Python's `repr` of a shape tuple: `()`, `(3,)`, `(2, 3)`.
fn shape_repr(shape: &[usize]) -> String {
    match shape {
        [] => "()".to_string(),
        [d] => format!("({d},)"),
        _ => {
            let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
            format!("({})", dims.join(", "))
        }
    }
}

/// The header text, format major version, prefix length and padding [`write_npy`] uses.
fn header_layout(a: &NpyArray) -> (String, u8, usize, usize) {
    let dtype = a.data.dtype();
    let mut header = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': {}, }}",
        dtype.descr(),
        shape_repr(&a.shape)
    );
    // Same growth padding as NumPy (C order pads for the first axis), so the output is
    // byte-identical to numpy.save and can be compared with it.
    if let Some(first) = a.shape.first() {
        let digits = first.to_string().len();
        header.extend(std::iter::repeat_n(
            ' ',
            GROWTH_AXIS_MAX_DIGITS.saturating_sub(digits),
        ));
    }
    // `+ 1` for the final newline. NumPy pads a whole ARRAY_ALIGN block when the unpadded
    // header would already end on a boundary; copying that keeps the bytes identical.
    let hlen = header.len() + 1;
    let padlen_for = |prefix_len: usize| ARRAY_ALIGN - (prefix_len + hlen) % ARRAY_ALIGN;
    let (major, prefix_len) = if hlen + padlen_for(10) <= usize::from(u16::MAX) {
        (1u8, 10)
    } else {
        (2u8, 12)
    };
    (header, major, prefix_len, padlen_for(prefix_len))
}

/// The number of bytes [`write_npy`] writes for `a`, without writing them.
pub fn encoded_len(a: &NpyArray) -> usize {
    let (header, _, prefix_len, padlen) = header_layout(a);
    prefix_len + header.len() + 1 + padlen + a.len() * a.data.dtype().item_size()
}

/// Serialises `a` exactly as `numpy.save` does: format 1.0 (2.0 only if the header would not
/// fit, which needs a rank far above [`MAX_RANK`]), little-endian, C order, header padded with
/// spaces and a final `'\n'` so the data starts at a multiple of 64 bytes.
///
/// The header is written from `a.shape` as given; an array whose shape does not match its data
/// (see [`NpyArray::validate`]) yields a file that [`read_npy`] rejects.
pub fn write_npy(a: &NpyArray) -> Vec<u8> {
    let dtype = a.data.dtype();
    let (header, major, prefix_len, padlen) = header_layout(a);
    let header_len = header.len() + 1 + padlen;

    let mut out = Vec::with_capacity(prefix_len + header_len + a.len() * dtype.item_size());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[major, 0]);
    if major == 1 {
        // Fits: checked when choosing the version above.
        out.extend_from_slice(&(header_len as u16).to_le_bytes());
    } else {
        // A header over 4 GiB would need a shape longer than any Vec of dimensions could be.
        out.extend_from_slice(&(header_len as u32).to_le_bytes());
    }
    out.extend_from_slice(header.as_bytes());
    out.extend(std::iter::repeat_n(b' ', padlen));
    out.push(b'\n');

    match &a.data {
        NpyData::F64(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        NpyData::I64(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        NpyData::U8(v) => out.extend_from_slice(v),
    }
    out
}

/// Parses one `.npy` file.
///
/// `max_elements` bounds the declared shape before anything is allocated; the data must then be
/// exactly `elements × item size` bytes. Accepts format versions 1.0, 2.0 and 3.0, dtypes
/// `'<f8'`, `'<i8'` and `'|u1'` (also `'<u1'`, `'u1'`), rank 0 to [`MAX_RANK`], C order.
/// Every other input is a [`CorruptSnapshot`](crate::error::ErrorKind::CorruptSnapshot) error
/// whose message names the problem.
pub fn read_npy(bytes: &[u8], max_elements: usize) -> Result<NpyArray> {
    let (header, data) = split_header(bytes)?;
    let header = parse_header(header).map_err(|reason| {
        Error::corrupt(format!(
            "malformed .npy header: {reason} (header: {})",
            header_excerpt(header)
        ))
    })?;

    let dtype = Dtype::from_descr(&header.descr)?;
    if header.fortran_order {
        return Err(Error::corrupt(
            "array is stored in Fortran order; only C order is supported",
        ));
    }
    let shape = header.shape;
    if shape.len() > MAX_RANK {
        return Err(Error::corrupt(format!(
            "array has rank {} (shape {}); at most {MAX_RANK} dimensions are supported",
            shape.len(),
            shape_repr(&shape)
        )));
    }
    let elements = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .filter(|&n| n <= max_elements)
        .ok_or_else(|| {
            Error::corrupt(format!(
                "declared shape {} exceeds the limit of {max_elements} elements",
                shape_repr(&shape)
            ))
        })?;
    let expected_bytes = elements.checked_mul(dtype.item_size());
    if expected_bytes != Some(data.len()) {
        return Err(Error::corrupt(format!(
            "array data is {} bytes; shape {} of {} needs {}",
            data.len(),
            shape_repr(&shape),
            dtype.name(),
            // Only reachable when max_elements admits more than usize::MAX / 8 elements.
            expected_bytes.map_or_else(|| "more than usize::MAX".to_string(), |n| n.to_string())
        )));
    }

    // The length check above makes the allocations below no larger than the input.
    let data = match dtype {
        Dtype::F64 => NpyData::F64(
            data.chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("chunk of 8")))
                .collect(),
        ),
        Dtype::I64 => NpyData::I64(
            data.chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().expect("chunk of 8")))
                .collect(),
        ),
        Dtype::U8 => NpyData::U8(data.to_vec()),
    };
    Ok(NpyArray { shape, data })
}

/// Checks the magic and version and splits the input into header text and data.
fn split_header(bytes: &[u8]) -> Result<(&[u8], &[u8])> {
    if bytes.len() < 8 || &bytes[..6] != MAGIC {
        return Err(Error::corrupt(
            "not a .npy array (missing the \\x93NUMPY signature)",
        ));
    }
    let (major, minor) = (bytes[6], bytes[7]);
    // 1.0 has a 2-byte header length, 2.0 and 3.0 a 4-byte one (3.0 only allows UTF-8 in the
    // header, which matters for structured dtypes we reject anyway).
    let rest = &bytes[8..];
    let truncated = || Error::corrupt(".npy header is truncated");
    let (header_len, rest) = match (major, minor) {
        (1, 0) => {
            let (len, rest) = rest.split_first_chunk::<2>().ok_or_else(truncated)?;
            (usize::from(u16::from_le_bytes(*len)), rest)
        }
        (2, 0) | (3, 0) => {
            let (len, rest) = rest.split_first_chunk::<4>().ok_or_else(truncated)?;
            let len = usize::try_from(u32::from_le_bytes(*len)).unwrap_or(usize::MAX);
            (len, rest)
        }
        _ => {
            return Err(Error::corrupt(format!(
                "unsupported .npy format version {major}.{minor}; expected 1.0, 2.0 or 3.0"
            )))
        }
    };
    if header_len > MAX_HEADER_LEN {
        return Err(Error::corrupt(format!(
            ".npy header declares {header_len} bytes; at most {MAX_HEADER_LEN} are accepted"
        )));
    }
    rest.split_at_checked(header_len).ok_or_else(|| {
        Error::corrupt(format!(
            ".npy header declares {header_len} bytes but only {} follow",
            rest.len()
        ))
    })
}

/// At most 120 characters of a header for error messages, control characters replaced so
/// the message stays on one line.
fn header_excerpt(header: &[u8]) -> String {
    let text = String::from_utf8_lossy(header);
    let text = text.trim_end();
    let mut excerpt: String = text
        .chars()
        .take(120)
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect();
    if text.chars().nth(120).is_some() {
        excerpt.push('…');
    }
    excerpt
}

/// The three fields every `.npy` header dict has.
#[derive(Debug)]
struct Header {
    descr: String,
    fortran_order: bool,
    shape: Vec<usize>,
}

/// A value of the Python literal subset NumPy writes in headers.
enum Value {
    Str(String),
    Bool(bool),
    Tuple(Vec<usize>),
}

/// Parses the header dict, e.g. `{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }`.
/// Errors are reasons, to be wrapped with the header text by the caller.
fn parse_header(text: &[u8]) -> std::result::Result<Header, String> {
    let mut p = Parser { s: text, pos: 0 };
    let (mut descr, mut fortran_order, mut shape) = (None, None, None);
    p.skip_ws();
    p.expect(b'{')?;
    p.skip_ws();
    while p.peek() != Some(b'}') {
        let key = p.string()?;
        if !matches!(key.as_str(), "descr" | "fortran_order" | "shape") {
            return Err(format!("unexpected key '{}'", key.escape_debug()));
        }
        p.skip_ws();
        p.expect(b':')?;
        p.skip_ws();
        if key == "descr" && p.peek() == Some(b'[') {
            return Err("structured dtypes (descr lists) are not supported".to_string());
        }
        let value = p.value()?;
        let slot_taken = match (key.as_str(), value) {
            ("descr", Value::Str(s)) => descr.replace(s).is_some(),
            ("fortran_order", Value::Bool(b)) => fortran_order.replace(b).is_some(),
            ("shape", Value::Tuple(t)) => shape.replace(t).is_some(),
            _ => return Err(format!("'{key}' has a value of the wrong type")),
        };
        if slot_taken {
            return Err(format!("duplicate key '{key}'"));
        }
        p.skip_ws();
        // Entries are separated by commas; a trailing comma (as NumPy writes) is optional.
        if p.peek() == Some(b',') {
            p.pos += 1;
            p.skip_ws();
        } else if p.peek() != Some(b'}') {
            return Err(p.unexpected("',' or '}'"));
        }
    }
    p.pos += 1; // the '}'
    p.skip_ws();
    if p.pos != text.len() {
        return Err("unexpected characters after the header dict".to_string());
    }
    Ok(Header {
        descr: descr.ok_or("missing key 'descr'")?,
        fortran_order: fortran_order.ok_or("missing key 'fortran_order'")?,
        shape: shape.ok_or("missing key 'shape'")?,
    })
}

/// A cursor over header bytes. Only ASCII is meaningful; anything else is an unexpected byte.
struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn unexpected(&self, wanted: &str) -> String {
        match self.peek() {
            Some(c) => format!(
                "expected {wanted} at byte {} but found '{}'",
                self.pos,
                c.escape_ascii()
            ),
            None => format!("expected {wanted} but the header ended"),
        }
    }

    fn expect(&mut self, c: u8) -> std::result::Result<(), String> {
        if self.peek() == Some(c) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.unexpected(&format!("'{}'", c.escape_ascii())))
        }
    }

    /// A quoted string without escapes (NumPy never writes escapes for the dtypes we accept).
    fn string(&mut self) -> std::result::Result<String, String> {
        let quote = match self.peek() {
            Some(q @ (b'\'' | b'"')) => q,
            _ => return Err(self.unexpected("a quoted string")),
        };
        let start = self.pos + 1;
        let len = self.s[start..]
            .iter()
            .position(|&c| c == quote || c == b'\\' || c == b'\n')
            .filter(|&len| self.s[start + len] == quote)
            .ok_or("unterminated or escaped string")?;
        self.pos = start + len + 1;
        let bytes = &self.s[start..start + len];
        // Non-UTF-8 bytes cannot name a supported dtype; keep them visible in messages.
        Ok(String::from_utf8_lossy(bytes).into_owned())
    }

    fn value(&mut self) -> std::result::Result<Value, String> {
        match self.peek() {
            Some(b'\'' | b'"') => self.string().map(Value::Str),
            Some(b'(') => self.tuple().map(Value::Tuple),
            _ => {
                for (word, b) in [("True", true), ("False", false)] {
                    if self.s[self.pos..].starts_with(word.as_bytes()) {
                        self.pos += word.len();
                        return Ok(Value::Bool(b));
                    }
                }
                Err(self.unexpected("a string, True, False or a tuple"))
            }
        }
    }

    /// `()`, `(3,)`, `(2, 3)` or `(2, 3,)`; `(3)` is an int in Python, not a tuple.
    fn tuple(&mut self) -> std::result::Result<Vec<usize>, String> {
        self.expect(b'(')?;
        self.skip_ws();
        let mut dims = Vec::new();
        let mut trailing_comma = false;
        while self.peek() != Some(b')') {
            // Bounded by the header length (MAX_HEADER_LEN), so this cannot grow unboundedly.
            dims.push(self.dimension()?);
            self.skip_ws();
            trailing_comma = self.peek() == Some(b',');
            if trailing_comma {
                self.pos += 1;
                self.skip_ws();
            } else if self.peek() != Some(b')') {
                return Err(self.unexpected("',' or ')' in the shape"));
            }
        }
        self.pos += 1; // the ')'
        if dims.len() == 1 && !trailing_comma {
            return Err(format!(
                "shape ({}) is not a tuple (a 1-tuple needs a trailing comma)",
                dims[0]
            ));
        }
        Ok(dims)
    }

    fn dimension(&mut self) -> std::result::Result<usize, String> {
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        let digits = &self.s[start..self.pos];
        if digits.is_empty() {
            return Err(if self.peek() == Some(b'-') {
                "shape has a negative dimension".to_string()
            } else {
                self.unexpected("a dimension")
            });
        }
        digits
            .iter()
            .try_fold(0usize, |n, &d| {
                n.checked_mul(10)?.checked_add(usize::from(d - b'0'))
            })
            .ok_or_else(|| format!("shape entry {} overflows", digits.escape_ascii()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    /// A `.npy` file with the given version and header text, followed by `data`.
    fn npy_with_header(major: u8, header: &str, data: &[u8]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&[major, 0]);
        if major == 1 {
            out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        } else {
            out.extend_from_slice(&(header.len() as u32).to_le_bytes());
        }
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    fn f64_bytes(values: &[f64]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    /// The error message, asserting the input was rejected as corrupt.
    fn rejection(bytes: &[u8], max_elements: usize) -> String {
        let err = read_npy(bytes, max_elements).expect_err("input should be rejected");
        assert_eq!(err.kind(), ErrorKind::CorruptSnapshot, "{err}");
        err.message().to_string()
    }

    fn header_rejection(header: &str, data: &[u8]) -> String {
        rejection(&npy_with_header(1, header, data), 1000)
    }

    fn round_trip(a: &NpyArray) -> NpyArray {
        let bytes = write_npy(a);
        read_npy(&bytes, usize::MAX).expect("round trip")
    }

    #[test]
    fn round_trips_every_dtype_and_rank() {
        let arrays = [
            NpyArray::f64(vec![], vec![2.5]),
            NpyArray::f64(vec![3], vec![1.0, -2.0, 3.5]),
            NpyArray::f64(vec![2, 3], (0..6).map(f64::from).collect()),
            NpyArray::f64(vec![0], vec![]),
            NpyArray::i64(vec![], vec![i64::MIN]),
            NpyArray::i64(vec![4], vec![0, -1, i64::MAX, 42]),
            NpyArray::i64(vec![3, 2], vec![1, 2, 3, 4, 5, 6]),
            NpyArray::i64(vec![2, 0], vec![]),
            NpyArray::u8(vec![], vec![255]),
            NpyArray::u8(vec![5], b"hello".to_vec()),
            NpyArray::u8(vec![1, 3], vec![0, 128, 255]),
            NpyArray::u8(vec![0, 7], vec![]),
        ];
        for a in arrays {
            let a = a.expect("valid array");
            assert_eq!(round_trip(&a), a);
        }
    }

    #[test]
    fn floats_round_trip_bit_exactly() {
        let values = [
            f64::NAN,
            -f64::NAN,
            f64::from_bits(0x7ff8_0000_dead_beef), // quiet NaN with a payload
            f64::from_bits(0x7ff0_0000_0000_0001), // signalling NaN
            f64::from_bits(0xfff4_0000_0000_1234), // negative signalling NaN with a payload
            -0.0,
            0.0,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::MIN_POSITIVE / 4.0, // subnormal
            f64::MAX,
            f64::MIN,
        ];
        let a = NpyArray::f64(vec![values.len()], values.to_vec()).unwrap();
        let NpyData::F64(back) = round_trip(&a).data else {
            panic!("dtype changed")
        };
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&back), bits(&values));
    }

    #[test]
    fn header_is_byte_identical_to_numpy() {
        // What `numpy.save` writes for np.array([1.0, 2.0, 3.0]): 10-byte prefix, the dict,
        // spaces, '\n', ending at byte 128.
        let dict = "{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }";
        let mut expected = b"\x93NUMPY\x01\x00\x76\x00".to_vec();
        expected.extend_from_slice(dict.as_bytes());
        expected.extend_from_slice(&[b' '; 60]);
        expected.push(b'\n');
        assert_eq!(expected.len(), 128);

        let bytes = write_npy(&NpyArray::f64(vec![3], vec![1.0, 2.0, 3.0]).unwrap());
        assert_eq!(&bytes[..128], &expected[..]);
        assert_eq!(&bytes[128..], &f64_bytes(&[1.0, 2.0, 3.0])[..]);
    }

    #[test]
    fn rank_zero_is_written_as_empty_tuple() {
        let bytes = write_npy(&NpyArray::u8(vec![], vec![7]).unwrap());
        let dict = b"{'descr': '|u1', 'fortran_order': False, 'shape': (), }";
        assert_eq!(&bytes[10..10 + dict.len()], dict);
        assert_eq!(bytes.len(), 129);
        assert_eq!(bytes[128], 7);
    }

    #[test]
    fn data_starts_on_a_64_byte_boundary() {
        // Header lengths differ, including a first axis of 20 digits (least growth padding).
        for shape in [
            vec![],
            vec![0],
            vec![7],
            vec![123_456_789, 0],
            vec![0, 123_456_789_012],
            vec![usize::MAX, 0],
        ] {
            let a = NpyArray {
                shape: shape.clone(),
                data: NpyData::I64(vec![0; shape.iter().product()]),
            };
            let bytes = write_npy(&a);
            let header_len = usize::from(u16::from_le_bytes([bytes[8], bytes[9]]));
            let data_start = 10 + header_len;
            assert_eq!(data_start % 64, 0, "shape {shape:?}");
            assert_eq!(bytes[data_start - 1], b'\n', "shape {shape:?}");
            assert_eq!(round_trip(&a), a);
        }
    }

    #[test]
    fn accepts_versions_two_and_three() {
        let data = f64_bytes(&[1.5, -2.5]);
        let header = "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }\n";
        for major in [2, 3] {
            let a = read_npy(&npy_with_header(major, header, &data), 10).unwrap();
            assert_eq!(a, NpyArray::f64(vec![2], vec![1.5, -2.5]).unwrap());
        }
        // The length field is 4 bytes in 2.0: reading it as 2 bytes would misplace the data.
        let bytes = npy_with_header(2, header, &data);
        assert_eq!(&bytes[8..12], &(header.len() as u32).to_le_bytes());
    }

    #[test]
    fn header_tolerates_order_spacing_and_quotes() {
        let data: Vec<u8> = (1..=6).collect();
        for header in [
            "{'shape': (2, 3), 'fortran_order': False, 'descr': '|u1'}",
            "{\"descr\":\"u1\",\"fortran_order\":False,\"shape\":(2,3)}",
            "  {  'descr' : '<u1' ,\n 'fortran_order' : False , 'shape' : ( 2 , 3 , ) , }  \n",
            "{'descr': '|u1', 'fortran_order': False, 'shape': (2, 3), }\t \r\n",
        ] {
            let a = read_npy(&npy_with_header(1, header, &data), 100)
                .unwrap_or_else(|e| panic!("{header:?}: {e}"));
            assert_eq!(a, NpyArray::u8(vec![2, 3], data.clone()).unwrap());
        }
    }

    #[test]
    fn rejects_bad_signature_version_and_truncation() {
        assert!(rejection(b"", 10).contains("not a .npy array"));
        assert!(rejection(b"PK\x03\x04 not npy at all", 10).contains("not a .npy array"));
        let good = write_npy(&NpyArray::f64(vec![1], vec![1.0]).unwrap());
        for (major, minor) in [(1, 1), (4, 0), (0, 0)] {
            let mut bad = good.clone();
            bad[6] = major;
            bad[7] = minor;
            let msg = rejection(&bad, 10);
            assert!(msg.contains(&format!("version {major}.{minor}")), "{msg}");
        }
        assert!(rejection(&good[..9], 10).contains("truncated"));
        assert!(rejection(&good[..100], 10).contains("only 90 follow"));
        let mut huge = good.clone();
        huge[6] = 2;
        huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(rejection(&huge, 10).contains("at most 10000"));
    }

    #[test]
    fn rejects_malformed_header_dicts() {
        let one = f64_bytes(&[1.0]);
        for (header, needle) in [
            ("", "expected '{'"),
            ("not a dict", "expected '{'"),
            (
                "{'descr': '<f8', 'fortran_order': False, 'shape': (1,), ",
                "header ended",
            ),
            (
                "{'descr': '<f8', 'fortran_order': False}",
                "missing key 'shape'",
            ),
            (
                "{'descr': '<f8', 'shape': (1,)}",
                "missing key 'fortran_order'",
            ),
            (
                "{'fortran_order': False, 'shape': (1,)}",
                "missing key 'descr'",
            ),
            (
                "{'descr': '<f8', 'descr': '<f8', 'fortran_order': False, 'shape': (1,)}",
                "duplicate key 'descr'",
            ),
            (
                "{'descr': '<f8', 'fortran_order': False, 'shape': (1,), 'extra': 1}",
                "unexpected key 'extra'",
            ),
            (
                "{'descr': '<f8', 'fortran_order': 0, 'shape': (1,)}",
                "found '0'",
            ),
            (
                "{'descr': '<f8', 'fortran_order': 'no', 'shape': (1,)}",
                "wrong type",
            ),
            (
                "{'descr': '<f8', 'fortran_order': False, 'shape': [1]}",
                "found '['",
            ),
            (
                "{'descr': '<f8', 'fortran_order': False, 'shape': (1)}",
                "not a tuple",
            ),
            (
                "{'descr': '<f8', 'fortran_order': False, 'shape': (1,)} x",
                "after the header",
            ),
            (
                "{'descr': '<f8' 'fortran_order': False, 'shape': (1,)}",
                "',' or '}'",
            ),
            (
                "{'descr': '<f\\x38', 'fortran_order': False, 'shape': (1,)}",
                "escaped",
            ),
            (
                "{'descr' '<f8', 'fortran_order': False, 'shape': (1,)}",
                "expected ':'",
            ),
            (
                "{'descr': [('a', '<f8')], 'fortran_order': False, 'shape': (1,)}",
                "structured dtypes",
            ),
        ] {
            let msg = header_rejection(header, &one);
            assert!(msg.contains("malformed .npy header"), "{header:?}: {msg}");
            assert!(msg.contains(needle), "{header:?}: {msg}");
        }
    }

    #[test]
    fn rejects_unsupported_dtypes_and_layouts() {
        let eight = [0u8; 8];
        let msg = header_rejection(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2,)}",
            &eight,
        );
        assert_eq!(
            msg,
            "array has dtype '<f4'; expected float64, int64 or uint8"
        );
        for descr in ["|b1", "<c16", "<U1", "O", "=f8", "<i4"] {
            let header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ()}}");
            let msg = header_rejection(&header, &eight);
            assert!(msg.contains("expected float64, int64 or uint8"), "{msg}");
        }
        let msg = header_rejection(
            "{'descr': '>f8', 'fortran_order': False, 'shape': ()}",
            &eight,
        );
        assert!(msg.contains("big-endian"), "{msg}");
        let msg = header_rejection(
            "{'descr': '<f8', 'fortran_order': True, 'shape': ()}",
            &eight,
        );
        assert!(msg.contains("Fortran order"), "{msg}");
        let msg = header_rejection(
            "{'descr': '<f8', 'fortran_order': False, 'shape': (1, 1, 1)}",
            &eight,
        );
        assert!(msg.contains("rank 3"), "{msg}");
    }

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn rejects_absurd_shapes_before_allocating() {
        let f8 =
            |shape: &str| format!("{{'descr': '<f8', 'fortran_order': False, 'shape': {shape}}}");
        let msg = header_rejection(&f8("(4294967296, 4294967296)"), &[]);
        assert_eq!(
            msg,
            "declared shape (4294967296, 4294967296) exceeds the limit of 1000 elements"
        );
        let msg = header_rejection(&f8("(1001,)"), &[]);
        assert!(msg.contains("exceeds the limit of 1000 elements"), "{msg}");
        let msg = header_rejection(&f8("(99999999999999999999999,)"), &[]);
        assert!(
            msg.contains("shape entry 99999999999999999999999 overflows"),
            "{msg}"
        );
        let msg = header_rejection(&f8("(-1,)"), &[]);
        assert!(msg.contains("negative"), "{msg}");
        // Within the element limit but the byte count would overflow usize.
        let big = usize::MAX / 4;
        let header = f8(&format!("({big},)"));
        let err = read_npy(&npy_with_header(1, &header, &[]), usize::MAX).unwrap_err();
        assert!(err.message().contains("more than usize::MAX"), "{err}");
    }

    #[test]
    fn rejects_data_of_the_wrong_length() {
        let header = "{'descr': '<i8', 'fortran_order': False, 'shape': (2,)}";
        let msg = header_rejection(header, &[0; 15]);
        assert_eq!(msg, "array data is 15 bytes; shape (2,) of int64 needs 16");
        let msg = header_rejection(header, &[0; 17]);
        assert!(msg.contains("is 17 bytes"), "{msg}");
    }

    #[test]
    fn constructors_check_shape_and_rank() {
        assert!(NpyArray::f64(vec![2, 2], vec![1.0; 3]).is_err());
        assert!(NpyArray::u8(vec![1, 1, 1], vec![1]).is_err());
        assert!(NpyArray::i64(vec![usize::MAX, 2], vec![]).is_err());
        let err = NpyArray::f64(vec![3], vec![]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        let a = NpyArray::i64(vec![2, 1], vec![1, 2]).unwrap();
        assert_eq!((a.len(), a.is_empty(), a.dtype_name()), (2, false, "int64"));
        assert_eq!(
            NpyArray::f64(vec![], vec![0.0]).unwrap().dtype_name(),
            "float64"
        );
        assert_eq!(NpyArray::u8(vec![0], vec![]).unwrap().dtype_name(), "uint8");
    }
}

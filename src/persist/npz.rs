//! NumPy `.npz` archives: zip files whose members are `.npy` arrays named `<key>.npy`.
//!
//! The writer is deterministic (fixed timestamps, member order as given) so the same snapshot
//! always produces the same bytes, and `numpy.load` opens its output. The reader treats its
//! input as hostile: truncation, flipped bytes, zip bombs, path traversal in member names and
//! absurd declared shapes all give an error — never a panic, a hang or memory beyond
//! [`Limits`].

use std::borrow::Cow;
use std::collections::HashSet;
use std::io::{Cursor, Read, Write};

use zip::result::ZipError;
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, DateTime, System, ZipArchive, ZipReadOptions, ZipWriter};

use super::npy::{read_npy, write_npy, NpyArray};
use crate::error::{Error, Result};

/// Member names are the key plus this suffix, as `numpy.savez` writes them.
const NPY_SUFFIX: &str = ".npy";

/// Members larger than this are written with zip64 sizes; below it the 32-bit fields are sure
/// to fit even after deflate's worst-case expansion.
const ZIP64_THRESHOLD: u64 = 1 << 31;

/// Upper bound on the buffer reserved up front for one member. The declared size comes from
/// the untrusted archive, so it only serves as a hint; larger members grow the buffer as they
/// are actually read.
const MAX_PREALLOCATION: u64 = 16 << 20;

/// Bounds on what [`read_npz`] accepts, so a hostile archive cannot exhaust memory.
///
/// The defaults — 4096 members, 1 GiB per decompressed member, 4 GiB decompressed in total —
/// are far above any snapshot's needs while keeping a zip bomb from taking the machine down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Most members an archive may have.
    pub max_members: usize,
    /// Most bytes one member may decompress to (its whole `.npy` file, header included).
    pub max_member_bytes: u64,
    /// Most bytes all members together may decompress to.
    pub max_total_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_members: 4096,
            max_member_bytes: 1 << 30,
            max_total_bytes: 4 << 30,
        }
    }
}

/// Builds a deflate-compressed `.npz` archive holding one `<key>.npy` member per entry, in the
/// given order.
///
/// The output is deterministic: every member is stamped 1980-01-01 00:00 with Unix attributes
/// `0o644`. Keys must be relative paths with `/` separators: empty keys, absolute paths, `.`,
/// `..` or empty path components, backslashes, drive letters and control characters (NUL
/// included) are refused with [`InvalidArgument`](crate::error::ErrorKind::InvalidArgument), a
/// repeated key with [`DuplicateName`](crate::error::ErrorKind::DuplicateName), and an array
/// whose shape does not match its data as [`NpyArray::validate`] does.
pub fn write_npz(members: &[(String, NpyArray)]) -> Result<Vec<u8>> {
    write_npz_storing(members, |_| false)
}

/// Like [`write_npz`], but members whose key satisfies `stored` are not compressed. A stored
/// member's size depends only on its length, so archives that differ only in such a member's
/// content (a timestamp in text, say) have the same size — which a caller sizing a buffer
/// from one serialization and filling it from the next relies on.
pub fn write_npz_storing(
    members: &[(String, NpyArray)],
    stored: impl Fn(&str) -> bool,
) -> Result<Vec<u8>> {
    let mut seen = HashSet::with_capacity(members.len());
    let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
    for (key, array) in members {
        if let Some(reason) = unsafe_name_reason(key) {
            return Err(Error::invalid(format!(
                "snapshot key '{}' cannot name an archive member: {reason}",
                key.escape_debug()
            )));
        }
        if !seen.insert(key.as_str()) {
            return Err(Error::duplicate(format!(
                "snapshot key '{key}' is given more than once"
            )));
        }
        array
            .validate()
            .map_err(|e| e.context(format!("member '{key}'")))?;
        let npy = write_npy(array);
        // Fixed time and system so that identical snapshots are identical files.
        let method = if stored(key) {
            CompressionMethod::Stored
        } else {
            CompressionMethod::Deflated
        };
        let options = SimpleFileOptions::default()
            .compression_method(method)
            .last_modified_time(DateTime::default())
            .system(System::Unix)
            .unix_permissions(0o644)
            .large_file(npy.len() as u64 >= ZIP64_THRESHOLD);
        let written = zip
            .start_file(format!("{key}{NPY_SUFFIX}"), options)
            .and_then(|()| zip.write_all(&npy).map_err(ZipError::from));
        // Writing into memory fails only if the zip crate refuses its input: a bug here.
        written.map_err(|e| {
            Error::internal(format!("cannot add member '{key}' to the archive: {e}"))
        })?;
    }
    let cursor = zip
        .finish()
        .map_err(|e| Error::internal(format!("cannot finish the zip archive: {e}")))?;
    Ok(cursor.into_inner())
}

/// Reads every member of an `.npz` archive, returning `(key, array)` pairs in archive order,
/// keys without the `.npy` suffix.
///
/// Everything wrong with the input is a
/// [`CorruptSnapshot`](crate::error::ErrorKind::CorruptSnapshot) error naming the member it
/// concerns: bytes that are not a zip archive, a damaged or truncated archive, a checksum
/// mismatch, member names that are not `<key>.npy` or could escape a directory (`..`, absolute
/// paths, backslashes), duplicate names, encrypted members, more than `limits.max_members`
/// members, a member that decompresses to more than `limits.max_member_bytes` (or makes the
/// total exceed `limits.max_total_bytes`) whatever its header claims, and any `.npy` error
/// from [`read_npy`].
pub fn read_npz(bytes: &[u8], limits: &Limits) -> Result<Vec<(String, NpyArray)>> {
    read_npz_admitting(bytes, limits, |_| Ok(Admit::Read(limits.max_member_bytes)))
}

/// What [`read_npz_admitting`] does with a member, decided from its key alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Decompress and parse it, refusing it beyond this many bytes (its whole `.npy` file;
    /// [`Limits::max_member_bytes`] still applies).
    Read(u64),
    /// Leave it compressed and leave it out of the result.
    Skip,
}

/// [`read_npz`] with a say on each member: `admit` sees every key (after the name checks)
/// before anything is decompressed and returns how much the member may take, that it is to
/// be skipped, or an error that refuses the archive. A reader that knows what it expects can
/// so refuse unknown members and bound each one by its own size, and a reader that needs one
/// member reads only that one.
pub fn read_npz_admitting(
    bytes: &[u8],
    limits: &Limits,
    mut admit: impl FnMut(&str) -> Result<Admit>,
) -> Result<Vec<(String, NpyArray)>> {
    // An archive starts with a local file header, or is empty and starts with the end record.
    // NumPy checks the same signatures before treating a file as an archive.
    if !(bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06")) {
        return Err(Error::corrupt(
            "not a zip archive (an .npz file starts with the signature 'PK\\x03\\x04')",
        ));
    }
    let mut archive = ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| Error::corrupt(format!("damaged or truncated zip archive: {e}")))?;
    if archive.len() > limits.max_members {
        return Err(Error::corrupt(format!(
            "archive has {} members; at most {} are accepted",
            archive.len(),
            limits.max_members
        )));
    }
    if archive.has_duplicate_names() {
        return Err(Error::corrupt(
            match first_duplicate_name(bytes, archive.central_directory_start()) {
                Some(name) => format!("member '{}' appears more than once", name.escape_debug()),
                None => "archive has several members with the same name".to_string(),
            },
        ));
    }

    // Names and flags are checked for every member before any is decompressed.
    let metadata = archive.metadata();
    let keys = (0..archive.len())
        .map(|index| {
            let entry = metadata
                .entry(index)
                .map_err(|e| Error::internal(format!("zip member {index} vanished: {e}")))?;
            let key = member_key(entry.name_raw())?;
            if entry.encrypted() {
                return Err(Error::corrupt(format!(
                    "member '{key}' is encrypted; snapshots are never encrypted"
                )));
            }
            Ok(key)
        })
        .collect::<Result<Vec<_>>>()?;

    let admitted = keys
        .into_iter()
        .map(|key| Ok((admit(&key)?, key)))
        .collect::<Result<Vec<_>>>()?;

    let mut total = 0u64;
    let mut members = Vec::with_capacity(admitted.len());
    for (index, (admission, key)) in admitted.into_iter().enumerate() {
        let own_limit = match admission {
            Admit::Skip => continue,
            Admit::Read(n) => n.min(limits.max_member_bytes),
        };
        let allowance = own_limit.min(limits.max_total_bytes.saturating_sub(total));
        let npy = read_member(bytes, &mut archive, index, &key, allowance)?;
        let size = npy.len() as u64;
        if size > own_limit {
            return Err(Error::corrupt(format!(
                "member '{key}' expands beyond {own_limit} bytes"
            )));
        }
        if size > allowance {
            return Err(Error::corrupt(format!(
                "archive expands beyond {} bytes in total (at member '{key}')",
                limits.max_total_bytes
            )));
        }
        total += size;
        // Elements are at least one byte, so the byte limit bounds the declared shape too.
        let max_elements = usize::try_from(own_limit).unwrap_or(usize::MAX);
        let array =
            read_npy(&npy, max_elements).map_err(|e| e.context(format!("member '{key}'")))?;
        members.push((key, array));
    }
    Ok(members)
}

/// The `.npy` bytes of one member: a stored member is a slice of the archive (its CRC
/// checked here), a compressed one is inflated, reading at most `allowance + 1` bytes so the
/// caller can tell an oversized member from one that fits, whatever sizes the archive declares.
fn read_member<'a>(
    bytes: &'a [u8],
    archive: &mut ZipArchive<Cursor<&[u8]>>,
    index: usize,
    key: &str,
    allowance: u64,
) -> Result<Cow<'a, [u8]>> {
    let corrupt = |e: &dyn std::fmt::Display| Error::corrupt(format!("member '{key}': {e}"));
    // Header consistency: the local header must agree with the central directory, so a member
    // cannot present one size or name to us and another to other tools.
    let options = ZipReadOptions::new().enforce_header_consistency(true);
    let mut file = archive
        .by_index_with_options(index, options)
        .map_err(|e| corrupt(&e))?;
    if let Some(stored) = stored_member(bytes, &file, allowance) {
        let stored = stored.map_err(|e| corrupt(&e))?;
        return Ok(Cow::Borrowed(stored));
    }
    let declared = file.size();
    let capacity = declared.min(allowance).min(MAX_PREALLOCATION);
    let mut npy = Vec::with_capacity(usize::try_from(capacity).unwrap_or(0));
    // Never trust the declared size: at most `allowance + 1` bytes are inflated, and the
    // buffer never grows past that (doubling as `read_to_end` does could reserve twice the
    // allowance). Reading until the end (rather than exactly `declared` bytes) is what makes
    // the zip crate verify the CRC.
    let cap = usize::try_from(allowance.saturating_add(1)).unwrap_or(usize::MAX);
    let mut chunk = [0u8; 64 << 10];
    loop {
        let want = chunk.len().min(cap - npy.len());
        if want == 0 {
            break;
        }
        let n = match file.read(&mut chunk[..want]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(corrupt(&e)),
        };
        if npy.len() + n > npy.capacity() {
            let target = (2 * npy.capacity()).max(npy.len() + n).min(cap);
            npy.reserve_exact(target - npy.len());
        }
        npy.extend_from_slice(&chunk[..n]);
    }
    let size = npy.len() as u64;
    if size <= allowance && size != declared {
        return Err(corrupt(&format_args!(
            "decompresses to {size} bytes but the archive declares {declared}"
        )));
    }
    Ok(Cow::Owned(npy))
}

/// The data of a stored (uncompressed) member as a slice of the archive, without copying it
/// through the zip reader: `None` for compressed members and for stored ones larger than
/// `allowance` (the zip reader then reads and refuses them as it does any member), else the
/// slice once its bounds and CRC-32 are checked.
fn stored_member<'a>(
    bytes: &'a [u8],
    file: &zip::read::ZipFile<'_, Cursor<&[u8]>>,
    allowance: u64,
) -> Option<std::result::Result<&'a [u8], String>> {
    if file.compression() != CompressionMethod::Stored || file.size() > allowance {
        return None;
    }
    let start = file.data_start()?;
    let (size, compressed) = (file.size(), file.compressed_size());
    if size != compressed {
        return Some(Err(format!(
            "stored member declares {size} bytes but takes {compressed}"
        )));
    }
    let range = usize::try_from(start)
        .ok()
        .zip(usize::try_from(size).ok())
        .and_then(|(s, n)| Some(s..s.checked_add(n)?))
        .filter(|r| r.end <= bytes.len());
    let Some(range) = range else {
        return Some(Err(format!(
            "data of {size} bytes at offset {start} runs past the end of the archive"
        )));
    };
    let data = &bytes[range];
    let crc = crc32fast::hash(data);
    if crc != file.crc32() {
        return Some(Err(format!(
            "Invalid checksum (CRC-32 {crc:08x}, the archive declares {:08x})",
            file.crc32()
        )));
    }
    Some(Ok(data))
}

/// The key of a member named `<key>.npy`, or why the name is refused.
fn member_key(raw: &[u8]) -> Result<String> {
    let name = std::str::from_utf8(raw).map_err(|_| {
        Error::corrupt(format!(
            "member '{}' has a name that is not UTF-8",
            raw.escape_ascii()
        ))
    })?;
    let not_npy = || {
        Error::corrupt(format!(
            "member '{}' is not a .npy array",
            name.escape_debug()
        ))
    };
    let key = name.strip_suffix(NPY_SUFFIX).ok_or_else(not_npy)?;
    if let Some(reason) = unsafe_name_reason(name) {
        return Err(Error::corrupt(format!(
            "member '{}' has an unsafe name: {reason}",
            name.escape_debug()
        )));
    }
    // ".npy" or "dir/.npy": the suffix is a whole file name, there is no key.
    if unsafe_name_reason(key).is_some() {
        return Err(not_npy());
    }
    Ok(key.to_string())
}

/// Why `name` is not a safe relative member path, or `None` if it is. Applied to keys when
/// writing and to member names when reading, so that whatever is written can be read back and
/// no name can escape a directory it is extracted into.
fn unsafe_name_reason(name: &str) -> Option<&'static str> {
    let bytes = name.as_bytes();
    if name.is_empty() {
        Some("it is empty")
    } else if name.contains('\0') {
        Some("it contains a NUL byte")
    } else if name.chars().any(char::is_control) {
        Some("it contains a control character")
    } else if name.contains('\\') {
        Some("it contains a backslash")
    } else if name.starts_with('/') {
        Some("it is an absolute path")
    } else if bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':' {
        Some("it starts with a drive letter")
    } else if name.split('/').any(|c| c == "..") {
        Some("it has a '..' path component")
    } else if name.split('/').any(|c| c.is_empty() || c == ".") {
        Some("it has an empty or '.' path component")
    } else {
        None
    }
}

/// Walks the central directory to name the first repeated member. The zip crate indexes
/// members by name, so it can say that names repeat but not which. `None` if the directory
/// cannot be walked (the caller then reports duplicates without a name).
fn first_duplicate_name(bytes: &[u8], directory_start: u64) -> Option<String> {
    const HEADER_SIGNATURE: &[u8] = b"PK\x01\x02";
    const FIXED_LEN: usize = 46;
    let field = |at: usize| -> Option<usize> {
        let b = bytes.get(at..at.checked_add(2)?)?;
        Some(usize::from(u16::from_le_bytes([b[0], b[1]])))
    };
    let mut pos = usize::try_from(directory_start).ok()?;
    let mut seen = HashSet::new();
    while bytes.get(pos..pos.checked_add(4)?)? == HEADER_SIGNATURE {
        let (name_len, extra_len, comment_len) =
            (field(pos + 28)?, field(pos + 30)?, field(pos + 32)?);
        let name_start = pos + FIXED_LEN;
        let name = bytes.get(name_start..name_start + name_len)?;
        if !seen.insert(name) {
            return Some(String::from_utf8_lossy(name).into_owned());
        }
        pos = name_start + name_len + extra_len + comment_len;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use crate::persist::npy::NpyData;
    use proptest::prelude::*;
    use std::process::{Command, Stdio};
    use std::sync::LazyLock;
    use std::time::{Duration, Instant};

    /// Members shaped like a real snapshot: JSON bytes, vectors, a scalar, a matrix.
    fn sample_members() -> Vec<(String, NpyArray)> {
        let meta = br#"{"format":1,"model":"lorenz"}"#.to_vec();
        vec![
            (
                "meta.json".into(),
                NpyArray::u8(vec![meta.len()], meta).unwrap(),
            ),
            (
                "y".into(),
                NpyArray::f64(vec![3], vec![1.0, -0.0, f64::NAN]).unwrap(),
            ),
            (
                "params".into(),
                NpyArray::f64(vec![3], vec![10.0, 28.0, 8.0 / 3.0]).unwrap(),
            ),
            (
                "workspace/stepper/h_next".into(),
                NpyArray::f64(vec![], vec![0.01]).unwrap(),
            ),
            (
                "stepper_config".into(),
                NpyArray::i64(vec![2, 2], vec![1, 2, -3, i64::MAX]).unwrap(),
            ),
            ("empty".into(), NpyArray::f64(vec![0, 3], vec![]).unwrap()),
        ]
    }

    static VALID: LazyLock<Vec<u8>> = LazyLock::new(|| write_npz(&sample_members()).unwrap());

    /// Equality that also holds for NaN elements (compares float bits).
    fn same_members(a: &[(String, NpyArray)], b: &[(String, NpyArray)]) -> bool {
        let bits = |m: &[(String, NpyArray)]| -> Vec<(String, Vec<usize>, Vec<u64>)> {
            m.iter()
                .map(|(k, a)| {
                    let data = match &a.data {
                        NpyData::F64(v) => v.iter().map(|x| x.to_bits()).collect(),
                        NpyData::I64(v) => v.iter().map(|&x| x as u64).collect(),
                        NpyData::U8(v) => v.iter().map(|&x| u64::from(x)).collect(),
                    };
                    (k.clone(), a.shape.clone(), data)
                })
                .collect()
        };
        bits(a) == bits(b)
            && a.iter()
                .zip(b)
                .all(|(x, y)| x.1.dtype_name() == y.1.dtype_name())
    }

    fn rejection(bytes: &[u8], limits: &Limits) -> String {
        let err = read_npz(bytes, limits).expect_err("archive should be rejected");
        assert_eq!(err.kind(), ErrorKind::CorruptSnapshot, "{err}");
        err.message().to_string()
    }

    /// An archive with the given raw members, written with the zip crate directly so that names
    /// and contents can be anything.
    fn raw_zip(members: &[(&str, &[u8])], method: CompressionMethod) -> Vec<u8> {
        let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
        for (name, content) in members {
            let options = SimpleFileOptions::default().compression_method(method);
            zip.start_file(*name, options).unwrap();
            zip.write_all(content).unwrap();
        }
        zip.finish().unwrap().into_inner()
    }

    fn scalar_npy() -> Vec<u8> {
        write_npy(&NpyArray::f64(vec![], vec![1.0]).unwrap())
    }

    /// Replaces every occurrence of `from` by `to` (same length), in local and central headers.
    fn replace_all(bytes: &mut [u8], from: &[u8], to: &[u8]) -> usize {
        assert_eq!(from.len(), to.len());
        let mut count = 0;
        let mut i = 0;
        while i + from.len() <= bytes.len() {
            if &bytes[i..i + from.len()] == from {
                bytes[i..i + from.len()].copy_from_slice(to);
                count += 1;
                i += from.len();
            } else {
                i += 1;
            }
        }
        count
    }

    /// SplitMix64: a tiny deterministic generator, so failures reproduce without extra crates.
    struct SplitMix(u64);
    impl SplitMix {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
    }

    #[test]
    fn round_trip_preserves_members_and_order() {
        let members = sample_members();
        let back = read_npz(&VALID, &Limits::default()).unwrap();
        assert!(same_members(&back, &members), "{back:?}");
        assert_eq!(
            read_npz(&write_npz(&[]).unwrap(), &Limits::default()).unwrap(),
            vec![]
        );
    }

    #[test]
    fn output_is_deterministic_deflated_and_named_key_dot_npy() {
        assert_eq!(write_npz(&sample_members()).unwrap(), *VALID);
        let mut archive = ZipArchive::new(Cursor::new(VALID.as_slice())).unwrap();
        let names: Vec<String> = archive
            .file_names()
            .map(|n| n.unwrap().into_owned())
            .collect();
        let expected: Vec<String> = sample_members()
            .iter()
            .map(|(k, _)| format!("{k}.npy"))
            .collect();
        assert_eq!(names, expected);
        for i in 0..archive.len() {
            let file = archive.by_index(i).unwrap();
            assert_eq!(file.compression(), CompressionMethod::Deflated);
            assert_eq!(file.last_modified(), Some(DateTime::default()));
        }
    }

    #[test]
    fn writer_rejects_unsafe_and_duplicate_keys() {
        let a = NpyArray::f64(vec![], vec![1.0]).unwrap();
        for key in [
            "", "/abs", "../up", "a/../b", "a\\b", "nul\0", "a//b", "./a", "a/", "C:x", "tab\t",
        ] {
            let err = write_npz(&[(key.to_string(), a.clone())]).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{key:?}: {err}");
            assert!(
                err.message().contains("cannot name an archive member"),
                "{err}"
            );
        }
        // Dots inside a name are fine; only whole '..' components escape.
        assert!(write_npz(&[("a..b.c".to_string(), a.clone())]).is_ok());
        let err = write_npz(&[("y".into(), a.clone()), ("y".into(), a.clone())]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::DuplicateName);
        let bad = NpyArray {
            shape: vec![2],
            data: NpyData::F64(vec![1.0]),
        };
        let err = write_npz(&[("bad".into(), bad)]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(err.message().starts_with("member 'bad': "), "{err}");
    }

    #[test]
    fn non_zip_input_says_so() {
        let mut rng = SplitMix(7);
        let random: Vec<u8> = (0..1000).map(|_| rng.next() as u8).collect();
        let text = b"t,y\n0.0,1.0\n0.1,1.1\n".to_vec();
        for input in [random, text, Vec::new(), b"PK".to_vec()] {
            let msg = rejection(&input, &Limits::default());
            assert!(msg.starts_with("not a zip archive"), "{msg}");
        }
        // The right signature but nothing after it is a damaged archive, not a foreign file.
        let msg = rejection(b"PK\x03\x04garbage", &Limits::default());
        assert!(msg.contains("damaged or truncated zip archive"), "{msg}");
    }

    #[test]
    fn every_truncation_is_rejected() {
        for len in 0..VALID.len() {
            assert!(
                read_npz(&VALID[..len], &Limits::default()).is_err(),
                "truncation to {len} bytes was accepted"
            );
        }
    }

    #[test]
    fn single_byte_flips_never_panic() {
        let original = sample_members();
        let mut rng = SplitMix(2024);
        let (mut rejected, mut accepted) = (0, 0);
        for _ in 0..2000 {
            let mut bytes = VALID.clone();
            let at = (rng.next() % bytes.len() as u64) as usize;
            bytes[at] ^= (rng.next() % 255 + 1) as u8; // never 0, so the byte always changes
            match read_npz(&bytes, &Limits::default()) {
                Err(_) => rejected += 1,
                Ok(members) => {
                    // A flip in a field nothing checks (a timestamp, attributes): the content
                    // must come through unchanged.
                    assert!(
                        same_members(&members, &original),
                        "flip at {at} changed content"
                    );
                    accepted += 1;
                }
            }
        }
        println!("byte flips: {rejected} rejected, {accepted} accepted with intact content");
        assert!(
            rejected >= 1500,
            "only {rejected} of 2000 flips were rejected"
        );
    }

    /// A fixed-Huffman deflate stream of `1 + 258 * repeats` zero bytes: one literal zero, then
    /// back-references of length 258 at distance 1 (13 bits each, a ratio of about 160:1).
    fn deflated_zeros(repeats: usize) -> Vec<u8> {
        struct Bits {
            out: Vec<u8>,
            acc: u64,
            n: u32,
        }
        impl Bits {
            /// Appends `len` bits of `value`, least significant first (deflate's bit order).
            fn put(&mut self, value: u64, len: u32) {
                self.acc |= value << self.n;
                self.n += len;
                while self.n >= 8 {
                    self.out.push(self.acc as u8);
                    self.acc >>= 8;
                    self.n -= 8;
                }
            }
            /// Huffman codes are stored most significant bit first.
            fn code(&mut self, code: u64, len: u32) {
                let reversed = code.reverse_bits() >> (64 - len);
                self.put(reversed, len);
            }
        }
        let mut bits = Bits {
            out: Vec::with_capacity(repeats * 13 / 8 + 8),
            acc: 0,
            n: 0,
        };
        bits.put(1, 1); // BFINAL
        bits.put(1, 2); // BTYPE = 01, fixed Huffman codes
        bits.code(0x30, 8); // literal 0
        for _ in 0..repeats {
            bits.code(0xC5, 8); // length code 285: 258 bytes
            bits.code(0, 5); // distance code 0: distance 1
        }
        bits.code(0, 7); // end of block
        bits.put(0, 7); // flush the last partial byte
        bits.out
    }

    /// A one-member zip, built field by field so its sizes can lie. The CRC is not that of the
    /// content: a reader that stops at its limit never gets as far as checking it.
    fn handmade_zip(name: &[u8], deflated: &[u8], local_size: u32, central_size: u32) -> Vec<u8> {
        let le16 = |v: u16| v.to_le_bytes();
        let le32 = |v: u32| v.to_le_bytes();
        let compressed = u32::try_from(deflated.len()).unwrap();
        let name_len = u16::try_from(name.len()).unwrap();
        let mut out = Vec::new();
        let common = |out: &mut Vec<u8>, size: u32| {
            out.extend(le16(20)); // version needed
            out.extend(le16(0)); // flags
            out.extend(le16(8)); // deflate
            out.extend(le16(0)); // time
            out.extend(le16(0x21)); // date 1980-01-01
            out.extend(le32(0x1234_5678)); // CRC
            out.extend(le32(compressed));
            out.extend(le32(size));
            out.extend(le16(name_len));
            out.extend(le16(0)); // extra field length
        };
        out.extend(b"PK\x03\x04");
        common(&mut out, local_size);
        out.extend(name);
        out.extend(deflated);
        let directory_start = u32::try_from(out.len()).unwrap();
        out.extend(b"PK\x01\x02");
        out.extend(le16(20)); // version made by
        common(&mut out, central_size);
        out.extend(le16(0)); // comment length
        out.extend(le16(0)); // disk number
        out.extend(le16(0)); // internal attributes
        out.extend(le32(0)); // external attributes
        out.extend(le32(0)); // local header offset
        out.extend(name);
        let directory_len = u32::try_from(out.len()).unwrap() - directory_start;
        out.extend(b"PK\x05\x06");
        out.extend(le16(0));
        out.extend(le16(0));
        out.extend(le16(1));
        out.extend(le16(1));
        out.extend(le32(directory_len));
        out.extend(le32(directory_start));
        out.extend(le16(0));
        out
    }

    #[test]
    fn zip_bombs_are_stopped_at_the_limit() {
        let repeats = 800_000;
        let size = u32::try_from(1 + 258 * repeats).unwrap(); // about 206 MB of zeros
        let stream = deflated_zeros(repeats);
        assert!(stream.len() < 2 << 20);
        let limits = Limits {
            max_member_bytes: 1 << 20,
            ..Limits::default()
        };

        let cases = [
            // Declared honestly: only the member limit stops it.
            (
                handmade_zip(b"bomb.npy", &stream, size, size),
                &limits,
                "expands beyond 1048576 bytes",
            ),
            // Both headers claim 1000 bytes: the zip crate's size check stops it, even with the
            // default (1 GiB) limit.
            (
                handmade_zip(b"bomb.npy", &stream, 1000, 1000),
                &Limits::default(),
                "larger than its declared uncompressed size",
            ),
            // The local header disagrees with the central directory.
            (
                handmade_zip(b"bomb.npy", &stream, size, 1000),
                &Limits::default(),
                "header inconsistency",
            ),
        ];
        for (archive, limits, needle) in cases {
            let start = Instant::now();
            let msg = rejection(&archive, limits);
            let elapsed = start.elapsed();
            assert!(msg.starts_with("member 'bomb'"), "{msg}");
            assert!(msg.contains(needle), "{msg}");
            // Stopping at the limit takes milliseconds; inflating all 206 MB takes seconds in a
            // debug build (and that much memory).
            assert!(elapsed < Duration::from_secs(1), "took {elapsed:?}: {msg}");
        }

        // The total limit applies across members that each fit.
        let chunk = write_npy(&NpyArray::u8(vec![600_000], vec![0; 600_000]).unwrap());
        let archive = raw_zip(
            &[("a.npy", &chunk), ("b.npy", &chunk)],
            CompressionMethod::Deflated,
        );
        let limits = Limits {
            max_total_bytes: 1_000_000,
            ..Limits::default()
        };
        let msg = rejection(&archive, &limits);
        assert_eq!(
            msg,
            "archive expands beyond 1000000 bytes in total (at member 'b')"
        );
    }

    #[test]
    fn a_real_deflated_member_over_the_limit_is_rejected() {
        let zeros = vec![0u8; 8 << 20];
        let archive = raw_zip(&[("big.npy", &zeros)], CompressionMethod::Deflated);
        assert!(archive.len() < 100_000);
        let limits = Limits {
            max_member_bytes: 1 << 20,
            ..Limits::default()
        };
        assert_eq!(
            rejection(&archive, &limits),
            "member 'big' expands beyond 1048576 bytes"
        );
    }

    #[test]
    fn unsafe_member_names_are_rejected() {
        let npy = scalar_npy();
        for (name, needle) in [
            ("../evil.npy", "'..' path component"),
            ("a/../../evil.npy", "'..' path component"),
            ("/etc/evil.npy", "absolute path"),
            ("dir\\evil.npy", "backslash"),
            ("C:/evil.npy", "drive letter"),
            ("a//b.npy", "empty or '.' path component"),
        ] {
            let archive = raw_zip(&[("ok.npy", &npy), (name, &npy)], CompressionMethod::Stored);
            let msg = rejection(&archive, &Limits::default());
            assert!(
                msg.contains(&format!(
                    "member '{}' has an unsafe name",
                    name.escape_debug()
                )),
                "{msg}"
            );
            assert!(msg.contains(needle), "{msg}");
        }
        for name in ["x", "notes.txt", ".npy", "dir/", "a/.npy"] {
            let archive = raw_zip(&[(name, &npy)], CompressionMethod::Stored);
            assert_eq!(
                rejection(&archive, &Limits::default()),
                format!("member '{name}' is not a .npy array")
            );
        }
    }

    #[test]
    fn duplicate_member_names_are_rejected() {
        let npy = scalar_npy();
        let mut archive = raw_zip(
            &[("a.npy", &npy), ("mid.npy", &npy), ("b.npy", &npy)],
            CompressionMethod::Stored,
        );
        assert_eq!(replace_all(&mut archive, b"b.npy", b"a.npy"), 2);
        assert_eq!(
            rejection(&archive, &Limits::default()),
            "member 'a.npy' appears more than once"
        );
    }

    #[test]
    fn encrypted_members_are_rejected() {
        let mut archive = raw_zip(&[("secret.npy", &scalar_npy())], CompressionMethod::Stored);
        // Set bit 0 (encrypted) of the general-purpose flags in the local and central headers.
        for (signature, flags_at) in [(b"PK\x03\x04", 6), (b"PK\x01\x02", 8)] {
            let pos = archive.windows(4).position(|w| w == signature).unwrap();
            archive[pos + flags_at] |= 1;
        }
        let msg = rejection(&archive, &Limits::default());
        assert!(msg.starts_with("member 'secret' is encrypted"), "{msg}");
    }

    #[test]
    fn member_count_is_limited() {
        let limits = Limits {
            max_members: 5,
            ..Limits::default()
        };
        let msg = rejection(&VALID, &limits);
        assert_eq!(msg, "archive has 6 members; at most 5 are accepted");
        let limits = Limits {
            max_members: 6,
            ..Limits::default()
        };
        assert!(read_npz(&VALID, &limits).is_ok());
    }

    #[test]
    fn npy_and_checksum_errors_name_the_member() {
        let mut f4 = scalar_npy();
        replace_all(&mut f4, b"<f8", b"<f4");
        let archive = raw_zip(
            &[("ok.npy", &scalar_npy()), ("x.npy", &f4)],
            CompressionMethod::Stored,
        );
        assert_eq!(
            rejection(&archive, &Limits::default()),
            "member 'x': array has dtype '<f4'; expected float64, int64 or uint8"
        );

        // A stored member whose content changed after the CRC was computed.
        let mut archive = raw_zip(&[("y.npy", &scalar_npy())], CompressionMethod::Stored);
        assert_eq!(replace_all(&mut archive, b"'shape': ()", b"'shape': []"), 1);
        let msg = rejection(&archive, &Limits::default());
        assert!(msg.starts_with("member 'y': "), "{msg}");
        assert!(msg.to_lowercase().contains("checksum"), "{msg}");
    }

    /// Checks run by NumPy on `ours.npz`; then it writes `savez.npz` and `savez_compressed.npz`
    /// for us to read. Arguments: the archive, the output directory.
    const NUMPY_SCRIPT: &str = r#"
import io, sys, zipfile
import numpy as np

path, out = sys.argv[1], sys.argv[2]
with np.load(path) as z:
    assert z.files == ['meta.json', 'y', 'workspace/stepper/h_next', 'stepper_config',
                       'flags', 'empty'], z.files
    expected = {
        'meta.json': ('uint8', (9,), list(b'{"t":0.5}')),
        'y': ('float64', (4,), None),
        'workspace/stepper/h_next': ('float64', (), [0.01]),
        'stepper_config': ('int64', (2, 3), [1, -2, 3, 2**63 - 1, -2**63, 0]),
        'flags': ('uint8', (2, 2), [0, 1, 254, 255]),
        'empty': ('float64', (0, 3), []),
    }
    for key, (dtype, shape, values) in expected.items():
        a = z[key]
        assert a.dtype == np.dtype(dtype), (key, a.dtype)
        assert a.shape == shape, (key, a.shape)
        if values is not None:
            assert a.reshape(-1).tolist() == values, (key, a.tolist())
    bits = z['y'].view(np.uint64).tolist()
    assert bits == [0x3ff8000000000000, 0x8000000000000000, 0x7ff0000000000000,
                    0x7ff80000deadbeef], [hex(b) for b in bits]
    # Every member is byte-for-byte what numpy.save writes for the same array.
    with zipfile.ZipFile(path) as zf:
        assert zf.testzip() is None
        for name in zf.namelist():
            buf = io.BytesIO()
            np.save(buf, z[name[:-len('.npy')]])
            assert buf.getvalue() == zf.read(name), name

theirs = {
    'a': np.array([1.0, -0.0, np.inf]),
    'b': np.arange(6, dtype=np.int64).reshape(2, 3),
    'c': np.frombuffer(b'xyz', dtype=np.uint8),
    's': np.float64(3.25),
    'nested/key': np.zeros((0, 2)),
}
np.savez(out + '/savez.npz', **theirs)
np.savez_compressed(out + '/savez_compressed.npz', **theirs)
"#;

    /// NumPy opens what we write and we open what NumPy writes. Needs `python3` with numpy on
    /// the PATH; skipped (with a note) without them.
    #[test]
    fn numpy_interoperates() {
        let has_numpy = Command::new("python3")
            .args(["-c", "import numpy"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if !has_numpy {
            println!("skipped: python3 with numpy is not available");
            return;
        }
        let nan = f64::from_bits(0x7ff8_0000_dead_beef);
        let meta = br#"{"t":0.5}"#.to_vec();
        let ours = vec![
            (
                "meta.json".into(),
                NpyArray::u8(vec![meta.len()], meta).unwrap(),
            ),
            (
                "y".into(),
                NpyArray::f64(vec![4], vec![1.5, -0.0, f64::INFINITY, nan]).unwrap(),
            ),
            (
                "workspace/stepper/h_next".into(),
                NpyArray::f64(vec![], vec![0.01]).unwrap(),
            ),
            (
                "stepper_config".into(),
                NpyArray::i64(vec![2, 3], vec![1, -2, 3, i64::MAX, i64::MIN, 0]).unwrap(),
            ),
            (
                "flags".into(),
                NpyArray::u8(vec![2, 2], vec![0, 1, 254, 255]).unwrap(),
            ),
            ("empty".into(), NpyArray::f64(vec![0, 3], vec![]).unwrap()),
        ];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ours.npz");
        std::fs::write(&path, write_npz(&ours).unwrap()).unwrap();
        let output = Command::new("python3")
            .arg("-c")
            .arg(NUMPY_SCRIPT)
            .arg(&path)
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "NumPy rejected our archive:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );

        let theirs = vec![
            (
                "a".into(),
                NpyArray::f64(vec![3], vec![1.0, -0.0, f64::INFINITY]).unwrap(),
            ),
            (
                "b".into(),
                NpyArray::i64(vec![2, 3], (0..6).collect()).unwrap(),
            ),
            ("c".into(), NpyArray::u8(vec![3], b"xyz".to_vec()).unwrap()),
            ("s".into(), NpyArray::f64(vec![], vec![3.25]).unwrap()),
            (
                "nested/key".into(),
                NpyArray::f64(vec![0, 2], vec![]).unwrap(),
            ),
        ];
        for name in ["savez.npz", "savez_compressed.npz"] {
            let bytes = std::fs::read(dir.path().join(name)).unwrap();
            let read = read_npz(&bytes, &Limits::default())
                .unwrap_or_else(|e| panic!("{name} written by NumPy: {e}"));
            assert!(same_members(&read, &theirs), "{name}: {read:?}");
        }
    }

    /// A valid archive with a few bytes changed and possibly cut short.
    fn mutated_archive() -> impl Strategy<Value = Vec<u8>> {
        (
            proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            proptest::option::of(any::<prop::sample::Index>()),
        )
            .prop_map(|(edits, cut)| {
                let mut bytes = VALID.clone();
                for (at, value) in edits {
                    let at = at.index(bytes.len());
                    bytes[at] = value;
                }
                if let Some(cut) = cut {
                    bytes.truncate(cut.index(bytes.len()));
                }
                bytes
            })
    }

    /// Random bytes behind a zip signature, so they reach the zip parser.
    fn zip_prefixed_noise() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 0..2048).prop_map(|tail| {
            let mut bytes = b"PK\x03\x04".to_vec();
            bytes.extend(tail);
            bytes
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Arbitrary input must give Ok or Err, never a panic.
        #[test]
        fn fuzz_read_npz(
            input in prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..4096),
                zip_prefixed_noise(),
                mutated_archive(),
            ]
        ) {
            let _ = read_npz(&input, &Limits::default());
        }
    }
}

//! Arguments in and results out: C strings, arrays with their lengths, and caller-owned output
//! buffers `(buf, cap, needed)`.
//!
//! Output protocol: `buf = NULL, cap = 0` asks for the size (`*needed`, success); a buffer
//! smaller than needed gives `DYNLIB_ERR_BUFFER_TOO_SMALL` with `*needed` set and the buffer
//! untouched; otherwise the data is copied and `*needed` set. Strings are UTF-8 and
//! NUL-terminated, and `needed` counts the NUL. `needed` may be NULL.

use std::ffi::{c_char, CStr};

use super::boundary::{Failure, FfiResult};
use super::status::*;

/// A required UTF-8 C string argument.
///
/// # Safety
/// `p` must be NULL or a NUL-terminated string valid for the call.
pub(crate) unsafe fn cstr<'a>(p: *const c_char, what: &str) -> FfiResult<&'a str> {
    if p.is_null() {
        return Err(Failure::null(what));
    }
    CStr::from_ptr(p)
        .to_str()
        .map_err(|e| Failure::invalid(format!("argument '{what}' is not valid UTF-8: {e}")))
}

/// An optional UTF-8 C string argument (NULL = not given).
///
/// # Safety
/// As [`cstr`].
pub(crate) unsafe fn opt_cstr<'a>(p: *const c_char, what: &str) -> FfiResult<Option<&'a str>> {
    if p.is_null() {
        Ok(None)
    } else {
        cstr(p, what).map(Some)
    }
}

/// An array argument with its length; `(NULL, 0)` is the empty array.
///
/// # Safety
/// `p` must be NULL or point to `n` readable values valid for the call.
pub(crate) unsafe fn slice<'a, T>(p: *const T, n: usize, what: &str) -> FfiResult<&'a [T]> {
    if n == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(Failure::null(what));
    }
    Ok(std::slice::from_raw_parts(p, n))
}

/// An array of `n` C strings.
///
/// # Safety
/// As [`slice`], and every element as [`cstr`].
pub(crate) unsafe fn str_list<'a>(
    p: *const *const c_char,
    n: usize,
    what: &str,
) -> FfiResult<Vec<&'a str>> {
    slice(p, n, what)?
        .iter()
        .enumerate()
        .map(|(i, s)| cstr(*s, &format!("{what}[{i}]")))
        .collect()
}

/// Writes a single out-parameter.
///
/// # Safety
/// `out` must be NULL or valid for writing a `T`.
pub(crate) unsafe fn write_out<T>(out: *mut T, value: T, what: &str) -> FfiResult {
    if out.is_null() {
        return Err(Failure::null(what));
    }
    out.write(value);
    Ok(())
}

/// Checks an output buffer of `len` items against the protocol; `Ok(true)` means copy.
unsafe fn check_capacity<T>(
    buf: *mut T,
    cap: usize,
    len: usize,
    needed: *mut usize,
) -> FfiResult<bool> {
    let report = |needed: *mut usize| {
        if !needed.is_null() {
            needed.write(len);
        }
    };
    if buf.is_null() {
        if cap == 0 {
            report(needed);
            return Ok(false);
        }
        return Err(Failure::null("buf"));
    }
    if cap < len {
        report(needed);
        return Err(Failure::new(
            DYNLIB_ERR_BUFFER_TOO_SMALL,
            format!("the buffer holds {cap} but {len} are needed"),
        ));
    }
    report(needed);
    Ok(true)
}

/// Copies `values` into a caller buffer following the output protocol.
///
/// # Safety
/// `buf` must be NULL or valid for writing `cap` items; `needed` NULL or writable.
pub(crate) unsafe fn write_slice<T: Copy>(
    values: &[T],
    buf: *mut T,
    cap: usize,
    needed: *mut usize,
) -> FfiResult {
    if check_capacity(buf, cap, values.len(), needed)? {
        std::ptr::copy_nonoverlapping(values.as_ptr(), buf, values.len());
    }
    Ok(())
}

/// Writes `len` values produced by `values` into a caller buffer following the output
/// protocol (for arrays stored compactly; nothing is produced for a size query).
///
/// # Safety
/// As [`write_slice`].
pub(crate) unsafe fn write_iter<T, I: Iterator<Item = T>>(
    len: usize,
    values: I,
    buf: *mut T,
    cap: usize,
    needed: *mut usize,
) -> FfiResult {
    if check_capacity(buf, cap, len, needed)? {
        for (i, v) in values.take(len).enumerate() {
            buf.add(i).write(v);
        }
    }
    Ok(())
}

/// Copies `s` and a terminating NUL into a caller buffer following the output protocol.
///
/// # Safety
/// As [`write_slice`].
pub(crate) unsafe fn write_str(
    s: &str,
    buf: *mut c_char,
    cap: usize,
    needed: *mut usize,
) -> FfiResult {
    let bytes = s.as_bytes();
    if check_capacity(buf, cap, bytes.len() + 1, needed)? {
        std::ptr::copy_nonoverlapping(bytes.as_ptr().cast::<c_char>(), buf, bytes.len());
        buf.add(bytes.len()).write(0);
    }
    Ok(())
}

/// The `struct_size` values accepted for a versioned struct: every size that ends on a field
/// boundary of the layout — the end of a field, or that end rounded up to the struct's
/// alignment (what `sizeof` gives for a version ending there) — from the end of the second
/// field on (a size covering only `struct_size` itself is the classic `sizeof(pointer)` slip).
/// A version is only ever extended by appending fields, so every earlier version's
/// `sizeof` is in this list, and no accepted size ends inside a field (a half-copied pointer).
///
/// The field list must name every field: the macro also destructures the struct
/// exhaustively, so adding a field without listing it is a compile error.
macro_rules! versioned_sizes {
    ($t:ident { $($f:ident),+ $(,)? }) => {{
        #[allow(non_snake_case, dead_code)]
        fn exhaustive(v: &$t) {
            let $t { $($f: _),+ } = v;
        }
        fn field_size<S, F>(_: fn(&S) -> &F) -> usize {
            std::mem::size_of::<F>()
        }
        let align = std::mem::align_of::<$t>();
        let mut sizes: Vec<usize> = Vec::new();
        $(
            let end = std::mem::offset_of!($t, $f) + field_size::<$t, _>(|s| &s.$f);
            sizes.push(end);
            sizes.push(end.div_ceil(align) * align);
        )+
        sizes.sort_unstable();
        sizes.dedup();
        // Keep sizes beyond the first field (struct_size itself).
        let first = std::mem::size_of::<usize>();
        sizes.retain(|s| *s > first);
        debug_assert_eq!(sizes.last(), Some(&std::mem::size_of::<$t>()));
        sizes
    }};
}
pub(crate) use versioned_sizes;

/// Refuses a `size` of a versioned struct `T` that is not one of `accepted`, naming the list;
/// `field` says where the size came from (e.g. "opts->struct_size").
fn check_struct_size<T>(
    size: usize,
    accepted: &[usize],
    field: &str,
    type_name: &str,
) -> FfiResult {
    if accepted.contains(&size) {
        return Ok(());
    }
    let list: Vec<String> = accepted.iter().map(usize::to_string).collect();
    let hint = if size > std::mem::size_of::<T>() {
        " (larger than this library's struct: a header newer than the library?)"
    } else {
        ""
    };
    Err(Failure::invalid(format!(
        "{field} is {size}{hint}, which is not the size of any known layout of {type_name}; \
         accepted sizes are {} (sizeof({type_name}) = {} in this library; the _init function \
         sets it)",
        list.join(", "),
        std::mem::size_of::<T>()
    )))
}

/// Reads a versioned struct whose first field is `struct_size`: the caller's first
/// `struct_size` bytes over `defaults`, so callers built against an older, shorter layout
/// keep working and fields they do not know keep their defaults. `struct_size` must be one
/// of `accepted` (see [`versioned_sizes`]); anything else is refused with the list.
///
/// # Safety
/// `p` must be NULL or point to `struct_size` readable bytes starting with that `size_t`.
pub(crate) unsafe fn read_versioned<T>(
    p: *const T,
    defaults: T,
    accepted: &[usize],
    what: &str,
    type_name: &str,
) -> FfiResult<T> {
    if p.is_null() {
        return Err(Failure::null(what));
    }
    let size = std::ptr::read_unaligned(p.cast::<usize>());
    check_struct_size::<T>(size, accepted, &format!("{what}->struct_size"), type_name)?;
    let mut value = defaults;
    std::ptr::copy_nonoverlapping(p.cast::<u8>(), (&mut value as *mut T).cast::<u8>(), size);
    Ok(value)
}

/// Initialises a caller's versioned struct of `size` bytes (the `sizeof` of the layout the
/// caller was compiled with): writes the first `size` bytes of `defaults` with `struct_size`
/// set to `size`, and not one byte beyond, so a caller built against an older, shorter
/// header keeps whatever follows its struct. A `size` not in `accepted` is refused and
/// nothing is written.
///
/// # Safety
/// `p` must be NULL or point to `size` writable bytes; `T` must begin with a `usize`.
pub(crate) unsafe fn init_versioned<T>(
    p: *mut T,
    defaults: T,
    size: usize,
    accepted: &[usize],
    what: &str,
    type_name: &str,
) -> FfiResult {
    if p.is_null() {
        return Err(Failure::null(what));
    }
    check_struct_size::<T>(size, accepted, "struct_size", type_name)?;
    let mut value = std::mem::ManuallyDrop::new(defaults);
    let bytes = (&mut *value as *mut T).cast::<u8>();
    std::ptr::write_unaligned(bytes.cast::<usize>(), size);
    std::ptr::copy_nonoverlapping(bytes, p.cast::<u8>(), size);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[repr(C)]
    struct V {
        struct_size: usize,
        a: i32,
        b: *const u8,
        c: bool,
    }

    #[test]
    fn accepted_sizes_end_on_field_boundaries_only() {
        let sizes = versioned_sizes!(V {
            struct_size,
            a,
            b,
            c
        });
        assert_eq!(sizes, vec![12, 16, 24, 25, 32]);
        let v = V {
            struct_size: 20, // inside the pointer
            a: 1,
            b: std::ptr::null(),
            c: true,
        };
        let d = V {
            struct_size: 32,
            a: 0,
            b: std::ptr::null(),
            c: false,
        };
        let e = unsafe { read_versioned(&v, d, &sizes, "v", "V") }
            .err()
            .unwrap();
        assert_eq!(e.status, DYNLIB_ERR_INVALID_ARGUMENT);
        assert!(e.message.contains("struct_size is 20"), "{}", e.message);
        assert!(e.message.contains("12, 16, 24, 25, 32"), "{}", e.message);
    }

    #[test]
    fn init_writes_only_the_callers_layout() {
        let sizes = versioned_sizes!(V {
            struct_size,
            a,
            b,
            c
        });
        let defaults = || V {
            struct_size: 32,
            a: 7,
            b: std::ptr::null(),
            c: true,
        };
        // An old caller's 16-byte struct (struct_size and a) followed by a canary.
        let mut buf = [0xA5u8; 32];
        let p = buf.as_mut_ptr().cast::<V>();
        unsafe { init_versioned(p, defaults(), 16, &sizes, "v", "V") }.unwrap();
        assert_eq!(usize::from_ne_bytes(buf[..8].try_into().unwrap()), 16);
        assert_eq!(i32::from_ne_bytes(buf[8..12].try_into().unwrap()), 7);
        assert!(buf[16..].iter().all(|b| *b == 0xA5), "{buf:?}");
        // A size inside the pointer is refused and writes nothing.
        let mut buf = [0xA5u8; 32];
        let e = unsafe {
            init_versioned(
                buf.as_mut_ptr().cast::<V>(),
                defaults(),
                20,
                &sizes,
                "v",
                "V",
            )
        }
        .err()
        .unwrap();
        assert_eq!(e.status, DYNLIB_ERR_INVALID_ARGUMENT);
        assert!(e.message.contains("struct_size is 20"), "{}", e.message);
        assert!(buf.iter().all(|b| *b == 0xA5));
    }
}

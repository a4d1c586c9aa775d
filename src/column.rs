//! Recorded columns: growable, contiguous arrays of `f64` whose large blocks the library
//! maps itself.
//!
//! A recording's columns are handed out in place (the C views return pointers into them),
//! so they must stay contiguous, and a long recording grows them many times. Through the
//! global allocator, how a large column grows depends on the heap's history: after a large
//! model's session has freed big blocks, a column reserved in one piece is served from
//! free chunks whose pages are already faulted in, while one grown run by run is copied
//! at each doubling (interleaved columns cannot grow in place). Measured, 10^4 resumed
//! segments recording every step then cost 1.3-1.46x one unsplit run of the same steps.
//!
//! So past [`HEAP_MAX_BYTES`] a column owns an anonymous mapping (Linux): it grows with
//! `mremap(MREMAP_MAYMOVE)`, which moves page tables instead of copying values, and asks
//! for transparent huge pages, so an 80 MB column is faulted in about 40 times instead of
//! 20,000. Every large column then gets its memory the same way, whatever the heap holds.
//! Small columns stay ordinary heap memory (a mapping costs a system call and a page).
//! Other targets keep every column in a `Vec`.

use std::fmt;
use std::ops::{Deref, DerefMut};

/// Columns whose capacity is at most this many bytes live in the heap.
pub(crate) const HEAP_MAX_BYTES: usize = 256 << 10;

/// The smallest block a *growing* column maps (one huge page): a column that outgrows the
/// heap is a long one, and smaller mappings would be moved again soon.
#[cfg(target_os = "linux")]
const MIN_GROWN_MAP_BYTES: usize = 2 << 20;

/// A reservation the system could not satisfy (the column is unchanged).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReserveError;

impl fmt::Display for ReserveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the recording column could not be allocated")
    }
}

impl std::error::Error for ReserveError {}

/// A growable, contiguous array of `f64` (see the module docs).
#[derive(Default)]
pub struct Column {
    buf: Buf,
}

enum Buf {
    Heap(Vec<f64>),
    #[cfg(target_os = "linux")]
    Mapped(mapped::Block),
}

impl Default for Buf {
    fn default() -> Self {
        Buf::Heap(Vec::new())
    }
}

/// How far a reservation grows the capacity.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Growth {
    /// Exactly what is asked for (a whole run's one reservation).
    Exact,
    /// At least double (pushes and repeated reservations stay amortised O(1)).
    Amortized,
}

impl Column {
    pub const fn new() -> Self {
        Column {
            buf: Buf::Heap(Vec::new()),
        }
    }

    pub fn len(&self) -> usize {
        match &self.buf {
            Buf::Heap(v) => v.len(),
            #[cfg(target_os = "linux")]
            Buf::Mapped(m) => m.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Values the column holds without growing.
    pub fn capacity(&self) -> usize {
        match &self.buf {
            Buf::Heap(v) => v.capacity(),
            #[cfg(target_os = "linux")]
            Buf::Mapped(m) => m.capacity(),
        }
    }

    /// Whether the values live in a mapping of the column's own (a diagnostic).
    pub fn is_mapped(&self) -> bool {
        match &self.buf {
            Buf::Heap(_) => false,
            #[cfg(target_os = "linux")]
            Buf::Mapped(_) => true,
        }
    }

    /// Room for `n` more values, growing to at least twice the capacity.
    pub fn try_reserve(&mut self, n: usize) -> Result<(), ReserveError> {
        self.reserve(n, Growth::Amortized)
    }

    /// Room for exactly `n` more values (rounded up to whole pages once mapped).
    pub fn try_reserve_exact(&mut self, n: usize) -> Result<(), ReserveError> {
        self.reserve(n, Growth::Exact)
    }

    fn reserve(&mut self, n: usize, growth: Growth) -> Result<(), ReserveError> {
        let need = self.len().checked_add(n).ok_or(ReserveError)?;
        if need <= self.capacity() {
            return Ok(());
        }
        let target = match growth {
            Growth::Exact => need,
            Growth::Amortized => need.max(self.capacity().saturating_mul(2)),
        };
        // (A mapped column's capacity is past the heap's limit already: it stays mapped.)
        let in_heap = target.saturating_mul(8) <= HEAP_MAX_BYTES || !cfg!(target_os = "linux");
        if let (Buf::Heap(v), true) = (&mut self.buf, in_heap) {
            let reserved = match growth {
                Growth::Exact => v.try_reserve_exact(n),
                Growth::Amortized => v.try_reserve(n),
            };
            return reserved.map_err(|_| ReserveError);
        }
        self.reserve_mapped(target, growth)
    }

    #[cfg(target_os = "linux")]
    fn reserve_mapped(&mut self, target: usize, growth: Growth) -> Result<(), ReserveError> {
        match &mut self.buf {
            Buf::Mapped(m) => m.grow(target),
            Buf::Heap(v) => {
                let target = match growth {
                    Growth::Exact => target,
                    Growth::Amortized => target.max(MIN_GROWN_MAP_BYTES / 8),
                };
                let mut block = mapped::Block::new(target)?;
                block.extend_from_slice(v);
                self.buf = Buf::Mapped(block);
                Ok(())
            }
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn reserve_mapped(&mut self, _: usize, _: Growth) -> Result<(), ReserveError> {
        unreachable!("columns are mapped on Linux only")
    }

    /// Room for `n` more values, or an abort as `Vec` aborts when memory runs out (callers
    /// that must not abort reserve first, with `try_reserve`).
    fn reserve_or_abort(&mut self, n: usize, growth: Growth) {
        if self.reserve(n, growth).is_err() {
            let values = self.len().saturating_add(n);
            let layout = std::alloc::Layout::array::<f64>(values)
                .unwrap_or(std::alloc::Layout::new::<f64>());
            std::alloc::handle_alloc_error(layout);
        }
    }

    pub fn push(&mut self, value: f64) {
        if self.len() == self.capacity() {
            self.reserve_or_abort(1, Growth::Amortized);
        }
        match &mut self.buf {
            Buf::Heap(v) => v.push(value),
            #[cfg(target_os = "linux")]
            Buf::Mapped(m) => m.push(value),
        }
    }

    pub fn extend_from_slice(&mut self, values: &[f64]) {
        self.reserve_or_abort(values.len(), Growth::Amortized);
        match &mut self.buf {
            Buf::Heap(v) => v.extend_from_slice(values),
            #[cfg(target_os = "linux")]
            Buf::Mapped(m) => m.extend_from_slice(values),
        }
    }

    /// Keeps the first `len` values (the capacity stays).
    pub fn truncate(&mut self, len: usize) {
        match &mut self.buf {
            Buf::Heap(v) => v.truncate(len),
            #[cfg(target_os = "linux")]
            Buf::Mapped(m) => m.truncate(len),
        }
    }

    pub fn clear(&mut self) {
        self.truncate(0);
    }

    /// The start of the buffer, valid for `capacity()` values (for writers that fill the
    /// spare capacity, then [`set_len`](Self::set_len)).
    pub fn as_mut_ptr(&mut self) -> *mut f64 {
        match &mut self.buf {
            Buf::Heap(v) => v.as_mut_ptr(),
            #[cfg(target_os = "linux")]
            Buf::Mapped(m) => m.as_mut_ptr(),
        }
    }

    /// Sets the length.
    ///
    /// # Safety
    /// `len <= capacity()`, and the values up to `len` are initialised.
    pub unsafe fn set_len(&mut self, len: usize) {
        match &mut self.buf {
            // SAFETY: the caller's guarantee is `Vec::set_len`'s.
            Buf::Heap(v) => unsafe { v.set_len(len) },
            #[cfg(target_os = "linux")]
            // SAFETY: as above, for the mapped block.
            Buf::Mapped(m) => unsafe { m.set_len(len) },
        }
    }

    pub fn as_slice(&self) -> &[f64] {
        match &self.buf {
            Buf::Heap(v) => v,
            #[cfg(target_os = "linux")]
            Buf::Mapped(m) => m.as_slice(),
        }
    }

    pub fn as_mut_slice(&mut self) -> &mut [f64] {
        match &mut self.buf {
            Buf::Heap(v) => v,
            #[cfg(target_os = "linux")]
            Buf::Mapped(m) => m.as_mut_slice(),
        }
    }
}

impl Deref for Column {
    type Target = [f64];
    fn deref(&self) -> &[f64] {
        self.as_slice()
    }
}

impl DerefMut for Column {
    fn deref_mut(&mut self) -> &mut [f64] {
        self.as_mut_slice()
    }
}

/// A copy with the capacity of its length, mapped when that is large (like `Vec::clone`,
/// it aborts when memory runs out).
impl Clone for Column {
    fn clone(&self) -> Self {
        let mut copy = Column::new();
        copy.reserve_or_abort(self.len(), Growth::Exact);
        copy.extend_from_slice(self);
        copy
    }
}

impl fmt::Debug for Column {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_slice(), f)
    }
}

impl PartialEq for Column {
    fn eq(&self, other: &Column) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl PartialEq<Vec<f64>> for Column {
    fn eq(&self, other: &Vec<f64>) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl PartialEq<[f64]> for Column {
    fn eq(&self, other: &[f64]) -> bool {
        self.as_slice() == other
    }
}

impl From<Vec<f64>> for Column {
    fn from(v: Vec<f64>) -> Self {
        if v.capacity().saturating_mul(8) <= HEAP_MAX_BYTES {
            return Column { buf: Buf::Heap(v) };
        }
        let mut c = Column::new();
        c.reserve_or_abort(v.len(), Growth::Exact);
        c.extend_from_slice(&v);
        c
    }
}

impl<'a> IntoIterator for &'a Column {
    type Item = &'a f64;
    type IntoIter = std::slice::Iter<'a, f64>;
    fn into_iter(self) -> Self::IntoIter {
        self.as_slice().iter()
    }
}

#[cfg(target_os = "linux")]
mod mapped {
    //! An anonymous private mapping holding `f64` values.

    use super::ReserveError;
    use std::ptr::NonNull;

    /// Mappings are sized in these units: a multiple of every page size Linux uses (4, 16
    /// and 64 KiB), so the capacity is exactly the mapping.
    const GRAIN: usize = 64 << 10;
    /// Transparent huge pages: mappings at least this large are sized in whole huge pages
    /// (the kernel aligns anonymous mappings of such sizes to them) and asked to use them.
    const HUGE: usize = 2 << 20;

    pub(super) struct Block {
        ptr: NonNull<f64>,
        len: usize,
        /// In values; the mapping is `cap * 8` bytes.
        cap: usize,
    }

    // SAFETY: a `Block` owns its mapping alone (no other pointer to it escapes except
    // through borrows of the block), as a `Vec<f64>` owns its buffer.
    unsafe impl Send for Block {}
    // SAFETY: shared access only reads through `&self` (as `&Vec<f64>`).
    unsafe impl Sync for Block {}

    /// Bytes of a mapping holding at least `values` values.
    fn mapping_bytes(values: usize) -> Result<usize, ReserveError> {
        let bytes = values.checked_mul(8).ok_or(ReserveError)?;
        let grain = if bytes >= HUGE { HUGE } else { GRAIN };
        bytes
            .checked_next_multiple_of(grain)
            .filter(|&b| b <= isize::MAX as usize)
            .ok_or(ReserveError)
    }

    /// Huge pages for a large mapping: an 80 MB column is then faulted in 40 times, not
    /// 20,000. Advice only: without it (THP off, an old kernel) the column still works.
    fn advise_huge(ptr: *mut libc::c_void, bytes: usize) {
        if bytes >= HUGE {
            // SAFETY: `ptr..ptr + bytes` is a mapping this block owns; the advice changes
            // how it is backed, never its contents.
            unsafe { libc::madvise(ptr, bytes, libc::MADV_HUGEPAGE) };
        }
    }

    impl Block {
        /// An empty block with room for at least `values` values.
        pub(super) fn new(values: usize) -> Result<Block, ReserveError> {
            let bytes = mapping_bytes(values.max(1))?;
            // SAFETY: an anonymous private mapping at an address the kernel picks touches
            // no existing memory.
            let ptr = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    bytes,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if ptr == libc::MAP_FAILED {
                return Err(ReserveError);
            }
            advise_huge(ptr, bytes);
            Ok(Block {
                ptr: NonNull::new(ptr.cast()).ok_or(ReserveError)?,
                len: 0,
                cap: bytes / 8,
            })
        }

        /// Room for at least `values` values in all; on failure the block is unchanged.
        pub(super) fn grow(&mut self, values: usize) -> Result<(), ReserveError> {
            if values <= self.cap {
                return Ok(());
            }
            let bytes = mapping_bytes(values)?;
            // SAFETY: the old range is exactly this block's mapping; MREMAP_MAYMOVE lets
            // the kernel move its pages (page tables, not values) to a new range, after
            // which the old range is gone, and on failure leaves it as it was.
            let ptr = unsafe {
                libc::mremap(
                    self.ptr.as_ptr().cast(),
                    self.cap * 8,
                    bytes,
                    libc::MREMAP_MAYMOVE,
                )
            };
            if ptr == libc::MAP_FAILED {
                return Err(ReserveError);
            }
            advise_huge(ptr, bytes);
            self.ptr = NonNull::new(ptr.cast()).ok_or(ReserveError)?;
            self.cap = bytes / 8;
            Ok(())
        }

        pub(super) fn len(&self) -> usize {
            self.len
        }

        pub(super) fn capacity(&self) -> usize {
            self.cap
        }

        /// # Safety
        /// `len <= capacity()` (every value of the mapping is initialised: zero pages or
        /// written values).
        pub(super) unsafe fn set_len(&mut self, len: usize) {
            debug_assert!(len <= self.cap);
            self.len = len;
        }

        pub(super) fn truncate(&mut self, len: usize) {
            self.len = self.len.min(len);
        }

        pub(super) fn as_mut_ptr(&mut self) -> *mut f64 {
            self.ptr.as_ptr()
        }

        pub(super) fn push(&mut self, value: f64) {
            assert!(
                self.len < self.cap,
                "mapped column pushed past its capacity"
            );
            // SAFETY: `len < cap`, inside the mapping.
            unsafe { self.ptr.as_ptr().add(self.len).write(value) };
            self.len += 1;
        }

        /// Appends `values`, which must fit in the capacity.
        pub(super) fn extend_from_slice(&mut self, values: &[f64]) {
            assert!(
                values.len() <= self.cap - self.len,
                "mapped column extended past its capacity"
            );
            // SAFETY: the destination is the spare capacity, inside the mapping, and
            // cannot overlap `values` (borrowed elsewhere while `self` is borrowed mutably).
            unsafe {
                std::ptr::copy_nonoverlapping(
                    values.as_ptr(),
                    self.ptr.as_ptr().add(self.len),
                    values.len(),
                );
            }
            self.len += values.len();
        }

        pub(super) fn as_slice(&self) -> &[f64] {
            // SAFETY: the first `len` values of the mapping are initialised and owned by
            // this block; the borrow of `self` keeps them alive and unchanged.
            unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
        }

        pub(super) fn as_mut_slice(&mut self) -> &mut [f64] {
            // SAFETY: as `as_slice`, with the unique borrow of `self`.
            unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
        }
    }

    impl Drop for Block {
        fn drop(&mut self) {
            // SAFETY: the range is this block's own mapping, unmapped once, here; no
            // borrow of it outlives the block.
            unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.cap * 8) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize) -> Vec<f64> {
        (0..n).map(|i| i as f64 * 0.5 - 7.0).collect()
    }

    #[test]
    fn pushes_across_the_heap_limit_keep_every_value_in_one_contiguous_block() {
        let want = values(3 * HEAP_MAX_BYTES / 8 + 17);
        let mut c = Column::new();
        let mut last_ptr = std::ptr::null();
        let mut moves = 0;
        for &v in &want {
            c.push(v);
            if c.as_ptr() != last_ptr {
                moves += 1;
                last_ptr = c.as_ptr();
            }
        }
        assert_eq!(c.as_slice(), &want[..]);
        assert_eq!(c.len(), want.len());
        assert!(c.capacity() >= want.len());
        assert_eq!(c.is_mapped(), cfg!(target_os = "linux"));
        // Amortised growth: a few dozen moves at most for 100k pushes.
        assert!(moves < 40, "{moves} moves");
    }

    #[test]
    fn mapped_columns_grow_without_losing_values_and_truncate_in_place() {
        let mut c = Column::new();
        c.try_reserve_exact(10).unwrap();
        assert_eq!(c.capacity(), 10);
        assert!(!c.is_mapped());
        c.extend_from_slice(&values(10));
        // Exact first reservations past the heap limit map exactly what is asked for,
        // rounded to the mapping's grain.
        let mut big = Column::new();
        big.try_reserve_exact(1_000_000).unwrap();
        assert_eq!(big.is_mapped(), cfg!(target_os = "linux"));
        assert!(big.capacity() >= 1_000_000 && big.capacity() < 1_000_000 + (2 << 20) / 8);
        big.extend_from_slice(&values(1_000_000));
        // Growing past the capacity several times (mremap on Linux).
        for round in 0..4 {
            let n = big.capacity() - big.len() + 1 + round;
            big.try_reserve(n).unwrap();
            big.extend_from_slice(&values(n));
        }
        let len = big.len();
        assert_eq!(&big[..1_000_000], &values(1_000_000)[..]);
        let cap = big.capacity();
        big.truncate(999);
        assert_eq!((big.len(), big.capacity()), (999, cap));
        assert_eq!(&big[..], &values(999)[..]);
        big.truncate(len);
        assert_eq!(big.len(), 999, "truncate never lengthens");
        big.clear();
        assert!(big.is_empty());
        big.push(3.0);
        assert_eq!(&big[..], &[3.0]);
    }

    #[test]
    fn clones_are_equal_independent_and_sized_to_their_length() {
        let mut c = Column::new();
        c.try_reserve(1).unwrap();
        c.extend_from_slice(&values(200_000));
        let d = c.clone();
        assert_eq!(c, d);
        assert!(d.capacity() - d.len() < (2 << 20) / 8);
        c[5] = 1e300;
        assert_eq!(d[5], values(6)[5]);
        assert_ne!(c, d);
        let small = Column::from(values(3));
        assert_eq!(small.clone(), values(3));
        assert!(!small.is_mapped());
        assert_eq!(Column::from(values(100_000)), values(100_000));
    }

    #[test]
    fn impossible_reservations_fail_and_change_nothing() {
        let mut c = Column::from(values(50_000));
        c.try_reserve(10).unwrap();
        let (ptr, cap) = (c.as_ptr(), c.capacity());
        assert_eq!(c.try_reserve(usize::MAX - 3), Err(ReserveError));
        assert_eq!(c.try_reserve_exact(usize::MAX / 16), Err(ReserveError));
        // More than the address space holds (2^62 bytes).
        assert_eq!(c.try_reserve_exact(1 << 59), Err(ReserveError));
        assert_eq!((c.as_ptr(), c.capacity()), (ptr, cap));
        assert_eq!(c, values(50_000));
    }

    #[test]
    fn columns_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Column>();
        let c = Column::from(values(100_000));
        let sum = std::thread::spawn(move || c.iter().sum::<f64>())
            .join()
            .unwrap();
        assert_eq!(sum, values(100_000).iter().sum::<f64>());
    }
}

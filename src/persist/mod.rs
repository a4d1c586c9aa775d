//! Persistence: NumPy `.npy`/`.npz` encoding, snapshot files and atomic writes.
//!
//! Everything read here comes from outside the process and is treated as hostile: each
//! reader bounds its memory and reports what was wrong instead of panicking.

pub mod atomic;
pub mod npy;
pub mod npz;
pub mod snapshot;
pub mod timestamp;

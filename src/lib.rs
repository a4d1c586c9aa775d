//! dynlib: a dynamical-systems simulation engine with exact resume.
//!
//! Models (ODEs and maps) are written in a TOML model language or supplied as host callbacks,
//! compiled once into flat programs, and stepped by fixed-step, adaptive and multistep
//! methods inside a [`Sim`] session that can snapshot, reset, branch and resume — with results
//! bit-identical to one uninterrupted run.

pub mod column;
pub mod demo;
pub mod error;
pub mod ffi;
#[doc(hidden)]
pub mod fuzzing;
pub mod method;
pub mod model;
pub mod persist;
pub mod session;
pub mod stepper;

pub use error::{Error, ErrorKind, Result};
pub use model::{Backend, Model};
pub use session::{Ensemble, RunOptions, SegmentRef, Sim};

/// Library version (also pinned in every snapshot).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

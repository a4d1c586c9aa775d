//! Sessions: the live state, snapshots, runs, resume, segments and results.

pub mod checkpoint;
pub mod ensemble;
mod ensemble_checkpoint;
#[cfg(feature = "jit")]
mod lockstep;
pub mod presets;
pub mod progress;
pub mod results;
pub mod runner;
pub mod sample_labels;
pub mod sim;
pub mod snapshot_file;
pub mod snapshot_io;
mod snapshot_store;
pub mod state;

pub use checkpoint::{latest_checkpoint, list_checkpoints, CheckpointEvery, CheckpointPolicy};
pub use ensemble::Ensemble;
pub use presets::{OnConflict, Preset, SaveMode, PRESETS_SCHEMA};
pub use progress::{Control, Every, Hook, RunProgress};
pub use results::{EventRecord, RecVar, Recording, Segment};
pub use runner::RunStats;
pub use sim::{
    ConfigValue, KnobState, RunDefaults, RunOptions, SegmentRef, Sim, Snapshot, SnapshotInfo,
};
pub use snapshot_file::{inspect_snapshot, inspect_snapshot_bytes};
pub use state::{PendingStep, SessionPins, SessionState, Status};

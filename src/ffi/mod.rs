//! The C ABI. Each function checks its arguments, makes one call into the core and maps the
//! result; there is no simulation logic here.
//!
//! Conventions (stated in full at the top of `include/dynlib.h`, which cbindgen takes from
//! `cbindgen.toml`): every fallible function returns a `DynlibStatus` and leaves a message
//! for `dynlib_last_error()`; handles are registry keys that are never reused and never
//! dereferenced (see `handles`); a sim takes one call at a time and refuses a concurrent or
//! re-entrant one with `DYNLIB_ERR_BUSY`; versioned structs accept only `struct_size` values
//! of a known layout; outputs go to caller-owned buffers `(buf, cap, needed)` and
//! out-parameters are written only on success; no panic crosses the boundary.

pub mod boundary;
pub mod buffers;
pub mod callbacks;
pub mod config;
pub mod ensemble;
pub mod handles;
pub mod model;
pub mod results;
pub mod sim;
pub mod snapshot;
pub mod status;

use std::ffi::c_char;

use status::{DynlibStatus, STATUS_NAMES};

/// The library version ("MAJOR.MINOR.PATCH"), equal to `DYNLIB_VERSION_STRING` of the header
/// it was built with. Static storage; never NULL.
#[no_mangle]
pub extern "C" fn dynlib_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The name of a status code ("DYNLIB_OK", "DYNLIB_ERR_IO", …), or "DYNLIB_UNKNOWN_STATUS".
/// Static storage; never NULL.
#[no_mangle]
pub extern "C" fn dynlib_status_name(status: DynlibStatus) -> *const c_char {
    STATUS_NAMES
        .iter()
        .find(|(code, _)| *code == status)
        .map_or("DYNLIB_UNKNOWN_STATUS\0", |(_, name)| name)
        .as_ptr()
        .cast()
}

/// This thread's message for its last failed call ("" if none failed yet). The pointer stays
/// valid until this thread's next failed call; copy the text to keep it.
#[no_mangle]
pub extern "C" fn dynlib_last_error() -> *const c_char {
    boundary::last_error_ptr()
}

#[cfg(test)]
mod tests {
    use super::handles::new_model_handle;
    use super::sim::{
        dynlib_run_options_init_sized, dynlib_sim_new, dynlib_sim_run, DynlibRunOptions,
    };
    use super::status::*;
    use super::*;
    use crate::model::host::HostModelDef;
    use crate::model::{HostModel, Model, ModelKind};
    use std::ffi::CStr;

    /// A host model whose right-hand side panics after t = 0.5: stands in for any bug.
    struct Panicky;
    impl HostModel for Panicky {
        fn rhs(&self, t: f64, y: &[f64], _p: &[f64], out: &mut [f64]) -> Result<(), i32> {
            assert!(t < 0.5, "deliberate panic at t = {t}");
            out[0] = -y[0];
            Ok(())
        }
    }

    fn last_error() -> String {
        unsafe { CStr::from_ptr(dynlib_last_error()) }
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    fn a_panic_becomes_internal_and_poisons_only_its_sim() {
        let def = HostModelDef {
            id: "panicky".into(),
            version: "1".into(),
            kind: ModelKind::Ode,
            state_names: vec!["x".into()],
            state_init: vec![1.0],
            param_names: vec![],
            param_init: vec![],
            aux_names: vec![],
            event_names: vec![],
            dt: 0.1,
            stepper: "rk4".into(),
        };
        let model =
            new_model_handle(Model::from_host(def, Box::new(Panicky)).unwrap(), None).unwrap();
        unsafe {
            let (mut sim, mut healthy) = (std::ptr::null_mut(), std::ptr::null_mut());
            assert_eq!(dynlib_sim_new(model, &mut sim), DYNLIB_OK);
            assert_eq!(dynlib_sim_new(model, &mut healthy), DYNLIB_OK);
            let mut opts = std::mem::MaybeUninit::<DynlibRunOptions>::uninit();
            assert_eq!(
                dynlib_run_options_init_sized(
                    opts.as_mut_ptr(),
                    std::mem::size_of::<DynlibRunOptions>()
                ),
                DYNLIB_OK
            );
            let mut opts = opts.assume_init();
            opts.T = 2.0;
            assert_eq!(dynlib_sim_run(sim, &opts), DYNLIB_ERR_INTERNAL);
            assert!(
                last_error().contains("deliberate panic"),
                "{}",
                last_error()
            );
            let mut t = 0.0;
            assert_eq!(sim::dynlib_sim_time(sim, &mut t), DYNLIB_ERR_BAD_HANDLE);
            assert!(
                last_error().contains("refuses further use"),
                "{}",
                last_error()
            );
            // Another sim of the same model is unaffected.
            opts.T = 0.3;
            assert_eq!(dynlib_sim_run(healthy, &opts), DYNLIB_OK);
            assert_eq!(sim::dynlib_sim_time(healthy, &mut t), DYNLIB_OK);
            assert!((t - 0.3).abs() < 1e-12);
            sim::dynlib_sim_free(sim);
            sim::dynlib_sim_free(healthy);
            model::dynlib_model_free(model);
        }
    }

    #[test]
    fn a_panic_outside_any_sim_becomes_internal() {
        let status = boundary::boundary(|| panic!("boom"));
        assert_eq!(status, DYNLIB_ERR_INTERNAL);
        assert!(last_error().contains("boom"));
        let name = unsafe { CStr::from_ptr(dynlib_status_name(status)) };
        assert_eq!(name.to_str().unwrap(), "DYNLIB_ERR_INTERNAL");
    }
}

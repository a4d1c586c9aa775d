"""Python binding of dynlib, the dynamical-systems simulation engine with exact resume.

A thin ``ctypes`` layer over the C ABI (``include/dynlib.h``); no compiled extension.

The shared library is found through the environment variable ``DYNLIB_LIBRARY`` (a path to
``libdynlib.so`` / ``libdynlib.dylib`` / ``dynlib.dll``) or, by default, at
``target/release/`` of the repository this file lives in (``cargo build --release``).

    import dynlib
    sim = dynlib.Sim(dynlib.Model.load("builtin://ode/izhikevich"))
    sim.run(T=200.0, tag="phase-1")
    sim.create_snapshot("phase-1", "after the first 200 ms")
    sim.run(T=500.0, resume=True, tag="phase-2")
    res = sim.results()          # res.t, res.step, res["v"], res.events (NumPy arrays)

Every status code other than DYNLIB_OK becomes a :class:`DynlibError` subclass carrying
``.status``, ``.status_name`` and the library's message. Handles are freed by ``close()``,
by the context manager, or when the object is garbage-collected.
"""

from __future__ import annotations

import ctypes
import json
import operator
import os
import sys
import threading
import weakref
from ctypes import (
    CFUNCTYPE,
    POINTER,
    Structure,
    byref,
    c_bool,
    c_char,
    c_char_p,
    c_double,
    c_int,
    c_int32,
    c_size_t,
    c_uint8,
    c_uint64,
    c_void_p,
    sizeof,
)

import numpy as np

__all__ = [
    "Model",
    "Sim",
    "Results",
    "DynlibError",
    "NullPointerError",
    "InvalidArgumentError",
    "ModelError",
    "UnknownNameError",
    "DuplicateNameError",
    "BufferTooSmallError",
    "IncompatibleSnapshotError",
    "NoResultsError",
    "DynlibIOError",
    "CorruptSnapshotError",
    "StepFailedError",
    "NonFiniteError",
    "BadHandleError",
    "InternalError",
    "inspect_snapshot",
    "inspect_snapshot_bytes",
    "latest_checkpoint",
    "version",
    "library_path",
    "library_origin",
]

# --------------------------------------------------------------------------------------------
# Status codes and exceptions
# --------------------------------------------------------------------------------------------

DYNLIB_OK = 0
DYNLIB_ERR_NULL_POINTER = 1
DYNLIB_ERR_INVALID_ARGUMENT = 2
DYNLIB_ERR_MODEL = 3
DYNLIB_ERR_UNKNOWN_NAME = 4
DYNLIB_ERR_DUPLICATE_NAME = 5
DYNLIB_ERR_BUFFER_TOO_SMALL = 6
DYNLIB_ERR_INCOMPATIBLE = 7
DYNLIB_ERR_NO_RESULTS = 8
DYNLIB_ERR_IO = 9
DYNLIB_ERR_CORRUPT_SNAPSHOT = 10
DYNLIB_ERR_STEP_FAILED = 11
DYNLIB_ERR_NON_FINITE = 12
DYNLIB_ERR_BAD_HANDLE = 13
DYNLIB_ERR_INTERNAL = 14
DYNLIB_ERR_BUSY = 15
#: Not an error: a progress callback (or Ctrl-C) stopped the run; the session holds it.
DYNLIB_INTERRUPTED = 16

DYNLIB_MODEL_ODE = 0
DYNLIB_MODEL_MAP = 1


class DynlibError(Exception):
    """A dynlib call failed. ``status`` is the DYNLIB_ERR_* code, ``status_name`` its name and
    ``message`` the library's explanation (``str(err)`` is the message)."""

    status = -1

    def __init__(self, message, status=None, status_name=None):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        self.status_name = status_name or _STATUS_NAMES.get(self.status, "DYNLIB_UNKNOWN_STATUS")

    def __str__(self):
        # KeyError would repr() the message; every DynlibError prints it as written.
        return self.message


class NullPointerError(DynlibError):
    status = DYNLIB_ERR_NULL_POINTER


class InvalidArgumentError(DynlibError, ValueError):
    status = DYNLIB_ERR_INVALID_ARGUMENT


class ModelError(DynlibError, ValueError):
    status = DYNLIB_ERR_MODEL


class UnknownNameError(DynlibError, ValueError, KeyError):
    """An unknown state, parameter, variable, snapshot, segment, preset, stepper or option
    name: a ValueError, and a KeyError (a LookupError) for lookups such as ``res["w"]``."""

    status = DYNLIB_ERR_UNKNOWN_NAME


class DuplicateNameError(DynlibError, ValueError):
    status = DYNLIB_ERR_DUPLICATE_NAME


class BufferTooSmallError(DynlibError):
    status = DYNLIB_ERR_BUFFER_TOO_SMALL


class IncompatibleSnapshotError(DynlibError, RuntimeError):
    status = DYNLIB_ERR_INCOMPATIBLE


class NoResultsError(DynlibError, RuntimeError):
    status = DYNLIB_ERR_NO_RESULTS


class DynlibIOError(DynlibError, OSError):
    status = DYNLIB_ERR_IO


class CorruptSnapshotError(DynlibError, ValueError):
    status = DYNLIB_ERR_CORRUPT_SNAPSHOT


class StepFailedError(DynlibError, RuntimeError):
    status = DYNLIB_ERR_STEP_FAILED


class NonFiniteError(DynlibError, RuntimeError, ArithmeticError):
    status = DYNLIB_ERR_NON_FINITE


class BadHandleError(DynlibError, ValueError):
    status = DYNLIB_ERR_BAD_HANDLE


class InternalError(DynlibError, RuntimeError):
    status = DYNLIB_ERR_INTERNAL


class BusyError(DynlibError, RuntimeError):
    """Another call on the same sim is in progress (a callback calling back into its own sim,
    or two threads using one sim); nothing was changed."""

    status = DYNLIB_ERR_BUSY


_ERRORS = {
    cls.status: cls
    for cls in (
        NullPointerError,
        InvalidArgumentError,
        ModelError,
        UnknownNameError,
        DuplicateNameError,
        BufferTooSmallError,
        IncompatibleSnapshotError,
        NoResultsError,
        DynlibIOError,
        CorruptSnapshotError,
        StepFailedError,
        NonFiniteError,
        BadHandleError,
        InternalError,
        BusyError,
    )
}
_STATUS_NAMES = {
    0: "DYNLIB_OK",
    1: "DYNLIB_ERR_NULL_POINTER",
    2: "DYNLIB_ERR_INVALID_ARGUMENT",
    3: "DYNLIB_ERR_MODEL",
    4: "DYNLIB_ERR_UNKNOWN_NAME",
    5: "DYNLIB_ERR_DUPLICATE_NAME",
    6: "DYNLIB_ERR_BUFFER_TOO_SMALL",
    7: "DYNLIB_ERR_INCOMPATIBLE",
    8: "DYNLIB_ERR_NO_RESULTS",
    9: "DYNLIB_ERR_IO",
    10: "DYNLIB_ERR_CORRUPT_SNAPSHOT",
    11: "DYNLIB_ERR_STEP_FAILED",
    12: "DYNLIB_ERR_NON_FINITE",
    13: "DYNLIB_ERR_BAD_HANDLE",
    14: "DYNLIB_ERR_INTERNAL",
    15: "DYNLIB_ERR_BUSY",
}

# --------------------------------------------------------------------------------------------
# The C ABI: types and function declarations (exactly as in include/dynlib.h)
# --------------------------------------------------------------------------------------------

DynlibStatus = c_int32


class _DynlibModel(Structure):
    """Opaque ``DynlibModel``."""


class _DynlibSim(Structure):
    """Opaque ``DynlibSim``."""


ModelPtr = POINTER(_DynlibModel)
SimPtr = POINTER(_DynlibSim)

# typedef int (*DynlibRhsFn)(double t, const double *y, const double *p, double *out, void *ud);
DynlibRhsFn = CFUNCTYPE(
    c_int, c_double, POINTER(c_double), POINTER(c_double), POINTER(c_double), c_void_p
)
DynlibAuxFn = DynlibRhsFn
DynlibJacobianFn = DynlibRhsFn
# typedef int (*DynlibEventCondFn)(size_t event, double t, const double *y, const double *p,
#                                  int *fires, void *user_data);
DynlibEventCondFn = CFUNCTYPE(
    c_int, c_size_t, c_double, POINTER(c_double), POINTER(c_double), POINTER(c_int), c_void_p
)
# typedef int (*DynlibEventActionFn)(size_t event, double t, double *y, double *p, void *ud);
DynlibEventActionFn = CFUNCTYPE(
    c_int, c_size_t, c_double, POINTER(c_double), POINTER(c_double), c_void_p
)

_CStrArray = POINTER(c_char_p)  # const char *const *


class DynlibCallbackModel(Structure):
    _fields_ = [
        ("struct_size", c_size_t),
        ("id", c_char_p),
        ("version", c_char_p),
        ("kind", c_int32),
        ("n_states", c_size_t),
        ("state_names", _CStrArray),
        ("state_init", POINTER(c_double)),
        ("n_params", c_size_t),
        ("param_names", _CStrArray),
        ("param_init", POINTER(c_double)),
        ("n_aux", c_size_t),
        ("aux_names", _CStrArray),
        ("n_events", c_size_t),
        ("event_names", _CStrArray),
        ("dt", c_double),
        ("stepper", c_char_p),
        ("rhs", DynlibRhsFn),
        ("aux", DynlibAuxFn),
        ("event_cond", DynlibEventCondFn),
        ("event_action", DynlibEventActionFn),
        ("jacobian", DynlibJacobianFn),
        ("user_data", c_void_p),
    ]


class DynlibSegmentInfo(Structure):
    _fields_ = [
        ("t_start", c_double),
        ("t_end", c_double),
        ("step_start", c_uint64),
        ("step_end", c_uint64),
        ("sample_start", c_uint64),
        ("sample_len", c_uint64),
        ("event_start", c_uint64),
        ("event_len", c_uint64),
        ("resume", c_bool),
    ]


DynlibProgressFn = CFUNCTYPE(
    c_int, c_double, c_uint64, c_double, POINTER(c_double), c_size_t, c_void_p
)


class DynlibRunOptions(Structure):
    _fields_ = [
        ("struct_size", c_size_t),
        ("T", c_double),
        ("N", c_uint64),
        ("dt", c_double),
        ("t0", c_double),
        ("ic", POINTER(c_double)),
        ("n_ic", c_size_t),
        ("params", POINTER(c_double)),
        ("n_params", c_size_t),
        ("record", c_int32),
        ("record_interval", c_uint64),
        ("record_vars", _CStrArray),
        ("n_record_vars", c_size_t),
        ("transient", c_double),
        ("resume", c_bool),
        ("tag", c_char_p),
        ("max_steps", c_uint64),
        ("config_names", _CStrArray),
        ("config_values", POINTER(c_double)),
        ("n_config", c_size_t),
        ("checkpoint_dir", c_char_p),
        ("checkpoint_every_steps", c_uint64),
        ("checkpoint_every_time", c_double),
        ("checkpoint_keep", c_uint64),
        ("progress", DynlibProgressFn),
        ("progress_user_data", c_void_p),
        ("progress_every_steps", c_uint64),
        ("progress_every_seconds", c_double),
        ("observer", DynlibProgressFn),
        ("observer_user_data", c_void_p),
        ("observer_every_steps", c_uint64),
    ]


_P = POINTER
# name: (restype, argtypes)
_SIGNATURES = {
    "dynlib_version": (c_char_p, []),
    "dynlib_status_name": (c_char_p, [DynlibStatus]),
    "dynlib_last_error": (c_char_p, []),
    "dynlib_callback_model_init_sized": (DynlibStatus, [_P(DynlibCallbackModel), c_size_t]),
    "dynlib_model_from_callbacks": (DynlibStatus, [_P(DynlibCallbackModel), _P(ModelPtr)]),
    "dynlib_model_load": (DynlibStatus, [c_char_p, c_char_p, _P(ModelPtr)]),
    "dynlib_model_load_mods": (
        DynlibStatus,
        [c_char_p, _P(c_char_p), c_size_t, c_char_p, _P(ModelPtr)],
    ),
    "dynlib_model_free": (None, [ModelPtr]),
    "dynlib_model_n_states": (DynlibStatus, [ModelPtr, _P(c_size_t)]),
    "dynlib_model_n_params": (DynlibStatus, [ModelPtr, _P(c_size_t)]),
    "dynlib_model_n_aux": (DynlibStatus, [ModelPtr, _P(c_size_t)]),
    "dynlib_model_state_name": (
        DynlibStatus,
        [ModelPtr, c_size_t, _P(c_char), c_size_t, _P(c_size_t)],
    ),
    "dynlib_model_param_name": (
        DynlibStatus,
        [ModelPtr, c_size_t, _P(c_char), c_size_t, _P(c_size_t)],
    ),
    "dynlib_model_aux_name": (
        DynlibStatus,
        [ModelPtr, c_size_t, _P(c_char), c_size_t, _P(c_size_t)],
    ),
    "dynlib_model_info_json": (DynlibStatus, [ModelPtr, _P(c_char), c_size_t, _P(c_size_t)]),
    "dynlib_sim_n_samples": (DynlibStatus, [SimPtr, _P(c_size_t)]),
    "dynlib_sim_results_t": (DynlibStatus, [SimPtr, _P(c_double), c_size_t, _P(c_size_t)]),
    "dynlib_sim_results_step": (DynlibStatus, [SimPtr, _P(c_uint64), c_size_t, _P(c_size_t)]),
    "dynlib_sim_results_interpolated": (
        DynlibStatus,
        [SimPtr, _P(c_uint8), c_size_t, _P(c_size_t)],
    ),
    "dynlib_sim_results_var": (
        DynlibStatus,
        [SimPtr, c_char_p, _P(c_double), c_size_t, _P(c_size_t)],
    ),
    "dynlib_sim_results_n_vars": (DynlibStatus, [SimPtr, _P(c_size_t)]),
    "dynlib_sim_results_var_name": (
        DynlibStatus,
        [SimPtr, c_size_t, _P(c_char), c_size_t, _P(c_size_t)],
    ),
    "dynlib_sim_events_json": (DynlibStatus, [SimPtr, _P(c_char), c_size_t, _P(c_size_t)]),
    "dynlib_sim_n_segments": (DynlibStatus, [SimPtr, _P(c_size_t)]),
    "dynlib_sim_segment_info": (DynlibStatus, [SimPtr, c_size_t, _P(DynlibSegmentInfo)]),
    "dynlib_sim_segment_name": (
        DynlibStatus,
        [SimPtr, c_size_t, _P(c_char), c_size_t, _P(c_size_t)],
    ),
    "dynlib_sim_name_segment": (DynlibStatus, [SimPtr, c_size_t, c_char_p]),
    "dynlib_sim_name_last_segment": (DynlibStatus, [SimPtr, c_char_p]),
    "dynlib_sim_new": (DynlibStatus, [ModelPtr, _P(SimPtr)]),
    "dynlib_sim_free": (None, [SimPtr]),
    "dynlib_run_options_init_sized": (DynlibStatus, [_P(DynlibRunOptions), c_size_t]),
    "dynlib_sim_run": (DynlibStatus, [SimPtr, _P(DynlibRunOptions)]),
    "dynlib_sim_create_snapshot": (DynlibStatus, [SimPtr, c_char_p, c_char_p]),
    "dynlib_sim_reset": (DynlibStatus, [SimPtr, c_char_p]),
    "dynlib_sim_apply_preset": (DynlibStatus, [SimPtr, c_char_p]),
    "dynlib_sim_list_snapshots_json": (
        DynlibStatus,
        [SimPtr, _P(c_char), c_size_t, _P(c_size_t)],
    ),
    "dynlib_sim_compat_check": (
        DynlibStatus,
        [SimPtr, c_char_p, _P(c_bool), _P(c_char), c_size_t, _P(c_size_t)],
    ),
    "dynlib_sim_can_resume": (
        DynlibStatus,
        [SimPtr, _P(c_bool), _P(c_char), c_size_t, _P(c_size_t)],
    ),
    "dynlib_sim_summary_json": (DynlibStatus, [SimPtr, _P(c_char), c_size_t, _P(c_size_t)]),
    "dynlib_sim_assign": (
        DynlibStatus,
        [SimPtr, _CStrArray, _P(c_double), c_size_t, c_bool],
    ),
    "dynlib_sim_time": (DynlibStatus, [SimPtr, _P(c_double)]),
    "dynlib_sim_step_count": (DynlibStatus, [SimPtr, _P(c_uint64)]),
    "dynlib_sim_state": (DynlibStatus, [SimPtr, _P(c_double), c_size_t, _P(c_size_t)]),
    "dynlib_sim_params": (DynlibStatus, [SimPtr, _P(c_double), c_size_t, _P(c_size_t)]),
    "dynlib_sim_value": (DynlibStatus, [SimPtr, c_char_p, _P(c_double)]),
    "dynlib_sim_export_snapshot": (DynlibStatus, [SimPtr, c_char_p, c_char_p]),
    "dynlib_sim_import_snapshot": (DynlibStatus, [SimPtr, c_char_p]),
    "dynlib_inspect_snapshot": (DynlibStatus, [c_char_p, _P(c_char), c_size_t, _P(c_size_t)]),
    "dynlib_inspect_snapshot_bytes": (
        DynlibStatus,
        [_P(c_uint8), c_size_t, _P(c_char), c_size_t, _P(c_size_t)],
    ),
    "dynlib_sim_serialize_snapshot": (
        DynlibStatus,
        [SimPtr, c_char_p, _P(c_uint8), c_size_t, _P(c_size_t)],
    ),
    "dynlib_sim_deserialize_snapshot": (DynlibStatus, [SimPtr, _P(c_uint8), c_size_t]),
    "dynlib_latest_checkpoint": (DynlibStatus, [c_char_p, _P(c_char), c_size_t, _P(c_size_t)]),
    "dynlib_sim_list_presets_json": (
        DynlibStatus,
        [SimPtr, c_char_p, _P(c_char), c_size_t, _P(c_size_t)],
    ),
    "dynlib_sim_add_preset": (
        DynlibStatus,
        [SimPtr, c_char_p, _CStrArray, _P(c_double), c_size_t, c_bool],
    ),
    "dynlib_sim_remove_preset": (DynlibStatus, [SimPtr, c_char_p]),
    "dynlib_sim_load_presets": (
        DynlibStatus,
        [SimPtr, c_char_p, c_char_p, c_char_p, _P(c_size_t)],
    ),
    "dynlib_sim_save_presets": (
        DynlibStatus,
        [SimPtr, c_char_p, c_char_p, c_char_p, _P(c_size_t)],
    ),
    "dynlib_sim_config_set_json": (DynlibStatus, [SimPtr, c_char_p]),
    "dynlib_sim_config_json": (DynlibStatus, [SimPtr, _P(c_char), c_size_t, _P(c_size_t)]),
    "dynlib_sim_stepper_config_set": (
        DynlibStatus,
        [SimPtr, _CStrArray, _P(c_double), c_size_t],
    ),
    "dynlib_sim_stepper_config": (DynlibStatus, [SimPtr, _P(c_double), c_size_t, _P(c_size_t)]),
    "dynlib_sim_stepper_config_json": (
        DynlibStatus,
        [SimPtr, _P(c_char), c_size_t, _P(c_size_t)],
    ),
}


def _library_file_name():
    if sys.platform == "darwin":
        return "libdynlib.dylib"
    if sys.platform.startswith("win"):
        return "dynlib.dll"
    return "libdynlib.so"


def _library_candidates():
    """Where the shared library is looked for, in order, as (path, origin) pairs:
    $DYNLIB_LIBRARY; the build of the repository this file lives in (a source checkout);
    the install prefix pkg-config reports for `dynlib` (PKG_CONFIG_PATH=<prefix>/lib/pkgconfig
    after `cargo cinstall --prefix <prefix>`); the lib directories of sys.prefix, /usr/local
    and /usr; and the system's search (ctypes.util.find_library)."""
    explicit = os.environ.get("DYNLIB_LIBRARY")
    if explicit:
        yield explicit, "DYNLIB_LIBRARY"
        return
    name = _library_file_name()
    root = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
    release = os.path.join(root, "target", "release")
    # `cargo build --release` puts it in target/release; `cargo test --release` alone may
    # leave it only in target/release/deps.
    if os.path.isfile(os.path.join(root, "include", "dynlib.h")):
        for c in (os.path.join(release, name), os.path.join(release, "deps", name)):
            yield c, "repository build"
    try:
        import subprocess

        libdir = subprocess.run(
            ["pkg-config", "--variable=libdir", "dynlib"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        if libdir:
            yield os.path.join(libdir, name), "install prefix (pkg-config)"
    except (OSError, subprocess.SubprocessError):
        pass
    for prefix in dict.fromkeys([sys.prefix, "/usr/local", "/usr"]):
        for lib in ("lib", "lib64", os.path.join("lib", "x86_64-linux-gnu")):
            yield os.path.join(prefix, lib, name), f"install prefix {prefix}"
    import ctypes.util

    found = ctypes.util.find_library("dynlib")
    if found:
        yield found, "system library search path"


def _load_library():
    tried = []
    for path, origin in _library_candidates():
        if origin != "DYNLIB_LIBRARY" and os.path.sep in path and not os.path.isfile(path):
            tried.append(path)
            continue
        try:
            lib = ctypes.CDLL(path)
        except OSError as e:
            if origin == "DYNLIB_LIBRARY":
                raise ImportError(
                    f"dynlib: cannot load the shared library '{path}' named by DYNLIB_LIBRARY "
                    f"({e})"
                ) from e
            tried.append(f"{path} ({e})")
            continue
        for name, (restype, argtypes) in _SIGNATURES.items():
            fn = getattr(lib, name)
            fn.restype = restype
            fn.argtypes = argtypes
        return lib, os.path.abspath(path) if os.path.sep in path else path, origin
    raise ImportError(
        "dynlib: cannot find the shared library libdynlib. Build it (`cargo build --release` "
        "in the repository), install it (`cargo cinstall --release --prefix <prefix>`, then "
        "PKG_CONFIG_PATH=<prefix>/lib/pkgconfig), or set DYNLIB_LIBRARY to its path. Tried: "
        + "; ".join(tried)
    )


_lib, _library_path, library_origin = _load_library()
"""How the shared library was found: "DYNLIB_LIBRARY", "repository build", "install prefix
(pkg-config)", "install prefix <dir>" or "system library search path"."""


def library_path():
    """Path of the loaded shared library (``library_origin`` says how it was found;
    ``python -m dynlib`` prints both)."""
    return _library_path


def version():
    """The library version ("MAJOR.MINOR.PATCH")."""
    return _lib.dynlib_version().decode()


# --------------------------------------------------------------------------------------------
# Helpers: errors, strings, the output-buffer protocol
# --------------------------------------------------------------------------------------------


def _error(status, context=None):
    message = (_lib.dynlib_last_error() or b"").decode("utf-8", "replace")
    name = (_lib.dynlib_status_name(status) or b"").decode()
    cls = _ERRORS.get(status, DynlibError)
    err = cls(message, status, name)
    if context is not None:
        err.__cause__ = context
    return err


def _check(status):
    if status != DYNLIB_OK:
        raise _error(status)


def _enc(s):
    """str / bytes / os.PathLike -> bytes for a `const char *` argument (None stays None)."""
    if s is None:
        return None
    if isinstance(s, bytes):
        return s
    if isinstance(s, os.PathLike):
        return os.fsencode(s)
    return str(s).encode("utf-8")


def _str_array(names):
    """A `const char *const *` array; the array object keeps the encoded strings alive."""
    encoded = [_enc(n) for n in names]
    return (c_char_p * len(encoded))(*encoded)


def _f64_array(values):
    arr = np.ascontiguousarray(np.asarray(values, dtype=np.float64).ravel())
    return arr, arr.ctypes.data_as(POINTER(c_double))


def _query(fn, args, fill):
    """Output-buffer protocol: ask the size (buf=NULL, cap=0), allocate, fill; if the size
    changed in between (DYNLIB_ERR_BUFFER_TOO_SMALL) ask again once."""
    needed = c_size_t(0)
    _check(fn(*args, None, 0, byref(needed)))
    for attempt in range(2):
        n = needed.value
        buf, ptr = fill(n)
        status = fn(*args, ptr, n, byref(needed))
        if status == DYNLIB_ERR_BUFFER_TOO_SMALL and attempt == 0:
            continue
        _check(status)
        return buf, needed.value
    raise AssertionError("unreachable")


def _read_str(fn, *args):
    def fill(n):
        buf = ctypes.create_string_buffer(max(n, 1))
        return buf, ctypes.cast(buf, POINTER(c_char))

    buf, n = _query(fn, args, fill)
    return buf.raw[: max(n - 1, 0)].decode("utf-8")


def _read_json(fn, *args):
    return json.loads(_read_str(fn, *args))


_CTYPE_OF = {np.float64: c_double, np.uint64: c_uint64, np.uint8: c_uint8}


def _read_array(fn, dtype, *args):
    ctype = _CTYPE_OF[dtype]

    def fill(n):
        arr = np.empty(n, dtype=dtype)
        return arr, arr.ctypes.data_as(POINTER(ctype))

    arr, n = _query(fn, args, fill)
    return arr[:n]


def _fill_row(fn, row, *args):
    """Fills the float64 array `row`, whose length is the known sample count, in one call."""
    needed = c_size_t(0)
    _check(fn(*args, row.ctypes.data_as(POINTER(c_double)), row.size, byref(needed)))
    if needed.value != row.size:
        raise InternalError(
            f"a results column has {needed.value} samples, the recording {row.size}",
            DYNLIB_ERR_INTERNAL,
        )
    return row


def _read_bytes(fn, *args):
    def fill(n):
        buf = (c_uint8 * max(n, 1))()
        return buf, ctypes.cast(buf, POINTER(c_uint8))

    buf, n = _query(fn, args, fill)
    return bytes(buf)[:n]


def _json_float(x):
    """meta/list JSON writes non-finite numbers as strings ("inf", "-inf", "NaN")."""
    if isinstance(x, str):
        try:
            return float(x)
        except ValueError:
            return x
    return x


# Live handles created by this module (for leak checks in tests): {"model": n, "sim": n}.
_live = {"model": 0, "sim": 0}
_live_lock = threading.Lock()


def live_handles():
    """Number of handles this module has created and not yet freed, by kind."""
    with _live_lock:
        return dict(_live)


def _count(kind, delta):
    with _live_lock:
        _live[kind] += delta


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


class _CallbackError:
    """Remembers the first Python exception raised inside a callback during a C call."""

    def __init__(self):
        self.exc = None


class _Handle:
    """Owns one library handle: freed by ``close()`` (idempotent), at the end of a ``with``
    block, or when garbage-collected."""

    _handle = None

    @property
    def closed(self):
        return not self._handle

    def _release(self, free, kind):
        h, self._handle = self._handle, None
        if h:
            free(h)
            _count(kind, -1)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass


class Model(_Handle):
    """A loaded model. ``Model.load(source, stepper=None)`` with ``source`` one of
    ``builtin://ode/<name>``, ``builtin://map/<name>``, a path to a TOML model file, or
    ``"inline:" + toml_text``. ``mods`` lists model variants applied in order: names of
    ``[mods.NAME]`` tables of the model file, ``"inline:" + toml`` with one ``[mod]``, or
    mod file paths (``path#mod=NAME``). ``Model.from_callbacks(...)`` wraps Python
    functions."""

    def __init__(self, source=None, stepper=None, *, mods=None, _handle=None):
        self._handle = None
        self._keepalive = ()
        self._callback_errors = None
        if _handle is None:
            if source is None:
                raise TypeError("Model(source, stepper=None): source is required")
            out = ModelPtr()
            if mods:
                if isinstance(mods, (str, bytes)):
                    mods = [mods]
                encoded = [_enc(m) for m in mods]
                arr = (c_char_p * len(encoded))(*encoded)
                _check(
                    _lib.dynlib_model_load_mods(
                        _enc(source), arr, len(encoded), _enc(stepper), byref(out)
                    )
                )
            else:
                _check(_lib.dynlib_model_load(_enc(source), _enc(stepper), byref(out)))
            _handle = out
        self._handle = _handle
        _count("model", 1)
        self._load_names()

    @classmethod
    def load(cls, source, stepper=None, *, mods=None):
        """Loads a model (see the class docstring); ``stepper`` names the stepper of sims
        created from it (NULL = the model's default); ``mods`` the variants to apply."""
        return cls(source, stepper, mods=mods)

    @classmethod
    def from_callbacks(
        cls,
        rhs,
        states,
        params=None,
        *,
        id,
        version="",
        kind="ode",
        aux=None,
        aux_names=(),
        events=(),
        event_cond=None,
        event_action=None,
        jacobian=None,
        dt=0.01,
        stepper=None,
    ):
        """A model whose equations are Python functions.

        ``states`` and ``params`` are dicts name -> initial/default value (ordered).
        ``rhs(t, y, p)`` returns dy/dt (ODE) or the next state (map) as a sequence of
        ``len(states)`` floats; ``y`` and ``p`` are read-only NumPy views valid for the call.
        ``aux(t, y, p)`` returns ``len(aux_names)`` values; ``jacobian(t, y, p)`` an n×n
        array (row-major); ``event_cond(i, t, y, p)`` a bool for event ``events[i]``;
        ``event_action(i, t, y, p)`` changes ``y`` and ``p`` in place. An exception in a
        callback stops the run; ``Sim.run`` re-raises it (chained to a StepFailedError).
        ``id``/``version`` identify the equations in snapshot pins. Callbacks must be pure
        functions of their arguments for resume to be exact."""
        states = dict(states)
        params = dict(params or {})
        n = len(states)
        n_p = len(params)
        n_aux = len(aux_names)
        errors = _CallbackError()

        def view(ptr, k, writable=False):
            if k == 0:
                return np.empty(0)
            a = np.ctypeslib.as_array(ptr, shape=(k,))
            if not writable:
                a.flags.writeable = False
            return a

        def guarded(body):
            def call(*args):
                try:
                    body(*args)
                    return 0
                except BaseException as e:  # noqa: BLE001 - must not unwind into C
                    if errors.exc is None:
                        errors.exc = e
                    return 1

            return call

        def fill(out_ptr, k, values, what):
            out = view(out_ptr, k, writable=True)
            v = np.asarray(values, dtype=np.float64).ravel()
            if v.shape != (k,):
                raise ValueError(f"{what} returned {v.size} values, expected {k}")
            out[:] = v

        c_rhs = DynlibRhsFn(
            guarded(lambda t, y, p, out, ud: fill(out, n, rhs(t, view(y, n), view(p, n_p)), "rhs"))
        )
        c_aux = (
            DynlibAuxFn(
                guarded(
                    lambda t, y, p, out, ud: fill(
                        out, n_aux, aux(t, view(y, n), view(p, n_p)), "aux"
                    )
                )
            )
            if aux is not None
            else DynlibAuxFn()
        )
        c_jac = (
            DynlibJacobianFn(
                guarded(
                    lambda t, y, p, out, ud: fill(
                        out, n * n, jacobian(t, view(y, n), view(p, n_p)), "jacobian"
                    )
                )
            )
            if jacobian is not None
            else DynlibJacobianFn()
        )

        def cond_body(i, t, y, p, fires, ud):
            fires[0] = 1 if event_cond(int(i), t, view(y, n), view(p, n_p)) else 0

        c_cond = (
            DynlibEventCondFn(guarded(cond_body)) if event_cond is not None else DynlibEventCondFn()
        )
        c_action = (
            DynlibEventActionFn(
                guarded(
                    lambda i, t, y, p, ud: event_action(
                        int(i), t, view(y, n, True), view(p, n_p, True)
                    )
                )
            )
            if event_action is not None
            else DynlibEventActionFn()
        )

        kind_code = {"ode": DYNLIB_MODEL_ODE, "map": DYNLIB_MODEL_MAP}.get(kind, kind)
        cb = DynlibCallbackModel()
        _check(_lib.dynlib_callback_model_init_sized(byref(cb), sizeof(cb)))
        state_names = _str_array(states)
        state_init, _ = _f64_array(list(states.values()))
        param_names = _str_array(params)
        param_init, _ = _f64_array(list(params.values()))
        aux_arr = _str_array(aux_names)
        event_arr = _str_array(events)
        cb.id = _enc(id)
        cb.version = _enc(version)
        cb.kind = kind_code
        cb.n_states = n
        cb.state_names = ctypes.cast(state_names, _CStrArray)
        cb.state_init = state_init.ctypes.data_as(POINTER(c_double))
        cb.n_params = n_p
        cb.param_names = ctypes.cast(param_names, _CStrArray)
        cb.param_init = param_init.ctypes.data_as(POINTER(c_double))
        cb.n_aux = n_aux
        cb.aux_names = ctypes.cast(aux_arr, _CStrArray)
        cb.n_events = len(events)
        cb.event_names = ctypes.cast(event_arr, _CStrArray)
        cb.dt = dt
        cb.stepper = _enc(stepper)
        cb.rhs = c_rhs
        cb.aux = c_aux
        cb.event_cond = c_cond
        cb.event_action = c_action
        cb.jacobian = c_jac
        cb.user_data = None
        out = ModelPtr()
        _check(_lib.dynlib_model_from_callbacks(byref(cb), byref(out)))
        model = cls(_handle=out)
        # The C side copies names and arrays but calls these function pointers for as long as
        # any model or sim built from them lives: keep them with the Python model, which
        # every Sim of it references.
        model._keepalive = (c_rhs, c_aux, c_jac, c_cond, c_action)
        model._callback_errors = errors
        return model

    def _load_names(self):
        h = self._ptr()

        def names(count_fn, name_fn):
            k = c_size_t(0)
            _check(count_fn(h, byref(k)))
            return tuple(_read_str(name_fn, h, i) for i in range(k.value))

        self.state_names = names(_lib.dynlib_model_n_states, _lib.dynlib_model_state_name)
        self.param_names = names(_lib.dynlib_model_n_params, _lib.dynlib_model_param_name)
        self.aux_names = names(_lib.dynlib_model_n_aux, _lib.dynlib_model_aux_name)

    def _ptr(self):
        if not self._handle:
            raise BadHandleError("the model is closed", DYNLIB_ERR_BAD_HANDLE)
        return self._handle

    @property
    def n_states(self):
        return len(self.state_names)

    @property
    def n_params(self):
        return len(self.param_names)

    def info(self):
        """The model as a dict: kind, name, states, params, aux, events, sim defaults, …"""
        return _read_json(_lib.dynlib_model_info_json, self._ptr())

    def close(self):
        """Frees the model handle (sims created from it stay valid)."""
        self._release(_lib.dynlib_model_free, "model")

    def __repr__(self):
        state = "closed" if not self._handle else f"states={list(self.state_names)}"
        return f"<dynlib.Model {state}>"


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


class Results:
    """Recorded results: ``t`` (float64), ``step`` (uint64), ``interpolated`` (bool),
    each recorded variable as a float64 array (``res["v"]`` or ``res.v``; ``res[["v", "u"]]``
    gives an (n, k) array), ``events`` (list of dicts) and ``segments`` (list of dicts).
    ``res.segment`` gives per-segment views: ``res.segment["phase-2"]``, ``res.segment[0]``,
    ``res.segment("phase-2")``, ``len(res.segment)``, iteration, ``res.segment.names()``."""

    def __init__(self, t, step, interpolated, columns, events, segments, aux_names=()):
        """``step`` and ``interpolated`` are arrays, or functions that read them: the sim
        that made this object calls :meth:`_settle` before anything can change its
        recording, so either way they are the recording as it was at ``results()``."""
        self.t = t
        self._step = step
        self._interpolated = interpolated
        self.columns = columns
        self.events = events
        self.segments = segments
        self._aux = set(aux_names)

    @property
    def segment(self):
        # Made on demand: a view stored here would be a reference cycle, keeping every
        # Results (and its arrays) alive until the garbage collector runs, so each new
        # recording would land on fresh pages instead of reusing the freed ones.
        return _SegmentsView(self)

    @property
    def step(self):
        if callable(self._step):
            self._step = self._step()
        return self._step

    @property
    def interpolated(self):
        if callable(self._interpolated):
            self._interpolated = self._interpolated()
        return self._interpolated

    def _settle(self):
        """Reads what is still read lazily (step labels and flags: most callers never use
        them, so they are not copied unless asked for)."""
        self.step
        self.interpolated

    @property
    def names(self):
        return list(self.columns)

    @property
    def n(self):
        return len(self.t)

    @property
    def state_names(self):
        """Recorded state names (in recording order)."""
        return tuple(k for k in self.columns if k not in self._aux)

    @property
    def aux_names(self):
        """Recorded aux names (in recording order)."""
        return tuple(k for k in self.columns if k in self._aux)

    def _column(self, name):
        if name in ("t", "step", "interpolated"):
            return getattr(self, name)
        plain = name[4:] if name.startswith("aux.") else name
        if name in self.columns:
            return self.columns[name]
        if plain in self.columns:
            return self.columns[plain]
        recorded = ", ".join(self.columns) or "(none)"
        raise UnknownNameError(
            f"'{name}' is not a recorded variable{_suggest(plain, list(self.columns))}; "
            f"recorded: {recorded}",
            DYNLIB_ERR_UNKNOWN_NAME,
        )

    def __getitem__(self, name):
        if isinstance(name, (list, tuple)):
            cols = [self._column(k) for k in name]
            return np.column_stack(cols) if cols else np.empty((len(self.t), 0))
        return self._column(name)

    def __getattr__(self, name):
        columns = self.__dict__.get("columns", {})
        if name in columns:
            return columns[name]
        raise AttributeError(name)

    def __contains__(self, name):
        return name in self.columns or name in ("t", "step", "interpolated")

    def __len__(self):
        return len(self.t)

    def keys(self):
        return ["t", "step", *self.columns]

    def __repr__(self):
        return f"<dynlib.Results {len(self.t)} samples of {', '.join(self.keys())}>"


class SegmentView:
    """One recorded segment: ``id``, ``name``, ``meta`` (the segment dict), ``t``, ``step``,
    ``seg["x"]`` (its slice of any recorded series) and ``events()`` (its events)."""

    def __init__(self, results, index):
        self._r = results
        self.id = index
        self.meta = results.segments[index]
        self.name = self.meta["name"]
        a = self.meta["sample_start"]
        self._slice = slice(a, a + self.meta["sample_len"])

    @property
    def t(self):
        return self._r.t[self._slice]

    @property
    def step(self):
        return self._r.step[self._slice]

    def __getitem__(self, key):
        col = self._r[key]
        return col[self._slice] if col.ndim == 1 else col[self._slice, :]

    def __contains__(self, key):
        return key in self._r

    def keys(self):
        return self._r.keys()

    def __len__(self):
        return self.meta["sample_len"]

    def events(self):
        a = self.meta["event_start"]
        return self._r.events[a : a + self.meta["event_len"]]

    def __repr__(self):
        return f"<dynlib.SegmentView #{self.id} '{self.name}' {len(self)} samples>"


class _SegmentsView:
    """Segments by index or by name (effective name, or the automatic alias ``run#k``)."""

    def __init__(self, results):
        self._r = results

    def _index(self, key):
        segs = self._r.segments
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            k = int(key)
            if not -len(segs) <= k < len(segs):
                raise IndexError(f"segment index {k} out of range: there are {len(segs)} segments")
            return k % len(segs)
        for i, s in enumerate(segs):
            if s["name"] == key:
                return i
        if isinstance(key, str) and key.startswith("run#") and key[4:].isdigit():
            k = int(key[4:])
            if k < len(segs):
                return k
        names = [s["name"] for s in segs]
        raise UnknownNameError(
            f"unknown segment '{key}'{_suggest(str(key), names)}; segments: "
            f"{', '.join(names) or '(none)'}",
            DYNLIB_ERR_UNKNOWN_NAME,
        )

    def __getitem__(self, key):
        return SegmentView(self._r, self._index(key))

    def __call__(self, key):
        return self[key]

    def __contains__(self, key):
        try:
            self._index(key)
            return True
        except (IndexError, UnknownNameError):
            return False

    def __len__(self):
        return len(self._r.segments)

    def __iter__(self):
        return (SegmentView(self._r, i) for i in range(len(self)))

    def names(self):
        return [s["name"] for s in self._r.segments]


class PinDiff(dict):
    """The pins that differ, ``{pin: (this session's value, the snapshot's value)}``; ``str()``
    is the library's text ("" when compatible), and it compares equal to that text too."""

    def __init__(self, text):
        super().__init__()
        self.text = text
        import re

        for m in re.finditer(r"(\w+) is '(.*?)' in the snapshot, '(.*?)' here", text):
            self[m.group(1)] = (m.group(3), m.group(2))

    def __str__(self):
        return self.text

    def __eq__(self, other):
        if isinstance(other, str):
            return self.text == other
        return dict.__eq__(self, other)

    def __ne__(self, other):
        return not self == other

    __hash__ = None


class _NamedVector(np.ndarray):
    """A copy of the state (or parameter) vector that can also be called with a name:
    ``sim.state`` is the vector, ``sim.state("v")`` one value."""

    def __array_finalize__(self, obj):
        self._names = getattr(obj, "_names", [])
        self._what = getattr(obj, "_what", "value")

    def __call__(self, name):
        names = self._names
        if name not in names:
            raise UnknownNameError(
                f"unknown {self._what} '{name}'{_suggest(name, names)}; {self._what}s: "
                f"{', '.join(names) or '(none)'}",
                DYNLIB_ERR_UNKNOWN_NAME,
            )
        return float(np.asarray(self)[names.index(name)])


def _named(values, names, what):
    v = np.asarray(values, dtype=np.float64).view(_NamedVector)
    v._names = list(names)
    v._what = what
    return v


def _edit_distance(a, b):
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def _suggest(name, candidates):
    """" (did you mean 'x'?)" for the closest candidate within edit distance 2, else ""."""
    best = None
    for c in candidates:
        d = _edit_distance(name, c)
        if d <= 2 and (best is None or d < best[0]):
            best = (d, c)
    return f" (did you mean '{best[1]}'?)" if best else ""


# --------------------------------------------------------------------------------------------
# Sims
# --------------------------------------------------------------------------------------------


class Sim(_Handle):
    """A simulation session over a model: run, snapshot, reset, assign, resume, export."""

    def __init__(self, model, stepper=None):
        """``model`` is a :class:`Model` or a source accepted by :meth:`Model.load` (then
        ``stepper`` may name the stepper)."""
        self._handle = None
        # Results objects that still read their step labels lazily (settled before any
        # call that could change the recording).
        self._unsettled = None
        if not isinstance(model, Model):
            model = Model.load(model, stepper)
        elif stepper is not None:
            raise TypeError("choose the stepper in Model.load(source, stepper=...)")
        # Keeps the Python model (and any Python callbacks) alive as long as the sim.
        self.model = model
        out = SimPtr()
        _check(_lib.dynlib_sim_new(model._ptr(), byref(out)))
        self._handle = out
        _count("sim", 1)

    # -- lifetime ---------------------------------------------------------------------------

    def _ptr(self):
        if not self._handle:
            raise BadHandleError("the sim is closed", DYNLIB_ERR_BAD_HANDLE)
        if self._unsettled is not None:
            self._settle_results()
        return self._handle

    def _settle_results(self):
        unsettled, self._unsettled = self._unsettled, None
        for r in list(unsettled):
            r._settle()

    def close(self):
        """Frees the session with its snapshots and results. Idempotent."""
        if getattr(self, "_unsettled", None) is not None and self._handle:
            self._settle_results()
        self._release(_lib.dynlib_sim_free, "sim")

    # -- running ----------------------------------------------------------------------------

    def run(
        self,
        T=None,
        N=None,
        dt=None,
        t0=None,
        ic=None,
        params=None,
        record=None,
        record_interval=None,
        record_vars=None,
        transient=None,
        resume=False,
        tag=None,
        max_steps=None,
        *,
        checkpoint_dir=None,
        checkpoint_every_steps=None,
        checkpoint_every_time=None,
        checkpoint_keep=None,
        cap_rec=None,
        cap_evt=None,
        progress=None,
        progress_every=None,
        **stepper_config,
    ):
        """Runs the simulation. ``T`` is the end time (for resumed runs the absolute recorded
        time), ``N`` map iterations since the recorded start. ``ic``/``params`` are full
        vectors or dicts name -> value (unnamed entries keep their current values); with
        ``resume=True`` the run appends a segment and refuses ``ic``, ``params``, ``t0``,
        ``dt``, ``transient`` and ``record_vars``; ``record_vars=[]`` records t and step
        only. Extra keyword arguments must be knobs of the session's stepper (``atol=1e-8``,
        ``rtol=...``; they persist, see :meth:`stepper_config`); anything else is an
        :class:`UnknownNameError` ("unknown run option 't' (did you mean 'T'?)"), for every
        stepper. ``cap_rec``/``cap_evt`` (the seed's buffer sizes) are accepted and ignored:
        buffers grow as needed. ``progress(t, step, fraction)`` is called every ``progress_every``
        seconds (a float, default 0.1) or steps (an int); a true return stops the run. Ctrl-C
        stops it the same way and raises KeyboardInterrupt once the run returned; the session
        keeps the partial run (status USER_BREAK) and ``run(T=..., resume=True)`` continues it
        exactly. Returns ``self``."""
        if stepper_config:
            knobs = [k["name"] for k in self.list_stepper_config()]
            unknown = [k for k in stepper_config if k not in knobs]
            if unknown:
                k = unknown[0]
                raise UnknownNameError(
                    f"unknown run option '{k}'{_suggest(k, _RUN_OPTIONS + knobs)}; run options: "
                    f"{', '.join(_RUN_OPTIONS)}; stepper knobs of this session: "
                    f"{', '.join(knobs) or '(none)'}",
                    DYNLIB_ERR_UNKNOWN_NAME,
                )
        for k in ("cap_rec", "cap_evt"):
            v = locals()[k]
            if v is not None and int(v) < 1:
                raise InvalidArgumentError(f"{k} must be positive", DYNLIB_ERR_INVALID_ARGUMENT)
        o = DynlibRunOptions()
        _check(_lib.dynlib_run_options_init_sized(byref(o), sizeof(o)))
        keep = []  # arrays that must outlive the call
        if T is not None:
            o.T = float(T)
        if N is not None:
            o.N = _positive_int(N, "N")
        if dt is not None:
            o.dt = float(dt)
        if t0 is not None:
            o.t0 = float(t0)
        if ic is not None:
            arr, ptr = _f64_array(self._vector(ic, self.model.state_names, self.state))
            keep.append(arr)
            o.ic, o.n_ic = ptr, arr.size
            if arr.size == 0:
                raise InvalidArgumentError("ic is empty", DYNLIB_ERR_INVALID_ARGUMENT)
        if params is not None:
            arr, ptr = _f64_array(self._vector(params, self.model.param_names, self.params))
            keep.append(arr)
            o.params, o.n_params = ptr, arr.size
            if arr.size == 0 and self.model.n_params > 0:
                raise InvalidArgumentError("params is empty", DYNLIB_ERR_INVALID_ARGUMENT)
        if record is not None:
            o.record = 1 if record else 0
        if record_interval is not None:
            o.record_interval = _positive_int(record_interval, "record_interval")
        if record_vars is not None:
            if isinstance(record_vars, (str, bytes)):
                record_vars = [record_vars]
            record_vars = list(record_vars)
            # An empty list records t and step only: a non-NULL pointer with n = 0.
            arr = _str_array(record_vars) if record_vars else (c_char_p * 1)(None)
            keep.append(arr)
            o.record_vars = ctypes.cast(arr, _CStrArray)
            o.n_record_vars = len(record_vars)
        if transient is not None:
            o.transient = float(transient)
        o.resume = bool(resume)
        if tag is not None:
            o.tag = _enc(tag)
        if max_steps is not None:
            o.max_steps = _positive_int(max_steps, "max_steps")
        if stepper_config:
            names = _str_array(stepper_config)
            values, vptr = _f64_array(
                [_knob_value(k, v) for k, v in stepper_config.items()]
            )
            keep += [names, values]
            o.config_names = ctypes.cast(names, _CStrArray)
            o.config_values = vptr
            o.n_config = len(names)
        if checkpoint_dir is not None:
            o.checkpoint_dir = _enc(checkpoint_dir)
        if checkpoint_every_steps is not None:
            o.checkpoint_every_steps = _positive_int(
                checkpoint_every_steps, "checkpoint_every_steps"
            )
        if checkpoint_every_time is not None:
            o.checkpoint_every_time = float(checkpoint_every_time)
        if checkpoint_keep is not None:
            o.checkpoint_keep = _positive_int(checkpoint_keep, "checkpoint_keep")
        errors = self.model._callback_errors
        if errors is not None:
            errors.exc = None
        guard = _SigintGuard()
        hook = _ProgressHook(guard, progress, o, progress_every)
        try:
            status = _lib.dynlib_sim_run(self._ptr(), byref(o))
        finally:
            guard.restore()
        if hook.exc is not None:
            raise hook.exc
        if guard.hit:
            raise KeyboardInterrupt
        if status == DYNLIB_INTERRUPTED:
            return self
        if status != DYNLIB_OK:
            err = _error(status)
            if errors is not None and errors.exc is not None:
                exc, errors.exc = errors.exc, None
                raise exc from err
            raise err
        return self

    @staticmethod
    def _vector(values, names, current):
        if isinstance(values, dict):
            out = np.array(current, dtype=np.float64)
            index = {n: i for i, n in enumerate(names)}
            unknown = [k for k in values if k not in index]
            if unknown:
                raise UnknownNameError(
                    f"unknown name(s) {unknown}; known: {', '.join(names)}",
                    DYNLIB_ERR_UNKNOWN_NAME,
                )
            for k, v in values.items():
                out[index[k]] = float(v)
            return out
        return values

    # -- snapshots --------------------------------------------------------------------------

    def create_snapshot(self, name, description=""):
        """Saves the current state as snapshot ``name`` (names are unique)."""
        _check(_lib.dynlib_sim_create_snapshot(self._ptr(), _enc(name), _enc(description)))

    def reset(self, name="initial"):
        """Restores snapshot ``name`` and clears results, segments and the recording
        selection."""
        _check(_lib.dynlib_sim_reset(self._ptr(), _enc(name)))

    def list_snapshots(self):
        """The snapshots: list of dicts with name, t, step, created_at, description."""
        snaps = _read_json(_lib.dynlib_sim_list_snapshots_json, self._ptr())
        for s in snaps:
            s["t"] = _json_float(s["t"])
        return snaps

    def compat_check(self, name="initial"):
        """``(ok, diff)``: whether snapshot ``name`` fits this session, and the differing pins
        as a :class:`PinDiff` ``{pin: (ours, the snapshot's)}`` (empty when compatible; its
        ``str()`` is the library's text)."""
        if isinstance(name, dict) and "name" in name:
            name = name["name"]
        ok = c_bool(False)
        text = _read_str(_lib.dynlib_sim_compat_check, self._ptr(), _enc(name), byref(ok))
        return bool(ok.value), PinDiff(text)

    def can_resume(self):
        """``(ok, reason)``: whether ``run(resume=True)`` can continue; reason is None when
        it can."""
        ok = c_bool(False)
        text = _read_str(_lib.dynlib_sim_can_resume, self._ptr(), byref(ok))
        return bool(ok.value), (text or None)

    def summary(self):
        """The session summary as a dict (t, step, dt, stepper, can_resume, reason, …)."""
        out = _read_json(_lib.dynlib_sim_summary_json, self._ptr())
        out["stepper_name"] = out.get("stepper")
        return out

    def session_state_summary(self):
        """The seed's name for :meth:`summary` (keys t, step, dt, status, stepper_name,
        can_resume, reason, stepper_config, …)."""
        return self.summary()

    def assign(self, values=None, /, *, clear_history=False, **kw):
        """Sets states or parameters by name: ``sim.assign(I=15.0)`` or
        ``sim.assign({"I": 15.0})``. All names are checked before anything changes. With
        ``clear_history=True`` recorded results and segments are dropped."""
        items = dict(values or {})
        items.update(kw)
        names = _str_array(items)
        arr, ptr = _f64_array([float(v) for v in items.values()])
        _check(
            _lib.dynlib_sim_assign(
                self._ptr(),
                ctypes.cast(names, _CStrArray),
                ptr,
                len(items),
                bool(clear_history),
            )
        )

    def apply_preset(self, name):
        """Applies preset ``name`` of the bank (its parameters, then its states) like
        :meth:`assign`."""
        _check(_lib.dynlib_sim_apply_preset(self._ptr(), _enc(name)))

    # -- preset bank ------------------------------------------------------------------------

    def presets(self, pattern="*"):
        """The presets matching a glob as dicts ``{name, params: {..}, states: {..}}``."""
        out = _read_json(_lib.dynlib_sim_list_presets_json, self._ptr(), _enc(pattern))
        for p in out:
            for part in ("params", "states"):
                p[part] = {k: _json_float(v) for k, v in p[part].items()}
        return out

    def list_presets(self, pattern="*"):
        """Names of the bank's presets matching a glob (``*``, ``?``, ``[...]``), in bank
        order: the model's ``[presets.*]`` first, then added and loaded ones."""
        return [p["name"] for p in self.presets(pattern)]

    def add_preset(self, name, values=None, /, *, states=None, params=None, overwrite=False):
        """Adds preset ``name``: from ``values`` (a mapping of states/parameters) and/or the
        ``states=``/``params=`` mappings, or with none of them every state and parameter of the
        current session. Names and values follow :meth:`assign`'s rules; an existing name is
        a :class:`DuplicateNameError` unless ``overwrite=True``."""
        items = {}
        for part, names in ((states, self.model.state_names), (params, self.model.param_names)):
            for k, v in dict(part or {}).items():
                if k not in names:
                    kind = "state" if names is self.model.state_names else "parameter"
                    raise UnknownNameError(
                        f"'{k}' is not a {kind} of the model{_suggest(k, list(names))}",
                        DYNLIB_ERR_UNKNOWN_NAME,
                    )
                items[k] = v
        items.update(dict(values or {}))
        names = _str_array(items)
        arr, ptr = _f64_array([float(v) for v in items.values()])
        _check(
            _lib.dynlib_sim_add_preset(
                self._ptr(),
                _enc(name),
                ctypes.cast(names, _CStrArray),
                ptr,
                len(items),
                bool(overwrite),
            )
        )

    def remove_preset(self, name):
        _check(_lib.dynlib_sim_remove_preset(self._ptr(), _enc(name)))

    def load_presets(self, path, pattern="*", *, on_conflict="error"):
        """Loads the presets of a preset file (TOML, ``dynlib-presets-v1``, or a model file's
        ``[presets.*]``) whose names match ``pattern``; ``on_conflict`` = "error", "keep" or
        "replace" for names already in the bank. Returns the number added or replaced."""
        n = c_size_t(0)
        _check(
            _lib.dynlib_sim_load_presets(
                self._ptr(), _enc(path), _enc(pattern), _enc(on_conflict), byref(n)
            )
        )
        return n.value

    def load_preset(self, name_or_pattern, path, *, on_conflict="error"):
        """The seed's argument order for :meth:`load_presets`."""
        return self.load_presets(path, name_or_pattern, on_conflict=on_conflict)

    def save_presets(self, path, pattern="*", *, mode="append"):
        """Writes the presets matching ``pattern`` to a preset file, atomically. ``mode``:
        "append" (keep the file's presets; a name already in it is an error), "replace"
        (keep them, replace same-named ones) or "overwrite" (a new file). Returns the count."""
        n = c_size_t(0)
        _check(
            _lib.dynlib_sim_save_presets(
                self._ptr(), _enc(path), _enc(pattern), _enc(mode), byref(n)
            )
        )
        return n.value

    def save_preset(self, name, path, *, overwrite=False):
        """The seed's form: saves one preset (``overwrite`` replaces it in the file)."""
        return self.save_presets(path, name, mode="replace" if overwrite else "append")

    # -- persistent configuration -----------------------------------------------------------

    def config(self, **kw):
        """Persistent defaults for later runs: ``dt`` (fresh runs), ``max_steps``,
        ``record``, ``record_interval``; any other keyword must be a stepper knob (it goes to
        :meth:`stepper_config`). ``None`` returns an item to its default. All items are
        checked before anything changes. Returns the effective defaults as a dict."""
        kw.pop("cap_rec", None)
        kw.pop("cap_evt", None)
        if kw:
            payload = {}
            for k, v in kw.items():
                if v is None or isinstance(v, bool):
                    payload[k] = v
                elif k in ("max_steps", "record_interval"):
                    payload[k] = int(v)
                else:
                    payload[k] = _knob_value(k, v)
            _check(_lib.dynlib_sim_config_set_json(self._ptr(), _enc(json.dumps(payload))))
        out = _read_json(_lib.dynlib_sim_config_json, self._ptr())
        for k, v in out.items():
            if k == "stepper_config":
                out[k] = {n: _json_float(x) for n, x in v.items()}
            elif k == "dt":
                v["value"] = _json_float(v["value"])
        return out

    def stepper_config(self, **kw):
        """Sets stepper knobs persistently (later runs, snapshots and snapshot files carry
        them; ``None`` restores a knob's default; ``jacobian_mode`` also takes "internal" /
        "external") and returns the config vector (knob order). Unknown names are errors for
        every stepper. Without arguments it only reads."""
        if kw:
            names = _str_array(kw)
            arr, ptr = _f64_array(
                [float("nan") if v is None else _knob_value(k, v) for k, v in kw.items()]
            )
            _check(
                _lib.dynlib_sim_stepper_config_set(
                    self._ptr(), ctypes.cast(names, _CStrArray), ptr, len(kw)
                )
            )
        return _read_array(_lib.dynlib_sim_stepper_config, np.float64, self._ptr())

    def list_stepper_config(self):
        """The stepper's knobs: list of dicts ``{name, value, default, help}``."""
        out = _read_json(_lib.dynlib_sim_stepper_config_json, self._ptr())
        for k in out:
            k["value"] = _json_float(k["value"])
            k["default"] = _json_float(k["default"])
        return out

    def stepper_config_names(self):
        return [k["name"] for k in self.list_stepper_config()]

    def stepper_config_dict(self):
        """``{knob: current value}``."""
        return {k["name"]: k["value"] for k in self.list_stepper_config()}

    def stepper_config_defaults(self):
        """``{knob: the model's default}``."""
        return {k["name"]: k["default"] for k in self.list_stepper_config()}

    # -- state ------------------------------------------------------------------------------

    @property
    def time(self):
        """Current absolute time."""
        t = c_double(0.0)
        _check(_lib.dynlib_sim_time(self._ptr(), byref(t)))
        return t.value

    @property
    def step_count(self):
        """Committed steps since the last fresh run (warm-up included)."""
        k = c_uint64(0)
        _check(_lib.dynlib_sim_step_count(self._ptr(), byref(k)))
        return k.value

    @property
    def state(self):
        """Current state vector (a copy); ``sim.state("v")`` is one value."""
        v = _read_array(_lib.dynlib_sim_state, np.float64, self._ptr())
        return _named(v, self.model.state_names, "state")

    @property
    def params(self):
        """Current parameter vector (a copy); ``sim.params("I")`` is one value."""
        v = _read_array(_lib.dynlib_sim_params, np.float64, self._ptr())
        return _named(v, self.model.param_names, "parameter")

    def param(self, name):
        """Current value of one parameter."""
        return self.params(name)

    def _vectors(self, source, snapshot):
        if source == "session":
            return np.array(self.state), np.array(self.params)
        if source == "model":
            info = self.model.info()
            return (
                np.array(info["state_defaults"], dtype=np.float64),
                np.array(info["param_defaults"], dtype=np.float64),
            )
        if source == "snapshot":
            import io

            with np.load(io.BytesIO(self.serialize_snapshot(snapshot))) as z:
                return np.array(z["y"]), np.array(z["params"])
        raise InvalidArgumentError(
            f"source must be 'session', 'model' or 'snapshot', got {source!r}",
            DYNLIB_ERR_INVALID_ARGUMENT,
        )

    def state_vector(self, source="session", snapshot="initial", copy=True):
        """States in declaration order from the session, the model defaults or a snapshot."""
        return self._vectors(source, snapshot)[0]

    def param_vector(self, source="session", snapshot="initial", copy=True):
        return self._vectors(source, snapshot)[1]

    def value(self, name):
        """Current value of one state or parameter."""
        v = c_double(0.0)
        _check(_lib.dynlib_sim_value(self._ptr(), _enc(name), byref(v)))
        return v.value

    def state_dict(self, source="session", snapshot="initial"):
        return dict(zip(self.model.state_names, self.state_vector(source, snapshot).tolist()))

    def params_dict(self, source="session", snapshot="initial"):
        return dict(zip(self.model.param_names, self.param_vector(source, snapshot).tolist()))

    param_dict = params_dict

    # -- results ----------------------------------------------------------------------------

    def results(self):
        """The current recording as a :class:`Results` (NumPy arrays); raises
        :class:`NoResultsError` before the first run and after reset/import."""
        h = self._ptr()
        n = c_size_t(0)
        _check(_lib.dynlib_sim_n_samples(h, byref(n)))
        nv = c_size_t(0)
        _check(_lib.dynlib_sim_results_n_vars(h, byref(nv)))
        names = [_read_str(_lib.dynlib_sim_results_var_name, h, i) for i in range(nv.value)]
        # t and every column are rows of one block: one allocation, which the allocator
        # hands back for the next results() of the same size once these are freed (k + 1
        # separate arrays of this size each get fresh pages, and faulting them in costs
        # more than the copy itself).
        block = np.empty((nv.value + 1, n.value), dtype=np.float64)
        t = _fill_row(_lib.dynlib_sim_results_t, block[0], h)
        columns = {
            name: _fill_row(_lib.dynlib_sim_results_var, block[i + 1], h, _enc(name))
            for i, name in enumerate(names)
        }

        def step():
            return _read_array(_lib.dynlib_sim_results_step, np.uint64, h)

        def interp():
            flags = _read_array(_lib.dynlib_sim_results_interpolated, np.uint8, h)
            return flags.view(np.bool_)

        res = Results(
            t, step, interp, columns, self.events(), self.segments(), self.model.aux_names
        )
        if self._unsettled is None:
            self._unsettled = weakref.WeakSet()
        self._unsettled.add(res)
        return res

    raw_results = results

    def events(self):
        """The event log: list of dicts with event, t, step, sample, values."""
        events = _read_json(_lib.dynlib_sim_events_json, self._ptr())
        for e in events:
            e["t"] = _json_float(e["t"])
            e["values"] = {k: _json_float(v) for k, v in e["values"].items()}
        return events

    def segments(self):
        """The segments of the current recording: list of dicts with name, t_start, t_end,
        step_start, step_end, sample_start, sample_len, event_start, event_len, resume."""
        h = self._ptr()
        n = c_size_t(0)
        _check(_lib.dynlib_sim_n_segments(h, byref(n)))
        out = []
        for i in range(n.value):
            info = DynlibSegmentInfo()
            _check(_lib.dynlib_sim_segment_info(h, i, byref(info)))
            seg = {"name": _read_str(_lib.dynlib_sim_segment_name, h, i)}
            seg.update({f: getattr(info, f) for f, _ in DynlibSegmentInfo._fields_})
            seg["resume"] = bool(seg["resume"])
            out.append(seg)
        return out

    def name_segment(self, index, name):
        """Renames segment ``index`` (or the segment currently named ``index``); returns the
        name given (made unique with -2, -3, … if taken)."""
        if isinstance(index, str):
            names = [s["name"] for s in self.segments()]
            if index not in names:
                raise UnknownNameError(
                    f"no segment named '{index}' (segments: {', '.join(names)})",
                    DYNLIB_ERR_UNKNOWN_NAME,
                )
            index = names.index(index)
        if not isinstance(name, str):
            raise TypeError("segment name must be a string")
        _check(_lib.dynlib_sim_name_segment(self._ptr(), int(index), _enc(name)))
        return _read_str(_lib.dynlib_sim_segment_name, self._ptr(), int(index))

    def name_last_segment(self, name):
        """Renames the last segment; returns the name given."""
        if not isinstance(name, str):
            raise TypeError("segment name must be a string")
        _check(_lib.dynlib_sim_name_last_segment(self._ptr(), _enc(name)))
        n = c_size_t(0)
        _check(_lib.dynlib_sim_n_segments(self._ptr(), byref(n)))
        return _read_str(_lib.dynlib_sim_segment_name, self._ptr(), n.value - 1)

    # -- snapshot files and bytes -----------------------------------------------------------

    def export_snapshot(self, path, snapshot=None, *, source=None, name=None):
        """Writes the current state (``snapshot=None``) or a stored snapshot to ``path``
        (.npz, atomic). The seed's form works too: ``source="current"`` or
        ``source="snapshot", name="..."``."""
        if source is not None or name is not None:
            source = source or "current"
            if snapshot is not None:
                raise InvalidArgumentError(
                    "give the snapshot either positionally or as source/name, not both",
                    DYNLIB_ERR_INVALID_ARGUMENT,
                )
            if source == "current":
                if name is not None:
                    raise InvalidArgumentError(
                        "name should not be provided when source='current'",
                        DYNLIB_ERR_INVALID_ARGUMENT,
                    )
            elif source == "snapshot":
                if not name:
                    raise InvalidArgumentError(
                        "name is required when source='snapshot'", DYNLIB_ERR_INVALID_ARGUMENT
                    )
                snapshot = name
            else:
                raise InvalidArgumentError(
                    f"source must be 'current' or 'snapshot', got {source!r}",
                    DYNLIB_ERR_INVALID_ARGUMENT,
                )
        _check(_lib.dynlib_sim_export_snapshot(self._ptr(), _enc(path), _enc(snapshot)))

    @staticmethod
    def inspect_snapshot(path):
        """The seed's method form of :func:`inspect_snapshot` (the session is not touched)."""
        return inspect_snapshot(path)

    def import_snapshot(self, path):
        """Replaces the session state with a snapshot file (results and segments cleared)."""
        _check(_lib.dynlib_sim_import_snapshot(self._ptr(), _enc(path)))

    def serialize_snapshot(self, snapshot=None):
        """The current state (or a stored snapshot) as .npz bytes."""
        return _read_bytes(_lib.dynlib_sim_serialize_snapshot, self._ptr(), _enc(snapshot))

    def deserialize_snapshot(self, data):
        """Restores bytes from :meth:`serialize_snapshot`."""
        data = bytes(data)
        buf = (c_uint8 * max(len(data), 1)).from_buffer_copy(data.ljust(1, b"\0"))
        _check(_lib.dynlib_sim_deserialize_snapshot(self._ptr(), buf, len(data)))

    def __repr__(self):
        if self.closed:
            return "<dynlib.Sim closed>"
        return f"<dynlib.Sim t={self.time} step={self.step_count}>"


_RUN_OPTIONS = [
    "T", "N", "dt", "t0", "ic", "params", "record", "record_interval", "record_vars",
    "transient", "resume", "tag", "max_steps", "checkpoint_dir", "checkpoint_every_steps",
    "checkpoint_every_time", "checkpoint_keep", "cap_rec", "cap_evt",
]

_KNOB_ENUMS = {"jacobian_mode": {"internal": 0.0, "external": 1.0}}


def _knob_value(name, v):
    """A knob value as float; enum knobs also take their names."""
    if isinstance(v, str):
        choices = _KNOB_ENUMS.get(name)
        if choices is None or v not in choices:
            opts = ", ".join(repr(c) for c in sorted(choices or {}))
            raise InvalidArgumentError(
                f"invalid value {v!r} for stepper knob '{name}'"
                + (f"; choose one of {opts}" if opts else "; it takes a number"),
                DYNLIB_ERR_INVALID_ARGUMENT,
            )
        return choices[v]
    return float(v)


def _positive_int(x, what):
    x = int(x)
    if x <= 0:
        raise InvalidArgumentError(f"{what} must be positive, got {x}", DYNLIB_ERR_INVALID_ARGUMENT)
    return x


# --------------------------------------------------------------------------------------------
# Module functions
# --------------------------------------------------------------------------------------------


def _meta(meta):
    for k in ("t_curr", "dt_curr", "time_shift", "nominal_dt"):
        if k in meta:
            meta[k] = _json_float(meta[k])
    return meta


def build(source, stepper=None, *, jit=True, disk_cache=True):
    """The seed's ``build(...)``: a :class:`Model` from a source (``builtin://...``, a TOML
    path or ``inline:`` text). Native code is chosen automatically and cached per process, so
    ``jit``/``disk_cache`` are accepted for compatibility and have no effect."""
    return Model.load(source, stepper)


def inspect_snapshot(path):
    """The ``meta.json`` of a snapshot file as a dict, without any session."""
    return _meta(_read_json(_lib.dynlib_inspect_snapshot, _enc(path)))


def inspect_snapshot_bytes(data):
    """The ``meta.json`` of snapshot bytes as a dict."""
    data = bytes(data)
    buf = (c_uint8 * max(len(data), 1)).from_buffer_copy(data.ljust(1, b"\0"))
    return _meta(_read_json(_lib.dynlib_inspect_snapshot_bytes, buf, len(data)))


def latest_checkpoint(directory):
    """Path of the newest checkpoint file in ``directory``, or None."""
    return _read_str(_lib.dynlib_latest_checkpoint, _enc(directory)) or None



# --------------------------------------------------------------------------------------------
# Ensembles (N sims of one model run together; see README "Ensembles")
# --------------------------------------------------------------------------------------------


class _DynlibEnsemble(Structure):
    """Opaque ``DynlibEnsemble``."""


EnsemblePtr = POINTER(_DynlibEnsemble)

_ENSEMBLE_SIGNATURES = {
    "dynlib_ensemble_new": (DynlibStatus, [ModelPtr, c_size_t, _P(EnsemblePtr)]),
    "dynlib_ensemble_from_sim": (DynlibStatus, [SimPtr, c_size_t, _P(EnsemblePtr)]),
    "dynlib_ensemble_free": (None, [EnsemblePtr]),
    "dynlib_ensemble_n_members": (DynlibStatus, [EnsemblePtr, _P(c_size_t)]),
    "dynlib_ensemble_n_failed": (DynlibStatus, [EnsemblePtr, _P(c_size_t)]),
    "dynlib_ensemble_set_lockstep_lanes": (DynlibStatus, [EnsemblePtr, c_size_t]),
    "dynlib_ensemble_lockstep_lanes": (DynlibStatus, [EnsemblePtr, _P(c_size_t)]),
    "dynlib_ensemble_last_run_lockstep_steps": (DynlibStatus, [EnsemblePtr, _P(c_uint64)]),
    "dynlib_ensemble_set_params": (DynlibStatus, [EnsemblePtr, _P(c_double), c_size_t, c_size_t]),
    "dynlib_ensemble_set_ic": (DynlibStatus, [EnsemblePtr, _P(c_double), c_size_t, c_size_t]),
    "dynlib_ensemble_set_param_column": (
        DynlibStatus,
        [EnsemblePtr, c_char_p, _P(c_double), c_size_t],
    ),
    "dynlib_ensemble_set_column": (DynlibStatus, [EnsemblePtr, c_char_p, _P(c_double), c_size_t]),
    "dynlib_ensemble_run": (DynlibStatus, [EnsemblePtr, _P(DynlibRunOptions), c_size_t]),
    "dynlib_ensemble_member_status": (DynlibStatus, [EnsemblePtr, c_size_t, _P(DynlibStatus)]),
    "dynlib_ensemble_member_error": (
        DynlibStatus,
        [EnsemblePtr, c_size_t, _P(c_char), c_size_t, _P(c_size_t)],
    ),
    "dynlib_ensemble_final_states": (
        DynlibStatus,
        [EnsemblePtr, _P(c_double), c_size_t, _P(c_size_t)],
    ),
    "dynlib_ensemble_params": (DynlibStatus, [EnsemblePtr, _P(c_double), c_size_t, _P(c_size_t)]),
    "dynlib_ensemble_times": (DynlibStatus, [EnsemblePtr, _P(c_double), c_size_t, _P(c_size_t)]),
    "dynlib_ensemble_event_counts": (
        DynlibStatus,
        [EnsemblePtr, _P(c_uint64), c_size_t, _P(c_size_t)],
    ),
    "dynlib_ensemble_step_counts": (
        DynlibStatus,
        [EnsemblePtr, _P(c_uint64), c_size_t, _P(c_size_t)],
    ),
    "dynlib_ensemble_member_sim": (DynlibStatus, [EnsemblePtr, c_size_t, _P(SimPtr)]),
    "dynlib_ensemble_export_checkpoint": (DynlibStatus, [EnsemblePtr, c_char_p]),
    "dynlib_ensemble_import_checkpoint": (DynlibStatus, [EnsemblePtr, c_char_p]),
}
for _name, (_restype, _argtypes) in _ENSEMBLE_SIGNATURES.items():
    _fn = getattr(_lib, _name)
    _fn.restype = _restype
    _fn.argtypes = _argtypes
_SIGNATURES.update(_ENSEMBLE_SIGNATURES)
_live.setdefault("ensemble", 0)
__all__.append("Ensemble")


def _matrix(values, rows, cols, what):
    """A C-contiguous float64 (rows x cols) array; a 1-D input of rows*cols values is taken as
    row-major."""
    arr = np.ascontiguousarray(np.asarray(values, dtype=np.float64))
    if arr.ndim == 1 and cols == 1:
        arr = arr.reshape(-1, 1)
    if arr.ndim != 2:
        raise InvalidArgumentError(
            f"{what} must be a 2-D matrix (one row per member), got {arr.ndim} dimension(s)",
            DYNLIB_ERR_INVALID_ARGUMENT,
        )
    return arr, arr.ctypes.data_as(POINTER(c_double))


class Ensemble(_Handle):
    """``n`` sims of one model with per-member parameters and initial conditions, run with one
    set of options on a thread pool. Member ``i`` ends bit-identical to a single :class:`Sim`
    given the same inputs, whatever ``n_threads``.

        ens = dynlib.Ensemble(dynlib.Model.load("builtin://ode/izhikevich"), 1000)
        ens.set_param_column("I", np.linspace(0, 20, 1000))
        ens.run(T=1000.0, record=False)            # n_threads=0: every core
        y = ens.final_states()                     # (1000, 2) NumPy array

    A member that fails keeps its previous state; ``run`` then raises (how many failed, the
    first one's message) and ``member_status(i)`` / ``member_error(i)`` tell each member."""

    def __init__(self, model, n_members=None, *, _handle=None):
        self._handle = None
        if isinstance(model, Sim):
            out = EnsemblePtr()
            _check(_lib.dynlib_ensemble_from_sim(model._ptr(), _size(n_members), byref(out)))
            model = model.model
        else:
            if not isinstance(model, Model):
                model = Model.load(model)
            out = EnsemblePtr()
            _check(_lib.dynlib_ensemble_new(model._ptr(), _size(n_members), byref(out)))
        self.model = model
        self._handle = out
        _count("ensemble", 1)

    @classmethod
    def from_sim(cls, sim, n_members):
        """``n_members`` copies of ``sim``'s session state (not its recorded samples)."""
        return cls(sim, n_members)

    def _ptr(self):
        if not self._handle:
            raise BadHandleError("the ensemble is closed", DYNLIB_ERR_BAD_HANDLE)
        return self._handle

    def close(self):
        """Frees the ensemble and its members. Idempotent."""
        self._release(_lib.dynlib_ensemble_free, "ensemble")

    def __len__(self):
        return self.n_members

    @property
    def n_members(self):
        n = c_size_t(0)
        _check(_lib.dynlib_ensemble_n_members(self._ptr(), byref(n)))
        return n.value

    @property
    def n_failed(self):
        n = c_size_t(0)
        _check(_lib.dynlib_ensemble_n_failed(self._ptr(), byref(n)))
        return n.value

    @property
    def lockstep_lanes(self):
        """Members per lock-step batch (0 = off); setting it rounds up to an even number, at
        most 64. The results are the same bits whatever the value."""
        n = c_size_t(0)
        _check(_lib.dynlib_ensemble_lockstep_lanes(self._ptr(), byref(n)))
        return n.value

    @lockstep_lanes.setter
    def lockstep_lanes(self, lanes):
        lanes = operator.index(lanes)
        if lanes < 0:
            raise ValueError(f"lockstep_lanes = {lanes}: must be >= 0 (0 turns lock-step off)")
        _check(_lib.dynlib_ensemble_set_lockstep_lanes(self._ptr(), lanes))

    @property
    def last_run_lockstep_steps(self):
        """Member-steps the lock-step kernel took in the last run (a diagnostic)."""
        n = c_uint64(0)
        _check(_lib.dynlib_ensemble_last_run_lockstep_steps(self._ptr(), byref(n)))
        return n.value

    # -- inputs -----------------------------------------------------------------------------

    def set_params(self, matrix):
        """Every member's parameters from an (n_members x n_params) matrix."""
        arr, ptr = _matrix(matrix, None, None, "params")
        _check(_lib.dynlib_ensemble_set_params(self._ptr(), ptr, arr.shape[0], arr.shape[1]))

    def set_ic(self, matrix):
        """Every member's state (initial condition of the next fresh run) from an
        (n_members x n_states) matrix."""
        arr, ptr = _matrix(matrix, None, None, "ic")
        _check(_lib.dynlib_ensemble_set_ic(self._ptr(), ptr, arr.shape[0], arr.shape[1]))

    def set_param_column(self, name, values):
        """Parameter ``name`` of member i = ``values[i]``."""
        arr, ptr = _f64_array(values)
        _check(_lib.dynlib_ensemble_set_param_column(self._ptr(), _enc(name), ptr, arr.size))

    def set_column(self, name, values):
        """State or parameter ``name`` of member i = ``values[i]``."""
        arr, ptr = _f64_array(values)
        _check(_lib.dynlib_ensemble_set_column(self._ptr(), _enc(name), ptr, arr.size))

    # -- running ----------------------------------------------------------------------------

    def run(
        self,
        T=None,
        N=None,
        dt=None,
        t0=None,
        record=None,
        record_interval=None,
        transient=None,
        resume=False,
        tag=None,
        max_steps=None,
        n_threads=0,
        **stepper_config,
    ):
        """Runs every member with the same options (as :meth:`Sim.run`; per-member values come
        from ``set_params``/``set_ic``/``set_column``) on ``n_threads`` threads (0 = every
        core). ``record=False`` keeps only the reductions (O(states) memory per member).
        Returns ``self``; raises when any member failed (the others' results are kept)."""
        o = DynlibRunOptions()
        _check(_lib.dynlib_run_options_init_sized(byref(o), sizeof(o)))
        keep = []
        if T is not None:
            o.T = float(T)
        if N is not None:
            o.N = _positive_int(N, "N")
        if dt is not None:
            o.dt = float(dt)
        if t0 is not None:
            o.t0 = float(t0)
        if record is not None:
            o.record = 1 if record else 0
        if record_interval is not None:
            o.record_interval = _positive_int(record_interval, "record_interval")
        if transient is not None:
            o.transient = float(transient)
        o.resume = bool(resume)
        if tag is not None:
            o.tag = _enc(tag)
        if max_steps is not None:
            o.max_steps = _positive_int(max_steps, "max_steps")
        if stepper_config:
            names = _str_array(stepper_config)
            values, vptr = _f64_array([float(v) for v in stepper_config.values()])
            keep += [names, values]
            o.config_names = ctypes.cast(names, _CStrArray)
            o.config_values = vptr
            o.n_config = len(names)
        _check(_lib.dynlib_ensemble_run(self._ptr(), byref(o), _size(n_threads)))
        return self

    # -- outcome and reductions -------------------------------------------------------------

    def member_status(self, i):
        """Status code of member ``i``'s last run (``DYNLIB_OK`` = 0 if it succeeded)."""
        s = DynlibStatus(0)
        _check(_lib.dynlib_ensemble_member_status(self._ptr(), _size(i), byref(s)))
        return s.value

    def member_error(self, i):
        """Message of member ``i``'s last run failure, or None."""
        text = _read_str(_lib.dynlib_ensemble_member_error, self._ptr(), _size(i))
        return text or None

    def _rows(self, fn, dtype=np.float64):
        flat = _read_array(fn, dtype, self._ptr())
        n = self.n_members
        return flat.reshape(n, -1) if n else flat

    def final_states(self):
        """Every member's current state, an (n_members x n_states) float64 array."""
        return self._rows(_lib.dynlib_ensemble_final_states)

    def params(self):
        """Every member's parameters, an (n_members x n_params) float64 array."""
        return self._rows(_lib.dynlib_ensemble_params)

    def times(self):
        """Every member's current time (float64, n_members)."""
        return _read_array(_lib.dynlib_ensemble_times, np.float64, self._ptr())

    def event_counts(self):
        """Events each member fired since its last fresh run (uint64, n_members)."""
        return _read_array(_lib.dynlib_ensemble_event_counts, np.uint64, self._ptr())

    def step_counts(self):
        """Committed steps of each member since its last fresh run (uint64, n_members)."""
        return _read_array(_lib.dynlib_ensemble_step_counts, np.uint64, self._ptr())

    def member(self, i):
        """Member ``i`` as an ordinary, independent :class:`Sim` (a copy)."""
        out = SimPtr()
        _check(_lib.dynlib_ensemble_member_sim(self._ptr(), _size(i), byref(out)))
        sim = Sim.__new__(Sim)
        sim._handle = out
        sim._unsettled = None
        sim.model = self.model
        _count("sim", 1)
        return sim

    # -- checkpoints ------------------------------------------------------------------------

    def export_checkpoint(self, path):
        """Writes every member's session state to one .npz file, atomically."""
        _check(_lib.dynlib_ensemble_export_checkpoint(self._ptr(), _enc(path)))

    def import_checkpoint(self, path):
        """Replaces every member's state by a checkpoint's (all checked first)."""
        _check(_lib.dynlib_ensemble_import_checkpoint(self._ptr(), _enc(path)))

    def __repr__(self):
        if self.closed:
            return "<dynlib.Ensemble (closed)>"
        return f"<dynlib.Ensemble {self.n_members} members of {self.model!r}>"


def _size(x):
    """A non-negative integer for a size_t argument."""
    if x is None:
        raise InvalidArgumentError("a member count is required", DYNLIB_ERR_INVALID_ARGUMENT)
    if isinstance(x, bool) or int(x) != x or x < 0:
        raise InvalidArgumentError(
            f"expected a non-negative integer, got {x!r}", DYNLIB_ERR_INVALID_ARGUMENT
        )
    return int(x)

# --------------------------------------------------------------------------------------------
# Progress and Ctrl-C during a run
# --------------------------------------------------------------------------------------------


class _SigintGuard:
    """While a run is in progress on the main thread, SIGINT sets a flag instead of raising
    inside a ctypes callback (where the exception would be lost); the progress hook sees the
    flag and stops the run, and ``run`` raises KeyboardInterrupt once the library returned."""

    def __init__(self):
        import signal

        self.hit = False
        self._old = None
        if threading.current_thread() is not threading.main_thread():
            return
        try:
            if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
                signal.signal(signal.SIGINT, self._handler)
                self._old = signal.default_int_handler
        except (ValueError, TypeError, OSError):
            self._old = None

    @property
    def active(self):
        return self._old is not None

    def _handler(self, signum, frame):
        self.hit = True

    def restore(self):
        if self._old is not None:
            import signal

            signal.signal(signal.SIGINT, self._old)
            self._old = None


class _ProgressHook:
    """Fills the progress fields of ``o`` (when Ctrl-C is being watched or the caller gave a
    ``progress`` function) and keeps the ctypes callback alive for the call."""

    def __init__(self, guard, user, o, every):
        self.exc = None
        self._guard = guard
        self._user = user
        self._fn = None
        if user is None and not guard.active:
            return
        if every is None:
            o.progress_every_seconds = 0.1
        elif isinstance(every, bool) or not isinstance(every, (int, float)):
            raise InvalidArgumentError(
                f"progress_every must be seconds (float) or steps (int), got {every!r}",
                DYNLIB_ERR_INVALID_ARGUMENT,
            )
        elif isinstance(every, int):
            o.progress_every_steps = _positive_int(every, "progress_every")
        else:
            o.progress_every_seconds = float(every)
        self._fn = DynlibProgressFn(self._call)
        o.progress = self._fn

    def _call(self, t, step, fraction, y, n, user_data):
        try:
            if self._guard.hit:
                return 1
            if self._user is not None and self._user(t, step, fraction):
                return 1
            return 0
        except BaseException as e:  # noqa: BLE001 — re-raised by run()
            self.exc = e
            return 1


if __name__ == "__main__":
    print(f"dynlib {version()} (Python binding, distribution dynlib-rs)")
    print(f"library: {library_path()} (found via {library_origin})")

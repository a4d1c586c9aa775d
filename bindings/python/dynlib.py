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
import os
import sys
import threading
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


class NullPointerError(DynlibError):
    status = DYNLIB_ERR_NULL_POINTER


class InvalidArgumentError(DynlibError, ValueError):
    status = DYNLIB_ERR_INVALID_ARGUMENT


class ModelError(DynlibError):
    status = DYNLIB_ERR_MODEL


class UnknownNameError(DynlibError, LookupError):
    status = DYNLIB_ERR_UNKNOWN_NAME


class DuplicateNameError(DynlibError):
    status = DYNLIB_ERR_DUPLICATE_NAME


class BufferTooSmallError(DynlibError):
    status = DYNLIB_ERR_BUFFER_TOO_SMALL


class IncompatibleSnapshotError(DynlibError):
    status = DYNLIB_ERR_INCOMPATIBLE


class NoResultsError(DynlibError):
    status = DYNLIB_ERR_NO_RESULTS


class DynlibIOError(DynlibError, OSError):
    status = DYNLIB_ERR_IO


class CorruptSnapshotError(DynlibError):
    status = DYNLIB_ERR_CORRUPT_SNAPSHOT


class StepFailedError(DynlibError):
    status = DYNLIB_ERR_STEP_FAILED


class NonFiniteError(DynlibError, ArithmeticError):
    status = DYNLIB_ERR_NON_FINITE


class BadHandleError(DynlibError):
    status = DYNLIB_ERR_BAD_HANDLE


class InternalError(DynlibError):
    status = DYNLIB_ERR_INTERNAL


class BusyError(DynlibError):
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
    "dynlib_callback_model_init": (DynlibStatus, [_P(DynlibCallbackModel)]),
    "dynlib_model_from_callbacks": (DynlibStatus, [_P(DynlibCallbackModel), _P(ModelPtr)]),
    "dynlib_model_load": (DynlibStatus, [c_char_p, c_char_p, _P(ModelPtr)]),
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
    "dynlib_run_options_init": (DynlibStatus, [_P(DynlibRunOptions)]),
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


class Model:
    """A loaded model. ``Model.load(source, stepper=None)`` with ``source`` one of
    ``builtin://ode/<name>``, ``builtin://map/<name>``, a path to a TOML model file, or
    ``"inline:" + toml_text``. ``Model.from_callbacks(...)`` wraps Python functions."""

    def __init__(self, source=None, stepper=None, *, _handle=None):
        self._handle = None
        self._keepalive = ()
        self._callback_errors = None
        if _handle is None:
            if source is None:
                raise TypeError("Model(source, stepper=None): source is required")
            out = ModelPtr()
            _check(_lib.dynlib_model_load(_enc(source), _enc(stepper), byref(out)))
            _handle = out
        self._handle = _handle
        _count("model", 1)
        self._load_names()

    @classmethod
    def load(cls, source, stepper=None):
        """Loads a model (see the class docstring); ``stepper`` names the stepper of sims
        created from it (NULL = the model's default)."""
        return cls(source, stepper)

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
        _check(_lib.dynlib_callback_model_init(byref(cb)))
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
        h, self._handle = self._handle, None
        if h:
            _lib.dynlib_model_free(h)
            _count("model", -1)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass

    def __repr__(self):
        state = "closed" if not self._handle else f"states={list(self.state_names)}"
        return f"<dynlib.Model {state}>"


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


class Results:
    """Recorded results: ``t`` (float64), ``step`` (uint64), ``interpolated`` (bool),
    each recorded variable as a float64 array (``res["v"]`` or ``res.v``), ``events`` (list of
    dicts) and ``segments`` (list of dicts). ``res.segment(name)`` gives one segment's slice."""

    def __init__(self, t, step, interpolated, columns, events, segments):
        self.t = t
        self.step = step
        self.interpolated = interpolated
        self.columns = columns
        self.events = events
        self.segments = segments

    @property
    def names(self):
        return list(self.columns)

    def __getitem__(self, name):
        if name in ("t", "step", "interpolated"):
            return getattr(self, name)
        try:
            return self.columns[name]
        except KeyError:
            raise UnknownNameError(
                f"'{name}' is not a recorded variable (recorded: {', '.join(self.columns)})",
                DYNLIB_ERR_UNKNOWN_NAME,
            ) from None

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

    def segment(self, name):
        """The samples of one segment (by name or index) as a dict of arrays."""
        for i, s in enumerate(self.segments):
            if s["name"] == name or i == name:
                a, b = s["sample_start"], s["sample_start"] + s["sample_len"]
                out = {"t": self.t[a:b], "step": self.step[a:b]}
                out.update({k: v[a:b] for k, v in self.columns.items()})
                return out
        raise UnknownNameError(f"no segment '{name}'", DYNLIB_ERR_UNKNOWN_NAME)

    def __repr__(self):
        return f"<dynlib.Results {len(self.t)} samples of {', '.join(self.keys())}>"


# --------------------------------------------------------------------------------------------
# Sims
# --------------------------------------------------------------------------------------------


class Sim:
    """A simulation session over a model: run, snapshot, reset, assign, resume, export."""

    def __init__(self, model, stepper=None):
        """``model`` is a :class:`Model` or a source accepted by :meth:`Model.load` (then
        ``stepper`` may name the stepper)."""
        self._handle = None
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
        return self._handle

    @property
    def closed(self):
        return not self._handle

    def close(self):
        """Frees the session with its snapshots and results. Idempotent."""
        h, self._handle = self._handle, None
        if h:
            _lib.dynlib_sim_free(h)
            _count("sim", -1)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass

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
        progress=None,
        progress_every=None,
        **stepper_config,
    ):
        """Runs the simulation. ``T`` is the end time (for resumed runs the absolute recorded
        time), ``N`` map iterations since the recorded start. ``ic``/``params`` are full
        vectors or dicts name -> value (unnamed entries keep their current values); with
        ``resume=True`` the run appends a segment and refuses ``ic``, ``params``, ``t0``,
        ``dt``, ``transient`` and ``record_vars``. Extra keyword arguments are stepper knobs
        (``atol=1e-8``, ``rtol=...``). ``progress(t, step, fraction)`` is called every
        ``progress_every`` seconds (a float, default 0.1) or steps (an int); a true return
        stops the run. Ctrl-C stops it the same way and raises KeyboardInterrupt once the run
        returned; the session keeps the partial run (status USER_BREAK) and
        ``run(T=..., resume=True)`` continues it exactly. Returns ``self``."""
        o = DynlibRunOptions()
        _check(_lib.dynlib_run_options_init(byref(o)))
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
            arr = _str_array(record_vars)
            keep.append(arr)
            o.record_vars = ctypes.cast(arr, _CStrArray)
            o.n_record_vars = len(arr)
            if len(arr) == 0:
                raise InvalidArgumentError("record_vars is empty", DYNLIB_ERR_INVALID_ARGUMENT)
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

    def compat_check(self, name):
        """``(ok, differences)``: whether snapshot ``name`` fits this session, and the
        differing pins as text ("" when compatible)."""
        ok = c_bool(False)
        text = _read_str(_lib.dynlib_sim_compat_check, self._ptr(), _enc(name), byref(ok))
        return bool(ok.value), text

    def can_resume(self):
        """``(ok, reason)``: whether ``run(resume=True)`` can continue; reason is None when
        it can."""
        ok = c_bool(False)
        text = _read_str(_lib.dynlib_sim_can_resume, self._ptr(), byref(ok))
        return bool(ok.value), (text or None)

    def summary(self):
        """The session summary as a dict (t, step, dt, stepper, can_resume, reason, …)."""
        return _read_json(_lib.dynlib_sim_summary_json, self._ptr())

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
        """Applies the model's preset ``name`` (its parameters, then its states) like
        :meth:`assign`."""
        _check(_lib.dynlib_sim_apply_preset(self._ptr(), _enc(name)))

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
        """Current state vector (a copy)."""
        return _read_array(_lib.dynlib_sim_state, np.float64, self._ptr())

    @property
    def params(self):
        """Current parameter vector (a copy)."""
        return _read_array(_lib.dynlib_sim_params, np.float64, self._ptr())

    def value(self, name):
        """Current value of one state or parameter."""
        v = c_double(0.0)
        _check(_lib.dynlib_sim_value(self._ptr(), _enc(name), byref(v)))
        return v.value

    def state_dict(self):
        return dict(zip(self.model.state_names, self.state.tolist()))

    def params_dict(self):
        return dict(zip(self.model.param_names, self.params.tolist()))

    # -- results ----------------------------------------------------------------------------

    def results(self):
        """The current recording as a :class:`Results` (NumPy arrays); raises
        :class:`NoResultsError` before the first run and after reset/import."""
        h = self._ptr()
        t = _read_array(_lib.dynlib_sim_results_t, np.float64, h)
        step = _read_array(_lib.dynlib_sim_results_step, np.uint64, h)
        interp = _read_array(_lib.dynlib_sim_results_interpolated, np.uint8, h).astype(bool)
        nv = c_size_t(0)
        _check(_lib.dynlib_sim_results_n_vars(h, byref(nv)))
        columns = {}
        for i in range(nv.value):
            name = _read_str(_lib.dynlib_sim_results_var_name, h, i)
            columns[name] = _read_array(_lib.dynlib_sim_results_var, np.float64, h, _enc(name))
        return Results(t, step, interp, columns, self.events(), self.segments())

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
        """Renames segment ``index`` (or the segment currently named ``index``)."""
        if isinstance(index, str):
            names = [s["name"] for s in self.segments()]
            if index not in names:
                raise UnknownNameError(
                    f"no segment named '{index}' (segments: {', '.join(names)})",
                    DYNLIB_ERR_UNKNOWN_NAME,
                )
            index = names.index(index)
        _check(_lib.dynlib_sim_name_segment(self._ptr(), int(index), _enc(name)))

    def name_last_segment(self, name):
        _check(_lib.dynlib_sim_name_last_segment(self._ptr(), _enc(name)))

    # -- snapshot files and bytes -----------------------------------------------------------

    def export_snapshot(self, path, snapshot=None):
        """Writes the current state (``snapshot=None``) or a stored snapshot to ``path``
        (.npz, atomic)."""
        _check(_lib.dynlib_sim_export_snapshot(self._ptr(), _enc(path), _enc(snapshot)))

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

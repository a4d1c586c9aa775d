"""Step labels and interpolation flags are read when first used, yet always describe the
recording as it was when results() was called."""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import dynlib  # noqa: E402


def _sim():
    return dynlib.Sim(dynlib.Model.load("builtin://ode/lorenz", stepper="rk45"))


def test_labels_read_late_are_those_of_the_results_call():
    sim = _sim()
    sim.run(T=1.0)
    res = sim.results()
    n = len(res.t)
    sim.run(T=2.0, resume=True)  # the recording grows; res must not
    assert len(res.step) == n and len(res.interpolated) == n
    assert res.step.dtype == np.uint64 and res.interpolated.dtype == np.bool_
    fresh = sim.results()
    assert len(fresh.step) > n
    assert np.array_equal(fresh.step[:n], res.step)


def test_labels_survive_closing_the_sim():
    sim = _sim()
    sim.run(T=1.0)
    res = sim.results()
    expected = len(res.t)
    sim.close()
    assert len(res.step) == expected
    assert res.interpolated.sum() <= 1


def test_labels_read_at_once_equal_labels_read_late():
    sim = _sim()
    sim.run(T=1.5)
    early = sim.results()
    early_step = early.step.copy()
    late = sim.results()  # settles `early` (already read) and makes a new one
    assert np.array_equal(late.step, early_step)


def test_results_are_freed_without_the_garbage_collector():
    # No reference cycle: a Results dies with its last reference, so its memory is free for
    # the next results() (with a cycle, every Results stayed alive until a collection).
    import gc
    import weakref

    sim = _sim()
    sim.run(T=1.0)
    gc.disable()
    try:
        res = sim.results()
        assert len(res.segment) == 1 and res.segment[0]["x"].shape == res.t.shape
        gone = weakref.ref(res)
        del res
        assert gone() is None
    finally:
        gc.enable()


def test_columns_read_into_one_block_match_the_c_calls_one_by_one():
    sim = _sim()
    sim.run(T=2.0)
    res = sim.results()
    h = sim._ptr()
    t = dynlib._read_array(dynlib._lib.dynlib_sim_results_t, np.float64, h)
    assert np.array_equal(res.t, t)
    for name in res.names:
        col = dynlib._read_array(dynlib._lib.dynlib_sim_results_var, np.float64, h, name.encode())
        assert np.array_equal(res[name], col) and res[name].flags.c_contiguous

"""Tests of the Python binding: the seed's snapshot/resume workflow, exactness through the
binding, snapshot files and bytes, error mapping, callbacks and handle freeing.

Run: python3 -m pytest -q bindings/python/tests   (DYNLIB_LIBRARY=... to pick the library)
"""

import gc
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import dynlib  # noqa: E402

IZH = "builtin://ode/izhikevich"


@pytest.fixture
def model():
    with dynlib.Model.load(IZH) as m:
        yield m


@pytest.fixture
def sim(model):
    with dynlib.Sim(model) as s:
        yield s


def assert_same_recording(a, b):
    """Bit-identical samples: times, step labels, every variable, events."""
    assert a.names == b.names
    assert np.array_equal(a.t, b.t)
    assert np.array_equal(a.step, b.step)
    for name in a.names:
        assert np.array_equal(a[name], b[name]), name
    assert a.events == b.events


# --- the seed's typical pattern --------------------------------------------------------------


def test_typical_pattern(sim):
    sim.run(T=200.0, record=True, tag="phase-1")
    sim.create_snapshot("phase-1", "after the first stimulus")
    at_snapshot = sim.state
    assert sim.time == 200.0

    sim.run(T=500.0, resume=True, tag="phase-2")
    segs = sim.segments()
    assert [s["name"] for s in segs] == ["phase-1", "phase-2"]
    assert [s["resume"] for s in segs] == [False, True]
    assert segs[0]["t_end"] == 200.0 and segs[1]["t_end"] == 500.0
    res = sim.results()
    assert res.t[0] == 0.0 and res.t[-1] == 500.0
    assert len(res) == segs[0]["sample_len"] + segs[1]["sample_len"]
    phase2 = res.segment("phase-2")
    assert phase2["t"][0] > 200.0 and phase2["t"][-1] == 500.0

    snaps = {s["name"]: s for s in sim.list_snapshots()}
    assert set(snaps) == {"initial", "phase-1"}
    assert snaps["phase-1"]["t"] == 200.0
    assert snaps["phase-1"]["description"] == "after the first stimulus"

    # Start a different branch by resetting to the saved snapshot.
    sim.reset("phase-1")
    assert sim.time == 200.0
    assert np.array_equal(sim.state, at_snapshot)
    assert sim.segments() == []
    with pytest.raises(dynlib.NoResultsError):
        sim.results()
    sim.run(T=3.0, record=True, tag="phase-1-replay")
    replay = sim.results()
    assert [s["name"] for s in sim.segments()] == ["phase-1-replay"]
    # A fresh run restarts the clock at t0 from the snapshot's state.
    assert replay.t[0] == 0.0 and replay.t[-1] == 3.0
    assert replay["v"][0] == at_snapshot[0] and replay["u"][0] == at_snapshot[1]


def test_example_1_branching_with_parameter_change(model, sim):
    sim.run(T=200.0, record=True, tag="baseline")
    sim.create_snapshot("after-baseline", "End of baseline run")

    sim.reset("after-baseline")
    sim.assign(I=15.0)
    assert sim.value("I") == 15.0
    assert sim.params[model.param_names.index("I")] == 15.0
    sim.run(T=300.0, record=True, tag="modified-current")
    modified = sim.results()
    assert [s["name"] for s in modified.segments] == ["modified-current"]

    # The same branch with the old current differs: the assignment took effect.
    with dynlib.Sim(model) as other:
        other.run(T=200.0)
        other.create_snapshot("after-baseline")
        other.reset("after-baseline")
        other.run(T=300.0, tag="unmodified")
        unmodified = other.results()
    assert np.array_equal(modified.t, unmodified.t)
    assert not np.array_equal(modified["v"], unmodified["v"])
    assert len(modified.events) > len(unmodified.events)


def test_example_2_continuing_with_parameter_change(sim):
    sim.run(T=200.0, record=True, tag="phase-1")
    sim.create_snapshot("phase-1-end", "End of phase 1")
    sim.reset("phase-1-end")
    sim.assign(a=0.02, b=0.25)
    assert sim.can_resume() == (True, None)
    sim.run(T=500.0, resume=True, tag="phase-2-modified")
    segs = sim.segments()
    assert [s["name"] for s in segs] == ["phase-2-modified"]
    assert segs[0]["resume"] is True
    res = sim.results()
    # The recording restarts at the reset point and continues the session's clock.
    assert res.t[0] == 200.0 and res.t[-1] == 500.0
    assert sim.value("b") == 0.25


def test_example_3_assign_with_clear_history(sim):
    sim.run(T=2.0, record=True, tag="initial")
    t_before, state_before = sim.time, sim.state
    sim.assign(I=20.0, clear_history=True)
    assert sim.time == t_before  # clear_history keeps time and workspace
    assert np.array_equal(sim.state, state_before)
    # "Clears all previous results and segments": no results at all, exactly as after reset.
    with pytest.raises(dynlib.NoResultsError):
        sim.results()
    with pytest.raises(RuntimeError, match="no results"):
        sim.raw_results()
    assert sim.segments() == []
    sim.run(T=3.0, record=True, tag="new-segment")
    assert [s["name"] for s in sim.segments()] == ["new-segment"]
    assert sim.value("I") == 20.0


def test_apply_preset_sets_parameters_and_names_unknown_presets(sim):
    sim.apply_preset("intrinsic_bursting")
    assert (sim.value("c"), sim.value("d")) == (-55.0, 4.0)
    with pytest.raises(dynlib.UnknownNameError, match="did you mean 'bursting'"):
        sim.apply_preset("burstng")
    assert sim.value("c") == -55.0


# --- exactness through the binding -----------------------------------------------------------


@pytest.mark.parametrize("stepper", ["rk4", "ab3", "rk45", "bdf2"])
def test_split_run_is_bit_identical_to_whole_run(stepper):
    model = dynlib.Model.load(IZH, stepper)
    with dynlib.Sim(model) as whole, dynlib.Sim(model) as split:
        whole.run(T=300.0)
        split.run(T=100.0, tag="a")
        split.run(T=170.0, resume=True, tag="b")
        split.run(T=300.0, resume=True, tag="c")
        w, s = whole.results(), split.results()
        # rk45 ends a run at its horizon by dense output (an interpolated sample), so the
        # split run holds the whole run's samples plus one interpolated sample per seam.
        adaptive = stepper == "rk45"
        assert w.interpolated.sum() == (1 if adaptive else 0)
        assert s.interpolated.sum() == (3 if adaptive else 0)
        kw, ks = ~w.interpolated, ~s.interpolated
        assert np.array_equal(w.t[kw], s.t[ks])
        assert np.array_equal(w.step[kw], s.step[ks])
        assert np.array_equal(w["v"][kw], s["v"][ks])
        assert np.array_equal(w["u"][kw], s["u"][ks])
        for name in ("t", "step", "v", "u"):
            assert w[name][-1] == s[name][-1], name
        # Event sample indices count the extra seam samples; everything else is equal.
        strip = lambda evs: [{k: v for k, v in e.items() if k != "sample"} for e in evs]  # noqa: E731
        assert strip(w.events) == strip(s.events)
        if not adaptive:
            assert w.events == s.events
        assert np.array_equal(whole.state, split.state)
        assert whole.time == split.time
        assert [g["name"] for g in split.segments()] == ["a", "b", "c"]
    model.close()


def test_export_import_resume_equals_uninterrupted(model, tmp_path):
    path = tmp_path / "ckpt" / "phase-1.npz"
    with dynlib.Sim(model) as whole:
        whole.run(T=500.0)
        w = whole.results()
        whole_state = whole.state
    with dynlib.Sim(model) as first:
        first.run(T=200.0, tag="phase-1")
        first.create_snapshot("phase-1", "to share")
        first.run(T=250.0, resume=True)  # moves on; the stored snapshot is exported
        first.export_snapshot(path, "phase-1")
        first.export_snapshot(tmp_path / "current.npz")
    meta = dynlib.inspect_snapshot(path)
    assert meta["schema"] == "dynlib-snapshot-v1"
    assert meta["t_curr"] == 200.0 and meta["step_count"] == 20000
    assert meta["state_names"] == ["v", "u"]
    assert meta["pins"]["stepper_name"] == "rk4"
    assert dynlib.inspect_snapshot(str(tmp_path / "current.npz"))["t_curr"] == 250.0

    with dynlib.Sim(model) as second:
        second.import_snapshot(path)
        assert second.time == 200.0
        with pytest.raises(dynlib.NoResultsError):
            second.results()
        second.run(T=500.0, resume=True, tag="after-import")
        s = second.results()
        tail = w.t >= 200.0  # the new recording starts with the imported state
        assert np.array_equal(s.t, w.t[tail])
        assert np.array_equal(s.step, w.step[tail])
        assert np.array_equal(s["v"], w["v"][tail])
        assert np.array_equal(s["u"], w["u"][tail])
        assert np.array_equal(second.state, whole_state)


def test_serialize_deserialize_bytes(model):
    with dynlib.Sim(model) as a, dynlib.Sim(model) as b:
        a.run(T=100.0)
        data = a.serialize_snapshot()
        assert isinstance(data, bytes) and data[:4] == b"PK\x03\x04"
        assert a.serialize_snapshot() == data  # stable for an unchanged session
        assert dynlib.inspect_snapshot_bytes(data)["t_curr"] == 100.0
        initial = a.serialize_snapshot("initial")
        assert dynlib.inspect_snapshot_bytes(initial)["t_curr"] == 0.0
        b.deserialize_snapshot(data)
        assert np.array_equal(a.state, b.state) and a.time == b.time
        a.run(T=150.0, resume=True)
        b.run(T=150.0, resume=True)
        ra, rb = a.results(), b.results()
        tail = ra.t >= 100.0
        assert np.array_equal(ra.t[tail], rb.t)
        assert np.array_equal(ra.step[tail], rb.step)
        assert np.array_equal(ra["v"][tail], rb["v"])
        assert np.array_equal(a.state, b.state)


def test_results_are_numpy_arrays(sim):
    sim.run(T=50.0, record_interval=10)
    res = sim.results()
    assert isinstance(res.t, np.ndarray) and res.t.dtype == np.float64
    assert isinstance(res.step, np.ndarray) and res.step.dtype == np.uint64
    assert res.interpolated.dtype == np.bool_
    for name in ("v", "u"):
        assert isinstance(res[name], np.ndarray) and res[name].dtype == np.float64
        assert res[name].shape == res.t.shape
    assert np.array_equal(res.v, res["v"])
    assert np.all(np.diff(res.step.astype(np.int64)) == 10)
    assert isinstance(sim.state, np.ndarray) and sim.state.dtype == np.float64
    assert isinstance(sim.params, np.ndarray) and sim.params.shape == (6,)
    assert isinstance(res.events, list) and all(isinstance(e, dict) for e in res.events)
    assert res.events and res.events[0]["event"] == "reset"
    assert set(res.events[0]) == {"event", "t", "step", "sample", "values"}


def test_run_options(model):
    with dynlib.Sim(model) as s:
        s.run(T=11.0, dt=0.05, t0=10.0, ic={"v": -70.0}, params={"I": 0.0}, record_vars=["v"])
        r = s.results()
        assert r.names == ["v"]
        assert r.t[0] == 10.0 and r.t[-1] == 11.0 and len(r) == 21
        assert r["v"][0] == -70.0
        assert s.value("I") == 0.0
        s.run(T=5.0, transient=2.0, ic=[-65.0, -13.0])
        assert s.results().t[0] == 0.0 and s.time == pytest.approx(7.0)
        with pytest.raises(dynlib.InvalidArgumentError, match="does not accept 'ic'"):
            s.run(T=9.0, resume=True, ic=[1.0, 2.0])
    with dynlib.Sim(IZH, stepper="rk45") as s:
        s.run(T=10.0, atol=1e-9, rtol=1e-9, tag="tight")
        tight = len(s.results())
        s.run(T=10.0, atol=1e-3, rtol=1e-3, tag="loose")
        assert len(s.results()) < tight
        assert s.summary()["stepper"] == "rk45"


def test_segment_naming_and_summary(sim):
    sim.run(T=10.0)
    sim.run(T=20.0, resume=True)
    assert [g["name"] for g in sim.segments()] == ["run#0", "run#1"]
    sim.name_segment(0, "warm")
    sim.name_last_segment("warm")  # taken: made unique
    sim.name_segment("warm-2", "hot")
    assert [g["name"] for g in sim.segments()] == ["warm", "hot"]
    summary = sim.summary()
    assert summary["t"] == 20.0 and summary["step"] == 2000 and summary["can_resume"] is True
    ok, text = sim.compat_check("initial")
    assert ok and text == ""
    assert sim.step_count == 2000


def test_checkpoints(model, tmp_path):
    with dynlib.Sim(model) as s:
        s.run(T=100.0, checkpoint_dir=tmp_path, checkpoint_every_steps=2500, checkpoint_keep=2)
        latest = dynlib.latest_checkpoint(tmp_path)
        assert latest is not None and latest.endswith(".npz")
        assert dynlib.inspect_snapshot(latest)["step_count"] == 10000
        assert len(list(tmp_path.glob("*.npz"))) == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    assert dynlib.latest_checkpoint(empty) is None
    with pytest.raises(dynlib.DynlibIOError):
        dynlib.latest_checkpoint(tmp_path / "missing")


# --- errors ----------------------------------------------------------------------------------


def test_unknown_name_has_did_you_mean(sim):
    before = sim.params
    with pytest.raises(dynlib.UnknownNameError) as info:
        sim.assign(I=1.0, Ix=2.0)
    err = info.value
    assert err.status == dynlib.DYNLIB_ERR_UNKNOWN_NAME == 4
    assert err.status_name == "DYNLIB_ERR_UNKNOWN_NAME"
    assert "did you mean 'I'?" in str(err)
    assert isinstance(err, dynlib.DynlibError) and isinstance(err, LookupError)
    assert np.array_equal(sim.params, before)  # nothing changed
    with pytest.raises(dynlib.UnknownNameError, match="did you mean 'atol'"):
        dynlib.Sim(IZH, stepper="rk45").run(T=1.0, atoll=1e-6)
    with pytest.raises(dynlib.UnknownNameError):
        sim.reset("no-such-snapshot")
    with pytest.raises(dynlib.UnknownNameError):
        dynlib.Model.load(IZH, "rk99")


def test_incompatible_snapshot(model, tmp_path):
    path = tmp_path / "rk4.npz"
    with dynlib.Sim(model) as s:
        s.run(T=10.0)
        s.export_snapshot(path)
    with dynlib.Sim(IZH, stepper="rk45") as other:
        other.run(T=1.0)
        t = other.time
        with pytest.raises(dynlib.IncompatibleSnapshotError) as info:
            other.import_snapshot(path)
        assert info.value.status == 7
        assert info.value.status_name == "DYNLIB_ERR_INCOMPATIBLE"
        assert "stepper_name is 'rk4' in the file, 'rk45' here" in str(info.value)
        assert other.time == t and len(other.results()) > 0  # nothing changed
    with dynlib.Sim("builtin://ode/lorenz") as lorenz:
        with pytest.raises(dynlib.IncompatibleSnapshotError):
            lorenz.import_snapshot(path)


def test_no_results(sim):
    with pytest.raises(dynlib.NoResultsError) as info:
        sim.results()
    assert info.value.status == 8 and info.value.status_name == "DYNLIB_ERR_NO_RESULTS"
    assert str(info.value)


def test_bad_model_text_reports_line_and_column():
    bad_expr = "inline:[model]\ntype = 'ode'\n[states]\nx = 1.0\n[equations]\nexpr = 'dx = -x +* 2'\n"
    with pytest.raises(dynlib.ModelError) as info:
        dynlib.Model.load(bad_expr)
    assert info.value.status == 3 and info.value.status_name == "DYNLIB_ERR_MODEL"
    assert "line 1" in str(info.value) and "column 5" in str(info.value)
    with pytest.raises(dynlib.ModelError, match=r"line 1, column 7"):
        dynlib.Model.load("inline:[model\ntype = 'ode'\n")


def test_other_statuses(sim, tmp_path):
    sim.run(T=1.0)
    sim.create_snapshot("a")
    with pytest.raises(dynlib.DuplicateNameError):
        sim.create_snapshot("a")
    with pytest.raises(dynlib.CorruptSnapshotError, match="not a zip archive"):
        sim.deserialize_snapshot(b"garbage")
    with pytest.raises(dynlib.DynlibIOError) as info:
        sim.import_snapshot(tmp_path / "missing.npz")
    assert isinstance(info.value, OSError)
    with pytest.raises(dynlib.InvalidArgumentError):
        sim.run(T=0.5, resume=True)  # the horizon must advance
    with pytest.raises(dynlib.StepFailedError):
        sim.run(T=100.0, max_steps=10)
    assert sim.time == 1.0  # a failed run changes nothing


# --- callbacks -------------------------------------------------------------------------------


def decay_model(**kw):
    return dynlib.Model.from_callbacks(
        lambda t, y, p: [-p[0] * y[0], y[0] - y[1]],
        {"x": 1.0, "z": 0.0},
        {"k": 0.5},
        id="py-decay",
        version="1",
        aux=lambda t, y, p: [y[0] + y[1]],
        aux_names=["s"],
        **kw,
    )


def test_python_callback_model():
    m = decay_model()
    assert m.state_names == ("x", "z") and m.param_names == ("k",) and m.aux_names == ("s",)
    with dynlib.Sim(m) as s:
        s.run(T=2.0, record_vars=["x", "z", "s"])
        r = s.results()
        assert r.names == ["x", "z", "s"]
        assert r.x[-1] == pytest.approx(np.exp(-1.0), rel=1e-9)
        assert np.allclose(r.s, r.x + r.z, rtol=0, atol=1e-15)
        s.reset()
        s.run(T=0.7, record_vars=["x", "z", "s"])
        s.run(T=2.0, resume=True)
        assert_same_recording(r, s.results())
    m.close()
    # The sim keeps its model (and the Python callbacks) alive after the model is dropped.
    s = dynlib.Sim(decay_model())
    gc.collect()
    s.run(T=1.0)
    assert s.value("x") == pytest.approx(np.exp(-0.5))
    s.close()


def test_callback_events_and_exceptions():
    saw = dynlib.Model.from_callbacks(
        lambda t, y, p: [1.0],
        {"x": 0.0},
        id="saw",
        events=["wrap"],
        event_cond=lambda i, t, y, p: y[0] >= 1.0,
        event_action=lambda i, t, y, p: y.__setitem__(0, 0.0),
    )
    with dynlib.Sim(saw) as s:
        s.run(T=3.5)
        r = s.results()
        assert [e["event"] for e in r.events] == ["wrap"] * 3
        assert r.x.max() < 1.0

    def rhs(t, y, p):
        if t > 0.5:
            raise RuntimeError(f"boom at {t}")
        return [-y[0]]

    with dynlib.Sim(dynlib.Model.from_callbacks(rhs, {"x": 1.0}, id="bad")) as s:
        with pytest.raises(RuntimeError, match="boom") as info:
            s.run(T=1.0)
        assert isinstance(info.value.__cause__, dynlib.StepFailedError)
        assert s.time == 0.0  # the failed run changed nothing

    wrong = dynlib.Model.from_callbacks(lambda t, y, p: [1.0, 2.0], {"x": 1.0}, id="wrong")
    with dynlib.Sim(wrong) as s, pytest.raises(ValueError, match="returned 2 values"):
        s.run(T=1.0)


# --- handles ---------------------------------------------------------------------------------


def rss_kib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def test_handles_are_freed(model):
    gc.collect()
    base = dynlib.live_handles()
    for _ in range(200):  # warm up the allocator
        with dynlib.Sim(model) as s:
            s.run(T=5.0)
    start = rss_kib()
    for i in range(2000):
        with dynlib.Sim(model) as s:
            s.run(T=5.0)
            s.create_snapshot("x")
        if i % 3 == 0:
            m = dynlib.Model.load(IZH)
            dynlib.Sim(m).run(T=1.0)  # freed by __del__
            del m
    gc.collect()
    assert dynlib.live_handles() == base
    grown = rss_kib() - start
    assert grown < 64 * 1024, f"RSS grew by {grown} KiB over 2000 sims"

    s = dynlib.Sim(model)
    s.close()
    s.close()  # idempotent
    assert s.closed
    with pytest.raises(dynlib.BadHandleError):
        s.run(T=1.0)
    with pytest.raises(dynlib.BadHandleError):
        _ = s.time

    # A model may be closed while its sims live on.
    m = dynlib.Model.load(IZH)
    s = dynlib.Sim(m)
    m.close()
    s.run(T=1.0)
    assert s.time == 1.0
    with pytest.raises(dynlib.BadHandleError):
        dynlib.Sim(m)
    s.close()
    assert dynlib.live_handles() == base


# --- the output-buffer protocol --------------------------------------------------------------


def test_buffer_protocol_raw(sim):
    """The C convention the binding relies on: NULL/0 asks the size, a short buffer gives
    BUFFER_TOO_SMALL with *needed set and the buffer untouched."""
    import ctypes

    lib, h = dynlib._lib, sim._ptr()
    needed = ctypes.c_size_t(0)
    assert lib.dynlib_sim_state(h, None, 0, ctypes.byref(needed)) == dynlib.DYNLIB_OK
    assert needed.value == 2
    short = (ctypes.c_double * 1)(12345.0)
    needed.value = 0
    status = lib.dynlib_sim_state(h, short, 1, ctypes.byref(needed))
    assert status == dynlib.DYNLIB_ERR_BUFFER_TOO_SMALL and needed.value == 2
    assert short[0] == 12345.0
    assert "buffer" in lib.dynlib_last_error().decode()


def test_buffer_protocol_retries_once_when_the_size_grows():
    calls = []

    def growing(buf, cap, needed):
        # Reports 3 at the size query, then 5: the first fill is too small.
        size = 3 if not calls else 5
        calls.append(cap)
        needed._obj.value = size
        if buf is None:
            return dynlib.DYNLIB_OK
        if cap < size:
            return dynlib.DYNLIB_ERR_BUFFER_TOO_SMALL
        for i in range(size):
            buf[i] = float(i)
        return dynlib.DYNLIB_OK

    out = dynlib._read_array(growing, np.float64)
    assert calls == [0, 3, 5]
    assert np.array_equal(out, np.arange(5.0))


# --- mods ------------------------------------------------------------------------------------

MODDED = """inline:
[model]
type = "ode"
[states]
x = 1.0
[params]
k = 2.0
[equations.rhs]
x = "-k*x"
[mods.fast]
set.params = { k = 4.0 }
[mods.extra]
add.params = { w = 1.5 }
"""


def test_model_with_mods():
    with dynlib.Model.load(MODDED) as base, dynlib.Model.load(MODDED, mods=["fast", "extra"]) as m:
        assert list(base.param_names) == ["k"]
        assert list(m.param_names) == ["k", "w"]
        assert base.info()["spec_hash"] != m.info()["spec_hash"]
        assert m.info()["param_defaults"] == [4.0, 1.5]
    with dynlib.Model(MODDED, mods="inline:[mod]\nset.params = { k = 3.0 }\n") as m:
        assert m.info()["param_defaults"] == [3.0]
    with pytest.raises(dynlib.ModelError, match="did you mean 'fast'"):
        dynlib.Model.load(MODDED, mods=["fsat"])

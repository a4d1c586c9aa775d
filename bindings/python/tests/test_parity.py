"""Session parity with the original system (issue 15): a session script written against the
seed's API runs with only the import changed; preset bank and files; persistent config and
stepper_config; record_vars=[]; clear_history; builtin error families; run(**kw) routing.

Run: python3 -m pytest -q bindings/python/tests
"""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import dynlib  # noqa: E402
from dynlib import Sim, build  # noqa: E402  (the only line a seed script changes)

IZH = "builtin://ode/izhikevich"


def seed_session_script(tmp_path):
    """The seed's snapshots-and-resume.md, call for call."""
    sim = Sim(build(IZH))
    sim.run(T=2.0, record=True, tag="phase-1")
    sim.create_snapshot("phase-1", "after the first stimulus")
    sim.run(T=5.0, resume=True, tag="phase-2")
    sim.reset("phase-1")
    sim.run(T=3.0, record=True, tag="phase-1-replay")

    # Example 1
    sim.run(T=2.0, record=True, tag="baseline")
    sim.create_snapshot("after-baseline", "End of baseline run")
    sim.reset("after-baseline")
    sim.assign(I=15.0)
    sim.run(T=3.0, record=True, tag="modified-current")
    # Example 2
    sim.run(T=2.0, record=True, tag="phase-1")
    sim.create_snapshot("phase-1-end", "End of phase 1")
    sim.reset("phase-1-end")
    sim.assign(a=0.02, b=0.25)
    sim.run(T=5.0, resume=True, tag="phase-2-modified")
    # Example 3
    sim.run(T=2.0, record=True, tag="initial")
    sim.assign(I=20.0, clear_history=True)
    sim.run(T=3.0, record=True, tag="new-segment")

    # Persistence and introspection.
    snaps = sim.list_snapshots()
    ok, diff = sim.compat_check("phase-1")
    summary = sim.session_state_summary()
    sim.export_snapshot(tmp_path / "cur.npz", source="current")
    sim.export_snapshot(tmp_path / "p1.npz", source="snapshot", name="phase-1")
    meta = sim.inspect_snapshot(tmp_path / "p1.npz")
    sim.import_snapshot(tmp_path / "p1.npz")
    sim.run(T=4.0, resume=True, tag="from-file")
    sim.name_segment(0, "renamed")
    last = sim.name_last_segment("renamed")
    res = sim.results()
    view = res.segment["renamed"]
    return sim, snaps, ok, diff, summary, meta, last, res, view


def test_a_seed_session_script_runs_unchanged(tmp_path):
    sim, snaps, ok, diff, summary, meta, last, res, view = seed_session_script(tmp_path)
    assert {"initial", "phase-1", "after-baseline", "phase-1-end"} <= {s["name"] for s in snaps}
    assert ok and diff == {} and str(diff) == ""
    assert summary["can_resume"] is True and summary["stepper_name"] == "rk4"
    assert meta["name"] == "phase-1" and meta["t_curr"] == 2.0
    assert last == "renamed"  # a one-segment recording: renamed in place
    assert view.t[0] == 2.0 and view.t[-1] == 4.0 and len(view) == len(res)
    assert np.array_equal(view["v"], res["v"])
    assert sim.state("v") == sim.state[0] and sim.param("I") == sim.params("I")
    sim.close()




@pytest.fixture
def sim():
    with Sim(IZH) as s:
        yield s


def test_export_snapshot_forms_and_validation(sim, tmp_path):
    sim.run(T=1.0)
    sim.create_snapshot("a")
    sim.export_snapshot(tmp_path / "1.npz", "a")  # the binding's own form
    sim.export_snapshot(tmp_path / "2.npz", source="snapshot", name="a")
    assert dynlib.inspect_snapshot(tmp_path / "2.npz")["name"] == "a"
    with pytest.raises(ValueError, match="name is required"):
        sim.export_snapshot(tmp_path / "3.npz", source="snapshot")
    with pytest.raises(ValueError, match="should not be provided"):
        sim.export_snapshot(tmp_path / "3.npz", source="current", name="a")
    with pytest.raises(ValueError, match="source must be"):
        sim.export_snapshot(tmp_path / "3.npz", source="other")
    with pytest.raises(KeyError):
        sim.export_snapshot(tmp_path / "3.npz", source="snapshot", name="nope")
    assert not (tmp_path / "3.npz").exists()


def test_compat_check_reports_which_pins_differ(tmp_path):
    with Sim(IZH) as rk4, Sim(dynlib.Model.load(IZH, "euler")) as eu:
        eu.run(T=1.0)
        eu.export_snapshot(tmp_path / "e.npz")
        with pytest.raises(RuntimeError, match="incompatible"):
            rk4.import_snapshot(tmp_path / "e.npz")
        ok, diff = rk4.compat_check("initial")
        assert ok and diff == {}


def test_state_readers(sim):
    sim.assign(v=-70.0)
    assert sim.state("v") == -70.0
    assert sim.state_dict()["v"] == -70.0
    assert sim.state_vector("model")[0] == -65.0
    assert sim.state_vector("snapshot", "initial")[0] == -70.0  # "initial" taken lazily now
    assert sim.param_dict()["I"] == sim.params("I")
    with pytest.raises(KeyError, match="did you mean 'v'"):
        sim.state("vv")
    with pytest.raises(ValueError):
        sim.state_vector("nowhere")


def test_per_segment_views_by_name_and_index(sim):
    sim.run(T=10.0, tag="a")
    sim.run(T=20.0, resume=True, tag="b")
    res = sim.results()
    assert len(res.segment) == 2 and res.segment.names() == ["a", "b"]
    assert "run#1" in res.segment and "zzz" not in res.segment
    b = res.segment["b"]
    assert b.id == 1 and b.t[0] > 10.0 and b.t[-1] == 20.0
    assert res.segment[1].name == "b" and res.segment[-1].name == "b"
    assert res.segment("a")["t"][-1] == 10.0
    assert [s.name for s in res.segment] == ["a", "b"]
    assert np.array_equal(np.concatenate([s["v"] for s in res.segment]), res["v"])
    assert res[["v", "u"]].shape == (len(res), 2)
    with pytest.raises(IndexError):
        res.segment[5]
    with pytest.raises(KeyError, match="did you mean 'a'"):
        res.segment["aa"]


def test_record_vars_empty_records_t_and_step_only(sim):
    sim.run(T=5.0, record_vars=[])
    res = sim.results()
    assert res.names == [] and len(res) > 1
    sim.run(T=10.0, resume=True)
    assert sim.results().names == []


def test_clear_history_reports_no_results_like_reset(sim):
    sim.run(T=2.0)
    sim.assign(I=20.0, clear_history=True)
    with pytest.raises(dynlib.NoResultsError):
        sim.results()
    sim.reset()
    with pytest.raises(RuntimeError):
        sim.results()


def test_error_families():
    assert issubclass(dynlib.UnknownNameError, ValueError)
    assert issubclass(dynlib.UnknownNameError, KeyError)
    assert issubclass(dynlib.InvalidArgumentError, ValueError)
    for cls in (
        dynlib.NoResultsError,
        dynlib.IncompatibleSnapshotError,
        dynlib.StepFailedError,
        dynlib.NonFiniteError,
    ):
        assert issubclass(cls, RuntimeError) and issubclass(cls, dynlib.DynlibError)
    assert issubclass(dynlib.CorruptSnapshotError, ValueError)
    with Sim(IZH) as s:
        s.run(T=1.0)
        with pytest.raises(KeyError) as info:
            s.results()["w"]
        assert str(info.value).startswith("'w' is not a recorded variable")  # no repr quotes
        with pytest.raises(ValueError):
            s.assign(Ix=1.0)


def test_run_keywords_are_run_options_or_knobs():
    with Sim(IZH) as s:
        with pytest.raises(dynlib.UnknownNameError, match=r"unknown run option 't' \(did you mean 'T'\?\)"):
            s.run(t=1.0)
        with pytest.raises(ValueError, match="unknown run option 'atol'"):
            s.run(T=1.0, atol=1e-9)  # rk4 has no knobs: the same rule for every stepper
        with pytest.raises(dynlib.NoResultsError):
            s.results()
        s.run(T=1.0, cap_rec=16, cap_evt=2)  # the seed's buffer sizes: accepted, ignored
    with Sim(dynlib.Model.load(IZH, "rk45")) as s:
        with pytest.raises(KeyError, match="did you mean 'atol'"):
            s.run(T=1.0, atoll=1e-9)
        s.run(T=1.0, atol=1e-9)
        assert s.stepper_config_dict()["atol"] == 1e-9  # run knobs persist


def test_config_persists_and_reads_back():
    with Sim("builtin://map/logistic") as s:
        cfg = s.config(max_steps=7, record_interval=2)
        assert cfg["max_steps"] == {"value": 7, "set": True}
        s.run()
        assert s.step_count == 7 and list(s.results().step) == [0, 2, 4, 6]
        with pytest.raises(KeyError, match="did you mean 'max_steps'"):
            s.config(max_step=3)
        with pytest.raises(ValueError):
            s.config(max_steps=3, record_interval=0)
        assert s.config()["max_steps"]["value"] == 7  # nothing changed
        s.config(max_steps=None, record=False)
        assert s.config()["max_steps"]["set"] is False
        s.run(N=3)
        assert len(s.results()) == 0


def test_stepper_config_get_set_list_persist():
    with Sim(dynlib.Model.load(IZH, "rk45")) as s:
        knobs = s.list_stepper_config()
        assert [k["name"] for k in knobs][:2] == ["atol", "rtol"]
        default_atol = knobs[0]["default"]
        vec = s.stepper_config(atol=1e-10, rtol=1e-7)
        assert vec[0] == 1e-10 and vec[1] == 1e-7
        s.run(T=5.0)
        s.run(T=10.0, resume=True)
        assert s.stepper_config()[0] == 1e-10
        s.create_snapshot("tight")
        s.stepper_config(atol=None)
        assert s.stepper_config()[0] == default_atol
        s.reset("tight")
        assert s.stepper_config()[0] == 1e-10
        s.config(rtol=1e-4)
        assert s.stepper_config_dict()["rtol"] == 1e-4
        with pytest.raises(KeyError, match="did you mean 'rtol'"):
            s.stepper_config(rtoll=1.0)
    with Sim(dynlib.Model.load(IZH, "bdf2")) as s:
        assert s.stepper_config(jacobian_mode="external")[-1] == 1.0
        with pytest.raises(ValueError, match="'external', 'internal'"):
            s.stepper_config(jacobian_mode="nope")


def test_exact_resume_across_config_and_preset_calls():
    with Sim(IZH) as whole, Sim(IZH) as split:
        whole.run(T=60.0)
        split.run(T=20.0)
        split.config(dt=0.5, max_steps=10**7, record=True)
        split.add_preset("here")
        split.list_presets("*")
        split.run(T=40.0, resume=True)
        split.config(dt=None)
        split.stepper_config()
        split.run(T=60.0, resume=True)
        a, b = whole.results(), split.results()
        assert np.array_equal(a.t, b.t) and np.array_equal(a["v"], b["v"])
        assert np.array_equal(whole.state, split.state)


def test_preset_bank_and_files(tmp_path):
    with Sim(IZH) as s:
        model_presets = s.list_presets()
        assert "intrinsic_bursting" in model_presets
        assert s.list_presets("intrinsic_*") == ["intrinsic_bursting"]
        s.add_preset("mine", {"I": 12.5}, states={"v": -70.0})
        s.add_preset("here")  # from the current session
        assert s.presets("mine")[0] == {"name": "mine", "params": {"I": 12.5}, "states": {"v": -70.0}}
        with pytest.raises(ValueError, match="already exists"):
            s.add_preset("mine", {"I": 1.0})
        with pytest.raises(KeyError, match="did you mean 'I'"):
            s.add_preset("bad", {"Ix": 1.0})
        path = tmp_path / "bank.toml"
        assert s.save_presets(path, "mine", mode="overwrite") == 1
        assert "dynlib-presets-v1" in path.read_text()
        with pytest.raises(ValueError, match="already in"):
            s.save_preset("mine", path)
        s.add_preset("mine", {"I": 13.0}, overwrite=True)
        s.save_preset("mine", path, overwrite=True)
        s.save_presets(path, "here")  # append
    with Sim(IZH) as t:
        assert t.load_presets(path) == 2
        with pytest.raises(ValueError, match="already in the bank"):
            t.load_preset("mine", path)
        assert t.load_preset("mine", path, on_conflict="keep") == 0
        assert t.load_preset("m*", path, on_conflict="replace") == 1
        t.apply_preset("mine")
        assert t.params("I") == 13.0 and t.state("v") == -65.0  # replaced: I only
        with pytest.raises(ValueError, match="on_conflict"):
            t.load_presets(path, on_conflict="merge")
        with pytest.raises(KeyError, match="did you mean 'mine'"):
            t.load_presets(path, "mien")
        with pytest.raises(OSError):
            t.load_presets(tmp_path / "missing.toml")


def test_parameters_only_model(tmp_path):
    src = "[model]\ntype = \"ode\"\n[params]\na = 1.0\n[presets.p.params]\na = 2\n"
    with Sim("inline:" + src) as s:
        s.apply_preset("p")
        assert s.params("a") == 2.0
        with pytest.raises(ValueError, match="has no states"):
            s.run(T=1.0)
    path = tmp_path / "params_only.toml"
    path.write_text(src)
    with Sim(dynlib.Model.load("builtin://ode/expdecay")) as d:
        d.load_presets(path)
        d.apply_preset("p")
        assert d.params("a") == 2.0


def test_unreadable_snapshot_files_are_value_errors(sim, tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ValueError):
        sim.import_snapshot(bad)
    with pytest.raises(dynlib.CorruptSnapshotError):
        dynlib.inspect_snapshot(bad)
    with pytest.raises(OSError):
        sim.import_snapshot(tmp_path / "missing.npz")

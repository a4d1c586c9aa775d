"""Tests of dynlib.Ensemble: NumPy matrices in and out, bit-identity with single sims for any
thread count, transactional inputs, a failing member, one-file checkpoints (numpy-loadable).

Run: python3 -m pytest -q bindings/python/tests
"""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import dynlib  # noqa: E402

IZH = "builtin://ode/izhikevich"
BLOWUP = """inline:
[model]
type = "ode"
[states]
x = 1.0
[params]
a = 1.0
[equations.rhs]
x = "a*x*x"
[sim]
dt = 0.01
t_end = 1.0
"""


@pytest.fixture
def model():
    with dynlib.Model.load(IZH) as m:
        yield m


def single(model, I, T1, T2):
    with dynlib.Sim(model) as s:
        s.assign(I=I)
        s.run(T=T1, record=False)
        s.run(T=T2, resume=True, record=False)
        return s.state.copy()


@pytest.mark.parametrize("threads", [1, 2, 0])
def test_members_match_single_sims_bit_for_bit(model, threads):
    current = np.linspace(0.0, 20.0, 10)
    with dynlib.Ensemble(model, 10) as ens:
        ens.set_param_column("I", current)
        ens.run(T=50.0, record=False, n_threads=threads)
        ens.run(T=120.0, resume=True, record=False, n_threads=threads)
        y = ens.final_states()
        assert y.shape == (10, 2) and y.dtype == np.float64
        ref = np.array([single(model, I, 50.0, 120.0) for I in current])
        assert y.tobytes() == ref.tobytes()
        assert np.array_equal(ens.times(), np.full(10, 120.0))
        assert ens.step_counts().dtype == np.uint64
        assert ens.event_counts()[-1] > 0
        assert ens.params()[:, model.param_names.index("I")].tobytes() == current.tobytes()


@pytest.mark.parametrize("lanes", [0, 3, 8])
def test_lockstep_lanes_change_speed_not_bits(model, lanes):
    current = np.linspace(0.0, 20.0, 11)
    with dynlib.Ensemble(model, 11) as ens:
        assert ens.lockstep_lanes == 8
        ens.lockstep_lanes = lanes
        assert ens.lockstep_lanes == lanes + lanes % 2
        ens.set_param_column("I", current)
        ens.run(T=50.0, record=False, n_threads=2)
        ens.run(T=120.0, resume=True, record=False, n_threads=2)
        ref = np.array([single(model, I, 50.0, 120.0) for I in current])
        assert ens.final_states().tobytes() == ref.tobytes()
        taken = ens.last_run_lockstep_steps
        assert (taken == 0) if lanes == 0 else (taken > 0)
        with pytest.raises(dynlib.DynlibError, match="at most 64"):
            ens.lockstep_lanes = 65
        with pytest.raises(ValueError):
            ens.lockstep_lanes = -1
        assert ens.lockstep_lanes == lanes + lanes % 2


def test_matrices_are_checked_and_nothing_changes(model):
    with dynlib.Ensemble(model, 4) as ens:
        before = ens.params()
        with pytest.raises(dynlib.InvalidArgumentError, match="3 rows; the ensemble has 4"):
            ens.set_params(np.zeros((3, model.n_params)))
        bad = np.tile(before[0], (4, 1))
        bad[2, 1] = np.nan
        with pytest.raises(dynlib.InvalidArgumentError, match=r"row 2, column 1.*NaN"):
            ens.set_params(bad)
        with pytest.raises(dynlib.InvalidArgumentError, match="columns"):
            ens.set_ic(np.zeros((4, 3)))
        with pytest.raises(dynlib.UnknownNameError):
            ens.set_param_column("Ix", np.zeros(4))
        assert ens.params().tobytes() == before.tobytes()
        ic = np.array([[-70.0, -14.0], [-65.0, -13.0], [-60.0, -12.0], [-55.0, -11.0]])
        ens.set_ic(ic)
        assert ens.final_states().tobytes() == ic.tobytes()
    with pytest.raises(dynlib.InvalidArgumentError, match="n_members is 0"):
        dynlib.Ensemble(model, 0)


def test_a_failing_member_does_not_poison_the_others():
    with dynlib.Model.load(BLOWUP) as m, dynlib.Ensemble(m, 3) as ens:
        ens.set_param_column("a", [0.5, 5.0, -1.0])
        with pytest.raises(dynlib.DynlibError, match="1 of 3 members failed") as e:
            ens.run(T=0.5, n_threads=2)
        assert ens.n_failed == 1
        assert ens.member_status(1) == e.value.status != 0
        assert ens.member_error(1)
        assert ens.member_status(0) == 0 and ens.member_error(0) is None
        with ens.member(2) as s:
            assert s.time == 0.5


def test_member_is_an_ordinary_sim_with_results(model):
    with dynlib.Ensemble(model, 3) as ens:
        ens.set_param_column("I", [5.0, 10.0, 15.0])
        ens.run(T=30.0, record=True)
        with ens.member(1) as s, dynlib.Sim(model) as ref:
            ref.assign(I=10.0)
            ref.run(T=30.0, record=True)
            a, b = s.results(), ref.results()
            assert a.t.tobytes() == b.t.tobytes()
            assert a["v"].tobytes() == b["v"].tobytes()
            s.run(T=60.0, resume=True)  # independent of the ensemble
        assert ens.times()[1] == 30.0


def test_checkpoint_resumes_bit_for_bit_and_loads_in_numpy(model, tmp_path):
    current = np.linspace(2.0, 18.0, 8)
    path = tmp_path / "ens.npz"
    with dynlib.Ensemble(model, 8) as whole:
        whole.set_param_column("I", current)
        whole.run(T=200.0, record=False)
        expected = whole.final_states()
        counts = whole.event_counts()
    with dynlib.Ensemble(model, 8) as a:
        a.set_param_column("I", current)
        a.run(T=80.0, record=False)
        a.export_checkpoint(path)
    z = np.load(path)
    assert z["y"].shape == (8, 2) and z["params"].shape[0] == 8
    assert "meta.json" in z.files
    with dynlib.Ensemble(model, 8) as b:
        b.import_checkpoint(path)
        b.run(T=200.0, resume=True, record=False)
        assert b.final_states().tobytes() == expected.tobytes()
        assert np.array_equal(b.event_counts(), counts)
    with dynlib.Ensemble(model, 7) as c:
        with pytest.raises(dynlib.IncompatibleSnapshotError, match="holds 8 members"):
            c.import_checkpoint(path)


def test_from_sim(model):
    with dynlib.Sim(model) as s:
        s.run(T=10.0)
        with dynlib.Ensemble.from_sim(s, 5) as ens:
            assert np.array_equal(ens.times(), np.full(5, 10.0))
            assert ens.final_states()[4].tobytes() == s.state.tobytes()

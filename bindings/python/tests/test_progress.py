"""Progress callbacks and Ctrl-C during a run: a stop leaves the partial run in the session
(status USER_BREAK), and a resumed run continues it bit for bit.

Run: python3 -m pytest -q bindings/python/tests   (DYNLIB_LIBRARY=... to pick the library)
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import dynlib  # noqa: E402

LORENZ = "builtin://ode/lorenz"


def bits(a):
    return np.asarray(a, dtype=np.float64).view(np.uint64).tolist()


def test_library_origin_is_reported():
    assert os.path.isfile(dynlib.library_path())
    assert dynlib.library_origin in (
        "DYNLIB_LIBRARY",
        "repository build",
        "install prefix (pkg-config)",
        "system library search path",
    ) or dynlib.library_origin.startswith("install prefix ")


def test_progress_callback_sees_growing_fractions_and_can_stop():
    m = dynlib.Model.load(LORENZ, stepper="rk4")
    seen = []

    def progress(t, step, fraction):
        seen.append((t, step, fraction))
        return False

    whole = dynlib.Sim(m).run(T=10.0, dt=0.001, progress=progress, progress_every=1000)
    assert [s for _, s, _ in seen] == [1000 * k for k in range(1, 11)]
    assert all(a[2] < b[2] for a, b in zip(seen, seen[1:]))
    assert seen[-1][2] == 1.0
    assert whole.summary()["status"] == "DONE"

    split = dynlib.Sim(m)
    split.run(T=10.0, dt=0.001, progress=lambda t, s, f: s >= 3000, progress_every=1000)
    assert split.step_count == 3000
    assert split.summary()["status"] == "USER_BREAK"
    assert len(split.results().t) == 3001
    split.run(T=10.0, resume=True)
    assert bits(split.results()["x"]) == bits(whole.results()["x"])
    assert bits(split.state) == bits(whole.state)


def test_an_exception_in_the_progress_callback_stops_the_run_and_is_raised():
    m = dynlib.Model.load(LORENZ, stepper="rk4")
    sim = dynlib.Sim(m)

    def boom(t, step, fraction):
        if step >= 2000:
            raise RuntimeError("stop here")

    with pytest.raises(RuntimeError, match="stop here"):
        sim.run(T=10.0, dt=0.001, progress=boom, progress_every=500)
    assert sim.step_count == 2000
    with pytest.raises(dynlib.InvalidArgumentError):
        sim.run(T=10.0, resume=True, progress=boom, progress_every="often")
    assert sim.step_count == 2000


CHILD = r"""
import json, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)
sys.path.insert(0, sys.argv[1])
import dynlib
m = dynlib.Model.load("builtin://ode/lorenz", stepper="rk4")
sim = dynlib.Sim(m)
print("running", flush=True)
try:
    sim.run(T=1e6, dt=1e-4, record=False, max_steps=10**11)
    print(json.dumps({"error": "the run finished instead of stopping"}))
    sys.exit(3)
except KeyboardInterrupt:
    pass
status, k = sim.summary()["status"], sim.step_count
T2 = 0.0 + float(k + 5000) * 1e-4
sim.run(T=T2, resume=True, max_steps=10**11)
whole = dynlib.Sim(m).run(T=T2, dt=1e-4, record=False, max_steps=10**11)
print(json.dumps({
    "status": status, "steps": k,
    "split": [float(v).hex() for v in sim.state],
    "whole": [float(v).hex() for v in whole.state],
    "split_steps": sim.step_count, "whole_steps": whole.step_count,
}), flush=True)
"""


def test_ctrl_c_stops_a_long_run_and_resume_is_exact():
    module_dir = os.path.dirname(os.path.abspath(dynlib.__file__))
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, module_dir],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, DYNLIB_LIBRARY=dynlib.library_path()),
    )
    try:
        assert child.stdout.readline().strip() == "running"
        time.sleep(0.5)
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0, (out, err)
    r = json.loads(out.strip().splitlines()[-1])
    assert r["status"] == "USER_BREAK", r
    assert 0 < r["steps"] < 10**10
    assert r["split_steps"] == r["whole_steps"] == r["steps"] + 5000
    assert r["split"] == r["whole"], r

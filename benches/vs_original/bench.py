"""dynlib (this library, through its Python binding) against the original Python system
(pip package dynlib 0.42.0 with numba), same model, stepper and dt, recording on.

  python3 -m venv /tmp/orig && /tmp/orig/bin/pip install dynlib==0.42.0 numba
  cargo build --release
  /tmp/orig/bin/python benches/vs_original/bench.py [reps]

Warm: best of N interleaved runs (run + reading every recorded column as NumPy arrays),
after one untimed run of each. Cold: a fresh process each, load + compile + first run.
"""
import importlib.util
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
BINDING = os.path.join(ROOT, "bindings", "python", "dynlib.py")

CASES = [
    # name, model, stepper, run kwargs
    ("rk4 lorenz", "builtin://ode/lorenz", "rk4", dict(T=1000.0, dt=0.001, max_steps=2_000_000)),
    ("rk4 izhikevich+reset", "builtin://ode/izhikevich", "rk4", dict(T=10000.0, dt=0.01, max_steps=2_000_000)),
    ("rk45 lorenz", "builtin://ode/lorenz", "rk45", dict(T=2000.0, dt=0.001, max_steps=2_000_000)),
    ("logistic map", "builtin://map/logistic", "map", dict(N=1_000_000, max_steps=2_000_000)),
]


def ours():
    spec = importlib.util.spec_from_file_location("dynlib_rs", BINDING)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def setup_ours(mod, model, stepper):
    return mod.Sim(mod.Model.load(model, stepper=stepper))


def run_ours(sim, kw, ic):
    sim.run(record=True, ic=ic, **kw)
    res = sim.results()
    return [res[v] for v in res.names] + [res.t]


def setup_orig(model, stepper):
    import dynlib
    return dynlib.setup(model, stepper=stepper, jit=True)


def run_orig(sim, kw, ic):
    import numpy as np
    sim.run(record=True, ic=np.array(ic), **kw)
    res = sim.results()
    return [np.asarray(res[v]) for v in res.state_names] + [np.asarray(res.t)]


# Cold: load + compile + first run, in a fresh process; Python, NumPy and each package's
# import are before the clock starts (they are the interpreter's cost, not the library's).
COLD = r"""
import sys, time, importlib.util
which, model, stepper, kw, ic = sys.argv[1], sys.argv[2], sys.argv[3], eval(sys.argv[4]), eval(sys.argv[5])
sys.path.insert(0, %r)
import numpy, bench
if which == "ours":
    m = bench.ours()
    t0 = time.perf_counter()
    sim = bench.setup_ours(m, model, stepper); bench.run_ours(sim, kw, ic)
else:
    import dynlib
    t0 = time.perf_counter()
    sim = bench.setup_orig(model, stepper); bench.run_orig(sim, kw, ic)
print(time.perf_counter() - t0)
""" % HERE


def cold(which, model, stepper, kw, ic):
    out = subprocess.run(
        [sys.executable, "-c", COLD, which, model, stepper, repr(kw), repr(ic)],
        check=True, capture_output=True, text=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def main():
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    import dynlib as original
    mod = ours()
    print(f"this library (Python binding) vs the original dynlib {original.__version__} + numba; "
          f"warm: best of {reps} interleaved, cold: fresh processes\n")
    print(f"{'case':22} {'ours ms':>9} {'orig ms':>9} {'warm x':>8} {'ours cold s':>12} {'orig cold s':>12} {'cold x':>8}")
    for name, model, stepper, kw in CASES:
        a = setup_ours(mod, model, stepper)
        b = setup_orig(model, stepper)
        ic = [float(v) for v in a.state]
        run_ours(a, kw, ic)
        run_orig(b, kw, ic)
        best_a = best_b = float("inf")
        for _ in range(reps):
            t0 = time.perf_counter(); run_ours(a, kw, ic); t1 = time.perf_counter()
            run_orig(b, kw, ic); t2 = time.perf_counter()
            best_a, best_b = min(best_a, t1 - t0), min(best_b, t2 - t1)
        ca = min(cold("ours", model, stepper, kw, ic) for _ in range(3))
        cb = cold("orig", model, stepper, kw, ic)
        print(f"{name:22} {1e3*best_a:9.2f} {1e3*best_b:9.2f} {best_b/best_a:7.2f}x {ca:12.3f} {cb:12.3f} {cb/ca:7.1f}x")
    print("\nwarm x / cold x: the original's time divided by ours (above 1 = this library is faster).")


if __name__ == "__main__":
    main()

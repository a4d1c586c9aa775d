"""Opens a dynlib snapshot with numpy.load and checks every array and the meta against the
session that wrote it (expected values given as raw IEEE-754 bits, so the check is exact).

usage: check_snapshot_npz.py SNAPSHOT.npz EXPECTED.json
"""
import json
import sys

import numpy as np


def as_bits(a):
    return [int(x) for x in np.ascontiguousarray(a, dtype="<f8").view("<u8").ravel()]


def main(path, expected_path):
    with open(expected_path) as f:
        exp = json.load(f)
    failures = []

    def check(cond, what):
        if not cond:
            failures.append(what)

    with np.load(path, allow_pickle=False) as z:
        keys = set(z.files)
        wanted = {"meta.json", "y", "params", "stepper_config"} | set(exp["workspace"])
        check(keys == wanted, f"members {sorted(keys)} != {sorted(wanted)}")
        meta_raw = z["meta.json"]
        check(meta_raw.dtype == np.uint8 and meta_raw.ndim == 1, "meta.json is not 1-D uint8")
        meta = json.loads(meta_raw.tobytes().decode("utf-8"))
        for name in ("y", "params", "stepper_config"):
            a = z[name]
            check(a.dtype == np.float64 and a.ndim == 1, f"{name}: dtype {a.dtype} ndim {a.ndim}")
            check(as_bits(a) == exp[name], f"{name}: values differ")
        for key, spec in exp["workspace"].items():
            a = z[key]
            check(str(a.dtype) == spec["dtype"], f"{key}: dtype {a.dtype} != {spec['dtype']}")
            check(list(a.shape) == spec["shape"], f"{key}: shape {a.shape} != {spec['shape']}")
            if spec["dtype"] == "float64":
                got = as_bits(a)
            else:
                got = [int(x) & 0xFFFFFFFFFFFFFFFF for x in a.ravel()]
            check(got == spec["bits"], f"{key}: values differ")
    for key, value in exp["meta"].items():
        check(meta.get(key) == value, f"meta {key}: {meta.get(key)!r} != {value!r}")
    for key in ("created_at", "name", "description", "stepper_config_names",
                "stepper_config_values"):
        check(key in meta, f"meta lacks {key}")
    if failures:
        print("numpy check FAILED:\n  " + "\n  ".join(failures))
        return 1
    print(f"numpy check ok: {len(keys)} members, numpy {np.__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))

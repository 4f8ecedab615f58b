"""A real `tflite_export.export` that can SIGKILL itself or pause at one point.

Usage: python export_worker.py OUTPUT [QUANTIZE] [LOCK_TIMEOUT]

Exports a tiny Keras model (seeded, 8x8x1 input) to OUTPUT with QUANTIZE
("int8" by default; calibration and evaluation on 16 random examples, one
thread count benchmarked). Environment:

* EXPORT_KILL_AT=POINT: the process sends itself SIGKILL at POINT.
* EXPORT_PAUSE_AT=POINT and EXPORT_PAUSE_FILE=PATH: at POINT the process
  creates PATH.paused and waits (at most 120 s) until PATH exists.

POINTs: "prepare" (the SavedModel was just written), "convert" (conversion
starts), "evaluate", "benchmark", "write" (those stages start; the .tflite
exists in the work folder), "rename1" (the commit journal is written, nothing
renamed yet), "rename2" and "rename3" (after one and two of the three
renames), "renamed" (after the last rename, before the work folder is
removed).

Prints one JSON line: {"ok": true, "sha256": ..., "reached": [POINT, ...]}
after a successful export, {"ok": false, "type": ..., "message": ...,
"reached": [...]} (exit code 2) after a ValueError.
"""

import json
import os
import signal
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import tflite_export  # noqa: E402
from tflite_export import conversion, exporter, report, sources  # noqa: E402

POINTS = ("prepare", "convert", "evaluate", "benchmark", "write", "rename1", "rename2",
          "rename3", "renamed")
_STAGE_POINTS = {"evaluate": "evaluate", "benchmark": "benchmark", "write files": "write"}
REACHED = []


def _reach(point):
    REACHED.append(point)
    if os.environ.get("EXPORT_KILL_AT") == point:
        os.kill(os.getpid(), signal.SIGKILL)
    if os.environ.get("EXPORT_PAUSE_AT") == point:
        release = os.environ["EXPORT_PAUSE_FILE"]
        open(release + ".paused", "w").close()
        deadline = time.monotonic() + 120
        while not os.path.exists(release):
            if time.monotonic() > deadline:
                sys.exit(3)
            time.sleep(0.05)


def _install_hooks(output):
    prepare, convert, start = sources.prepare, conversion.convert, exporter._Stages.start

    def prepare_hook(*args, **kwargs):
        prepared = prepare(*args, **kwargs)
        _reach("prepare")
        return prepared

    def convert_hook(*args, **kwargs):
        _reach("convert")
        return convert(*args, **kwargs)

    def start_hook(self, name):
        start(self, name)
        if name in _STAGE_POINTS:
            _reach(_STAGE_POINTS[name])

    targets = {os.path.abspath(output), *map(os.path.abspath, report.report_paths(output))}
    replace, renames = os.replace, []

    def replace_hook(src, dst, **kwargs):
        final = os.path.abspath(dst) in targets
        if final:
            _reach(f"rename{len(renames) + 1}")
        replace(src, dst, **kwargs)
        if final:
            renames.append(dst)
            if len(renames) == 3:
                _reach("renamed")

    sources.prepare, conversion.convert, exporter._Stages.start = (
        prepare_hook, convert_hook, start_hook)
    os.replace = replace_hook


def tiny_model():
    import keras

    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3),
                             keras.layers.Flatten(), keras.layers.Dense(3)])


def main():
    output = sys.argv[1]
    quantize = sys.argv[2] if len(sys.argv) > 2 else "int8"
    lock_timeout = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
    for name in ("EXPORT_KILL_AT", "EXPORT_PAUSE_AT"):
        if os.environ.get(name) not in (None, *POINTS):
            raise SystemExit(f"{name}={os.environ[name]!r} is not one of {POINTS}")
    data = np.random.default_rng(0).random((16, 8, 8, 1)).astype(np.float32)
    model = tiny_model()
    _install_hooks(output)
    try:
        result = tflite_export.export(model, output, quantize=quantize,
                                      representative_data=data, eval_data=data,
                                      num_threads=(1,), benchmark_runs=2, benchmark_warmup=1,
                                      lock_timeout=lock_timeout)
    except ValueError as e:
        print(json.dumps({"ok": False, "type": type(e).__name__, "message": str(e),
                          "reached": REACHED}))
        return 2
    print(json.dumps({"ok": True, "sha256": result.tflite_sha256, "reached": REACHED}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

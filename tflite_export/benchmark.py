"""Benchmark CLI: `python -m tflite_export.benchmark model.tflite --num_threads=1,4`.

Host mode times the model with LiteRT on this machine. `--android` runs
TFLite's `benchmark_model` on a device or emulator through adb (see
`tflite_export.android`). Run with `--helpfull` for every flag.

`tflite_export.benchmark` is also the host benchmark *function* exported by
the package. Importing this module (e.g. `import tflite_export.benchmark`)
makes Python set the package attribute `benchmark` to this module, so the
module is made callable and forwards calls to the function: both spellings
keep working.
"""

import contextlib
import json
import sys
import types

from absl import app, flags, logging

from tflite_export.host_benchmark import benchmark as _benchmark_function

FLAGS = flags.FLAGS

flags.DEFINE_list("num_threads", ["1"], "Thread counts, comma separated.")
flags.DEFINE_integer("runs", 50, "Timed runs.")
flags.DEFINE_integer("warmup", 5, "Warm-up runs.")
flags.DEFINE_bool("use_xnnpack", True, "Use the XNNPACK delegate.")
flags.DEFINE_bool("json", False, "Print the statistics as JSON instead of a table.")
flags.DEFINE_bool("android", False,
                  "Run on an Android device/emulator with TFLite's benchmark_model via adb.")
flags.DEFINE_string("benchmark_binary", None,
                    "--android: local path of benchmark_model built for the device ABI.")
flags.DEFINE_string("serial", None, "--android: adb serial of the device (default: the only "
                    "online one).")
flags.DEFINE_bool("use_gpu", False, "--android: use the GPU delegate.")
flags.DEFINE_string("adb_path", None, "--android: path of adb (default: adb on PATH).")
flags.DEFINE_float("timeout", 600.0, "--android: seconds allowed for one benchmark run.")


def _format(stats_list):
    header = ("| backend | threads | init | first | min | median | mean | p90 | p99 | std | "
              "memory MB |")
    lines = [header, "|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in stats_list:
        cells = [s.init_ms, s.first_run_ms, s.min_ms, s.median_ms, s.mean_ms, s.p90_ms,
                 s.p99_ms, s.std_ms]
        memory = s.peak_memory_mb if s.peak_memory_mb is not None else s.memory_overall_mb
        lines.append(f"| {s.backend} | {s.num_threads} | " + " | ".join(
            "n/a" if c is None else f"{c:.3f}" for c in cells)
            + f" | {'n/a' if memory is None else f'{memory:.1f}'} |")
    return "\n".join(lines)


def main(argv):
    if len(argv) != 2:
        raise app.UsageError("Give exactly one .tflite file, e.g. "
                             "python -m tflite_export.benchmark model.tflite --num_threads=1,4")
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.INFO)
    from tflite_export import _quiet

    _quiet.setup(tensorflow=False)  # LiteRT without its XNNPACK INFO line
    try:
        threads = [int(t) for t in FLAGS.num_threads]
    except ValueError:
        raise app.UsageError(f"--num_threads takes integers, got {FLAGS.num_threads!r}.")
    results = []
    try:
        # Progress bars go to stderr so stdout holds only the result (e.g. --json).
        with contextlib.redirect_stdout(sys.stderr):
            results = _run_all(argv[1], threads)
    except (ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if FLAGS.json:
        print(json.dumps([s.to_dict() for s in results], indent=2))
    else:
        print(_format(results))
    return 0


def _run_all(model_path, threads):
    results = []
    for n in threads:
        if FLAGS.android:
            from tflite_export import android

            results.append(android.benchmark(
                model_path, FLAGS.benchmark_binary, serial=FLAGS.serial, num_threads=n,
                use_xnnpack=FLAGS.use_xnnpack, use_gpu=FLAGS.use_gpu, runs=FLAGS.runs,
                warmup=FLAGS.warmup, adb_path=FLAGS.adb_path, timeout=FLAGS.timeout))
        else:
            results.append(_benchmark_function(
                model_path, num_threads=n, runs=FLAGS.runs, warmup=FLAGS.warmup,
                use_xnnpack=FLAGS.use_xnnpack, verbose=1))
    return results


class _CallableModule(types.ModuleType):
    """Module type whose instances can be called like the benchmark function."""

    def __call__(self, *args, **kwargs):
        return _benchmark_function(*args, **kwargs)


if __name__ == "__main__":
    app.run(main)
else:
    sys.modules[__name__].__class__ = _CallableModule

"""Plan CLI: `python -m tflite_export.plan MODEL.keras --latency_ms=4 --output=planned.keras`.

Chooses how many channels each group of MODEL keeps so that the converted
model meets a budget, measured with the real runtime (see
`tflite_export.planner.plan_for_budget`), prunes it one-shot to that plan
and shrinks it. Writes the planned model to `--output` and the plan beside
it (`planned.plan.json`, for `tfprune.prune_channels(..., plan=...)` when
fine-tuning the original model), and prints the plan (kept / total channels
per group) and the predicted and measured cost of each round. Progress goes
to stderr.

Budgets: `--latency_ms` (at `--num_threads`, on this machine, or on an
Android device with `--android`), `--macs`, `--params`, `--size_kb`
(`.tflite` size at `--quantize`); several together are all met.

Exit codes: 0 when the budget is met, 3 when it was missed after
`--max_rounds` rounds (the closest plan is still written), 2 for errors
(bad flags, files, data, a device problem), with a one-line message.
Run with `--helpfull` for every flag.
"""

import contextlib
import os
import sys

from absl import app, flags, logging

FLAGS = flags.FLAGS

flags.DEFINE_string("output", None, "Path of the planned .keras model to write; the plan goes "
                    "beside it as <name>.plan.json.")
flags.DEFINE_float("latency_ms", None, "Latency budget in ms at --num_threads, measured on this "
                   "machine (lowest median of 5-run blocks) or with --android.")
flags.DEFINE_float("macs", None, "MACs budget (multiply-accumulates per example).")
flags.DEFINE_float("params", None, "Parameter budget of the shrunk model.")
flags.DEFINE_float("size_kb", None, "Budget of the .tflite file size in KiB at --quantize.")
flags.DEFINE_integer("num_threads", 1, "Runtime threads for the latency budget.")
flags.DEFINE_enum("quantize", "int8", ["int8", "float32"],
                  "Precision the latency and size are measured at.")
flags.DEFINE_string("representative_data", None,
                    "Calibration examples for INT8 conversions: .npy, .npz (x) or "
                    "'fashion_mnist[:N]' (default: random data; the time does not depend on it).")
flags.DEFINE_string("sensitivity_data", None,
                    "Validation examples WITH labels to measure each group's accuracy "
                    "sensitivity: .npz (x and y) or 'fashion_mnist:N' (training split); a few "
                    "hundred suffice. Default: the channels' importance scores.")
flags.DEFINE_string("table", None, "Latency table JSON: used if it exists and was measured for "
                    "this model, precision, threads and device; otherwise measured and saved "
                    "there.")
flags.DEFINE_integer("max_rounds", 4, "Measured rounds at most.")
flags.DEFINE_integer("round_to", 8, "Kept channels per group are multiples of this.")
flags.DEFINE_integer("levels", 3, "Grid points per group when a latency table is measured.")
flags.DEFINE_enum("method", "greedy", ["greedy", "knapsack"], "Allocator.")
flags.DEFINE_float("min_keep", 0.25, "No group keeps fewer than this fraction of its channels.")
flags.DEFINE_list("tolerance", ["0.9", "1.0"],
                  "low,high: a round is accepted when measured/budget is in [low, high].")
flags.DEFINE_string("importance", "l2", "Channel importance ranking (l1, l2, bn_scale).")
flags.DEFINE_bool("android", False, "Measure latency on an Android device or emulator over adb "
                  "with TFLite's benchmark_model.")
flags.DEFINE_string("serial", None, "--android: adb serial (default: the only online device).")
flags.DEFINE_string("benchmark_binary", None,
                    "--android: local path of benchmark_model built for the device ABI.")
flags.DEFINE_string("adb_path", None, "--android: path of adb (default: adb on PATH).")
flags.DEFINE_bool("overwrite", False, "Replace existing files at --output and its plan.")

EXIT_MISSED = 3
"""Exit code when the budget was missed after --max_rounds rounds."""


def _error(e, code):
    """Prints an exception as one line on stderr and returns the exit code."""
    print("error: " + " ".join(str(e).split()), file=sys.stderr)
    return code


def plan_path(output):
    """`planned.keras` -> `planned.plan.json`."""
    base = output[:-len(".keras")] if output.endswith(".keras") else output
    return base + ".plan.json"


def check_paths(model_path, output, overwrite):
    """Checks the model and where the CLI writes, before anything runs.

    Returns:
      `(output, plan_json)` as absolute paths.

    Raises:
      ValueError: If the model is missing, the output is not a `.keras` path
        in an existing folder, would replace the model, or exists without
        `overwrite`.
    """
    if not os.path.isfile(model_path):
        raise ValueError(f"MODEL {model_path!r} does not exist or is not a .keras file.")
    if not output.endswith(".keras"):
        raise ValueError(f"--output={output!r} must end with .keras (the planned Keras model).")
    output = os.path.abspath(output)
    folder = os.path.dirname(output)
    if not os.path.isdir(folder):
        raise ValueError(f"--output={output!r}: the folder {folder!r} does not exist.")
    plan_json = plan_path(output)
    for target in (output, plan_json):
        if os.path.exists(target) and os.path.samefile(target, model_path):
            raise ValueError(f"--output={output!r} would replace MODEL; choose another path "
                             "(--overwrite does not allow this).")
        if os.path.isdir(target):
            raise ValueError(f"{target!r} is a folder; choose another --output.")
        if os.path.exists(target) and not overwrite:
            raise ValueError(f"{target!r} already exists; pass --overwrite to replace it or "
                             "choose another --output.")
    return output, plan_json


def _progress(done, total, message):
    if done <= 1 or done == total or done % 10 == 0 or message.startswith("round"):
        print(f"[{done}/{total}] {message}", file=sys.stderr, flush=True)


def _tolerance(values):
    try:
        low, high = (float(v) for v in values)
    except ValueError:
        raise app.UsageError(f"--tolerance takes two numbers low,high, got {values!r}.")
    return low, high


def main(argv):
    if len(argv) != 2:
        raise app.UsageError("Give exactly one MODEL.keras, e.g. python -m tflite_export.plan "
                             "model.keras --latency_ms=4 --output=planned.keras")
    if not FLAGS.output:
        raise app.UsageError("--output is required, e.g. --output=planned.keras")
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # Progress lines come from _progress.
    tolerance = _tolerance(FLAGS.tolerance)
    from tflite_export import android as android_lib
    from tflite_export import datafiles
    from tflite_export import planner

    try:
        # Flags and paths first: a mistake there fails before TensorFlow starts.
        planner._check_budgets(FLAGS.latency_ms, FLAGS.macs, FLAGS.params, FLAGS.size_kb)
        planner._check_tolerance(tolerance)
        output, plan_json = check_paths(argv[1], FLAGS.output, FLAGS.overwrite)
        if FLAGS.android and not FLAGS.benchmark_binary:
            raise ValueError("--android needs --benchmark_binary: TFLite's benchmark_model "
                             "built for the device ABI (see docs/guides/android.md).")
        from tflite_export import _quiet

        _quiet.setup()  # Before the data: fashion_mnist starts TensorFlow.
        representative = sensitivity = None
        if FLAGS.representative_data:
            representative = datafiles.load(FLAGS.representative_data, "--representative_data",
                                            "train")
            if isinstance(representative, tuple):
                representative = representative[0]
        if FLAGS.sensitivity_data:
            sensitivity = datafiles.load(FLAGS.sensitivity_data, "--sensitivity_data", "train")
            if not isinstance(sensitivity, tuple):
                raise ValueError(f"--sensitivity_data={FLAGS.sensitivity_data!r} has no labels; "
                                 "give an .npz with x and y, or fashion_mnist:N.")
        import keras

        try:
            model = keras.models.load_model(argv[1], compile=False)
        except Exception as e:  # Keras raises many types for unreadable files.
            raise ValueError(f"MODEL {argv[1]!r} could not be loaded as a Keras model: {e}") \
                from None
        with contextlib.redirect_stdout(sys.stderr):
            result = planner.plan_for_budget(
                model, latency_ms=FLAGS.latency_ms, macs=FLAGS.macs, params=FLAGS.params,
                size_kb=FLAGS.size_kb, precision=FLAGS.quantize, num_threads=FLAGS.num_threads,
                representative_data=representative, table=FLAGS.table, sensitivity=sensitivity,
                importance=FLAGS.importance, round_to=FLAGS.round_to, levels=FLAGS.levels,
                method=FLAGS.method,
                max_rounds=FLAGS.max_rounds, tolerance=tolerance, min_keep=FLAGS.min_keep,
                android=FLAGS.android, serial=FLAGS.serial,
                benchmark_binary=FLAGS.benchmark_binary, adb_path=FLAGS.adb_path,
                progress=_progress)
        result.plan.info["source"] = os.path.abspath(argv[1])
        tmp = os.path.join(os.path.dirname(output), f".{os.path.basename(output)}.tmp"
                           f"{os.getpid()}.keras")
        try:
            result.model.save(tmp)
            os.replace(tmp, output)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        result.plan.save(plan_json)
    except (ValueError, android_lib.AndroidError) as e:
        return _error(e, 2)
    except OSError as e:
        return _error(e, 1)
    print(result.summary())
    if result.table is not None:
        print("\n" + result.table.summary())
    print(f"\nWrote {output} (pruned one-shot and shrunk: fine-tune it next) and {plan_json}")
    return 0 if result.met else EXIT_MISSED


def run():
    """Entry point for console scripts."""
    app.run(main)


if __name__ == "__main__":
    run()

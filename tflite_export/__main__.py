"""Export CLI: `python -m tflite_export MODEL --output=model.tflite [flags]`.

MODEL is a `.keras` file or a SavedModel folder. Writes the `.tflite`, its
`.report.json` and `.report.md`, and prints the Markdown report. Run with
`--helpfull` for every flag.
"""

import contextlib
import sys

from absl import app, flags, logging

FLAGS = flags.FLAGS

flags.DEFINE_string("output", None, "Path of the .tflite file to write; its folder must exist.")
flags.DEFINE_enum("quantize", "int8", ["int8", "dynamic", "float16", "float32"],
                  "Quantization mode.")
flags.DEFINE_string("representative_data", None,
                    "Calibration data for int8: .npy, .npz (x) or 'fashion_mnist[:N]'.")
flags.DEFINE_string("eval_data", None,
                    "Evaluation data: .npy (x), .npz (x and optional y) or "
                    "'fashion_mnist[:N]' (test split with labels).")
flags.DEFINE_list("num_threads", ["1", "4"],
                  "Thread counts to benchmark with, comma separated; empty to skip.")
flags.DEFINE_enum("inference_input_type", None, ["int8", "uint8", "float32"],
                  "Input tensor type of an int8 model (default int8).")
flags.DEFINE_enum("inference_output_type", None, ["int8", "uint8", "float32"],
                  "Output tensor type of an int8 model (default int8).")
flags.DEFINE_bool("allow_float_fallback", False,
                  "int8: let ops without an INT8 kernel run in float instead of failing.")
flags.DEFINE_enum("sparse_format", "auto", ["auto", "always", "never"],
                  "Store unstructured-sparse weights in TFLite's sparse format.")
flags.DEFINE_list("input_shape", None,
                  "Example shape without batch, e.g. 224,224,3, for inputs of unknown size.")
flags.DEFINE_integer("max_calibration_samples", 200, "Calibration examples used at most.")
flags.DEFINE_integer("max_eval_samples", None, "Evaluation examples used at most.")
flags.DEFINE_integer("runs", 50, "Timed benchmark runs per thread count.")
flags.DEFINE_integer("warmup", 5, "Warm-up runs per thread count.")
flags.DEFINE_bool("overwrite", False,
                  "Replace existing files at --output and its reports even if they were not "
                  "written by an export (an earlier export's files are always replaced). "
                  "Never replaces MODEL.")
flags.DEFINE_float("lock_timeout", 0.0,
                   "Seconds to wait while another export writes the same --output, then fail.")


def _error(e, code):
    """Prints an exception as one line on stderr and returns the exit code."""
    print("error: " + " ".join(str(e).split()), file=sys.stderr)
    return code


def _ints(values, flag):
    try:
        return [int(v) for v in values if v.strip()]
    except ValueError:
        raise app.UsageError(f"--{flag} takes comma-separated integers, got {values!r}.")


def main(argv):
    if len(argv) != 2:
        raise app.UsageError("Give exactly one MODEL (.keras file or SavedModel folder), e.g. "
                             "python -m tflite_export model.keras --output=model.tflite")
    if not FLAGS.output:
        raise app.UsageError("--output is required, e.g. --output=model.tflite")
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.INFO)  # Progress of each stage on stderr.
    from tflite_export import _quiet

    _quiet.setup()  # TensorFlow/LiteRT without their CUDA/oneDNN start-up lines

    import tflite_export
    from tflite_export import datafiles
    from tflite_export.exporter import check_output_path

    try:
        # Paths first: a wrong --output fails before any data is loaded.
        check_output_path(argv[1], FLAGS.output, overwrite=FLAGS.overwrite)
        representative = eval_data = None
        if FLAGS.representative_data:
            representative = datafiles.load(FLAGS.representative_data,
                                            "--representative_data", "train")
            if isinstance(representative, tuple):
                representative = representative[0]
        if FLAGS.eval_data:
            eval_data = datafiles.load(FLAGS.eval_data, "--eval_data", "test")
        input_shape = _ints(FLAGS.input_shape, "input_shape") if FLAGS.input_shape else None
        # Progress bars go to stderr so stdout holds only the report.
        with contextlib.redirect_stdout(sys.stderr):
            report = tflite_export.export(
                argv[1],
                FLAGS.output,
                quantize=FLAGS.quantize,
                representative_data=representative,
                eval_data=eval_data,
                num_threads=_ints(FLAGS.num_threads, "num_threads"),
                inference_input_type=FLAGS.inference_input_type,
                inference_output_type=FLAGS.inference_output_type,
                allow_float_fallback=FLAGS.allow_float_fallback,
                sparse_format=FLAGS.sparse_format,
                input_shape=input_shape,
                max_calibration_samples=FLAGS.max_calibration_samples,
                max_eval_samples=FLAGS.max_eval_samples,
                benchmark_runs=FLAGS.runs,
                benchmark_warmup=FLAGS.warmup,
                overwrite=FLAGS.overwrite,
                lock_timeout=FLAGS.lock_timeout,
                verbose=1,
            )
    except ValueError as e:
        return _error(e, 2)
    except OSError as e:  # A full disk or a file system error while writing.
        return _error(e, 1)
    json_path, md_path = tflite_export.report_paths(report.tflite_path)
    print(report.to_markdown())
    print(f"Wrote {report.tflite_path}, {json_path} and {md_path}")
    return 0


def run():
    """Entry point for console scripts."""
    app.run(main)


if __name__ == "__main__":
    run()

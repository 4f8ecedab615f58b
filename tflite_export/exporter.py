"""`export`: from a (pruned) model to a `.tflite` file plus its report."""

import gzip
import os
import time

from absl import logging

from tflite_export import _io
from tflite_export import conversion
from tflite_export import data as data_lib
from tflite_export import evaluation
from tflite_export import host_benchmark
from tflite_export import inspection
from tflite_export import macs as macs_lib
from tflite_export import sources
from tflite_export.report import ExportReport, report_paths


def _thread_counts(num_threads):
    if num_threads is None:
        return []
    values = [num_threads] if isinstance(num_threads, int) else list(num_threads)
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"num_threads={num_threads!r}: every thread count must be an "
                             "integer >= 1 (or pass None/() to skip benchmarking).")
    return sorted(set(values))


class _Stages:
    """Logs numbered progress and records the time of each export stage."""

    def __init__(self, names):
        self._names = list(names)
        self.timings = {}
        self._current = None
        self._start = None

    def start(self, name):
        self.stop()
        index = self._names.index(name) + 1 if name in self._names else "?"
        logging.info("[%s/%d] %s", index, len(self._names), name)
        self._current, self._start = name, time.perf_counter()

    def stop(self):
        if self._current is not None:
            self.timings[self._current] = round(time.perf_counter() - self._start, 3)
            self._current = None


def _count_macs(prepared, content):
    model = prepared.keras_model
    if model is not None:
        try:
            # Layer shapes are only exact when the Keras graph has fixed sizes.
            fixed = all(d is not None for t in model.inputs for d in tuple(t.shape)[1:])
        except (AttributeError, ValueError):
            fixed = False
        if fixed:
            try:
                return macs_lib.count_macs(model), "keras"
            except macs_lib.MacCountError as e:
                logging.info("%s", e)
    return macs_lib.count_tflite_macs(content), "tflite"


def export(model, output_path, quantize="int8", representative_data=None, eval_data=None,
           num_threads=(1, 4), *, inference_input_type=None, inference_output_type=None,
           allow_float_fallback=False, sparse_format="auto", input_shape=None,
           max_calibration_samples=200, max_eval_samples=None, benchmark_runs=50,
           benchmark_warmup=5, verbose=0):
    """Converts a model to TFLite, measures it and writes the file and its report.

    Writes `output_path` (e.g. `model.tflite`), `model.report.json` and
    `model.report.md` beside it. Nothing is written until every check,
    the conversion, the benchmark and the evaluation have succeeded; then
    the three files are moved into place atomically.

    Args:
      model: A Keras 3 model (tfprune wrappers are stripped and masked
        channels removed with `tfprune.shrink`), a `.keras` file path, a
        SavedModel folder, or a tf_keras model pruned with tfmot.
      output_path: The `.tflite` file to write; its folder must exist.
      quantize: `"int8"` (full-integer, needs `representative_data`),
        `"dynamic"`, `"float16"` or `"float32"`.
      representative_data: Calibration examples for int8: a NumPy array
        `(N, *input_shape)`, a `tf.data.Dataset` or a generator (elements `x`,
        `[x]` or `(x, y)`, batched or not). Checked against the model input
        shape and dtype.
      eval_data: Examples to compare the `.tflite` with the source model:
        `x`, `(x, y)`, a Dataset or a generator; labels (class indices or
        one-hot) add accuracy to the report.
      num_threads: Thread count(s) to benchmark with; None or `()` skips the
        benchmark.
      inference_input_type: int8 models only: `"int8"` (default), `"uint8"`
        or `"float32"` input tensors (float inputs are quantized inside the
        model).
      inference_output_type: Same for the outputs (default `"int8"`).
      allow_float_fallback: int8 only: let ops without an INT8 kernel run in
        float instead of failing.
      sparse_format: `"auto"`, `"always"` or `"never"` use TFLite's sparse
        tensor format for unstructured-sparse weights (see `conversion`).
      input_shape: Example shape without batch dimension, to fix unknown input
        sizes (e.g. `(224, 224, 3)` for MobileNetV3 built without one).
      max_calibration_samples: Calibration examples used at most.
      max_eval_samples: Evaluation examples used at most (None: all).
      benchmark_runs: Timed runs per thread count.
      benchmark_warmup: Warm-up runs per thread count.
      verbose: 1 shows progress bars for evaluation and benchmarking.

    Returns:
      The `ExportReport` that was written.

    Raises:
      ValueError: For bad arguments or data (named in the message), a missing
        output folder, or a model that cannot be converted; raised before any
        file is written.
      conversion.UnsupportedOpsError: (a ValueError) if ops have no INT8
        kernel and `allow_float_fallback` is False.
    """
    output_path = _io.check_output_folder(output_path, "output_path")
    input_type, output_type = conversion.resolve_options(
        quantize, inference_input_type, inference_output_type, sparse_format)
    threads = _thread_counts(num_threads)
    if quantize == "int8" and representative_data is None:
        raise ValueError("quantize='int8' needs representative_data (e.g. 100-500 training "
                         "examples) to calibrate activation ranges; or choose "
                         "quantize='dynamic'.")

    stages = _Stages(["prepare model", "check data", "convert", "inspect", "evaluate",
                      "benchmark", "write files"])
    stages.start("prepare model")
    prepared = sources.prepare(model, input_shape=input_shape)
    temps = []
    try:
        stages.start("check data")
        samples = None
        if representative_data is not None and quantize == "int8":
            samples = data_lib.representative_samples(
                representative_data, prepared.signatures, max_samples=max_calibration_samples)
        elif representative_data is not None:
            logging.info("representative_data is only used by quantize='int8'; ignored.")
        eval_inputs = eval_labels = None
        if eval_data is not None:
            eval_inputs, eval_labels = data_lib.eval_arrays(
                eval_data, prepared.signatures, max_samples=max_eval_samples)

        stages.start("convert")
        result = conversion.convert(
            prepared.saved_model_dir, quantize, samples, input_type, output_type,
            allow_float_fallback, sparse_format, prepared.max_weight_sparsity)
        content = result.content

        stages.start("inspect")
        description = inspection.describe(content)
        macs, macs_source = _count_macs(prepared, content)
        tflite_tmp = _io.temp_path_beside(output_path)
        temps.append(tflite_tmp)
        with open(tflite_tmp, "wb") as f:
            f.write(content)

        fidelity = accuracy = None
        if eval_inputs is not None:
            stages.start("evaluate")
            names = [s.name for s in prepared.signatures]
            reference = prepared.reference(eval_inputs)
            tflite_out = evaluation.TFLiteRunner(tflite_tmp).predict(
                eval_inputs, names=names, verbose=verbose)
            fidelity, accuracy = evaluation.compare(reference, tflite_out, eval_labels)

        latency = {}
        if threads:
            stages.start("benchmark")
            for n in threads:
                stats = host_benchmark.benchmark(tflite_tmp, num_threads=n, runs=benchmark_runs,
                                                 warmup=benchmark_warmup, verbose=verbose)
                latency[str(n)] = stats.to_dict()

        stages.start("write files")
        report = ExportReport(
            model_name=prepared.name,
            tflite_path=output_path,
            quantize=quantize,
            size_bytes=len(content),
            gzip_size_bytes=len(gzip.compress(content, compresslevel=9)),
            params=prepared.params,
            nonzero_params=prepared.nonzero_params,
            macs=macs,
            macs_source=macs_source,
            source={"kind": prepared.kind, "path": prepared.source_path,
                    "stripped": prepared.stripped, "shrunk": prepared.shrunk},
            sparse_format=result.sparse,
            dense_size_bytes=result.dense_size,
            input_dtypes=[t["dtype"] for t in description["inputs"]],
            output_dtypes=[t["dtype"] for t in description["outputs"]],
            inputs=description["inputs"],
            outputs=description["outputs"],
            weight_dtypes=description["weight_dtypes"],
            op_counts=description["op_counts"],
            float_ops=result.float_ops,
            latency_ms=latency,
            fidelity=fidelity,
            accuracy=accuracy,
        )
        json_path, md_path = report_paths(output_path)
        json_tmp, md_tmp = _io.temp_path_beside(json_path), _io.temp_path_beside(md_path)
        temps += [json_tmp, md_tmp]
        stages.stop()
        report.timings_s = dict(stages.timings)
        report.save(json_tmp, md_tmp)
        # All content exists; the renames below cannot half-fail on content.
        os.replace(tflite_tmp, output_path)
        os.replace(json_tmp, json_path)
        os.replace(md_tmp, md_path)
        temps = []
        logging.info("Wrote %s (%d bytes), %s and %s", output_path, report.size_bytes,
                     json_path, md_path)
        return report
    finally:
        for path in temps:
            _io.remove_quietly(path)
        prepared.cleanup()

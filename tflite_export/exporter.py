"""`export`: from a (pruned) model to a `.tflite` file plus its report."""

import gzip
import hashlib
import math
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
from tflite_export import report as report_lib
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



# --- Where export may write ---------------------------------------------------------------


def _source_path(model):
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        return os.path.abspath(os.fsdecode(path) if isinstance(path, bytes) else path)
    return None


def _is_source(target, source):
    """True if writing `target` would touch the model file or folder `source`."""
    if os.path.realpath(target) == os.path.realpath(source):
        return True
    if not os.path.lexists(target):
        return False
    try:
        if os.path.exists(target) and os.path.exists(source) and os.path.samefile(target,
                                                                                     source):
            return True
    except OSError:
        pass
    if os.path.isdir(source):  # A SavedModel folder: its files are the model too.
        inside = os.path.realpath(target)
        root = os.path.realpath(source)
        return os.path.commonpath([inside, root]) == root
    return False


def _check_not_source(model, targets):
    source = _source_path(model)
    if source is None:
        return
    for target in targets:
        if _is_source(target, source):
            stem = os.path.splitext(source.rstrip(os.sep))[0]
            suggestion = stem + ".tflite"
            if os.path.realpath(suggestion) == os.path.realpath(source):
                suggestion = source + ".tflite"
            raise ValueError(
                f"output_path={targets[0]!r}: writing {target!r} would replace the model being "
                f"exported ({source!r}) with TFLite output. Choose another output path, e.g. "
                f"{suggestion!r} (overwrite=True does not allow this)."
            )


def _not_ours(target, output_path, reason):
    return ValueError(
        f"output_path={output_path!r}: {target!r} already exists and is not a file written "
        f"by tflite_export.export ({reason}). Pass overwrite=True (CLI: --overwrite) to "
        "replace it, or choose another output path."
    )


def _check_not_folders(output_path, targets):
    for target in targets:
        if os.path.isdir(target):
            raise ValueError(
                f"output_path={output_path!r}: {target!r} is a folder, so the export could "
                "not be written there; remove or rename that folder, or choose another "
                "output path."
            )


def _check_replaceable(output_path, targets, overwrite):
    """Refuses to replace files that are not an earlier export's.

    An earlier export's files are recognised by their report: the
    `.report.json` beside the output is an `ExportReport` written for this
    output name that records the SHA-256 and size of the `.tflite` there, and
    the `.report.md` repeats that SHA-256. Anything else (a user's file, a
    symlink, a report whose `.tflite` was changed) is only replaced with
    `overwrite=True`.
    """
    _check_not_folders(output_path, targets)
    existing = [t for t in targets if os.path.lexists(t)]
    if not existing or overwrite:
        return
    tflite_path, json_path, md_path = targets
    for target in existing:
        if os.path.islink(target):
            raise _not_ours(target, output_path, "it is a symbolic link; with overwrite=True "
                                                 "the link itself is replaced, not its target")
    if json_path not in existing:
        raise _not_ours(existing[0], output_path, f"there is no report {json_path!r} beside it")
    try:
        report = report_lib.load_report(json_path, verify=False)
    except ValueError as e:
        raise _not_ours(json_path, output_path, f"it is not an export report: {e}") from e
    if not report.tflite_sha256:
        raise _not_ours(json_path, output_path,
                        "the report records no SHA-256: it is from an older tflite_export, or "
                        "not a report of this export")
    if os.path.basename(report.tflite_path) != os.path.basename(tflite_path):
        raise _not_ours(json_path, output_path,
                        f"the report describes {os.path.basename(report.tflite_path)!r}")
    if tflite_path in existing:
        try:
            report_lib.check_matches(report, tflite_path, json_path)
        except ValueError:
            raise _not_ours(tflite_path, output_path,
                            f"its SHA-256 is not the one {json_path!r} records: the file was "
                            "changed after the export") from None
    if md_path in existing:
        try:
            with open(md_path, encoding="utf-8", errors="replace") as f:
                text = f.read(1 << 20)
        except OSError as e:
            raise _not_ours(md_path, output_path, f"it cannot be read: {e}") from e
        if report.tflite_sha256 not in text:
            raise _not_ours(md_path, output_path,
                            f"it does not carry the SHA-256 that {json_path!r} records")


def check_output_path(model, output_path, overwrite=False):
    """Checks where `export(model, output_path)` would write, without touching files.

    Whether existing files may be replaced is checked by `export` itself,
    under the output's lock, after a killed export's renames were finished.

    Returns:
      `(output_path, json_path, md_path)` as absolute paths.

    Raises:
      ValueError: If the folder is missing, a target is a folder, the name is
        too long, or the output is the model itself.
    """
    if not isinstance(overwrite, bool):
        raise ValueError(f"overwrite={overwrite!r} must be True or False.")
    output_path = _io.check_output_folder(output_path, "output_path")
    targets = (output_path,) + tuple(report_paths(output_path))
    _io.check_name_lengths(targets)
    _check_not_source(model, targets)
    _check_not_folders(output_path, targets)
    return targets


def _lock_seconds(lock_timeout):
    if (isinstance(lock_timeout, bool) or not isinstance(lock_timeout, (int, float))
            or not math.isfinite(lock_timeout) or lock_timeout < 0):
        raise ValueError(f"lock_timeout={lock_timeout!r} must be a number of seconds >= 0.")
    return float(lock_timeout)


def export(model, output_path, quantize="int8", representative_data=None, eval_data=None,
           num_threads=(1, 4), *, inference_input_type=None, inference_output_type=None,
           allow_float_fallback=False, sparse_format="auto", input_shape=None,
           max_calibration_samples=200, max_eval_samples=None, benchmark_runs=50,
           benchmark_warmup=5, overwrite=False, lock_timeout=0.0, verbose=0, budget=None):
    """Converts a model to TFLite, measures it and writes the file and its report.

    Writes `output_path` (e.g. `model.tflite`), `model.report.json` and
    `model.report.md` beside it. Nothing is written until every check,
    the conversion, the benchmark and the evaluation have succeeded; then
    the three files are moved into place as one unit (see `_io`): a process
    killed half-way leaves the earlier files, or finishes its renames on the
    next export to that folder. The report records the `.tflite`'s SHA-256,
    which `load_report` checks.

    While it runs, the export holds a lock on the output (a hidden
    `.<name>.tflite_export.lock` beside it) and keeps its temporaries,
    SavedModel included, in a hidden `.<name>.tflite_export-<pid>-*.tmp`
    folder beside it; both are removed when it returns or raises, and those
    of killed exports by the next export to that folder.

    Args:
      model: A Keras 3 model (tfprune wrappers are stripped and masked
        channels removed with `tfprune.shrink`), a `.keras` file path, a
        SavedModel folder, or a tf_keras model pruned with tfmot.
      output_path: The `.tflite` file to write; its folder must exist and be
        writable. It must not be the model itself.
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
      max_eval_samples: Evaluation examples used at most (None: all; a
        generator stops after 10,000, an endless Dataset needs a limit).
      benchmark_runs: Timed runs per thread count.
      benchmark_warmup: Warm-up runs per thread count.
      overwrite: Replace existing files at the three paths even if they are
        not an earlier export's (the `.tflite` of an earlier export, whose
        report records its SHA-256, is always replaced). Never replaces the
        model being exported.
      lock_timeout: Seconds to wait while another export writes the same
        output (at least `_io.LOCK_GRACE_S`), then fail.
      verbose: 1 shows progress bars for evaluation and benchmarking.
      budget: Optional budget the model was planned for, shown next to the
        measured numbers (report key `budget`, "met"/"missed"): a dict with
        `latency_ms` (compared with the median at its `num_threads`, default
        1), `size_kb`, `macs` and/or `params`, plus any facts to keep
        (`rounds`, `predicted_ms`); `PlanResult.export_budget()` makes one.

    Returns:
      The `ExportReport` that was written.

    Raises:
      ValueError: For bad arguments or data (named in the message), a missing
        or read-only output folder, an output path that is the model or an
        existing file not written by an export (without `overwrite`), or a
        model that cannot be converted; raised before any file is written.
      conversion.UnsupportedOpsError: (a ValueError) if ops have no INT8
        kernel and `allow_float_fallback` is False.
      _io.OutputBusyError: (a ValueError) if another export writes the same
        output for longer than `lock_timeout`.
      OSError: If the disk fills up while writing (nothing is left
        half-written).
    """
    targets = check_output_path(model, output_path, overwrite)
    output_path, json_path, md_path = targets
    input_type, output_type = conversion.resolve_options(
        quantize, inference_input_type, inference_output_type, sparse_format)
    threads = _thread_counts(num_threads)
    wait = _lock_seconds(lock_timeout)
    if budget is not None:
        report_lib.check_budget(budget, {}, 0, 0, 0)  # A bad budget fails before any work.
    if quantize == "int8" and representative_data is None:
        raise ValueError("quantize='int8' needs representative_data (e.g. 100-500 training "
                         "examples) to calibrate activation ranges; or choose "
                         "quantize='dynamic'.")
    from tflite_export import backend_bridge  # Imports Keras: only when exporting.

    if backend_bridge.needs_tensorflow_process(model):
        # JAX or PyTorch: the same export, run in a TensorFlow process.
        return backend_bridge.run_export(model, output_path, dict(
            quantize=quantize, representative_data=representative_data, eval_data=eval_data,
            num_threads=threads, inference_input_type=inference_input_type,
            inference_output_type=inference_output_type,
            allow_float_fallback=allow_float_fallback, sparse_format=sparse_format,
            input_shape=input_shape, max_calibration_samples=max_calibration_samples,
            max_eval_samples=max_eval_samples, benchmark_runs=benchmark_runs,
            benchmark_warmup=benchmark_warmup, overwrite=overwrite, lock_timeout=lock_timeout,
            verbose=verbose, budget=budget))

    folder = os.path.dirname(output_path)
    key = _io.name_key(os.path.basename(json_path)[:-len(".report.json")])
    with _io.OutputLock(folder, key, output_path, timeout=wait):
        # A killed export's renames are finished first, so its files count as an export's.
        _io.clean_stale(folder, held_key=key)
        _check_replaceable(output_path, targets, overwrite)
        work = _io.WorkDir(folder, key)
        try:
            return _export_in(
                work, model, targets, quantize=quantize, representative_data=representative_data,
                eval_data=eval_data, threads=threads, input_type=input_type,
                output_type=output_type, allow_float_fallback=allow_float_fallback,
                sparse_format=sparse_format, input_shape=input_shape,
                max_calibration_samples=max_calibration_samples,
                max_eval_samples=max_eval_samples, benchmark_runs=benchmark_runs,
                benchmark_warmup=benchmark_warmup, overwrite=overwrite, verbose=verbose,
                budget=budget)
        finally:
            work.remove()


def _export_in(work, model, targets, *, quantize, representative_data, eval_data, threads,
               input_type, output_type, allow_float_fallback, sparse_format, input_shape,
               max_calibration_samples, max_eval_samples, benchmark_runs, benchmark_warmup,
               overwrite, verbose, budget=None):
    """The export proper; every file goes to `work` until the final commit."""
    output_path, json_path, md_path = targets
    stages = _Stages(["prepare model", "check data", "convert", "inspect", "evaluate",
                      "benchmark", "write files"])
    stages.start("prepare model")
    # The temporary SavedModel goes into the work folder beside the output
    # (named with the PID, removed by the next export if this one is killed).
    prepared = sources.prepare(model, input_shape=input_shape, temp_dir=work.path)
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
            evaluation.check_eval_labels(prepared, eval_inputs, eval_labels)

        stages.start("convert")
        result = conversion.convert(
            prepared.saved_model_dir, quantize, samples, input_type, output_type,
            allow_float_fallback, sparse_format, prepared.max_weight_sparsity)
        content = result.content

        stages.start("inspect")
        description = inspection.describe(content)
        macs, macs_source = _count_macs(prepared, content)
        tflite_tmp = work.file(os.path.basename(output_path))
        _io.write_new_file(tflite_tmp, content, mode=_io.existing_mode(output_path))

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
            tflite_sha256=hashlib.sha256(content).hexdigest(),
            budget=None if budget is None else report_lib.check_budget(
                budget, latency, len(content), macs, prepared.params),
        )
        json_tmp = work.file(os.path.basename(json_path))
        md_tmp = work.file(os.path.basename(md_path))
        stages.stop()
        report.timings_s = dict(stages.timings)
        _io.write_new_file(json_tmp, report.to_json().encode("utf-8"),
                           mode=_io.existing_mode(json_path))
        _io.write_new_file(md_tmp, report.to_markdown().encode("utf-8"),
                           mode=_io.existing_mode(md_path))
        # Whatever appeared meanwhile (not by an export: we hold the lock).
        _check_replaceable(output_path, targets, overwrite)
        # The .tflite first and the JSON report, which vouches for it, last.
        work.commit([(tflite_tmp, output_path), (md_tmp, md_path), (json_tmp, json_path)])
        logging.info("Wrote %s (%d bytes), %s and %s", output_path, report.size_bytes,
                     json_path, md_path)
        return report
    finally:
        prepared.cleanup()

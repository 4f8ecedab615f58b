"""Exporting from a JAX or PyTorch process: the conversion runs in a TensorFlow process.

TFLite's converter is part of TensorFlow, and `export` converts a SavedModel
that a Keras model on the TensorFlow backend writes. A `.keras` file does
not depend on the backend it was saved from, so when the Keras backend is
not TensorFlow, `export` (through `run_export`) hands the model over as a
file:

1. Before anything is written: TensorFlow must be installed, and the data
   must be NumPy arrays (or the backend's tensors, converted here): `x`,
   `(x, y)`, `[x1, x2, ...]` or `([x1, x2, ...], y)`. Datasets, generators
   and data loaders raise a `ValueError` that says so.
2. The model (saved with `model.save`, unless a path was given), the data
   (`data.npz`) and the arguments (`job.json`) go into a private work folder
   beside the output: the hidden `.<name>.tflite_export-<pid>-*.tmp` folder
   of `_io.WorkDir` (mode 0700), removed when the export returns or raises,
   and by the next export to that folder if this process is killed.
3. `python -m tflite_export.backend_bridge <work folder>` runs with
   `KERAS_BACKEND=tensorflow` and calls `tflite_export.export` with the same
   arguments, so the lock, the checks, the journaled commit and the report
   are those of any export. Its stderr is passed on as it comes, without
   TensorFlow's start-up noise (`_quiet.is_noise`); progress bars show with
   `verbose=1`, stage messages at this process's absl verbosity.
4. The report is read back with `load_report`. A failure comes back as the
   exception the export raised there, with the same message: `ValueError`,
   `OutputBusyError`, `UnsupportedOpsError` (with its `ops`), `OSError`
   (with its `errno`) or another built-in type; anything else as an
   `ExportProcessError` naming the original type.

Why not Keras's own LiteRT export (Keras 3.15, `model.export(path,
format="litert")`): on JAX it raises "LiteRT export requires TensorFlow or
PyTorch backend"; on PyTorch it needs the `litert-torch` package and
quantizes through PyTorch's PT2E quantizer, without TFLite's representative
data calibration, sparse weight format or this module's report. A
TensorFlow process gives the same `.tflite` and report as a TensorFlow
training would.

The child loads a model handed over as an object with `safe_mode=False`
(it is this process's own model, e.g. with `Lambda` layers). Custom layers
must be importable in the child: they are found through this process's
`sys.path`, so define them in a module (not the script run as `__main__`)
and register them with `keras.saving.register_keras_serializable()`.
"""

import builtins
import collections
import contextlib
import importlib
import importlib.util
import json
import os
import subprocess
import sys
import traceback

import numpy as np
from absl import logging

from tflite_export import _io
from tflite_export import _quiet

JOB_FILE = "job.json"
DATA_FILE = "data.npz"
MODEL_FILE = "model.keras"
ERROR_FILE = "error.json"
# Lines of the child's stderr kept to explain a crash.
_STDERR_TAIL = 60
# Modules whose exception classes are rebuilt in this process.
_OWN_MODULES = ("tflite_export.", "tfprune.")


class ExportProcessError(RuntimeError):
    """The TensorFlow process failed with an error that has no equivalent here.

    Attributes:
      error_type: Qualified name of the original exception class (e.g.
        `tensorflow.lite.python.convert_phase.ConverterError`), or None if
        the process died without raising (killed, crashed).
      child_traceback: The traceback printed in the TensorFlow process, if any.
    """

    def __init__(self, message, error_type=None, child_traceback=None):
        super().__init__(message)
        self.error_type = error_type
        self.child_traceback = child_traceback


def backend():
    """The Keras backend of this process."""
    import keras

    return keras.backend.backend()


def needs_tensorflow_process(model):
    """Whether `export(model, ...)` has to convert in a TensorFlow process.

    True when the Keras backend is not TensorFlow and the model is a Keras 3
    model or a path (a `.keras` file or SavedModel folder). A tf_keras model
    is TensorFlow already and is exported in this process.

    Args:
      model: What was passed to `export`.
    """
    if isinstance(model, (str, bytes, os.PathLike)):
        return backend() != "tensorflow"
    import keras

    return backend() != "tensorflow" and isinstance(model, keras.Model)


def check_tensorflow_installed():
    """Raises ImportError with the remedy when TensorFlow cannot be imported.

    Raises:
      ImportError: If TensorFlow is not installed.
    """
    if importlib.util.find_spec("tensorflow") is None:
        raise ImportError(
            "export needs TensorFlow: pip install tensorflow. The TFLite converter is part "
            f"of TensorFlow; on the {backend()} backend, tflite_export.export runs it in a "
            f"separate TensorFlow process (training stays on {backend()}).")


# --- Arguments and data as files ------------------------------------------------------------


class _Encoder:
    """Turns argument values into JSON, with arrays in a separate `.npz`.

    JSON objects are markers: `{"tuple": [...]}`, `{"dict": [[key, value],
    ...]}`, `{"array": name}`; lists, strings, numbers, booleans and None
    stay as they are. Tuples stay tuples (`(x, y)` and `[x1, x2]` mean
    different things to `export`).
    """

    def __init__(self):
        self.arrays = {}

    def _array(self, value):
        name = f"a{len(self.arrays)}"
        self.arrays[name] = value
        return {"array": name}

    def encode(self, value, argument):
        """Encodes one argument value.

        Raises:
          ValueError: If a value is neither plain data nor an array.
        """
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, np.generic):
            return self._array(np.asarray(value))
        array = _as_numpy(value)
        if array is not None:
            if array.dtype == object:
                raise ValueError(
                    f"{argument} holds Python objects (dtype object, shape "
                    f"{tuple(array.shape)}); give a numeric NumPy array.")
            return self._array(array)
        if isinstance(value, list):
            return [self.encode(v, argument) for v in value]
        if isinstance(value, tuple):
            return {"tuple": [self.encode(v, argument) for v in value]}
        if isinstance(value, dict) and all(isinstance(k, str) for k in value):
            return {"dict": [[k, self.encode(v, argument)] for k, v in value.items()]}
        raise ValueError(
            f"{argument}: a {type(value).__module__}.{type(value).__name__} cannot be "
            f"passed to the TensorFlow process that exports on the {backend()} backend; "
            "give plain numbers, strings, lists, tuples, dicts or NumPy arrays.")


def _decode(value, arrays):
    if isinstance(value, list):
        return [_decode(v, arrays) for v in value]
    if isinstance(value, dict):
        if "array" in value:
            array = arrays[value["array"]]
            return array[()] if array.ndim == 0 else array
        if "tuple" in value:
            return tuple(_decode(v, arrays) for v in value["tuple"])
        return {k: _decode(v, arrays) for k, v in value["dict"]}
    return value


def _as_numpy(value):
    """A NumPy array for arrays and tensors of any backend, else None."""
    if isinstance(value, np.ndarray):
        return value
    module = type(value).__module__
    if module.startswith("tensorflow") and hasattr(value, "element_spec"):
        return None  # A tf.data.Dataset.
    import keras

    if keras.ops.is_tensor(value):
        return keras.ops.convert_to_numpy(value)
    if module.startswith("tensorflow") and hasattr(value, "numpy"):
        return np.asarray(value.numpy())
    if module.startswith("torch") and hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    if hasattr(value, "__array__") and hasattr(value, "shape") and hasattr(value, "dtype"):
        return np.asarray(value)
    return None


def _is_leaf(value):
    return (value is None or isinstance(value, (bool, int, float, np.generic))
            or _as_numpy(value) is not None)


def _check_in_memory(data, argument):
    """Raises unless `data` is arrays in the forms `export` takes (labels may be a list)."""
    if _as_numpy(data) is not None:
        return
    if isinstance(data, (list, tuple)) and data:
        ok = all(
            _is_leaf(item) or (isinstance(item, (list, tuple)) and item
                               and all(_is_leaf(v) for v in item))
            for item in data)
        if ok:
            return
    raise ValueError(
        f"{argument} is a {type(data).__module__}.{type(data).__name__}: on the {backend()} "
        "backend, export converts the model in a TensorFlow process and takes data as "
        "NumPy arrays (or tensors): x, (x, y), [x1, x2, ...] or ([x1, x2, ...], y). "
        f"Pass NumPy arrays, e.g. x = np.concatenate([np.asarray(batch[0]) for batch in "
        f"{argument}]).")


def _encode_arguments(arguments):
    """Checks and encodes the arguments; returns `(JSON-able dict, arrays)`.

    Raises:
      ValueError: If the data is not arrays, or a value cannot be passed on.
    """
    encoder = _Encoder()
    encoded = {}
    for name, value in arguments.items():
        if name in ("representative_data", "eval_data") and value is not None:
            _check_in_memory(value, name)
        encoded[name] = encoder.encode(value, name)
    return encoded, encoder.arrays


def _save_model(model, path):
    try:
        # Keras's saving imports TensorFlow when it is installed (to check for
        # it); its start-up lines would reach the user's terminal.
        with _quiet.filtered_stderr():
            model.save(path)
    except OSError:
        raise
    except Exception as e:  # pylint: disable=broad-except  Any saving failure.
        raise ValueError(
            f"Model {model.name!r}: on the {backend()} backend, export converts the model "
            f"in a TensorFlow process and hands it over as a .keras file, but model.save "
            f"failed: {type(e).__name__}: {e}. Make every layer serializable (custom "
            "layers: @keras.saving.register_keras_serializable() and get_config), or export "
            "from a TensorFlow process.") from e


def _write_job(work, model, output_path, encoded, arrays):
    """Writes the model (unless it is a path), the data and the job into `work`."""
    if isinstance(model, (str, bytes, os.PathLike)):
        path = os.fspath(model)
        model_path = os.path.abspath(os.fsdecode(path) if isinstance(path, bytes) else path)
        saved = False
    else:
        model_path = work.file(MODEL_FILE)
        _save_model(model, model_path)
        saved = True
    with open(work.file(DATA_FILE), "wb") as f:
        np.savez(f, **arrays)
    job = {
        "model": model_path,
        "model_saved_here": saved,
        "backend": backend(),
        "output_path": output_path,
        "arguments": encoded,
        "verbosity": logging.get_verbosity(),
    }
    _io.write_new_file(work.file(JOB_FILE), json.dumps(job).encode("utf-8"))


# --- This process ------------------------------------------------------------------------


def _child_environment():
    env = dict(os.environ, KERAS_BACKEND="tensorflow")
    if "jax" in sys.modules and env.get("TF_CPP_MIN_LOG_LEVEL") == "1":
        # `import jax` sets it to 1 when unset; TensorFlow would then print its
        # C++ warnings ("Skipping runtime version metadata ..."), which the CLI
        # hides (`_quiet.setup` sets 2 when unset).
        del env["TF_CPP_MIN_LOG_LEVEL"]
    # The same modules as here: this process's sys.path first ('' is the cwd).
    paths = [p or os.getcwd() for p in sys.path if isinstance(p, str)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def _run_child(work_path):
    """Runs the export in a TensorFlow process; returns `(returncode, stderr tail)`."""
    command = [sys.executable, "-m", "tflite_export.backend_bridge", work_path]
    tail = collections.deque(maxlen=_STDERR_TAIL)
    cuda = not _quiet.gpu_driver_present()
    process = subprocess.Popen(command, env=_child_environment(), stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for raw in iter(process.stderr.readline, b""):
            line = raw.decode("utf-8", "replace")
            tail.append(line)
            if not _quiet.is_noise(line, cuda):
                sys.stderr.write(line)
                sys.stderr.flush()
        process.wait()
    except BaseException:
        # Interrupted here (e.g. Ctrl-C): end the TensorFlow process too. The
        # kernel drops its lock; the next export removes its work folder.
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        raise
    finally:
        process.stderr.close()
    return process.returncode, "".join(tail)


def _exception_class(record):
    """The class to raise here for the child's exception, or None."""
    for module_name, qualname in record["mro"]:
        if module_name == "builtins":
            cls = getattr(builtins, qualname, None)
        elif module_name.startswith(_OWN_MODULES):
            try:
                cls = getattr(importlib.import_module(module_name), qualname, None)
            except ImportError:
                cls = None
        else:
            continue
        if isinstance(cls, type) and issubclass(cls, (Exception, KeyboardInterrupt)):
            # Not SystemExit: it would end this process.
            return None if cls is Exception else cls
    return None


def _rebuild(record):
    """The child's exception as an exception of this process."""
    message = record["message"]
    cls = _exception_class(record)
    try:
        if cls is not None and issubclass(cls, OSError) and record.get("errno") is not None:
            args = (record["errno"], record["strerror"] or message)
            if record.get("filename") is not None:
                args += (record["filename"],)
            error = cls(*args)
            if not record.get("strerror"):
                error.strerror = message
            return error
        if cls is not None and "ops" in record:
            return cls(message, record["ops"])
        if cls is not None:
            return cls(message)
    except TypeError:  # A constructor with other arguments.
        pass
    return ExportProcessError(
        f"{record['type']}: {message}\n\nIn the TensorFlow process that exported the "
        f"model:\n{record['traceback']}", error_type=record["type"],
        child_traceback=record["traceback"])


def run_export(model, output_path, arguments):
    """Exports `model` in a TensorFlow process and returns its report.

    `export` calls this after checking its arguments, on a backend other
    than TensorFlow (`needs_tensorflow_process`).

    Args:
      model: A Keras 3 model, a `.keras` file or a SavedModel folder.
      output_path: The absolute `.tflite` path (checked by `export`).
      arguments: Every other argument of `export`, by name.

    Returns:
      The `ExportReport` the TensorFlow process wrote.

    Raises:
      ImportError: If TensorFlow is not installed.
      ValueError: If the data is not arrays, the model cannot be saved, or
        the export failed with a ValueError there (the same type and
        message, e.g. `OutputBusyError`, `UnsupportedOpsError`).
      OSError: If writing failed (here or there).
      ExportProcessError: If the TensorFlow process failed otherwise.
    """
    from tflite_export import report as report_lib

    check_tensorflow_installed()
    arguments = dict(arguments)
    if arguments.get("quantize") != "int8" and arguments.get("representative_data") is not None:
        logging.info("representative_data is only used by quantize='int8'; ignored.")
        arguments["representative_data"] = None
    encoded, arrays = _encode_arguments(arguments)
    folder = os.path.dirname(output_path)
    json_path = report_lib.report_paths(output_path)[0]
    key = _io.name_key(os.path.basename(json_path)[:-len(".report.json")])
    work = _io.WorkDir(folder, key)
    try:
        try:
            _write_job(work, model, output_path, encoded, arrays)
        except OSError as e:
            if e.errno in _io._NO_SPACE:  # pylint: disable=protected-access
                raise _io._no_space_error(e, work.path) from e  # pylint: disable=protected-access
            raise
        logging.info("Exporting in a TensorFlow process (the Keras backend here is %s)",
                     backend())
        returncode, tail = _run_child(work.path)
        error_path = work.file(ERROR_FILE)
        if os.path.exists(error_path):
            with open(error_path, encoding="utf-8") as f:
                record = json.load(f)
            raise _rebuild(record) from None
        if returncode != 0:
            how = (f"was killed by signal {-returncode}" if returncode < 0
                   else f"exited with code {returncode}")
            raise ExportProcessError(
                f"The TensorFlow process that exports the model {how} without reporting an "
                f"error (out of memory?). Its last output:\n{tail}")
    finally:
        work.remove()
    return report_lib.load_report(json_path)


# --- The TensorFlow process ----------------------------------------------------------------


def _error_record(error):
    record = {
        "type": f"{type(error).__module__}.{type(error).__qualname__}",
        "mro": [[c.__module__, c.__qualname__] for c in type(error).__mro__],
        "message": str(error),
        "traceback": "".join(traceback.format_exception(error)),
    }
    if isinstance(error, OSError):
        record.update(errno=error.errno, strerror=error.strerror,
                      filename=None if error.filename is None else os.fsdecode(error.filename))
    ops = getattr(error, "ops", None)
    if isinstance(ops, (list, tuple)) and all(isinstance(o, str) for o in ops):
        record["ops"] = list(ops)
    return record


def _load_saved_model(path, from_backend):
    import keras

    try:
        import tfprune  # noqa: F401  Registers the wrapper classes for loading.
    except ImportError:
        pass
    try:
        # The file was written by the process that asked for this export.
        return keras.saving.load_model(path, compile=False, safe_mode=False)
    except Exception as e:  # pylint: disable=broad-except  Any loading failure.
        raise ValueError(
            f"The model saved on the {from_backend} backend could not be loaded in the "
            f"TensorFlow process that converts it: {type(e).__name__}: {e}. Custom layers "
            "must be importable there: define them in a module (not in the script run as "
            "__main__) and register them with @keras.saving.register_keras_serializable()."
        ) from e


def _child_main(work_path):
    """Runs the export a `job.json` describes; returns the exit code."""
    _quiet.setup()  # TensorFlow and LiteRT without their start-up lines.
    with open(os.path.join(work_path, JOB_FILE), encoding="utf-8") as f:
        job = json.load(f)
    logging.set_verbosity(job["verbosity"])
    try:
        import keras

        if keras.backend.backend() != "tensorflow":
            raise RuntimeError(f"KERAS_BACKEND=tensorflow was not applied (the backend is "
                               f"{keras.backend.backend()}); check ~/.keras/keras.json.")
        with np.load(os.path.join(work_path, DATA_FILE), allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
        arguments = {k: _decode(v, arrays) for k, v in job["arguments"].items()}
        model = job["model"]
        if job["model_saved_here"]:
            model = _load_saved_model(model, job["backend"])
        import tflite_export

        # Progress bars (verbose=1) go to stdout: pass them on with the rest.
        with contextlib.redirect_stdout(sys.stderr):
            tflite_export.export(model, job["output_path"], **arguments)
    except BaseException as e:  # pylint: disable=broad-except  Reported to the parent.
        record = _error_record(e)
        _io.write_new_file(os.path.join(work_path, ERROR_FILE),
                           json.dumps(record).encode("utf-8"))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1]))

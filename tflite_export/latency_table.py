"""Latency tables: what a model costs on a device as a function of each group's width.

`measure(model, precision="int8", num_threads=1)` builds a `LatencyTable`:

1. For every costly call site of the model (convolutions, Dense, attention,
   ...) and every point of a small grid of its prunable groups' kept
   channels (`round_to` steps, `levels` per group), a one-layer Keras model
   is built (`tfprune.surgery.site_model`), converted to TFLite at the
   wanted precision (INT8: full-integer, calibrated on two random samples;
   the values do not change the time) and timed with the real runtime:
   LiteRT with XNNPACK on this machine, or TFLite's `benchmark_model` on an
   Android device over adb (all models pushed at once and run in one
   `adb shell` call). Identical one-layer models are measured once.
2. The sum of the sites' times is calibrated against whole models: the
   dense model and a uniformly pruned one (half the channels of every group)
   are converted and timed, and `base` and `scale` are fitted so that
   `base + scale * sum(site times)` matches both. A third whole model (30% of
   the channels removed) is measured to report the validation error.

A table is saved as JSON with its key: the model's fingerprint (SHA-256 of
its architecture JSON and input shapes, not its weights), the precision,
the thread count, the grid, and a device fingerprint (CPU model, machine
and LiteRT version on the host; model, build fingerprint and SoC of an
Android device). `LatencyTable.load` refuses a table whose key differs from
what the caller wants, naming the field.

A time on the host is the lowest median of blocks of 5 consecutive runs
after warm-up (see `HostRunner`): close to the median on an idle machine,
and robust to the other processes of a shared one.
"""

import hashlib
import importlib.metadata
import json
import os
import platform
import shlex
import shutil
import tempfile
import time

import numpy as np
from absl import logging

PRECISIONS = ("int8", "float32")
"""The precisions a latency table can be measured at."""

TABLE_FORMAT = "tflite_export.latency_table/1"
"""The `format` field of a saved table."""

_MODEL_SAMPLES = 8  # Representative examples used to convert whole models for timing.


# --- Fingerprints --------------------------------------------------------------------------


def model_fingerprint(model):
    """SHA-256 (hex) of a Keras model's architecture JSON and input shapes.

    Weights do not count: a table measured for a model fits the same
    architecture after training.

    Args:
      model: A Keras model with defined inputs.

    Returns:
      A 64-character hex string.
    """
    shapes = [[None if d is None else int(d) for d in tuple(t.shape)] for t in model.inputs]
    text = json.dumps({"architecture": json.loads(model.to_json()), "input_shapes": shapes},
                      sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _litert_version():
    for name in ("ai-edge-litert", "ai_edge_litert"):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unknown"


def _cpu_model(cpuinfo="/proc/cpuinfo"):
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return platform.processor() or "unknown"
    for field in ("model name", "Hardware", "Processor", "cpu model", "uarch"):
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if key.strip() == field and value.strip():
                return value.strip()
    parts = sorted({line.split(":", 1)[1].strip() for line in text.splitlines()
                    if line.split(":", 1)[0].strip() == "CPU part" and ":" in line})
    return ("CPU part " + ",".join(parts)) if parts else (platform.processor() or "unknown")


def host_device():
    """The fingerprint of this machine as a LiteRT target.

    Returns:
      `{"kind": "host", "cpu": CPU model (from /proc/cpuinfo), "machine":
      platform.machine(), "litert": ai_edge_litert version}`.
    """
    return {"kind": "host", "cpu": _cpu_model(), "machine": platform.machine(),
            "litert": _litert_version()}


def parse_getprop(text):
    """Parses `adb shell getprop` output (`[key]: [value]` lines) into a dict."""
    props = {}
    for line in text.splitlines():
        line = line.strip()
        if not (line.startswith("[") and "]: [" in line and line.endswith("]")):
            continue
        key, _, value = line[1:-1].partition("]: [")
        props[key] = value
    return props


def android_device(props):
    """The fingerprint of an Android device from its `getprop` properties.

    Args:
      props: `{property: value}` (see `parse_getprop`).

    Returns:
      `{"kind": "android", "model", "fingerprint", "soc", "abi"}`.
    """
    soc = " ".join(v for v in (props.get("ro.soc.manufacturer"), props.get("ro.soc.model"))
                   if v) or props.get("ro.board.platform") or props.get("ro.hardware", "")
    return {"kind": "android", "model": props.get("ro.product.model", ""),
            "fingerprint": props.get("ro.build.fingerprint", ""), "soc": soc,
            "abi": props.get("ro.product.cpu.abi", "")}


# --- Conversion ----------------------------------------------------------------------------


def _input_specs(model):
    import keras
    import tensorflow as tf

    specs = []
    for t in model.inputs:
        dims = tuple(t.shape)[1:]
        if any(d is None for d in dims):
            raise ValueError(
                f"Model '{model.name}' has an input of shape {tuple(t.shape)} with an unknown "
                "size; build it with a fixed input shape (e.g. keras.Input((224, 224, 3))) "
                "to measure its latency.")
        specs.append(tf.TensorSpec((1,) + dims, keras.backend.standardize_dtype(t.dtype)))
    return specs


def _random_samples(specs, count, seed=0):
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(count):
        sample = []
        for spec in specs:
            dtype = np.dtype(spec.dtype.as_numpy_dtype)
            shape = tuple(spec.shape)
            if np.issubdtype(dtype, np.integer):
                sample.append(rng.integers(0, 2, size=shape).astype(dtype))
            else:
                sample.append(rng.random(shape, dtype=np.float32).astype(dtype))
        samples.append(sample)
    return samples


def _data_samples(data, specs, count):
    """Up to `count` examples of `data` (an array, or a list of arrays per input)."""
    arrays = list(data) if isinstance(data, (list, tuple)) else [data]
    if len(arrays) != len(specs):
        raise ValueError(f"representative_data has {len(arrays)} array(s) but the model has "
                         f"{len(specs)} input(s); give one array per input.")
    samples = []
    for array, spec in zip(arrays, specs):
        array = np.asarray(array)
        want = tuple(spec.shape)[1:]
        if tuple(array.shape[1:]) != want:
            raise ValueError(f"representative_data has shape {array.shape}, but the model "
                             f"input takes examples of shape {want}; give an array "
                             f"(N, {', '.join(map(str, want))}).")
        samples.append(array[:count].astype(spec.dtype.as_numpy_dtype))
    n = min(len(a) for a in samples)
    if n == 0:
        raise ValueError("representative_data is empty; give at least one example.")
    return [[a[i:i + 1] for a in samples] for i in range(n)]


def to_tflite(model, precision="int8", representative_data=None, samples=2):
    """Converts a Keras model to TFLite bytes quickly, for timing.

    The model is traced as a `tf.function` with batch size 1, its variables
    are frozen into constants and the graph is converted with
    `TFLiteConverter.from_concrete_functions` (about 0.2 s for a one-layer
    model, a fraction of the SavedModel path `tflite_export.export` takes).
    INT8 is full-integer quantization with int8 inputs and outputs, as
    `export(quantize="int8")` writes it; ops without an INT8 kernel are left
    in float rather than failing (the time is what matters here).

    Args:
      model: A Keras 3 model with fixed input sizes (no tfprune wrappers).
      precision: `"int8"` or `"float32"`.
      representative_data: Calibration examples for INT8 (an array, or a
        list of arrays per input); None uses `samples` random examples.
      samples: Examples used for calibration.

    Returns:
      The `.tflite` flatbuffer as bytes.

    Raises:
      ValueError: If the precision is unknown, an input size is unknown, the
        data does not fit the model, or the weights were not frozen.
    """
    import tensorflow as tf
    from tensorflow.python.framework import convert_to_constants

    from tflite_export import _quiet
    from tflite_export import conversion

    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not one of {PRECISIONS}.")
    specs = _input_specs(model)

    def call(*args):
        return model(list(args) if len(args) > 1 else args[0], training=False)

    concrete = tf.function(call).get_concrete_function(*specs)
    frozen = convert_to_constants.convert_variables_to_constants_v2(concrete)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen], model)
    if precision == "int8":
        data = (_random_samples(specs, samples) if representative_data is None
                else _data_samples(representative_data, specs, samples))

        def representative_dataset():
            for sample in data:
                yield [np.asarray(x) for x in sample]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative_dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
                                               tf.lite.OpsSet.TFLITE_BUILTINS]
        if all(s.dtype.is_floating for s in specs):
            converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    content = conversion._run_converter(converter)
    conversion._check_frozen(content)
    return content


# --- Runners: where the time is measured ---------------------------------------------------


class HostRunner:
    """Times `.tflite` models with LiteRT (XNNPACK) on this machine.

    Each model is loaded, run once and warmed up, then run for at least
    `seconds` (`whole_seconds` for whole models) in blocks of `block`
    consecutive runs. Its time is the lowest block median: on an idle
    machine that is close to the median of all runs; on a shared one it
    leaves out the blocks that other processes slowed down (on the 2-core
    machine this was developed on, repeated measurements of MobileNetV2 had a
    spread of 1.7% standard deviation this way, against 5-7% for the plain
    median).

    Args:
      num_threads: Interpreter threads.
      seconds: Timed seconds per one-layer model, at least.
      whole_seconds: Timed seconds per whole model, at least.
      block: Consecutive runs per block.
      min_blocks: Blocks per model, at least.
      warmup_seconds: Untimed running before timing.
    """

    def __init__(self, num_threads=1, seconds=0.1, whole_seconds=1.0, block=5, min_blocks=4,
                 warmup_seconds=0.05):
        if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
            raise ValueError(f"num_threads={num_threads!r} must be an integer >= 1.")
        self.num_threads = num_threads
        self.seconds = float(seconds)
        self.whole_seconds = float(whole_seconds)
        self.block = int(block)
        self.min_blocks = int(min_blocks)
        self.warmup_seconds = float(warmup_seconds)

    def device(self):
        """This machine's fingerprint (see `host_device`)."""
        return host_device()

    def time_one(self, content, whole=False):
        """Milliseconds per run of one `.tflite` model (bytes): the lowest block median."""
        from tflite_export import litert

        interpreter = litert.make_interpreter(content, num_threads=self.num_threads)
        interpreter.allocate_tensors()
        rng = np.random.default_rng(0)
        for detail in interpreter.get_input_details():
            interpreter.set_tensor(detail["index"], litert.random_input(detail, rng))
        interpreter.invoke()
        start = time.perf_counter()
        while time.perf_counter() - start < self.warmup_seconds:
            interpreter.invoke()
        seconds = self.whole_seconds if whole else self.seconds
        medians = []
        begin = time.perf_counter()
        while len(medians) < self.min_blocks or time.perf_counter() - begin < seconds:
            samples = []
            for _ in range(self.block):
                t = time.perf_counter_ns()
                interpreter.invoke()
                samples.append(time.perf_counter_ns() - t)
            medians.append(float(np.median(samples)) / 1e6)
            if len(medians) >= 2000:
                break
        return min(medians)

    def time(self, contents, names=None, whole=None, progress=None):
        """Times several models.

        Args:
          contents: `.tflite` bytes per model.
          names: Label per model (for progress).
          whole: Per model, whether it is a whole model (longer blocks).
          progress: Optional `fn(done, total, message)`.

        Returns:
          Milliseconds per model.
        """
        names = names or [f"model {i}" for i in range(len(contents))]
        whole = whole or [False] * len(contents)
        out = []
        for i, content in enumerate(contents):
            out.append(self.time_one(content, whole=whole[i]))
            if progress is not None:
                progress(i + 1, len(contents), f"time {names[i]}: {out[-1]:.3f} ms")
        return out


REMOTE_DIR = "/data/local/tmp/tfprune_latency"
"""Folder on an Android device where `AndroidRunner` pushes its models."""

_MARK = "@@tfprune_latency "


def android_batch_command(files, remote_dir=REMOTE_DIR, num_threads=1, runs=50, warmup=5,
                          use_xnnpack=True):
    """The one shell command that runs `benchmark_model` on every pushed file.

    Each run is preceded by a line `@@tfprune_latency <file>` so that the
    output can be split per model (`parse_batch_output`).

    Args:
      files: File names inside `remote_dir`.
      remote_dir: Device folder holding the files and `benchmark_model`.
      num_threads: `--num_threads`.
      runs: `--num_runs`.
      warmup: `--warmup_runs`.
      use_xnnpack: `--use_xnnpack`.

    Returns:
      A string for `adb shell`.
    """
    flags = (f"--num_threads={int(num_threads)} --num_runs={int(runs)} "
             f"--warmup_runs={int(warmup)} --use_xnnpack={'true' if use_xnnpack else 'false'}")
    names = " ".join(shlex.quote(f) for f in files)
    return (f"cd {shlex.quote(remote_dir)} && for f in {names}; do echo \"{_MARK}$f\"; "
            f"./benchmark_model --graph=\"$f\" {flags} 2>&1; done")


def parse_batch_output(text, files, num_threads=1, backend="android"):
    """Milliseconds per file from the output of `android_batch_command`.

    The median of the timed runs when the build logs one, else their mean.

    Raises:
      ValueError: If a file's run is missing or failed (naming the file).
    """
    from tflite_export import android

    sections, current = {}, None
    for line in text.splitlines():
        if line.startswith(_MARK):
            current = line[len(_MARK):].strip()
            sections[current] = []
        elif current is not None:
            sections[current].append(line)
    out = []
    for name in files:
        if name not in sections:
            raise ValueError(f"benchmark_model did not run {name!r} on the device (the batch "
                             "stopped early); see the adb output above.")
        try:
            stats = android.parse_benchmark_output("\n".join(sections[name]), num_threads,
                                                   backend=backend)
        except ValueError as e:
            raise ValueError(f"benchmark_model failed on {name!r}: {e}") from None
        out.append(stats.median_ms if stats.median_ms is not None else stats.mean_ms)
    return out


class AndroidRunner:
    """Times `.tflite` models on an Android device with TFLite's `benchmark_model`.

    All the models of a call are pushed with one `adb push` and run by one
    `adb shell` call (see `android_batch_command`).

    Args:
      benchmark_binary: Local path of `benchmark_model` built for the
        device ABI.
      serial: adb serial; None for the only online device.
      num_threads: `--num_threads`.
      runs: `--num_runs`.
      warmup: `--warmup_runs`.
      use_xnnpack: `--use_xnnpack`.
      adb_path: Path of `adb`; found on PATH when None.
      timeout: Seconds allowed per model in a batch (plus one minute).

    Raises:
      ValueError: If `benchmark_binary` is missing or not an ELF file.
    """

    def __init__(self, benchmark_binary, serial=None, num_threads=1, runs=50, warmup=5,
                 use_xnnpack=True, adb_path=None, timeout=30.0):
        from tflite_export import android

        if benchmark_binary is None or not os.path.isfile(os.fspath(benchmark_binary)):
            raise ValueError(
                f"benchmark_binary={benchmark_binary!r} does not exist. Download TFLite's "
                "`benchmark_model` for the device ABI (see docs/guides/android.md) and pass "
                "its path (CLI: --benchmark_binary).")
        self.benchmark_binary = os.fspath(benchmark_binary)
        android.elf_machine(self.benchmark_binary)
        self.num_threads = int(num_threads)
        self.runs, self.warmup = int(runs), int(warmup)
        self.use_xnnpack = bool(use_xnnpack)
        self.timeout = float(timeout)
        self._adb = android.Adb(adb_path)
        self.serial = android.select_device(self._adb.devices(), serial)
        self._props = None
        self._pushed_binary = False

    def _getprops(self):
        if self._props is None:
            text = self._adb.run(["shell", "getprop"], serial=self.serial).stdout
            self._props = parse_getprop(text)
        return self._props

    def device(self):
        """The device's fingerprint (see `android_device`)."""
        return android_device(self._getprops())

    def time(self, contents, names=None, whole=None, progress=None):
        """Times several models in one batch on the device (see `HostRunner.time`)."""
        from tflite_export import android

        del whole  # benchmark_model runs a fixed count of runs for every model.
        names = names or [f"model {i}" for i in range(len(contents))]
        if not self._pushed_binary:
            android.check_binary_abi(self.benchmark_binary,
                                     self._getprops().get("ro.product.cpu.abi", ""))
        local = tempfile.mkdtemp(prefix="tfprune_latency_")
        try:
            files = []
            for i, content in enumerate(contents):
                name = f"m{i:05d}.tflite"
                with open(os.path.join(local, name), "wb") as f:
                    f.write(content)
                files.append(name)
            self._adb.run(["shell", f"rm -rf {REMOTE_DIR} && mkdir -p {REMOTE_DIR}"],
                          serial=self.serial)
            sources = [os.path.join(local, f) for f in files]
            binary = os.path.join(local, "benchmark_model")
            shutil.copyfile(self.benchmark_binary, binary)
            if progress is not None:
                progress(0, len(files), f"push {len(files)} models to {self.serial}")
            self._adb.run(["push"] + sources + [binary, REMOTE_DIR + "/"], serial=self.serial,
                          timeout=300 + 2 * len(files))
            self._adb.run(["shell", f"chmod 755 {REMOTE_DIR}/benchmark_model"],
                          serial=self.serial)
            self._pushed_binary = True
            command = android_batch_command(files, REMOTE_DIR, self.num_threads, self.runs,
                                            self.warmup, self.use_xnnpack)
            proc = self._adb.run(["shell", command], serial=self.serial, check=False,
                                 timeout=60 + self.timeout * len(files))
            times = parse_batch_output(proc.stdout + "\n" + proc.stderr, files,
                                       self.num_threads, backend=f"android:{self.serial}")
        finally:
            shutil.rmtree(local, ignore_errors=True)
        if progress is not None:
            for i, (name, ms) in enumerate(zip(names, times)):
                progress(i + 1, len(times), f"time {name}: {ms:.3f} ms")
        return times


def make_runner(num_threads=1, android=False, serial=None, benchmark_binary=None,
                adb_path=None):
    """A `HostRunner`, or an `AndroidRunner` when `android` is True."""
    if android:
        return AndroidRunner(benchmark_binary, serial=serial, num_threads=num_threads,
                             adb_path=adb_path)
    return HostRunner(num_threads=num_threads)


# --- The table -----------------------------------------------------------------------------


class LatencyTable:
    """A measured latency model of one model on one device, with what it was measured for.

    Calling the table with `{group key: kept channels}` predicts the whole
    model's latency in milliseconds (`cost_model(counts)`); pass
    `table.cost_model` to `tfprune.planning.allocate`.

    Args:
      cost_model: A `tfprune.planning.CostModel` of kind `"latency"` (ms).
      key: What the table was measured for: `{"model": fingerprint,
        "model_name", "precision", "num_threads", "round_to", "levels",
        "device": device fingerprint}`.
      calibration: Whole-model measurements: `{"dense_ms",
        "dense_predicted_ms", "pruned_ms", ..., "validation_ms",
        "validation_predicted_ms", "validation_error"}`.
      timings_s: Seconds spent per stage.
    """

    # Fields of `key` that `load`/`check` compare.
    CHECKED = ("model", "precision", "num_threads", "device")

    def __init__(self, cost_model, key, calibration=None, timings_s=None):
        self.cost_model = cost_model
        self.key = dict(key)
        self.calibration = dict(calibration or {})
        self.timings_s = dict(timings_s or {})

    def __call__(self, counts):
        """Predicted latency (ms) of the model with `{group key: kept}` channels."""
        return self.cost_model(counts)

    @property
    def dense_ms(self):
        """The measured latency of the dense whole model (ms)."""
        return self.calibration.get("dense_ms")

    def check(self, model=None, precision=None, num_threads=None, device=None):
        """Raises ValueError unless the table was measured for these (None: not checked).

        Args:
          model: A Keras model, or its `model_fingerprint`.
          precision: `"int8"` or `"float32"`.
          num_threads: Thread count.
          device: A device fingerprint (`host_device()`, a runner's `device()`).

        Raises:
          ValueError: Naming the first field that differs, with the saved and
            the wanted value.
        """
        wanted = {}
        if model is not None:
            wanted["model"] = model if isinstance(model, str) else model_fingerprint(model)
        if precision is not None:
            wanted["precision"] = precision
        if num_threads is not None:
            wanted["num_threads"] = int(num_threads)
        if device is not None:
            wanted["device"] = dict(device)
        for field, value in wanted.items():
            saved = self.key.get(field)
            if saved != value:
                if field == "model":
                    saved = f"{self.key.get('model_name', '?')} {str(saved)[:12]}..."
                    value = (f"{getattr(model, 'name', '?')} {value[:12]}...")
                raise ValueError(
                    f"The latency table was measured for {field}={saved!r}, not the wanted "
                    f"{field}={value!r}; measure a table for it (tflite_export.latency_table."
                    "measure, or the plan CLI without --table or with a new path).")

    def get_config(self):
        """A JSON-serializable dict (see `from_config`)."""
        return {"format": TABLE_FORMAT, "key": dict(self.key),
                "calibration": dict(self.calibration), "timings_s": dict(self.timings_s),
                "cost_model": self.cost_model.get_config()}

    @classmethod
    def from_config(cls, config):
        """The table `get_config` described."""
        from tfprune.planning import CostModel

        return cls(CostModel.from_config(config["cost_model"]), config["key"],
                   calibration=config.get("calibration"), timings_s=config.get("timings_s"))

    def save(self, path):
        """Writes the table as JSON (atomically replacing an existing file)."""
        from tfprune.json_files import save_json

        save_json(path, self.get_config(), indent=1)

    @classmethod
    def load(cls, path, model=None, precision=None, num_threads=None, device=None):
        """Reads a table written by `save`, refusing one measured for something else.

        Args:
          path: The JSON file.
          model: The model the table must be for (or its fingerprint); None
            skips the check, as for the fields below (see `check`).
          precision: The precision it must have been measured at.
          num_threads: The thread count.
          device: The device fingerprint (e.g. `host_device()`).

        Returns:
          A `LatencyTable`.

        Raises:
          ValueError: If the file does not exist or is not a latency table, or
            a field differs (the message names it, with the saved and the
            wanted value).
        """
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise ValueError(f"Latency table {path!r} does not exist.")
        with open(path, encoding="utf-8") as f:
            try:
                config = json.load(f)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise ValueError(f"{path!r} is not a latency table (invalid JSON: {e}).") \
                    from None
        if not isinstance(config, dict) or config.get("format") != TABLE_FORMAT:
            raise ValueError(f"{path!r} is not a latency table (no 'format': "
                             f"{TABLE_FORMAT!r}).")
        table = cls.from_config(config)
        table.check(model=model, precision=precision, num_threads=num_threads, device=device)
        return table

    def summary(self):
        """A few lines: what was measured, the calibration and its validation error."""
        c = self.calibration
        lines = [f"Latency table of '{self.key.get('model_name')}' ({self.key.get('precision')}, "
                 f"{self.key.get('num_threads')} thread(s), {_device_text(self.key.get('device'))})"
                 f": {len(self.cost_model.sites)} layers, {c.get('measured_models', '?')} "
                 f"one-layer models timed"]
        if "dense_ms" in c:
            lines.append(f"  dense {c['dense_ms']:.3f} ms, uniform "
                         f"{c.get('pruned_fraction', 0.5):.0%} pruned {c['pruned_ms']:.3f} ms; "
                         f"fit: {self.cost_model.base:.3f} ms + {self.cost_model.scale:.3f} x "
                         "sum of layers")
        if "validation_ms" in c:
            lines.append(f"  validation ({c['validation_fraction']:.0%} uniform): predicted "
                         f"{c['validation_predicted_ms']:.3f} ms, measured "
                         f"{c['validation_ms']:.3f} ms ({100 * c['validation_error']:+.1f}%)")
        return "\n".join(lines)

    def __repr__(self):
        return (f"LatencyTable({self.key.get('model_name')!r}, {self.key.get('precision')}, "
                f"threads={self.key.get('num_threads')}, {len(self.cost_model.sites)} sites)")


def _device_text(device):
    if not device:
        return "unknown device"
    if device.get("kind") == "android":
        return f"Android {device.get('model')} ({device.get('soc')})"
    return f"host {device.get('cpu')}, LiteRT {device.get('litert')}"


# --- Measuring -----------------------------------------------------------------------------


def uniform_counts(graph, fraction, round_to=1):
    """`{group key: kept}` with `fraction` of every prunable group's channels removed."""
    from tfprune.channel_pruning import kept_count
    from tfprune.planning import group_key

    return {group_key(g): kept_count(g.size, fraction, round_to) for g in graph.prunable_groups}


def planned_model(model, counts, importance="l2"):
    """The model pruned one-shot to `{group key: kept}` and shrunk."""
    from tfprune.planning import prune_to_plan

    return prune_to_plan(model, counts, importance=importance)


def _log_progress(done, total, message):
    if done == total or done % 25 == 0 or done <= 1:
        logging.info("[%d/%d] %s", done, total, message)


def measure(model, precision="int8", num_threads=1, round_to=8, levels=3,
            representative_data=None, android=False, serial=None, benchmark_binary=None,
            adb_path=None, runner=None, calibrate=True, progress=None):
    """Measures a model's latency table with the real runtime.

    Args:
      model: A Keras 3 model with fixed input sizes (not wrapped).
      precision: `"int8"` (full-integer, as `export(quantize="int8")`) or
        `"float32"`.
      num_threads: Runtime threads.
      round_to: Grid counts are multiples of this (use the plan's `round_to`).
      levels: Grid points per group (from a quarter of the channels to all).
      representative_data: Examples (array, or list per input) to calibrate
        the INT8 whole models with; None uses random data (the time does not
        depend on it).
      android: Measure on an Android device over adb instead of this machine.
      serial: adb serial of the device (None: the only online one).
      benchmark_binary: `benchmark_model` for the device ABI (Android only).
      adb_path: Path of `adb` (Android only).
      runner: An object with `time(contents, names=, whole=, progress=)` and
        `device()` to measure with instead (e.g. a fake in tests); overrides
        `num_threads`/`android`.
      calibrate: Fit `base` and `scale` on whole-model timings (dense and
        half pruned) and validate on a third; False keeps the raw sum.
      progress: Optional `fn(done, total, message)` called as one-layer models
        are converted (`"convert <layer>"`) and timed (`"time <layer>: ..."`);
        by default progress goes to absl logging.

    Returns:
      A `LatencyTable`.

    Raises:
      ValueError: If the model has no prunable channel group or an input of
        unknown size, or an argument is invalid.
    """
    import tfprune
    from tfprune import planning

    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not one of {PRECISIONS}.")
    if runner is None:
        runner = make_runner(num_threads, android=android, serial=serial,
                             benchmark_binary=benchmark_binary, adb_path=adb_path)
    num_threads = int(getattr(runner, "num_threads", num_threads))
    progress = progress or _log_progress
    _input_specs(model)  # A clear error for unknown input sizes, before any work.
    graph = tfprune.DependencyGraph(model)
    if not graph.prunable_groups:
        raise ValueError(f"Model '{model.name}' has no prunable channel group: there is no "
                         "width to measure (see tfprune.DependencyGraph(model).summary()).")
    timings = {}
    started = time.perf_counter()

    contents, names = [], []

    def convert_site(site_model):
        contents.append(to_tflite(site_model, precision))
        names.append(site_model.name[len("site_"):])
        return float(len(contents) - 1)  # An index; replaced by its time below.

    def convert_progress(done, total, name):
        progress(done, total, f"convert {name}")

    indexed = planning.measure_sites(graph, convert_site, round_to=round_to, levels=levels,
                                     progress=convert_progress)
    sites_count = len(contents)
    whole = [False] * sites_count
    full = {planning.group_key(g): g.size for g in graph.prunable_groups}
    checks = []
    if calibrate:
        for label, fraction in (("dense", 0.0), ("pruned", 0.5), ("validation", 0.3)):
            counts = full if fraction == 0 else uniform_counts(graph, fraction, round_to)
            progress(len(checks) + 1, 3, f"convert the whole model ({label}, "
                                         f"{fraction:.0%} of channels removed)")
            small = model if fraction == 0 else planned_model(model, counts)
            contents.append(to_tflite(small, precision, representative_data,
                                      samples=_MODEL_SAMPLES if representative_data is not None
                                      else 2))
            names.append(f"whole model ({label})")
            whole.append(True)
            checks.append((label, fraction, counts))
    timings["convert"] = round(time.perf_counter() - started, 3)

    started = time.perf_counter()
    times = runner.time(contents, names=names, whole=whole, progress=progress)
    timings["time"] = round(time.perf_counter() - started, 3)

    sites = []
    for site in indexed.sites:
        values = np.vectorize(lambda i: times[int(i)])(site.values) if site.values.size else \
            site.values
        sites.append(planning.SiteCost(site.name, site.groups, [l.astype(int) for l in
                                                                 site.levels], values))
    device = runner.device()
    cost = planning.CostModel(sites, kind="latency", unit="ms",
                              info={"precision": precision, "num_threads": num_threads,
                                    "device": device})
    calibration = {"measured_models": sites_count}
    if calibrate:
        measured = dict(zip([c[0] for c in checks], times[sites_count:]))
        sums = {label: cost.sites_sum(counts) for label, _, counts in checks}
        calibration.update(_fit(cost, measured, sums))
        calibration["pruned_fraction"] = checks[1][1]
        calibration["validation_fraction"] = checks[2][1]
    key = {"model": model_fingerprint(model), "model_name": model.name,
           "precision": precision, "num_threads": num_threads, "round_to": int(round_to),
           "levels": int(levels), "device": device}
    table = LatencyTable(cost, key, calibration=calibration, timings_s=timings)
    logging.info("%s", table.summary())
    return table


def _fit(cost, measured, sums):
    """Sets `cost.base` and `cost.scale` from the dense and pruned timings."""
    t0, t1 = measured["dense"], measured["pruned"]
    s0, s1 = sums["dense"], sums["pruned"]
    scale = (t0 - t1) / (s0 - s1) if s0 != s1 else 0.0
    if not np.isfinite(scale) or scale <= 0:
        # Timings too noisy to separate the two: proportional to the layers' sum.
        logging.warning("Latency calibration: dense %.3f ms vs pruned %.3f ms does not give a "
                        "positive slope; predicting proportionally to the layers' sum.", t0, t1)
        scale, base = t0 / s0, 0.0
    else:
        base = t0 - scale * s0
    cost.base, cost.scale = float(base), float(scale)
    predicted = cost.base + cost.scale * sums["validation"]
    return {"dense_ms": t0, "dense_sites_ms": s0, "pruned_ms": t1, "pruned_sites_ms": s1,
            "validation_ms": measured["validation"], "validation_predicted_ms": predicted,
            "validation_error": predicted / measured["validation"] - 1.0}

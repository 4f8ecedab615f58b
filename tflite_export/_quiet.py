"""Quiet TensorFlow start-up for the entry points (examples, CLIs, benchmarks).

TensorFlow's C++ runtime writes lines straight to file descriptor 2 while it
is imported and when it first looks for devices, before its logging is set
up, so `TF_CPP_MIN_LOG_LEVEL` does not hide all of them:

    WARNING: All log messages before absl::InitializeLog() is called ...
    I0000 ... port.cc:153] oneDNN custom operations are on. ...
    I0000 ... cudart_stub.cc:31] Could not find cuda drivers on your machine ...
    E0000 ... cuda_platform.cc:52] failed call to cuInit: ...   (an ERROR line)

LiteRT adds `INFO: Created TensorFlow Lite XNNPACK delegate for CPU.` for the
first interpreter, and the converter prints `fully_quantize: 0, ...` for each
INT8 conversion.

`setup()` is what an entry point calls before it imports TensorFlow: it sets
`TF_CPP_MIN_LOG_LEVEL=2` (unless already set), hides CUDA from TensorFlow
(`CUDA_VISIBLE_DEVICES=""`, unless already set) when the machine has no GPU
driver, then imports TensorFlow and Keras, initialises the CPU device and
creates one LiteRT interpreter inside `filtered_stderr()`. That block sends
fd 2 to a temporary file and afterwards writes back every line that is not
known start-up noise (`is_noise`), so real warnings and errors still show; if
the block raises, everything it captured is written back. The CUDA lines
count as noise only when no GPU driver is installed: on a GPU machine a failed
`cuInit` is a real problem and shows.

`tfprune` never imports this module (it must not depend on `tflite_export`).
"""

import base64
import contextlib
import logging
import os
import re
import sys
import tempfile
import zlib

# Lines that are noise on any machine.
_NOISE = tuple(re.compile(p) for p in (
    r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$",
    # TensorFlow's C++ INFO lines (glog format: I<mmdd> <time> <thread> <file>:<line>] ...).
    r"^I\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ [\w.\-]+:\d+\] ",
    # The second line of cpu_feature_guard's INFO message.
    r"^To enable the following instructions: .* rebuild TensorFlow with the appropriate "
    r"compiler flags\.$",
    r"^INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.$",
    r"^fully_quantize: \d+, inference_type: \d+, input_inference_type: \w+, "
    r"output_inference_type: \w+$",
    # The converter's notices about options the new converter ignores.
    r"^W\d{4} .*tf_tfl_flatbuffer_helpers\.cc:\d+\] Ignored (output_format|"
    r"drop_control_dependency)\.$",
))
# Lines that are noise only on a machine without a GPU driver.
_CUDA_NOISE = tuple(re.compile(p) for p in (
    r"^[EW]\d{4} .*\] failed call to cuInit: ",
    r"^[EW]\d{4} .*\] Unable to register cu(DNN|FFT|BLAS) factory: ",
    r"^[EW]\d{4} .*\] TF-TRT Warning: Could not find TensorRT$",
    r"^[EW]\d{4} .*cuda_diagnostics\.cc:\d+\] ",
))

# A 720-byte .tflite model (one ADD of a float[1]): creating an interpreter for it
# makes LiteRT print its once-per-process XNNPACK line inside `setup()`.
_TINY_TFLITE = (
    "eNptUj1Lw1AUPUljDTTUgkU6dOjgHG3VTZBSKxT6ATW4KNRiMgRsCjVKOwgOLoI/oIOIo+BfcPQXOIpu/g7jvS83"
    "oYgXDu/lJPe8c+5LGYBz0N4qooIySiiiAIs4EwbtQVyMkLCrAW3CvQ5kEBdtsU0wCJ9RFC3JfpXQ6HWPmv3DVq87"
    "6DSd+n7dqZOupbRN+S75duQHg8llEPojb3DlTS78cYAs8W+EV8IzYS4+uCegs3g9JRTEi4l8qs3cumKzistKH5eV"
    "5jRU1uj45ey68nWXkTyG6gJqdq1qbwIfchZrVu0dptJiZeOfc2LuZm/+E0UPhBV66rRb/UpjHFC+0HNt0CjVjEG+"
    "E0eskRee534iGV3RHA39gDsWe4vKm4Wc9Mo8cpbsy+Rfk2y6+NYEuqxcnP+W71nOeqQ+fl0QHX5fIpwTzzNuuR5d"
    "WDhb1Hv/06OLzyf5N4auuzFLp7emckOSx7VMbGwx0dBk/ZYc04XzNHXv7NdQnn8B5shW4g=="
)

_done = False


def gpu_driver_present():
    """Whether an NVIDIA driver is installed (`/proc/driver/nvidia`, `/dev/nvidia0` or libcuda).

    The CUDA runtime (`libcudart`) alone does not count: TensorFlow's wheels
    bring it on every machine.
    """
    if os.path.exists("/proc/driver/nvidia") or os.path.exists("/dev/nvidia0"):
        return True
    import ctypes.util

    return ctypes.util.find_library("cuda") is not None


def is_noise(line, cuda=None):
    """Whether `line` (without its newline) is known start-up noise.

    Args:
      line: One line of stderr.
      cuda: Whether CUDA lines count as noise; defaults to "no GPU driver".
    """
    line = line.rstrip("\r\n")
    if any(p.search(line) for p in _NOISE):
        return True
    if cuda is None:
        cuda = not gpu_driver_present()
    return cuda and any(p.search(line) for p in _CUDA_NOISE)


@contextlib.contextmanager
def filtered_stderr(drop=None):
    """Sends native stderr (fd 2) to a temporary file; writes back all but the noise.

    On leaving the block, every captured line for which `drop` (default:
    `is_noise`) is False is written to the real stderr, in order. If the block raises, everything
    captured is written back, noise included, so nothing is lost when
    something fails. Python's `sys.stderr` writes inside the block are
    captured as well (they go to fd 2) and written back the same way.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # No fd 2 at all: nothing to filter.
        yield
        return
    if drop is None:
        cuda = not gpu_driver_present()

        def drop(line):
            return is_noise(line, cuda)

    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        failed = False
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", "replace")
            kept = text if failed else "".join(
                line for line in text.splitlines(keepends=True) if not drop(line))
            if kept:
                os.write(2, kept.encode("utf-8"))


def _warm_litert():
    try:
        from ai_edge_litert import interpreter as litert
    except ImportError:  # LiteRT is only needed for exports and benchmarks.
        return
    model = zlib.decompress(base64.b64decode(_TINY_TFLITE))
    litert.Interpreter(model_content=model).allocate_tensors()


def setup(litert=True, tensorflow=True):
    """Imports TensorFlow and Keras without their start-up noise; call before importing them.

    Sets `TF_CPP_MIN_LOG_LEVEL=2` unless the variable is set (C++ errors still
    show; 0 or 1 brings back the C++ info/warnings), and `CUDA_VISIBLE_DEVICES=""`
    unless set when there is no GPU driver. Then imports TensorFlow and Keras,
    runs one operation (the CPU device, and the `cuInit` probe, start there)
    and, with `litert`, creates one LiteRT interpreter, all inside
    `filtered_stderr()`. TensorFlow's Python logger is set to WARNING when
    nobody set its level (its INFO lines, e.g. "Assets written to", are for
    TensorFlow's developers). Calling it again does nothing.

    Args:
      litert: Also start LiteRT (when installed), whose first interpreter
        prints an INFO line.
      tensorflow: Import TensorFlow and Keras; False for entry points that
        only run LiteRT (about 5 s less start-up).
    """
    global _done
    if _done:
        return
    _done = True
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if not gpu_driver_present():
        os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    with filtered_stderr():
        if tensorflow:
            import keras  # noqa: F401
            import tensorflow as tf

            tf.constant(0.0) + 1.0
        if litert:
            _warm_litert()
    tf_logger = logging.getLogger("tensorflow")
    if tf_logger.level == logging.NOTSET:
        tf_logger.setLevel(logging.WARNING)

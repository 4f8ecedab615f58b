"""tflite_export._quiet: the entry points start TensorFlow without its start-up noise.

The quickstart's stderr is checked in tests/test_examples.py; here the
filter itself and a CLI export.
"""

import os
import subprocess
import sys

import pytest

from tflite_export import _quiet

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# What TF 2.21 / LiteRT print on a CPU-only machine (one line each).
NOISE = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796012196.413295    2181 port.cc:153] oneDNN custom operations are on. "
    "You may see slightly different numerical results due to floating-point round-off errors.",
    "I0000 00:00:1796012196.413673    2181 cudart_stub.cc:31] Could not find cuda drivers on "
    "your machine, GPU will not be used.",
    "I0000 00:00:1796012196.473557    2181 cpu_feature_guard.cc:227] This TensorFlow binary "
    "is optimized to use available CPU instructions in performance-critical operations.",
    "To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild "
    "TensorFlow with the appropriate compiler flags.",
    "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",
    "fully_quantize: 0, inference_type: 6, input_inference_type: FLOAT32, "
    "output_inference_type: FLOAT32",
]
CUINIT = ("E0000 00:00:1796012199.314330    2181 cuda_platform.cc:52] failed call to cuInit: "
          "INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)")
REAL = [
    "E0000 00:00:1796012199.314330    2181 some_kernel.cc:52] Something real went wrong",
    "W0000 00:00:1796012199.314330    2181 loader.cc:12] A real warning",
    "UserWarning: a Python warning",
    "Traceback (most recent call last):",
]


def test_noise_is_recognised_and_real_lines_are_not():
    for line in NOISE:
        assert _quiet.is_noise(line + "\n"), line
    assert _quiet.is_noise(CUINIT, cuda=True)
    assert not _quiet.is_noise(CUINIT, cuda=False)  # with a GPU driver, cuInit failing is real
    for line in REAL:
        assert not _quiet.is_noise(line, cuda=True), line


def test_filtered_stderr_replays_real_lines_only(capfd):
    with _quiet.filtered_stderr():
        os.write(2, ("\n".join(NOISE + REAL) + "\n").encode())
    err = capfd.readouterr().err
    assert err.splitlines() == REAL


def test_filtered_stderr_replays_everything_when_the_block_raises(capfd):
    with pytest.raises(RuntimeError):
        with _quiet.filtered_stderr():
            os.write(2, ("\n".join(NOISE) + "\n").encode())
            raise RuntimeError("boom")
    assert capfd.readouterr().err.splitlines() == NOISE


def _no_startup_noise(stderr):
    """The lines of `stderr` that are TensorFlow start-up noise (none expected)."""
    bad = ("cuda", "cuinit", "onednn", "absl::initializelog", "i0000 ", "xnnpack delegate",
           "cpu_feature_guard")
    if _quiet.gpu_driver_present():
        bad = tuple(b for b in bad if b not in ("cuda", "cuinit"))
    return [line for line in stderr.splitlines() if any(b in line.lower() for b in bad)]


def test_export_cli_prints_no_startup_noise(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.save(tmp_path / "m.keras")
    env = dict(os.environ)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the CLI must quiet TensorFlow itself
    proc = subprocess.run(
        [sys.executable, "-m", "tflite_export", str(tmp_path / "m.keras"),
         f"--output={tmp_path / 'm.tflite'}", "--quantize=int8",
         "--representative_data=" + str(_npy(tmp_path)), "--num_threads=1", "--runs=2"],
        capture_output=True, text=True, timeout=300, cwd=ROOT, env=env,
        stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "m.tflite").exists()
    assert _no_startup_noise(proc.stderr) == [], proc.stderr[-3000:]
    assert "[3/7] convert" in proc.stderr  # the CLI's progress still shows


def _npy(tmp_path):
    import numpy as np

    path = tmp_path / "x.npy"
    np.save(path, np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32))
    return path

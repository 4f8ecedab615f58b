"""The two CLIs, run as real subprocesses (bounded by timeouts)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args, timeout=240):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=env, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def keras_file(tmp_path_factory):
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(4, 3),
                              keras.layers.Flatten(), keras.layers.Dense(10)])
    path = tmp_path_factory.mktemp("cli") / "m.keras"
    model.save(path)
    return path


def test_export_cli_with_fashion_mnist(keras_file, tmp_path):
    out = tmp_path / "m.tflite"
    proc = _run("tflite_export", str(keras_file), f"--output={out}", "--quantize=int8",
                "--representative_data=fashion_mnist:100", "--eval_data=fashion_mnist:300",
                "--num_threads=1", "--runs=5")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "# TFLite export" in proc.stdout and "top-1 agreement" in proc.stdout
    assert "[3/7] convert" in proc.stderr  # Progress of each stage.
    report = json.loads((tmp_path / "m.report.json").read_text())
    assert report["quantize"] == "int8" and report["fidelity"]["num_samples"] == 300
    assert report["accuracy"] is not None and list(report["latency_ms"]) == ["1"]

    bench = _run("tflite_export.benchmark", str(out), "--num_threads=1,2", "--runs=5", "--json")
    assert bench.returncode == 0, bench.stderr[-3000:]
    stats = json.loads(bench.stdout[bench.stdout.index("["):])
    assert [s["num_threads"] for s in stats] == [1, 2] and stats[0]["runs"] == 5


def test_export_cli_npz_and_errors(keras_file, tmp_path):
    x = np.random.default_rng(0).random((20, 28, 28, 1)).astype(np.float32)
    np.savez(tmp_path / "eval.npz", x=x, y=np.zeros(20, np.int64))
    np.save(tmp_path / "bad.npy", x[..., 0])
    proc = _run("tflite_export", str(keras_file), f"--output={tmp_path / 'f.tflite'}",
                "--quantize=float32", f"--eval_data={tmp_path / 'eval.npz'}", "--num_threads=")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tmp_path / "f.report.json").read_text())["latency_ms"] == {}

    bad = _run("tflite_export", str(keras_file), f"--output={tmp_path / 'g.tflite'}",
               f"--representative_data={tmp_path / 'bad.npy'}")
    assert bad.returncode == 2
    assert "error: representative_data has shape (20, 28, 28)" in bad.stderr
    assert not (tmp_path / "g.tflite").exists()
    missing = _run("tflite_export", str(keras_file), "--output=/nonexistent/dir/m.tflite",
                   "--quantize=float32")
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    usage = _run("tflite_export", "--quantize=float32")
    assert usage.returncode != 0 and "MODEL" in usage.stderr


def test_helpfull_lists_every_flag():
    proc = _run("tflite_export", "--helpfull", timeout=120)
    # Boolean flags are listed as --[no]name.
    for flag in ("--output", "--quantize", "--representative_data", "--eval_data",
                 "--num_threads", "--inference_input_type", "--[no]allow_float_fallback",
                 "--sparse_format", "--input_shape", "--max_calibration_samples"):
        assert flag in proc.stdout
    proc = _run("tflite_export.benchmark", "--helpfull", timeout=120)
    for flag in ("--num_threads", "--runs", "--warmup", "--[no]android", "--benchmark_binary",
                 "--serial", "--[no]use_gpu", "--[no]use_xnnpack", "--adb_path"):
        assert flag in proc.stdout


def test_benchmark_cli_android_without_device(tmp_path):
    model = tmp_path / "m.tflite"
    model.write_bytes(b"TFL3")
    proc = _run("tflite_export.benchmark", str(model), "--android", timeout=120)
    assert proc.returncode == 2 and "benchmark_binary=None does not exist" in proc.stderr
    binary = tmp_path / "bm"
    binary.write_bytes(b"\x7fELF\x02\x01\x01" + b"\x00" * 9 + b"\x02\x00\xb7\x00" + b"\x00" * 44)
    proc = _run("tflite_export.benchmark", str(model), "--android",
                f"--benchmark_binary={binary}", "--adb_path=/nonexistent/adb", timeout=120)
    assert proc.returncode == 2 and "adb not found" in proc.stderr

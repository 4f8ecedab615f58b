"""README command 1 (examples/quickstart.py) end to end, on a small slice of Fashion-MNIST."""

import os
import subprocess
import sys

import pytest

from tflite_export import _quiet

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = ("dense float32", "dense int8", "80% unstructured int8", "50% channels int8",
            "combined int8")


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    """README command 1's script on a slice: `(completed process, output folder)`."""
    out = tmp_path_factory.mktemp("quickstart") / "out"
    env = dict(os.environ)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the script must quiet TensorFlow itself
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", "quickstart.py"), f"--output_dir={out}",
         "--train_images=512", "--test_images=256", "--epochs=1", "--finetune_epochs=1",
         "--num_threads=1"],
        capture_output=True, text=True, timeout=600, cwd=ROOT, env=env, stdin=subprocess.DEVNULL)
    return proc, out


def test_quickstart_trains_prunes_exports_and_reports(quickstart):
    proc, out = quickstart
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "## Fashion-MNIST CNN, 256 test images" in proc.stdout
    table = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    for variant in VARIANTS:
        assert any(line.startswith(f"| {variant} |") for line in table), variant
    files = sorted(os.listdir(out))
    assert sum(name.endswith(".tflite") for name in files) == len(VARIANTS)
    assert sum(name.endswith(".report.json") for name in files) == len(VARIANTS)
    assert "comparison.png" in files
    assert not [name for name in files if ".tmp" in name]  # nothing half-written
    assert "python benchmarks/compression_table.py" in proc.stdout  # how to get the full table
    assert f"Plot: {out / 'comparison.png'}" in proc.stdout
    assert "[12/12] Compare" in proc.stdout  # numbered progress for every step


def test_quickstart_stderr_has_no_tensorflow_startup_noise(quickstart):
    """No CUDA/cuInit (on a machine without a GPU driver), oneDNN, absl or C++ INFO lines."""
    proc, _ = quickstart
    assert proc.returncode == 0, proc.stderr[-3000:]
    bad = ["onednn", "absl::initializelog", "i0000 ", "xnnpack delegate", "fully_quantize"]
    if not _quiet.gpu_driver_present():
        bad += ["cuda", "cuinit"]
    noise = [line for line in proc.stderr.splitlines() if any(b in line.lower() for b in bad)]
    assert noise == [], proc.stderr[-3000:]

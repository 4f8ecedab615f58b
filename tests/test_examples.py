"""README command 1 (examples/quickstart.py) end to end, on a small slice of Fashion-MNIST."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = ("dense float32", "dense int8", "80% unstructured int8", "50% channels int8",
            "combined int8")


def test_quickstart_trains_prunes_exports_and_reports(tmp_path):
    out = tmp_path / "quickstart"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", "quickstart.py"), f"--output_dir={out}",
         "--train_images=512", "--test_images=256", "--epochs=1", "--finetune_epochs=1",
         "--num_threads=1"],
        capture_output=True, text=True, timeout=600, cwd=ROOT, env=env, stdin=subprocess.DEVNULL)
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

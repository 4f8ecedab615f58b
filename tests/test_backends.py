"""tfprune's core on JAX and PyTorch: `tests/test_backend_core.py` once per backend.

A Keras backend is chosen per process, so each backend runs the core tests
in a process of its own (`KERAS_BACKEND=...`). Also: `import tfprune` does
not start TensorFlow on those backends.
"""

import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
BACKENDS = ("jax", "torch")


def _env(backend):
    return dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2",
                CUDA_VISIBLE_DEVICES="", JAX_PLATFORMS="cpu")


@pytest.mark.parametrize("backend", BACKENDS)
def test_core_tests_pass_on_backend(backend):
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
         os.path.join(HERE, "test_backend_core.py")],
        capture_output=True, text=True, timeout=1200, env=_env(backend), cwd=HERE,
        stdin=subprocess.DEVNULL)
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert "passed" in summary and "skipped" not in summary, summary


@pytest.mark.parametrize("backend", BACKENDS)
def test_import_tfprune_does_not_start_tensorflow(backend):
    script = ("import sys, keras, tfprune\n"
              "print(keras.backend.backend(), 'tensorflow' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=300, env=_env(backend), stdin=subprocess.DEVNULL)
    assert result.stdout.split() == [backend, "False"], result.stderr[-3000:]

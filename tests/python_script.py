"""Runs a Python snippet in a fresh process (for what must happen before TensorFlow starts)."""

import os
import subprocess
import sys


def run_python(script, marker, timeout=600):
    """Runs `script` in a new interpreter; asserts that it printed `marker`."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=timeout, env=env, stdin=subprocess.DEVNULL)
    assert marker in result.stdout, result.stderr[-3000:]
    return result

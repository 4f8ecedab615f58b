"""Pruning under tf.distribute: two local replicas (MirroredStrategy) and two worker
processes on 127.0.0.1 (MultiWorkerMirroredStrategy), with the same user code."""

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import tfprune

WORKERS = os.path.join(os.path.dirname(__file__), "_workers")
HAS_CHANNELS = hasattr(tfprune, "prune_channels")
NO_CHANNELS = "tfprune.prune_channels has not landed yet"
KINDS = ["unstructured", "unstructured_diverged"] + (
    ["channels", "channels_taylor"] if HAS_CHANNELS else [])
TIMEOUT = 300  # seconds for a whole multi-worker run, both processes


def worker_env(**extra):
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="", **extra)
    return env


def free_ports(count):
    """Ports the OS picked on 127.0.0.1, released for the workers to bind."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def tail(path, chars=3000):
    try:
        with open(path, errors="replace") as f:
            return f.read()[-chars:]
    except OSError:
        return "(no log)"


@pytest.fixture(scope="module")
def multi_worker(tmp_path_factory):
    """Runs mwms_worker.py as workers 0 and 1 of one cluster; always stops both."""
    out = tmp_path_factory.mktemp("multi_worker")
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    procs, logs = [], []
    started = time.monotonic()
    try:
        for index in range(2):
            config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
            logs.append(out / f"worker{index}.log")
            with open(logs[-1], "w") as log:
                procs.append(subprocess.Popen(
                    [sys.executable, os.path.join(WORKERS, "mwms_worker.py"), str(out)] + KINDS,
                    env=worker_env(TF_CONFIG=json.dumps(config)),
                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                ))
        while any(p.poll() is None for p in procs):
            # A worker that failed leaves the other waiting in a collective: stop early.
            if any(p.poll() not in (None, 0) for p in procs):
                break
            if time.monotonic() - started > TIMEOUT:
                break
            time.sleep(0.5)
        codes = [p.poll() for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
    elapsed = time.monotonic() - started
    problems = [
        f"worker {i} {'timed out' if code is None else f'exited with {code}'}:\n{tail(logs[i])}"
        for i, code in enumerate(codes) if code != 0
    ]
    return {"out": out, "problems": problems, "seconds": elapsed}


def load_results(run, kind):
    assert not run["problems"], "\n\n".join(run["problems"])
    results = []
    for index in range(2):
        with open(run["out"] / f"{kind}_worker{index}.json") as f:
            results.append(json.load(f))
    return results


def check_multi_worker(run, kind, scratch=()):
    """Both workers hold the same masks and weights (but `scratch` variables) at every update."""
    import keras

    chief, other = load_results(run, kind)
    for result in (chief, other):
        assert "error" not in result, f"worker {result['index']}: {result['error']}"
    assert chief["replicas"] == other["replicas"] == 2
    # The same masks from the same weights at every update, and at the end.
    assert [u[0] for u in chief["updates"]] == [2, 4, 6, 8]
    assert [u[1] for u in chief["updates"]] == [u[1] for u in other["updates"]], "masks drifted"
    if not scratch:
        assert [u[2] for u in chief["updates"]] == [u[2] for u in other["updates"]], "weights drifted"
    assert chief["masks"] == other["masks"]
    different = [path for path in chief["weights"]
                 if chief["weights"][path] != other["weights"][path] and not path.endswith(scratch)]
    assert not different, f"weights differ between the workers: {different}"
    assert chief["pruning_steps"] == other["pruning_steps"] == [12] * len(chief["pruning_steps"])
    assert chief["iterations"] == 12
    assert chief["sparsity"] == other["sparsity"]
    # The chief wrote the model; it loads with the state both workers ended with.
    model = keras.models.load_model(run["out"] / f"{kind}.keras")
    wrappers = tfprune.callbacks.collect_wrappers(model)
    assert [int(w.pruning_step.numpy()) for w in wrappers] == chief["pruning_steps"]
    sys.path.insert(0, WORKERS)
    try:
        import shared
    finally:
        sys.path.pop(0)
    masks = [mask.numpy() for w in wrappers for _, mask in w.masked_weights]
    assert shared.digest(masks) == chief["masks"]
    return chief


def test_multi_worker_unstructured_pruning_keeps_workers_identical(multi_worker):
    chief = check_multi_worker(multi_worker, "unstructured")
    for path, sparsity in chief["sparsity"].items():
        assert sparsity == pytest.approx(0.6, abs=0.02), path


def test_multi_worker_different_starting_masks_are_a_clear_error(multi_worker):
    results = []
    for index in range(2):
        with open(multi_worker["out"] / f"unstructured_diverged_worker{index}.json") as f:
            results.append(json.load(f))
    for result in results:  # both workers stop, at the same point, with the same reason
        assert "start training model 'unstructured_diverged_cnn' from different pruning states" in \
            result.get("error", ""), result
        assert "prune_low_magnitude_conv1" in result["error"] and "backup_dir" in result["error"]


@pytest.mark.skipif(not HAS_CHANNELS, reason=NO_CHANNELS)
def test_multi_worker_channel_pruning_keeps_workers_identical(multi_worker):
    chief = check_multi_worker(multi_worker, "channels")
    assert max(chief["sparsity"].values()) > 0.3


@pytest.mark.skipif(not HAS_CHANNELS, reason=NO_CHANNELS)
def test_multi_worker_taylor_channel_pruning_keeps_workers_identical(multi_worker):
    # taylor_probe holds each replica's own gradient of the step (scratch); the
    # accumulated taylor_score, from which masks come, must agree.
    check_multi_worker(multi_worker, "channels_taylor", scratch=("taylor_probe",))


@pytest.mark.parametrize("kind", [
    "unstructured",
    pytest.param("channels", marks=pytest.mark.skipif(not HAS_CHANNELS, reason=NO_CHANNELS)),
])
def test_mirrored_replicas_agree_after_every_update(tmp_path, kind):
    out = tmp_path / "mirrored.json"
    result = subprocess.run(
        [sys.executable, os.path.join(WORKERS, "mirrored_worker.py"), str(out), kind],
        capture_output=True, text=True, timeout=TIMEOUT, env=worker_env(), stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with open(out) as f:
        seen = json.load(f)[kind]
    assert seen["problems"] == []
    assert seen["updates"] == seen["expected_updates"] == [2, 4, 6, 8]
    assert seen["checks"] == 4 + 12  # every update and every optimizer step
    assert seen["pruning_steps"] == [12]
    if kind == "unstructured":
        for path, sparsity in seen["sparsity"].items():
            assert sparsity == pytest.approx(0.6, abs=0.02), path
    else:
        assert np.max(list(seen["sparsity"].values())) > 0.3

"""`python -m tflite_export.plan`, run as a real subprocess on a tiny CNN."""

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
    return subprocess.run([sys.executable, "-m", "tflite_export.plan", *args],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env,
                          stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def keras_file(tmp_path_factory):
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(32, 3, activation="relu", name="c1")(inputs)
    x = keras.layers.Conv2D(32, 3, strides=2, activation="relu", name="c2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(10, name="head")(x), name="cli_cnn")
    path = tmp_path_factory.mktemp("plan_cli") / "m.keras"
    model.save(path)
    return path


def test_macs_budget_float32(keras_file, tmp_path):
    import keras

    import tfprune

    dense_macs = tfprune.count_macs(keras.models.load_model(keras_file))
    out = tmp_path / "planned.keras"
    proc = _run(str(keras_file), f"--macs={0.5 * dense_macs}", "--quantize=float32",
                f"--output={out}", "--round_to=4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| group | kept / total |" in proc.stdout and "| c1[out] |" in proc.stdout
    assert "Budget met" in proc.stdout and "[1/4] round 1: macs predicted" in proc.stderr
    assert f"Wrote {out}" in proc.stdout and "planned.plan.json" in proc.stdout
    planned = keras.models.load_model(out)
    assert tfprune.count_macs(planned) <= 0.5 * dense_macs
    from tfprune.planning import ChannelPlan

    plan = ChannelPlan.load(tmp_path / "planned.plan.json")
    assert plan.budget["macs"] == pytest.approx(0.5 * dense_macs)
    assert plan.info["rounds"] == 1 and plan.info["source"] == str(keras_file)
    # The plan drives prune_channels on the original model: same widths.
    again = tfprune.shrink(tfprune.prune_channels(
        keras.models.load_model(keras_file), tfprune.ConstantSparsity(0.5, 0),
        plan=str(tmp_path / "planned.plan.json")))
    assert again.count_params() == planned.count_params()


def test_latency_budget_int8_measures_then_reuses_the_table(keras_file, tmp_path):
    import keras

    from tflite_export import latency_table as lt

    model = keras.models.load_model(keras_file)
    dense_ms = lt.HostRunner().time_one(lt.to_tflite(model, "int8"), whole=True)
    out, table = tmp_path / "planned.keras", tmp_path / "table.json"
    args = [str(keras_file), f"--latency_ms={0.6 * dense_ms}", "--num_threads=1",
            "--quantize=int8", "--representative_data=fashion_mnist:20", f"--output={out}",
            f"--table={table}", "--max_rounds=2", "--levels=2"]
    proc = _run(*args)
    # 3: missed after 2 rounds (timing noise on a busy machine); the files are written anyway.
    assert proc.returncode in (0, 3), proc.stderr[-3000:]
    assert "[1/" in proc.stderr and "convert c1" in proc.stderr  # Progress of the table.
    assert "measured latency_ms" in proc.stdout and "Latency table of 'cli_cnn'" in proc.stdout
    assert ("Budget met" in proc.stdout) == (proc.returncode == 0)
    saved = json.loads(table.read_text())
    assert saved["key"]["precision"] == "int8" and saved["key"]["levels"] == 2
    assert out.exists() and (tmp_path / "planned.plan.json").exists()

    refused = _run(*args)
    assert refused.returncode == 2 and "already exists; pass --overwrite" in refused.stderr
    reused = _run(*args, "--overwrite")
    assert reused.returncode in (0, 3), reused.stderr[-3000:]
    assert "convert c1" not in reused.stderr  # The table was loaded, not measured again.
    assert json.loads(table.read_text()) == saved


def test_errors(keras_file, tmp_path):
    out = f"--output={tmp_path / 'p.keras'}"
    missing = _run(str(tmp_path / "none.keras"), "--macs=1e6", out)
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines()[-1].startswith("error: MODEL")
    assert "Traceback" not in missing.stderr
    no_budget = _run(str(keras_file), out)
    assert no_budget.returncode == 2 and "error: Give a budget" in no_budget.stderr
    suffix = _run(str(keras_file), "--macs=1e6", f"--output={tmp_path / 'p.h5'}")
    assert suffix.returncode == 2 and "must end with .keras" in suffix.stderr
    same = _run(str(keras_file), "--macs=1e6", f"--output={keras_file}", "--overwrite")
    assert same.returncode == 2 and "would replace MODEL" in same.stderr
    android = _run(str(keras_file), "--latency_ms=1", out, "--android")
    assert android.returncode == 2 and "--android needs --benchmark_binary" in android.stderr
    usage = _run(str(keras_file), "--macs=1e6")
    assert usage.returncode != 0 and "--output is required" in usage.stderr
    np.save(tmp_path / "bad.npy", np.zeros((4, 28, 28), np.float32))
    bad = _run(str(keras_file), "--latency_ms=1", out, "--quantize=int8",
               f"--representative_data={tmp_path / 'bad.npy'}", "--levels=2")
    assert bad.returncode == 2 and "error: representative_data has shape (4, 28, 28)" in bad.stderr
    assert "Traceback" not in bad.stderr and not (tmp_path / "p.keras").exists()

"""benchmarks/transformer_speedup.py end to end with tiny models (`--quick`)."""

import os
import re
import subprocess
import sys

import pytest

from tflite_export import _quiet

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "transformer_speedup.py")
ROW = re.compile(
    r"^\| (?P<model>\w+) \| (?P<precision>\w+) \| (?P<threads>\d+) \| "
    r"(?P<dense>[\d.]+) \((?P<dense_best>[\d.]+)\) \| "
    r"(?P<pruned>[\d.]+) \((?P<pruned_best>[\d.]+)\) \| "
    r"(?P<speedup>[\d.]+)x \| (?P<mac_ratio>[\d.]+)x \| (?P<efficiency>[\d.]+) \| "
    r"(?P<verdict>PASS|FAIL) \|$")


@pytest.fixture(scope="module")
def run():
    """The script's output with tiny models, both precisions, 1 and 2 threads."""
    env = dict(os.environ)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the script must quiet TensorFlow itself
    return subprocess.run(
        [sys.executable, SCRIPT, "--quick", "--rounds=2", "--runs_per_round=1"],
        capture_output=True, text=True, timeout=300, cwd=ROOT, env=env,
        stdin=subprocess.DEVNULL)


def _rows(stdout):
    return [m.groupdict() for m in map(ROW.match, stdout.splitlines()) if m]


def test_table_has_a_row_per_model_precision_and_thread_count(run):
    assert run.returncode == 0, run.stderr[-3000:]
    rows = _rows(run.stdout)
    assert [(r["model"], r["precision"], r["threads"]) for r in rows] == [
        (model, precision, threads) for model in ("vit", "bert")
        for precision in ("float32", "int8") for threads in ("1", "2")]
    for r in rows:
        speedup, mac_ratio, efficiency = (float(r[k]) for k in ("speedup", "mac_ratio",
                                                                  "efficiency"))
        assert float(r["dense_best"]) <= float(r["dense"])
        assert float(r["pruned_best"]) <= float(r["pruned"])
        assert speedup > 0 and mac_ratio > 1.2  # half the heads and FFN channels are gone
        # Printed with 2 (speedup, MAC ratio) and 3 decimals (their quotient).
        rounding = 0.005 / mac_ratio + speedup * 0.005 / mac_ratio**2 + 0.0005
        assert abs(efficiency - speedup / mac_ratio) <= rounding + 1e-9
        if abs(efficiency - 0.8) > 0.0005:  # else the unrounded value decided
            assert r["verdict"] == ("PASS" if efficiency >= 0.8 else "FAIL")
    overall = re.search(r"^speedup >= 0\.8 x MAC ratio: (PASS|FAIL) \((\d+)/(\d+) rows\)$",
                        run.stdout, re.M)
    assert overall, run.stdout
    passed = sum(r["verdict"] == "PASS" for r in rows)
    assert overall.groups() == ("PASS" if passed == len(rows) else "FAIL", str(passed),
                                str(len(rows)))


def test_half_the_heads_and_ffn_channels_kept_and_shrink_matches_masks(run):
    assert run.returncode == 0, run.stderr[-3000:]
    heads = re.findall(r"^  attention heads: kept (.+)$", run.stdout, re.M)
    ffn = re.findall(r"^  FFN channels: kept (.+)$", run.stdout, re.M)
    assert len(heads) == len(ffn) == 2  # one line per model
    for line in heads + ffn:
        for kept, total in (pair.split("/") for pair in line.split()):
            assert int(kept) * 2 == int(total)
    errors = [float(e) for e in re.findall(r"shrunk vs masked relative error ([\d.e+-]+) ",
                                           run.stdout)]
    assert len(errors) == 2 and max(errors) <= 1e-5
    assert re.search(r"^shrunk == masked \(relative error <= 1e-05\): PASS", run.stdout, re.M)


def test_int8_is_fully_integer(run):
    """No op is left in float, LayerNormalization included (see tflite_export.integer_normalization)."""
    assert run.returncode == 0, run.stderr[-3000:]
    int8 = re.findall(r"^  int8: .tflite .*$", run.stdout, re.M)
    assert len(int8) == 2
    for line in int8:
        assert "ops left in float" not in line, line


def test_stderr_has_no_tensorflow_startup_noise(run):
    assert run.returncode == 0, run.stderr[-3000:]
    bad = ["onednn", "absl::initializelog", "i0000 ", "xnnpack delegate", "fully_quantize"]
    if not _quiet.gpu_driver_present():
        bad += ["cuda", "cuinit"]
    noise = [line for line in run.stderr.splitlines() if any(b in line.lower() for b in bad)]
    assert noise == [], run.stderr[-3000:]

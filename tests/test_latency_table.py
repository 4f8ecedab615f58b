"""Latency tables: measuring with LiteRT, calibration, save/reload and refusal, Android batches.

The Android path runs against a fake `adb` script (no device here), as in test_android.py.
"""

import json
import os
import stat
import sys
import textwrap

import numpy as np
import pytest

from tflite_export import latency_table as lt
from tflite_export.android import AndroidError

from test_android import NEWER_OUTPUT, SAMPLE_OUTPUT, _elf


def _cnn(width=16, name="small_cnn"):
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(width, 3, activation="relu", name="c1")(inputs)
    x = keras.layers.Conv2D(16, 3, activation="relu", name="c2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="head")(x), name=name)


class FakeRunner:
    """Times a model as a known function of its size (no runtime), and counts calls."""

    def __init__(self, device=None, whole_factor=1.0):
        self.num_threads = 1
        self.calls = 0
        self._device = device or {"kind": "fake", "name": "bench"}
        self.whole_factor = whole_factor

    def device(self):
        return dict(self._device)

    def time(self, contents, names=None, whole=None, progress=None):
        self.calls += 1
        whole = whole or [False] * len(contents)
        return [len(c) / 1000.0 * (self.whole_factor if w else 1.0)
                for c, w in zip(contents, whole)]


@pytest.fixture(scope="module")
def model():
    return _cnn()


@pytest.fixture(scope="module")
def table(model):
    messages = []
    runner = lt.HostRunner(num_threads=1, seconds=0.005, whole_seconds=0.02, min_blocks=2,
                           warmup_seconds=0.0)
    result = lt.measure(model, "int8", round_to=8, levels=2, runner=runner,
                        progress=lambda done, total, message: messages.append(
                            (done, total, message)))
    return result, messages


def test_measure_times_every_grid_point_and_calibrates(model, table):
    table, messages = table
    cost = table.cost_model
    assert cost.kind == "latency" and cost.unit == "ms"
    assert [s.name for s in cost.sites] == ["c1", "c2", "head"]
    # c1's output (16) and c2's output (16) are the prunable groups: 2 levels each.
    assert [s.values.shape for s in cost.sites] == [(2,), (2, 2), (2,)]
    assert all(np.all(s.values > 0) for s in cost.sites)
    converts = [m for _, _, m in messages if m.startswith("convert c")]
    times = [m for _, _, m in messages if m.startswith("time ")]
    assert converts and times and messages[-1][0] == messages[-1][1]
    c = table.calibration
    assert c["dense_ms"] > 0 and c["pruned_ms"] > 0 and c["validation_ms"] > 0
    full = {"c1[out]": 16, "c2[out]": 16}
    # The fit goes through the dense measurement exactly.
    assert table(full) == pytest.approx(c["dense_ms"], rel=1e-9)
    assert np.isfinite(c["validation_error"])
    assert table.key["precision"] == "int8" and table.key["num_threads"] == 1
    assert table.key["device"] == lt.host_device() and table.key["round_to"] == 8
    assert "one-layer models timed" in table.summary()


def test_calibration_fits_base_and_scale_from_whole_models(model):
    # Whole models "take" 3x their bytes: the fit's scale absorbs it, and the
    # prediction of the dense model is its measurement.
    table = lt.measure(model, "float32", round_to=8, levels=2,
                       runner=FakeRunner(whole_factor=3.0), progress=lambda *a: None)
    c = table.calibration
    assert table({"c1[out]": 16, "c2[out]": 16}) == pytest.approx(c["dense_ms"])
    assert table.cost_model.scale > 1.0
    assert c["validation_predicted_ms"] == pytest.approx(
        table.cost_model.base + table.cost_model.scale * table.cost_model.sites_sum(
            lt.uniform_counts(__import__("tfprune").DependencyGraph(model), 0.3, 8)))


def test_save_reload_and_refusals(model, table, tmp_path):
    table, _ = table
    path = tmp_path / "table.json"
    table.save(path)
    device = lt.host_device()
    again = lt.LatencyTable.load(path, model=model, precision="int8", num_threads=1,
                                 device=device)
    assert again.get_config() == table.get_config()
    counts = {"c1[out]": 8, "c2[out]": 16}
    assert again(counts) == pytest.approx(table(counts))
    with pytest.raises(ValueError, match=r"measured for model=.*small_cnn.*not the wanted "
                                         r"model=.*wider"):
        lt.LatencyTable.load(path, model=_cnn(width=24, name="wider"))
    with pytest.raises(ValueError, match=r"precision='int8', not the wanted "
                                         r"precision='float32'"):
        lt.LatencyTable.load(path, model=model, precision="float32")
    with pytest.raises(ValueError, match=r"num_threads=1, not the wanted num_threads=4"):
        lt.LatencyTable.load(path, num_threads=4)
    with pytest.raises(ValueError, match=r"measured for device=.*not the wanted device="):
        lt.LatencyTable.load(path, device=dict(device, cpu="another CPU"))
    (tmp_path / "other.json").write_text(json.dumps({"targets": {}}))
    with pytest.raises(ValueError, match="is not a latency table"):
        lt.LatencyTable.load(tmp_path / "other.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ValueError, match="invalid JSON"):
        lt.LatencyTable.load(tmp_path / "broken.json")
    with pytest.raises(ValueError, match="does not exist"):
        lt.LatencyTable.load(tmp_path / "none.json")


def test_model_fingerprint_is_the_architecture_not_the_weights(model, tmp_path):
    import keras

    path = tmp_path / "m.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    reloaded.set_weights([w * 0 for w in reloaded.get_weights()])
    assert lt.model_fingerprint(reloaded) == lt.model_fingerprint(model)
    assert lt.model_fingerprint(_cnn(width=24)) != lt.model_fingerprint(model)


def test_to_tflite_is_frozen_and_matches_keras(model):
    from tflite_export import litert

    content = lt.to_tflite(model, "float32")
    x = np.random.default_rng(0).random((1, 16, 16, 3), dtype=np.float32)
    interpreter = litert.make_interpreter(content)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    out = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(out, np.asarray(model(x)), rtol=1e-4, atol=1e-5)
    int8 = lt.to_tflite(model, "int8", representative_data=np.repeat(x, 4, axis=0))
    details = litert.make_interpreter(int8).get_input_details()[0]
    assert np.dtype(details["dtype"]) == np.int8
    with pytest.raises(ValueError, match="precision='float16' is not one of"):
        lt.to_tflite(model, "float16")
    with pytest.raises(ValueError, match=r"representative_data has shape \(2, 8\)"):
        lt.to_tflite(model, "int8", representative_data=np.zeros((2, 8), np.float32))


def test_measure_errors(tmp_path):
    import keras

    inputs = keras.Input((None, None, 3))
    unknown = keras.Model(inputs, keras.layers.Conv2D(4, 3)(inputs))
    with pytest.raises(ValueError, match="unknown size.*fixed input shape"):
        lt.measure(unknown, runner=FakeRunner())
    fixed = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="no prunable channel group"):
        lt.measure(fixed, runner=FakeRunner())
    with pytest.raises(ValueError, match="precision='int4'"):
        lt.measure(fixed, precision="int4", runner=FakeRunner())


def test_device_fingerprints():
    host = lt.host_device()
    assert host["kind"] == "host" and host["cpu"] and host["machine"] and host["litert"]
    props = lt.parse_getprop(textwrap.dedent("""\
        [ro.build.fingerprint]: [google/oriole/oriole:14/UQ1A/1:user/release-keys]
        [ro.product.model]: [Pixel 6]
        [ro.soc.manufacturer]: [Google]
        [ro.soc.model]: [GS101]
        [ro.product.cpu.abi]: [arm64-v8a]
        not a property line
        """))
    assert props["ro.product.model"] == "Pixel 6"
    assert lt.android_device(props) == {
        "kind": "android", "model": "Pixel 6", "soc": "Google GS101", "abi": "arm64-v8a",
        "fingerprint": "google/oriole/oriole:14/UQ1A/1:user/release-keys"}
    assert lt.android_device({"ro.board.platform": "msmnile"})["soc"] == "msmnile"


def test_android_batch_command_and_parsing():
    command = lt.android_batch_command(["m00000.tflite", "m00001.tflite"], num_threads=2,
                                       runs=30, warmup=3)
    assert command.startswith(f"cd {lt.REMOTE_DIR} && for f in m00000.tflite m00001.tflite;")
    assert "--num_threads=2 --num_runs=30 --warmup_runs=3 --use_xnnpack=true" in command
    text = ("noise before\n@@tfprune_latency m00000.tflite\n" + SAMPLE_OUTPUT
            + "@@tfprune_latency m00001.tflite\n" + NEWER_OUTPUT)
    times = lt.parse_batch_output(text, ["m00000.tflite", "m00001.tflite"])
    # The mean when the build logs no median, else the median.
    assert times == [pytest.approx(51.7432), pytest.approx(1.495)]
    with pytest.raises(ValueError, match="did not run 'm00002.tflite'"):
        lt.parse_batch_output(text, ["m00000.tflite", "m00002.tflite"])
    failed = "@@tfprune_latency m00000.tflite\nERROR: Could not open model\n"
    with pytest.raises(ValueError, match="benchmark_model failed on 'm00000.tflite'"):
        lt.parse_batch_output(failed, ["m00000.tflite"])


FAKE_ADB = """#!{python}
import re, sys
args = sys.argv[1:]
with open({log!r}, "a") as log:
    log.write(repr(args) + "\\n")
if args[:1] == ["-s"]:
    args = args[2:]
if args == ["devices"]:
    print("List of devices attached\\nemulator-5554\\tdevice\\n")
elif args == ["shell", "getprop"]:
    print("[ro.product.model]: [sdk_gphone64]\\n[ro.product.cpu.abi]: [arm64-v8a]\\n"
          "[ro.build.fingerprint]: [google/sdk/emu:14]\\n[ro.board.platform]: [ranchu]")
elif args[:1] == ["push"]:
    pass
elif args[:1] == ["shell"] and "for f in" in args[1]:
    for name in re.search(r"for f in (.*?);", args[1]).group(1).split():
        print("@@tfprune_latency " + name)
        print(open({output!r}).read())
"""


def test_android_runner_pushes_once_and_runs_one_batch(tmp_path):
    output = tmp_path / "output.txt"
    output.write_text(NEWER_OUTPUT)
    log = tmp_path / "adb.log"
    adb = tmp_path / "adb"
    adb.write_text(FAKE_ADB.format(python=sys.executable, log=str(log), output=str(output)))
    adb.chmod(adb.stat().st_mode | stat.S_IEXEC)
    runner = lt.AndroidRunner(_elf(tmp_path / "bm", 183), num_threads=1, adb_path=str(adb))
    assert runner.serial == "emulator-5554"
    assert runner.device() == {"kind": "android", "model": "sdk_gphone64", "soc": "ranchu",
                               "abi": "arm64-v8a", "fingerprint": "google/sdk/emu:14"}
    seen = []
    times = runner.time([b"TFL3one", b"TFL3two", b"TFL3three"], names=["a", "b", "c"],
                        progress=lambda done, total, message: seen.append(message))
    assert times == [pytest.approx(1.495)] * 3
    calls = [eval(line) for line in log.read_text().splitlines()]
    pushes = [c for c in calls if "push" in c]
    batches = [c for c in calls if any("for f in" in a for a in c)]
    assert len(pushes) == 1 and len(batches) == 1
    pushed = pushes[0][pushes[0].index("push") + 1:]
    assert [os.path.basename(p) for p in pushed[:-1]] == [
        "m00000.tflite", "m00001.tflite", "m00002.tflite", "benchmark_model"]
    assert pushed[-1] == lt.REMOTE_DIR + "/"
    assert seen[-1] == "time c: 1.495 ms"


def test_android_runner_errors(tmp_path):
    with pytest.raises(ValueError, match="benchmark_binary=None does not exist"):
        lt.AndroidRunner(None)
    with pytest.raises(AndroidError, match="adb not found"):
        lt.AndroidRunner(_elf(tmp_path / "bm", 183), adb_path=str(tmp_path / "no-adb"))

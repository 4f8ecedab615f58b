"""Report schema, Markdown, comparison table, plot and MAC counting."""

import json
import sys

import numpy as np
import pytest

import tflite_export
from tflite_export import ExportReport, count_macs, count_tflite_macs
from tflite_export.report import report_paths


def _report(name, size, macs, accuracy, median, quantize="int8"):
    return ExportReport(
        model_name=name, tflite_path=f"/tmp/{name}.tflite", quantize=quantize,
        size_bytes=size, gzip_size_bytes=size // 2, params=1000, nonzero_params=400, macs=macs,
        macs_source="keras", input_dtypes=["int8"], output_dtypes=["int8"],
        latency_ms={"1": {"median_ms": median, "mean_ms": median, "init_ms": 1.0,
                          "first_run_ms": 2.0, "min_ms": median, "p90_ms": median,
                          "p99_ms": median, "std_ms": 0.0}},
        fidelity={"num_samples": 10, "top1_agreement": 0.995, "max_abs_error": 0.01,
                  "mean_abs_error": 0.001},
        accuracy={"reference": accuracy + 0.001, "tflite": accuracy})


def test_schema_round_trip(tmp_path):
    report = _report("a", 4096, 1000, 0.9, 0.5)
    data = report.to_dict()
    for key in ("schema_version", "size_bytes", "gzip_size_bytes", "params", "nonzero_params",
                "sparsity", "macs", "latency_ms", "quantize", "input_dtypes", "output_dtypes",
                "fidelity", "accuracy", "created_utc", "source", "weight_dtypes", "op_counts"):
        assert key in data
    assert data["sparsity"] == pytest.approx(0.6)
    assert ExportReport.from_dict(json.loads(report.to_json())) == report
    assert ExportReport.from_config(report.get_config()) == report
    report.tflite_path = str(tmp_path / "a.tflite")
    json_path, md_path = report.save()
    assert (json_path, md_path) == report_paths(tmp_path / "a.tflite")
    assert tflite_export.load_report(json_path) == report
    assert "| Accuracy | 90.00%" in open(md_path).read()


def test_report_paths():
    assert report_paths("x/model.tflite") == ("x/model.report.json", "x/model.report.md")
    assert report_paths("x/model.bin") == ("x/model.bin.report.json", "x/model.bin.report.md")


def test_load_report_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        tflite_export.load_report(tmp_path / "none.report.json")
    newer = _report("a", 1, 1, 0.5, 1.0).to_dict()
    newer["schema_version"] = tflite_export.SCHEMA_VERSION + 1
    path = tmp_path / "n.report.json"
    path.write_text(json.dumps(newer))
    with pytest.raises(ValueError, match="newer"):
        tflite_export.load_report(path)


def test_compare_and_plot(tmp_path):
    reports = [_report("dense", 8192, 2000, 0.90, 1.0, "float32"),
               _report("pruned", 4096, 1000, 0.89, 0.6, "float32"),
               _report("int8", 1024, 1000, 0.888, 0.3)]
    table = tflite_export.compare_reports(reports, labels=["dense", "pruned", "pruned+int8"])
    lines = table.strip().splitlines()
    assert len(lines) == 5 and lines[0].startswith("| model | quantize | size KiB")
    assert "| pruned | float32 | 4.0 | 0.500 |" in table
    assert "| pruned+int8 | int8 | 1.0 | 0.125 |" in table and "88.80" in table
    png = tflite_export.plot_reports(reports, tmp_path / "cmp.png")
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="labels"):
        tflite_export.compare_reports(reports, labels=["x"])
    with pytest.raises(ValueError, match="empty"):
        tflite_export.compare_reports([])
    with pytest.raises(ValueError, match="does not exist"):
        tflite_export.plot_reports(reports, tmp_path / "no" / "x.png")


def test_plot_without_matplotlib(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match="pip install matplotlib"):
        tflite_export.plot_reports([_report("a", 1, 1, 0.5, 1.0)], tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []


def test_import_does_not_pull_tfmot():
    import subprocess

    code = ("import sys, tflite_export, tflite_export.android, tflite_export.benchmark;"
            "bad=[m for m in sys.modules if m.startswith(('tensorflow_model_optimization',"
            "'tf_keras'))]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# --- MAC counting ---------------------------------------------------------------------


def _macs_of(layer, input_shape):
    import keras

    inp = keras.Input(input_shape)
    return count_macs(keras.Model(inp, layer(inp)))


def test_macs_per_layer_type():
    from keras import layers

    assert _macs_of(layers.Dense(5), (7,)) == 35
    assert _macs_of(layers.Dense(5), (3, 7)) == 105
    assert _macs_of(layers.Conv1D(4, 3), (10, 2)) == 8 * 4 * 3 * 2
    assert _macs_of(layers.Conv2D(4, 3), (6, 6, 2)) == 4 * 4 * 4 * 9 * 2
    assert _macs_of(layers.Conv2D(4, 3, groups=2), (6, 6, 2)) == 4 * 4 * 4 * 9 * 1
    assert _macs_of(layers.Conv3D(2, 2), (3, 3, 3, 1)) == 2 * 2 * 2 * 2 * 8
    assert _macs_of(layers.Conv2D(4, 3, strides=2, padding="same"), (8, 8, 2)) == 4 * 4 * 4 * 18
    assert _macs_of(layers.Conv2DTranspose(4, 3, strides=2), (5, 5, 2)) == 25 * 2 * 4 * 9
    assert _macs_of(layers.Conv1DTranspose(3, 2), (5, 2)) == 5 * 2 * 3 * 2
    assert _macs_of(layers.DepthwiseConv2D(3), (6, 6, 4)) == 4 * 4 * 4 * 9
    assert _macs_of(layers.DepthwiseConv2D(3, depth_multiplier=2), (6, 6, 4)) == 4 * 4 * 8 * 9
    assert _macs_of(layers.SeparableConv2D(5, 3), (6, 6, 4)) == 16 * 4 * 9 + 16 * 4 * 5
    assert _macs_of(layers.EinsumDense("abc,cd->abd", output_shape=(None, 6)), (3, 4)) == 72
    assert _macs_of(layers.EinsumDense("ab,bc->ac", output_shape=8), (5,)) == 40
    assert _macs_of(layers.BatchNormalization(), (4,)) == 0


def test_macs_nested_and_shared_models():
    import keras
    from keras import layers

    inner = keras.Sequential([keras.Input((4,)), layers.Dense(3)])
    inp = keras.Input((4,))
    out = layers.Dense(2)(inner(inp))
    assert count_macs(keras.Model(inp, out)) == 12 + 6
    shared = layers.Dense(4)
    a, b = keras.Input((4,)), keras.Input((4,))
    model = keras.Model([a, b], layers.Add()([shared(a), shared(b)]))
    assert count_macs(model) == 32


def test_macs_subclassed_model_raises():
    import keras

    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(3)

        def call(self, x):
            return self.dense(x)

    net = Net()
    net(np.zeros((1, 4), np.float32))
    with pytest.raises(tflite_export.MacCountError, match="subclassed"):
        count_macs(net)


def test_keras_and_tflite_counts_agree(tmp_path):
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 16, 3))
    x = layers.Conv2D(8, 3, padding="same")(inp)
    x = layers.DepthwiseConv2D(3)(x)
    x = layers.Conv2DTranspose(4, 3, strides=2)(x)
    x = layers.SeparableConv2D(6, 3)(x)
    x = layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, layers.Dense(5)(x))
    report = tflite_export.export(model, tmp_path / "m.tflite", quantize="float32",
                                  num_threads=None)
    assert report.macs == count_macs(model)
    assert count_tflite_macs(str(tmp_path / "m.tflite")) == report.macs

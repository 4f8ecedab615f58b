"""Real conversions and a real LiteRT interpreter for tflite_export.export."""

import json
import os

import numpy as np
import pytest

from export_fixtures import fashion_data, files_in, make_cnn, trained_cnn

import tflite_export
from tflite_export import litert


@pytest.fixture(scope="module")
def cnn():
    return trained_cnn()


@pytest.fixture(scope="module")
def data():
    return fashion_data()


@pytest.fixture(scope="module")
def int8_export(cnn, data, tmp_path_factory):
    (x_train, _), (x_test, y_test) = data
    path = tmp_path_factory.mktemp("int8") / "cnn.tflite"
    report = tflite_export.export(cnn, path, quantize="int8",
                                  representative_data=x_train[:300],
                                  eval_data=(x_test, y_test), num_threads=(1, 2),
                                  benchmark_runs=10)
    return path, report


def test_int8_writes_model_and_reports(int8_export):
    path, report = int8_export
    assert files_in(path.parent) == ["cnn.report.json", "cnn.report.md", "cnn.tflite"]
    data = json.loads((path.parent / "cnn.report.json").read_text())
    assert data["schema_version"] == tflite_export.SCHEMA_VERSION
    assert data["size_bytes"] == os.path.getsize(path)
    assert 0 < data["gzip_size_bytes"] < data["size_bytes"]
    assert data["quantize"] == "int8"
    assert data["input_dtypes"] == ["int8"] and data["output_dtypes"] == ["int8"]
    assert data["params"] == data["nonzero_params"] > 0
    # 26*26*16*9 + 11*11*32*144 + 800*10
    assert data["macs"] == 97344 + 557568 + 8000 and data["macs_source"] == "keras"
    assert set(data["latency_ms"]) == {"1", "2"}
    assert data["latency_ms"]["1"]["runs"] == 10
    assert "top-1 agreement" in (path.parent / "cnn.report.md").read_text()
    assert tflite_export.load_report(path).to_dict() == report.to_dict()


def test_int8_file_has_int8_weights_and_ops(int8_export):
    path, report = int8_export
    interpreter = litert.make_interpreter(str(path))
    interpreter.allocate_tensors()  # Loads in LiteRT (with XNNPACK).
    details = {t["index"]: np.dtype(t["dtype"]) for t in interpreter.get_tensor_details()}
    ops = interpreter._get_ops_details()
    heavy = [op for op in ops if op["op_name"] in ("CONV_2D", "FULLY_CONNECTED")]
    assert len(heavy) == 3
    for op in heavy:
        data_in, weights = op["inputs"][0], op["inputs"][1]
        assert details[data_in] == np.int8 and details[weights] == np.int8
        assert details[op["outputs"][0]] == np.int8
    assert report.weight_dtypes == {"int8": 3}
    assert report.float_ops == []
    assert interpreter.get_input_details()[0]["dtype"] == np.int8


def test_int8_agrees_with_keras(int8_export):
    _, report = int8_export
    assert report.fidelity["num_samples"] == 5000
    assert report.fidelity["top1_agreement"] >= 0.99
    assert abs(report.accuracy["tflite"] - report.accuracy["reference"]) < 0.01
    assert report.accuracy["reference"] > 0.75


def test_int8_float_io(cnn, data, tmp_path):
    (x_train, _), (x_test, _) = data
    report = tflite_export.export(cnn, tmp_path / "f.tflite", representative_data=x_train[:100],
                                  eval_data=x_test[:200], num_threads=None,
                                  inference_input_type="float32",
                                  inference_output_type="float32")
    assert report.input_dtypes == ["float32"] and report.output_dtypes == ["float32"]
    assert report.weight_dtypes == {"int8": 3}
    assert report.accuracy is None and report.fidelity["top1_agreement"] > 0.97


@pytest.mark.parametrize("quantize, weight_dtype", [
    ("dynamic", "int8"), ("float16", "float16"), ("float32", "float32")])
def test_other_quantize_modes(quantize, weight_dtype, cnn, data, tmp_path):
    _, (x_test, y_test) = data
    report = tflite_export.export(cnn, tmp_path / "m.tflite", quantize=quantize,
                                  eval_data=(x_test[:300], y_test[:300]), num_threads=1,
                                  benchmark_runs=3)
    assert report.input_dtypes == ["float32"]
    assert weight_dtype in report.weight_dtypes
    assert report.fidelity["top1_agreement"] >= 0.99
    if quantize == "float32":
        assert report.fidelity["max_abs_error"] < 1e-4


def _thin_export(tmp_path, name, filters, seed=1):
    import keras

    keras.utils.set_random_seed(seed)
    model = make_cnn(filters, name=name)
    return tflite_export.export(model, tmp_path / f"{name}.tflite", quantize="float32",
                                num_threads=None)


def test_shrunk_model_is_smaller_by_the_expected_ratio(tmp_path):
    """Half the channels: what tfprune.shrink produces for 50% channel pruning."""
    dense = _thin_export(tmp_path, "dense", (16, 32))
    thin = _thin_export(tmp_path, "thin", (8, 16))
    expected_macs = 26 * 26 * 8 * 9 + 11 * 11 * 16 * 72 + 400 * 10
    assert thin.macs == expected_macs
    assert dense.macs == 26 * 26 * 16 * 9 + 11 * 11 * 32 * 144 + 800 * 10
    assert thin.macs / dense.macs == pytest.approx(expected_macs / 662912)
    # float32 file size is dominated by the parameters (4 bytes each).
    param_ratio = thin.params / dense.params
    assert thin.size_bytes / dense.size_bytes == pytest.approx(param_ratio, rel=0.15)
    assert tflite_export.count_tflite_macs(thin.tflite_path) == thin.macs


def test_tfprune_channel_pruned_model_is_shrunk(tmp_path):
    """50% channel pruning with tfprune: export shrinks it (MACs ~ 1/4 in conv2)."""
    tfprune = pytest.importorskip("tfprune")
    if not hasattr(tfprune, "shrink") or not hasattr(tfprune, "prune_channels"):
        pytest.skip("tfprune.shrink / prune_channels not available")
    import keras

    keras.utils.set_random_seed(0)
    model = make_cnn((16, 32))
    dense = tflite_export.export(model, tmp_path / "d.tflite", quantize="float32",
                                 num_threads=None)
    pruned = tfprune.prune_channels(model, tfprune.ConstantSparsity(0.5, 0))
    report = tflite_export.export(pruned, tmp_path / "p.tflite", quantize="float32",
                                  num_threads=None)
    assert report.source["shrunk"] and report.source["stripped"]
    # Conv 16->8 and 32->16 channels; Dense sees 400 inputs; output stays 10.
    assert report.macs == 26 * 26 * 8 * 9 + 11 * 11 * 16 * 72 + 400 * 10
    assert report.macs / dense.macs == pytest.approx(192064 / 662912)
    assert report.params == 8 * 9 + 8 + 16 * 72 + 16 + 400 * 10 + 10
    assert report.size_bytes / dense.size_bytes == pytest.approx(
        report.params / dense.params, rel=0.15)


def test_unstructured_pruned_keras_model_is_stripped(tmp_path, data):
    tfprune = pytest.importorskip("tfprune")
    import keras

    (x_train, y_train), _ = data
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(256, activation="relu"),
                              keras.layers.Dense(10)])
    pruned = tfprune.prune_low_magnitude(
        model, pruning_schedule=tfprune.ConstantSparsity(0.9, begin_step=0, frequency=1))
    pruned.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    pruned.fit(x_train[:256], y_train[:256], epochs=1, batch_size=64, verbose=0,
               callbacks=[tfprune.UpdatePruningStep()])
    report = tflite_export.export(pruned, tmp_path / "sparse.tflite", quantize="float32",
                                  num_threads=None, eval_data=x_train[:50])
    assert report.source["stripped"]
    assert report.sparsity > 0.8
    # 90% zeros: the sparse format is smaller and kept for float32.
    assert report.sparse_format
    assert report.size_bytes < 0.5 * report.dense_size_bytes
    assert report.fidelity["max_abs_error"] < 1e-3


def test_sparse_format_never_and_int8(tmp_path):
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(128), keras.layers.Dense(4)])
    kernel = model.layers[0].kernel.numpy()
    kernel[np.random.default_rng(0).random(kernel.shape) < 0.9] = 0
    model.layers[0].kernel.assign(kernel)
    never = tflite_export.export(model, tmp_path / "never.tflite", quantize="float32",
                                 num_threads=None, sparse_format="never")
    assert not never.sparse_format and never.size_bytes == never.dense_size_bytes
    # int8: whatever is kept must load and run in LiteRT.
    rep = np.random.default_rng(0).random((20, 64)).astype(np.float32)
    q = tflite_export.export(model, tmp_path / "q.tflite", representative_data=rep,
                             eval_data=rep, num_threads=1, benchmark_runs=2)
    assert q.size_bytes <= q.dense_size_bytes
    assert q.fidelity["num_samples"] == 20


def test_tf_keras_model_pruned_with_tfmot(tmp_path, data):
    tfmot = pytest.importorskip("tensorflow_model_optimization")
    import tf_keras

    (x_train, y_train), _ = data
    model = tf_keras.Sequential([tf_keras.layers.InputLayer((28, 28, 1)),
                                 tf_keras.layers.Conv2D(8, 3, activation="relu"),
                                 tf_keras.layers.Flatten(), tf_keras.layers.Dense(10)])
    pruned = tfmot.sparsity.keras.prune_low_magnitude(
        model, pruning_schedule=tfmot.sparsity.keras.ConstantSparsity(0.75, 0, frequency=1))
    pruned.compile("adam", tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    pruned.fit(x_train[:256], y_train[:256], epochs=1, batch_size=64, verbose=0,
               callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    report = tflite_export.export(pruned, tmp_path / "tfmot.tflite",
                                  representative_data=x_train[:50], eval_data=x_train[:100],
                                  num_threads=None)
    assert report.source == {"kind": "tf_keras", "path": None, "stripped": True,
                             "shrunk": False}
    assert report.sparsity > 0.6
    assert report.weight_dtypes.get("int8") == 2
    assert report.macs == 26 * 26 * 8 * 9 + 26 * 26 * 8 * 10 and report.macs_source == "tflite"
    assert report.fidelity["top1_agreement"] >= 0.95


def test_keras_file_and_saved_model_inputs(cnn, data, tmp_path):
    (x_train, _), (x_test, _) = data
    keras_path = tmp_path / "cnn.keras"
    cnn.save(keras_path)
    from_file = tflite_export.export(str(keras_path), tmp_path / "a.tflite",
                                     representative_data=x_train[:50],
                                     eval_data=x_test[:100], num_threads=None)
    assert from_file.source["kind"] == "keras_file"
    assert from_file.fidelity["top1_agreement"] >= 0.97
    saved = tmp_path / "saved"
    cnn.export(str(saved), format="tf_saved_model", verbose=False)
    from_dir = tflite_export.export(str(saved), tmp_path / "b.tflite", quantize="float32",
                                    eval_data=x_test[:100], num_threads=None)
    assert from_dir.source["kind"] == "saved_model"
    assert from_dir.fidelity["max_abs_error"] < 1e-4
    assert from_dir.params == from_file.params and from_dir.macs == from_file.macs


def test_unknown_input_size_needs_input_shape(tmp_path):
    import keras

    model = keras.applications.MobileNetV3Small(input_shape=(None, None, 3), weights=None,
                                                minimalistic=True, include_preprocessing=False)
    with pytest.raises(ValueError, match="input_shape"):
        tflite_export.export(model, tmp_path / "m.tflite", quantize="float32", num_threads=None)
    assert files_in(tmp_path) == []
    report = tflite_export.export(model, tmp_path / "m.tflite", quantize="float32",
                                  num_threads=1, benchmark_runs=2, input_shape=(96, 96, 3))
    assert report.inputs[0]["shape"] == [1, 96, 96, 3]
    assert report.macs_source == "tflite" and report.macs > 1_000_000

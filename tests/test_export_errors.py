"""Bad input gets a clear ValueError before any file is written."""

import os

import numpy as np
import pytest

from export_fixtures import files_in

import tflite_export
from tflite_export import host_benchmark


@pytest.fixture(scope="module")
def small_model():
    import keras

    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3),
                             keras.layers.Flatten(), keras.layers.Dense(3)])


@pytest.fixture
def rep():
    return np.random.default_rng(0).random((16, 8, 8, 1)).astype(np.float32)


def _lambda_model(fn):
    import keras

    inp = keras.Input((16,))
    x = keras.layers.Dense(8)(inp)
    x = keras.layers.Lambda(fn)(x)
    return keras.Model(inp, keras.layers.Dense(4)(x))


@pytest.mark.parametrize("bad, message", [
    (np.zeros((4, 8, 8), np.float32), r"shape \(4, 8, 8\).*x\[\.\.\., None\]"),
    (np.zeros((4, 9, 8, 1), np.float32), r"shape \(4, 9, 8, 1\)"),
    (np.zeros((4, 8, 8, 1), np.uint8), r"dtype uint8.*float32.*255"),
    (np.zeros((0, 8, 8, 1), np.float32), r"empty"),
    ([], r"empty"),
    (np.full((2, 8, 8, 1), np.nan, np.float32), r"NaN"),
])
def test_bad_representative_data(small_model, tmp_path, bad, message):
    with pytest.raises(ValueError, match=message) as info:
        tflite_export.export(small_model, tmp_path / "m.tflite", representative_data=bad)
    assert "representative_data" in str(info.value)
    assert files_in(tmp_path) == []


def test_representative_dataset_and_generator(small_model, tmp_path, rep):
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((rep, np.zeros(16))).batch(4)
    report = tflite_export.export(small_model, tmp_path / "a.tflite", representative_data=dataset,
                                  num_threads=None)
    assert report.weight_dtypes == {"int8": 2}

    def generator():
        for x in rep:
            yield [x[None]]

    tflite_export.export(small_model, tmp_path / "b.tflite", representative_data=generator,
                         num_threads=None)
    tflite_export.export(small_model, tmp_path / "c.tflite", representative_data=generator(),
                         num_threads=None)

    def bad_generator():
        yield np.zeros((1, 8, 8, 3), np.float32)

    with pytest.raises(ValueError, match="representative_data.*shape"):
        tflite_export.export(small_model, tmp_path / "d.tflite",
                             representative_data=bad_generator)
    bad_ds = tf.data.Dataset.from_tensor_slices(np.zeros((4, 8, 8, 1), np.int32))
    with pytest.raises(ValueError, match="representative_data.*int32"):
        tflite_export.export(small_model, tmp_path / "e.tflite", representative_data=bad_ds)
    assert not (tmp_path / "d.tflite").exists() and not (tmp_path / "e.tflite").exists()


def test_bad_eval_data(small_model, tmp_path, rep):
    with pytest.raises(ValueError, match="eval_data.*shape"):
        tflite_export.export(small_model, tmp_path / "m.tflite", representative_data=rep,
                             eval_data=np.zeros((3, 4, 4, 1), np.float32))
    with pytest.raises(ValueError, match="eval_data has 16 examples but 3 labels"):
        tflite_export.export(small_model, tmp_path / "m.tflite", representative_data=rep,
                             eval_data=(rep, np.zeros(3, np.int64)))
    assert files_in(tmp_path) == []


def test_missing_output_folder(small_model, tmp_path, rep):
    target = tmp_path / "missing" / "m.tflite"
    with pytest.raises(ValueError, match="output_path.*does not exist"):
        tflite_export.export(small_model, target, representative_data=rep)
    assert not (tmp_path / "missing").exists()
    with pytest.raises(ValueError, match="is a folder"):
        tflite_export.export(small_model, tmp_path, representative_data=rep)


@pytest.mark.parametrize("kwargs, message", [
    ({"quantize": "int4"}, "quantize='int4'"),
    ({"quantize": "int8"}, "needs representative_data"),
    ({"quantize": "float32", "inference_input_type": "int8"}, "inference_input_type"),
    ({"quantize": "float32", "sparse_format": "maybe"}, "sparse_format"),
    ({"quantize": "float32", "num_threads": 0}, "num_threads"),
])
def test_bad_options(small_model, tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        tflite_export.export(small_model, tmp_path / "m.tflite", **kwargs)
    assert files_in(tmp_path) == []


def test_bad_model_argument(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        tflite_export.export(str(tmp_path / "nope.keras"), tmp_path / "m.tflite",
                             quantize="float32")
    with pytest.raises(ValueError, match="saved_model.pb"):
        tflite_export.export(str(tmp_path), tmp_path / "m.tflite", quantize="float32")
    with pytest.raises(ValueError, match="Keras 3 model"):
        tflite_export.export(object(), tmp_path / "m.tflite", quantize="float32")
    assert files_in(tmp_path) == []


def test_op_without_int8_kernel(tmp_path):
    import keras

    model = _lambda_model(lambda x: keras.ops.cos(x))
    rep = np.random.default_rng(0).random((8, 16)).astype(np.float32)
    with pytest.raises(tflite_export.UnsupportedOpsError, match="COS.*allow_float_fallback=True") \
            as info:
        tflite_export.export(model, tmp_path / "m.tflite", representative_data=rep)
    assert info.value.ops == ["COS"]
    assert isinstance(info.value, ValueError)
    assert files_in(tmp_path) == []
    report = tflite_export.export(model, tmp_path / "m.tflite", representative_data=rep,
                                  allow_float_fallback=True, num_threads=None, eval_data=rep)
    assert report.float_ops == ["COS"]
    assert "COS" in (tmp_path / "m.report.md").read_text()


def test_op_without_tflite_kernel(tmp_path):
    import keras

    model = _lambda_model(lambda x: keras.ops.erf(x))
    with pytest.raises(tflite_export.UnsupportedOpsError, match="Erf"):
        tflite_export.export(model, tmp_path / "m.tflite", quantize="float32")
    assert files_in(tmp_path) == []


def test_failure_after_conversion_leaves_nothing(small_model, tmp_path, rep, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("benchmark crashed")

    monkeypatch.setattr(host_benchmark, "benchmark", broken)
    with pytest.raises(RuntimeError, match="benchmark crashed"):
        tflite_export.export(small_model, tmp_path / "m.tflite", representative_data=rep)
    # Neither the final files nor the temporary ones are left behind.
    assert files_in(tmp_path) == []


def test_existing_files_replaced_only_on_success(small_model, tmp_path, rep):
    target = tmp_path / "m.tflite"
    first = tflite_export.export(small_model, target, representative_data=rep, num_threads=None)
    before = target.read_bytes()
    with pytest.raises(ValueError):
        tflite_export.export(small_model, target, representative_data=rep[:, :4])
    assert target.read_bytes() == before
    assert tflite_export.load_report(target).size_bytes == first.size_bytes
    assert sorted(os.listdir(tmp_path)) == ["m.report.json", "m.report.md", "m.tflite"]

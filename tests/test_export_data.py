"""tflite_export: data that never ends, labels that are not classes, float16
models and parameter counts of pruned models (issue #13).

Each bad input is either a clear ValueError before any file is written or a
correct result; conversions are real, with tiny models.
"""

import logging as py_logging
import os
import subprocess
import sys

import numpy as np
import pytest

from export_fixtures import fashion_data, files_in, make_cnn, trained_cnn
# The same tiny model (8x8x1 -> 3 classes) and 16 random examples as the error tests.
from test_export_errors import _lambda_model, rep, small_model  # noqa: F401  fixtures

import tflite_export
from tflite_export import data as data_lib
from tflite_export import conversion, datafiles, evaluation, sources

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIGNATURE = [data_lib.InputSignature("x", (1, 8, 8, 1), np.dtype("float32"))]


@pytest.fixture
def logs(caplog):
    """absl INFO records. Set through absl: TensorFlow's SavedModel code resets the
    absl logger's level from absl's verbosity."""
    from absl import logging as absl_logging

    previous = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.INFO)
    caplog.set_level(py_logging.INFO, logger="absl")
    yield caplog
    absl_logging.set_verbosity(previous)


@pytest.fixture
def restore_policy():
    import keras

    previous = keras.mixed_precision.global_policy()
    yield
    keras.mixed_precision.set_global_policy(previous)


def _endless(batch=None, seed=0):
    """A generator function whose generators never end."""
    def generate():
        rng = np.random.default_rng(seed)
        while True:
            if batch is None:
                yield rng.random((8, 8, 1), dtype=np.float32), 1
            else:
                yield rng.random((batch, 8, 8, 1), dtype=np.float32), np.ones(batch, np.int64)
    return generate


def _warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno >= py_logging.WARNING]


# --- Data that never ends --------------------------------------------------------------------

def test_infinite_dataset_is_refused_up_front(small_model, rep, tmp_path):
    import tensorflow as tf

    endless = tf.data.Dataset.from_tensor_slices((rep, np.arange(16) % 3)).repeat()
    with pytest.raises(ValueError, match=r"eval_data is a tf.data.Dataset that never ends "
                                         r"\(cardinality INFINITE.*max_eval_samples=N"):
        tflite_export.export(small_model, tmp_path / "m.tflite", quantize="float32",
                             eval_data=endless, num_threads=None)
    with pytest.raises(ValueError, match=r"representative_data is a tf.data.Dataset that never "
                                         r"ends.*max_calibration_samples=N"):
        tflite_export.export(small_model, tmp_path / "m.tflite",
                             representative_data=endless.map(lambda x, y: x),
                             max_calibration_samples=None)
    assert files_in(tmp_path) == []
    # With a limit the same dataset is fine (batched too).
    report = tflite_export.export(small_model, tmp_path / "m.tflite", quantize="float32",
                                  eval_data=endless.batch(4), max_eval_samples=10,
                                  num_threads=None)
    assert report.fidelity["num_samples"] == 10


def test_endless_generator_stops_at_the_default_cap(logs):
    assert data_lib.DEFAULT_MAX_UNKNOWN_LENGTH_SAMPLES == 10_000
    inputs, labels = data_lib.eval_arrays(_endless(batch=32), SIGNATURE)
    assert inputs[0].shape == (10_000, 8, 8, 1) and labels.shape == (10_000,)
    [warning] = _warnings(logs)
    assert "stopped reading after 10,000 examples" in warning
    assert "max_eval_samples=N" in warning
    # An explicit limit is obeyed without a warning.
    logs.clear()
    inputs, _ = data_lib.eval_arrays(_endless()(), SIGNATURE, max_samples=7)
    assert inputs[0].shape[0] == 7 and _warnings(logs) == []


def test_generator_and_unknown_cardinality_dataset_below_the_cap(logs):
    import tensorflow as tf

    def finite():
        for i in range(50):
            yield np.full((8, 8, 1), i, np.float32), i % 3

    inputs, labels = data_lib.eval_arrays(finite, SIGNATURE)
    assert inputs[0].shape[0] == 50 and list(labels[:4]) == [0, 1, 2, 0]
    unknown = tf.data.Dataset.from_tensor_slices(np.zeros((30, 8, 8, 1), np.float32)).filter(
        lambda x: True)
    assert int(unknown.cardinality()) == tf.data.UNKNOWN_CARDINALITY
    inputs, labels = data_lib.eval_arrays(unknown, SIGNATURE)
    assert inputs[0].shape[0] == 30 and labels is None
    assert _warnings(logs) == []  # Data that ends before the cap is read whole, silently.


def test_export_with_endless_generator_and_progress(small_model, tmp_path, logs, monkeypatch):
    monkeypatch.setattr(data_lib, "DEFAULT_MAX_UNKNOWN_LENGTH_SAMPLES", 40)
    for module in (data_lib, evaluation):
        monkeypatch.setattr(module, "PROGRESS_INTERVAL_S", 0.0)
    report = tflite_export.export(small_model, tmp_path / "m.tflite", quantize="float32",
                                  eval_data=_endless(), num_threads=None)
    assert report.fidelity["num_samples"] == 40
    messages = [r.getMessage() for r in logs.records]
    assert any("eval_data: stopped reading after 40 examples" in m for m in messages)
    assert any(m.startswith("eval_data: read ") for m in messages)
    assert any(m.startswith("Evaluating the .tflite: 20/40 examples (50%)") for m in messages)


@pytest.mark.parametrize("limit", [0, -5, 2.5, True])
def test_bad_sample_limits(limit):
    with pytest.raises(ValueError, match=rf"max_eval_samples={limit!r}.*>= 1"):
        data_lib.eval_arrays(np.zeros((4, 8, 8, 1), np.float32), SIGNATURE, max_samples=limit)
    with pytest.raises(ValueError, match=rf"max_calibration_samples={limit!r}"):
        data_lib.representative_samples(np.zeros((4, 8, 8, 1), np.float32), SIGNATURE,
                                        max_samples=limit)


# --- Labels ----------------------------------------------------------------------------------

@pytest.mark.parametrize("labels, message", [
    (np.array([0, 1, 1.5, 2, 2.25]), r"2 label\(s\) that are not whole class indices, e\.g\. "
                                     r"index 2: 1\.5, index 4: 2\.25.*not truncated"),
    (np.array([0, 1, -1, 2, 0]), r"1 negative label\(s\), e\.g\. index 2: -1"),
    (np.array([0, np.nan, 1, 2, 0]), r"index 1: nan"),
    (np.array(["cat", "dog", "cat", "dog", "cat"]), r"labels have dtype <U3.*class indices"),
    (np.zeros((5, 2, 2)), r"labels have shape \(5, 2, 2\)"),
    (np.zeros(7, np.int64), r"eval_data has 5 examples but 7 labels"),
    (np.zeros(3, np.int64), r"eval_data has 5 examples but 3 labels"),
])
def test_labels_that_are_not_class_indices(labels, message):
    x = np.zeros((5, 8, 8, 1), np.float32)
    with pytest.raises(ValueError, match=message):
        data_lib.eval_arrays((x, labels), SIGNATURE)


def test_labels_that_are_class_indices():
    x = np.zeros((4, 8, 8, 1), np.float32)
    for given in ([0.0, 2.0, 1.0, 2.0], np.array([0, 2, 1, 2], np.uint8), [0, 2, 1, 2],
                  np.array([[0], [2], [1], [2]]), np.eye(3)[[0, 2, 1, 2]]):
        _, labels = data_lib.eval_arrays((x, np.asarray(given)), SIGNATURE)
        assert labels.dtype == np.int64 and list(labels) == [0, 2, 1, 2]
    _, labels = data_lib.eval_arrays((x, [0, 2, 1, 2]), SIGNATURE)  # A Python list.
    assert list(labels) == [0, 2, 1, 2]
    _, labels = data_lib.eval_arrays((x, np.array([True, False, True, True])), SIGNATURE)
    assert list(labels) == [1, 0, 1, 1]


def test_generator_labels_per_element():
    def one_hot_examples():  # Single examples with one-hot labels: one label each.
        for i in range(6):
            yield np.zeros((8, 8, 1), np.float32), np.eye(3)[i % 3]

    _, labels = data_lib.eval_arrays(one_hot_examples, SIGNATURE)
    assert list(labels) == [0, 1, 2, 0, 1, 2]

    def short_labels():
        yield np.zeros((4, 8, 8, 1), np.float32), np.zeros(4)
        yield np.zeros((4, 8, 8, 1), np.float32), np.zeros(3)

    with pytest.raises(ValueError, match=r"eval_data: element 1 has 4 example\(s\) but 3 "
                                         r"label\(s\)"):
        data_lib.eval_arrays(short_labels, SIGNATURE)

    def some_labels():
        yield np.zeros((2, 8, 8, 1), np.float32), np.zeros(2)
        yield np.zeros((2, 8, 8, 1), np.float32)

    with pytest.raises(ValueError, match=r"element 1 has no label but earlier elements had"):
        data_lib.eval_arrays(some_labels, SIGNATURE)

    def fractional():
        yield np.zeros((3, 8, 8, 1), np.float32), np.array([0.0, 1.0, 0.5])

    with pytest.raises(ValueError, match=r"index 2: 0\.5"):
        data_lib.eval_arrays(fractional, SIGNATURE)


def test_labels_outside_the_model_classes(small_model, rep, tmp_path, monkeypatch):
    def no_conversion(*args, **kwargs):
        raise AssertionError("labels must be checked before converting")

    # The model has 3 outputs: label 3 would silently count as a wrong prediction.
    monkeypatch.setattr(conversion, "convert", no_conversion)
    with pytest.raises(ValueError, match=r"eval_data has 4 label\(s\) outside \[0, 3\).*"
                                         r"e\.g\. index 3: 3, index 7: 3, index 11: 3, \.\.\."):
        tflite_export.export(small_model, tmp_path / "m.tflite", quantize="float32",
                             eval_data=(rep, np.arange(16) % 4), num_threads=None)
    with pytest.raises(ValueError, match=r"look 1-based: subtract 1"):
        tflite_export.export(small_model, tmp_path / "m.tflite", quantize="float32",
                             eval_data=(rep, np.arange(16) % 3 + 1), num_threads=None)
    assert files_in(tmp_path) == []
    monkeypatch.undo()
    # Whole-number float labels are class indices: accuracy is right, not truncated.
    predicted = small_model.predict(rep, verbose=0).argmax(axis=1).astype(np.float32)
    report = tflite_export.export(small_model, tmp_path / "m.tflite", quantize="float32",
                                  eval_data=(rep, predicted), num_threads=None)
    assert report.accuracy == {"reference": 1.0, "tflite": 1.0}


def test_nan_inputs_are_located():
    x = np.zeros((8, 8, 8, 1), np.float32)
    x[5, 0, 0, 0] = np.nan
    x[6, 1, 1, 0] = np.inf
    with pytest.raises(ValueError, match=r"eval_data contains NaN or infinite values in 2 "
                                         r"example\(s\) of the input 'x', e\.g\. at index 5, 6"):
        data_lib.eval_arrays(x, SIGNATURE)


def test_empty_dataset_and_generator():
    import tensorflow as tf

    empty = tf.data.Dataset.from_tensor_slices(np.zeros((0, 8, 8, 1), np.float32))
    for data in (empty, empty.filter(lambda x: True), (x for x in [])):
        with pytest.raises(ValueError, match=r"eval_data is empty: give at least one example"):
            data_lib.eval_arrays(data, SIGNATURE)


def test_nan_outputs_are_refused(tmp_path):
    import keras

    # log of negative activations: the Keras model itself outputs NaN for some examples.
    model = _lambda_model(keras.ops.log)
    x = np.random.default_rng(0).normal(size=(32, 16)).astype(np.float32)
    with pytest.raises(ValueError, match=r"The source model outputs NaN or infinite values for "
                                         r"\d+ of 32 eval_data examples \(e\.g\. index \d+"):
        tflite_export.export(model, tmp_path / "m.tflite", quantize="float32", eval_data=x,
                             num_threads=None)
    assert files_in(tmp_path) == []
    finite = [np.zeros((3, 4), np.float32)]
    broken = [np.array([[0, 0, 0, 0], [np.nan, 0, 0, 0], [0, 0, 0, 0]], np.float32)]
    with pytest.raises(ValueError, match=r"The converted \.tflite outputs NaN or infinite "
                                         r"values for 1 of 3 eval_data examples \(e\.g\. "
                                         r"index 1\).*quantize='float32'"):
        evaluation.compare(finite, broken)


def test_inputs_with_different_counts():
    signatures = [data_lib.InputSignature("a", (1, 4), np.dtype("float32")),
                  data_lib.InputSignature("b", (1, 2), np.dtype("float32"))]
    with pytest.raises(ValueError, match=r"different numbers of examples: \[5, 3\]"):
        data_lib.eval_arrays([np.zeros((5, 4), np.float32), np.zeros((3, 2), np.float32)],
                             signatures)
    # ([x1, x2], y) for a model with two inputs.
    inputs, labels = data_lib.eval_arrays(
        ([np.zeros((3, 4), np.float32), np.zeros((3, 2), np.float32)], np.array([0, 1, 0])),
        signatures)
    assert [x.shape for x in inputs] == [(3, 4), (3, 2)] and list(labels) == [0, 1, 0]


# --- The CLI's data flags --------------------------------------------------------------------

@pytest.mark.parametrize("value, message", [
    ("fashion_mnist:-5", r"--representative_data='fashion_mnist:-5': the number of examples "
                         r"must be >= 1 \(got -5\)"),
    ("fashion_mnist:0", r"must be >= 1 \(got 0\)"),
    ("fashion_mnist:ten", r"write fashion_mnist:N with a whole number N >= 1"),
])
def test_fashion_mnist_count_must_be_positive(value, message):
    with pytest.raises(ValueError, match=message):
        datafiles.load(value, "--representative_data", "train")


def test_unreadable_npy_files(tmp_path):
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (tmp_path / "broken.npz").write_bytes(b"not a zip file")
    for name in ("objects.npy", "broken.npz"):
        path = str(tmp_path / name)
        with pytest.raises(ValueError, match=rf"--eval_data='{path}' could not be read as NumPy "
                                             r"data"):
            datafiles.load(path, "--eval_data", "test")


def test_cli_refuses_negative_count(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(10)])
    model.save(tmp_path / "m.keras")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-m", "tflite_export", str(tmp_path / "m.keras"),
         f"--output={tmp_path / 'm.tflite'}", "--representative_data=fashion_mnist:-5"],
        capture_output=True, text=True, timeout=240, cwd=ROOT, env=env,
        stdin=subprocess.DEVNULL)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "error: --representative_data='fashion_mnist:-5'" in proc.stderr
    assert not (tmp_path / "m.tflite").exists()


# --- Parameter counts of pruned models -------------------------------------------------------

def _base_model():
    import keras

    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(8, 3),
                             keras.layers.BatchNormalization(), keras.layers.Flatten(),
                             keras.layers.Dense(3)], name="base")


def _wrap_and_train(kind, rep):
    import keras
    import tfprune

    base = _base_model()
    if kind == "magnitude":
        wrapped = tfprune.prune_low_magnitude(
            base, pruning_schedule=tfprune.ConstantSparsity(0.5, begin_step=0, frequency=1))
    else:
        wrapped = tfprune.prune_channels(base, tfprune.ConstantSparsity(0.5, 0),
                                         importance="taylor")
    wrapped.compile(keras.optimizers.Adam(1e-3), "mse", metrics=["mae"])
    wrapped.fit(rep, np.zeros((16, 3), np.float32), epochs=1, batch_size=8, verbose=0,
                callbacks=[tfprune.UpdatePruningStep()])
    return base.count_params(), wrapped


@pytest.mark.parametrize("kind", ["magnitude", "channels"])
def test_params_of_wrapped_models_count_only_weights(kind, rep, tmp_path):
    import tensorflow as tf
    import tfprune

    base_params, wrapped = _wrap_and_train(kind, rep)
    names = [sources.variable_path(w) for w in wrapped.weights]
    assert any(n.endswith("_mask") for n in names) and any("pruning_step" in n for n in names)
    if kind == "channels":
        assert any(n.endswith("taylor_probe") for n in names)
    options = dict(quantize="float32", num_threads=None, eval_data=rep)

    live = tflite_export.export(wrapped, tmp_path / "live.tflite", **options)
    # The live model and the .keras file are shrunk/stripped: the exported model's weights.
    assert live.params == tfprune.shrink(wrapped).count_params()
    if kind == "magnitude":
        assert live.params == base_params
    else:
        assert live.params < base_params
    wrapped.save(tmp_path / "wrapped.keras")
    from_file = tflite_export.export(str(tmp_path / "wrapped.keras"), tmp_path / "file.tflite",
                                     **options)
    assert (from_file.params, from_file.nonzero_params) == (live.params, live.nonzero_params)

    # A SavedModel of the wrapped model still holds masks, thresholds, steps, channel masks and
    # Taylor probes/scores (model.export), and optimizer slots too (tf.saved_model.save): none
    # of them are parameters.
    wrapped.export(str(tmp_path / "exported"), format="tf_saved_model", verbose=False)
    tf.saved_model.save(wrapped, str(tmp_path / "saved"))
    for folder in ("exported", "saved"):
        report = tflite_export.export(str(tmp_path / folder), tmp_path / f"{folder}.tflite",
                                      **options)
        assert report.params == base_params, folder
        assert report.fidelity["max_abs_error"] < 1e-4, folder
        if kind == "magnitude":
            assert report.nonzero_params == live.nonzero_params
            assert 0.4 < report.sparsity < 0.6


def test_saved_model_written_by_tf_saved_model_save(small_model, rep, tmp_path):
    import tensorflow as tf

    folder = str(tmp_path / "saved")
    tf.saved_model.save(small_model, folder)
    # Converted as it is, its weights stay variables that LiteRT starts uninitialised
    # (the .tflite outputs NaN): refused.
    with pytest.raises(ValueError, match=r"keeps its weights as TensorFlow variables "
                                         r"\(VAR_HANDLE x\d+, READ_VARIABLE x\d+\)"):
        conversion.convert(folder, "float32")
    # export re-saves it with a batch-1 signature first: weights frozen, outputs right.
    report = tflite_export.export(folder, tmp_path / "m.tflite", quantize="float32",
                                  eval_data=rep, num_threads=None)
    assert report.fidelity["max_abs_error"] < 1e-4
    assert report.params == small_model.count_params()
    assert report.inputs[0]["shape"] == [1, 8, 8, 1]


def test_model_weights_name_rule():
    class Var:
        def __init__(self, name):
            self.name = name

    names = [
        # tfprune (Keras 3 paths)
        "seq/prune_low_magnitude_dense/kernel_mask:0", "seq/prune_low_magnitude_dense/pruning_step:0",
        "seq/prune_low_magnitude_dense/threshold_0:0", "dense/kernel:0", "dense/bias:0",
        "prune_channels_conv/out_channel_mask:0", "prune_channels_conv/taylor_probe:0",
        "prune_channels_conv/taylor_score:0", "prune_channels_conv/pruning_step:0",
        "tfprune_step_offset:0",
        # tfmot (tf_keras)
        "prune_low_magnitude_fc/mask:0", "prune_low_magnitude_fc/threshold:0",
        "prune_low_magnitude_fc/pruning_step:0", "fc/kernel:0",
        # A model's own variables with similar names, outside any wrapper: kept.
        "attention/padding_mask:0", "gate/threshold:0",
    ]
    kept = [v.name for v in sources.model_weights([Var(n) for n in names])]
    assert kept == ["dense/kernel:0", "dense/bias:0", "fc/kernel:0", "attention/padding_mask:0",
                    "gate/threshold:0"]


# --- float16 compute (mixed precision) -------------------------------------------------------

def test_mixed_float16_cnn_exports_to_int8(restore_policy, tmp_path):
    import keras

    (x_train, _), (x_test, y_test) = fashion_data()
    reference = trained_cnn()
    keras.mixed_precision.set_global_policy("mixed_float16")
    model = make_cnn(name="cnn_fp16")  # Built under the policy; keeps it afterwards.
    keras.mixed_precision.set_global_policy("float32")
    model.set_weights(reference.get_weights())
    assert model.layers[0].compute_dtype == "float16"
    report = tflite_export.export(model, tmp_path / "fp16.tflite",
                                  representative_data=x_train[:200],
                                  eval_data=(x_test[:1000], y_test[:1000]), num_threads=1,
                                  benchmark_runs=2)
    assert report.weight_dtypes == {"int8": 3} and report.float_ops == []
    assert report.input_dtypes == ["int8"] and report.params == reference.count_params()
    # Agreement with the float16 Keras model as given.
    assert report.fidelity["top1_agreement"] >= 0.98
    assert report.accuracy["reference"] > 0.75
    assert abs(report.accuracy["tflite"] - report.accuracy["reference"]) < 0.02
    assert model.layers[0].compute_dtype == "float16"  # The user's model is unchanged.
    for quantize in ("float32", "dynamic", "float16"):
        other = tflite_export.export(model, tmp_path / f"{quantize}.tflite", quantize=quantize,
                                     eval_data=x_test[:200], num_threads=None)
        assert other.fidelity["top1_agreement"] >= 0.99, quantize


def test_per_layer_float16_policies_keras_file_and_saved_model(restore_policy, tmp_path):
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((16,)),
                              keras.layers.Dense(32, activation="relu", dtype="mixed_float16"),
                              keras.layers.Dense(16, dtype="float16"),  # float16 weights too
                              keras.layers.Dense(4, activation="softmax")], name="per_layer")
    x = np.random.default_rng(0).random((64, 16)).astype(np.float32)
    model.save(tmp_path / "m.keras")
    keras.mixed_precision.set_global_policy("mixed_float16")  # Export must not change it.
    for source in (model, str(tmp_path / "m.keras")):
        report = tflite_export.export(source, tmp_path / "m.tflite", quantize="float32",
                                      eval_data=x, num_threads=None)
        assert report.fidelity["top1_agreement"] >= 0.95
        assert report.fidelity["max_abs_error"] < 5e-3
        assert report.params == model.count_params()
    assert keras.mixed_precision.global_policy().name == "mixed_float16"
    # A SavedModel computes in float16 as written: a clear error naming the cause.
    model.export(str(tmp_path / "saved"), format="tf_saved_model", verbose=False)
    with pytest.raises(tflite_export.UnsupportedOpsError,
                       match=r"computes in float16.*set_global_policy\('float32'\)"):
        tflite_export.export(str(tmp_path / "saved"), tmp_path / "s.tflite", quantize="float32",
                             num_threads=None)
    assert not (tmp_path / "s.tflite").exists()

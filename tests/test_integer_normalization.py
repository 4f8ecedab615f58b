"""`tflite_export.integer_normalization`: normalization layers export to full INT8, no float ops."""

import keras
import numpy as np
import pytest

import tflite_export
from tflite_export import inspection
from tflite_export import integer_normalization as norms

# The models here include Keras's deprecated rms_scaling=True, to show it is left alone.
pytestmark = pytest.mark.filterwarnings("ignore:You passed `rms_scaling=True`")


class Block(keras.layers.Layer):
    """A custom block holding its LayerNormalization as an attribute (as KerasHub's encoders)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.norm = keras.layers.LayerNormalization(epsilon=1e-3, name="inner_norm")
        self.dense = keras.layers.Dense(8, name="inner_dense")

    def call(self, x):
        return self.dense(self.norm(x))


class OwnNorm(keras.layers.LayerNormalization):
    def call(self, inputs):
        return inputs * 2.0


def _model():
    keras.utils.set_random_seed(0)
    layers = keras.layers
    inputs = keras.Input((6, 8))
    x = layers.LayerNormalization(name="last_axis")(inputs)
    x = layers.LayerNormalization(axis=(1, 2), name="two_axes")(x * 3.0 + 1.0)
    x = layers.LayerNormalization(center=False, scale=False, name="plain")(x)
    x = layers.LayerNormalization(rms_scaling=True, name="deprecated_rms")(x)
    x = layers.GroupNormalization(groups=4, name="groups")(x * 2.0 - 1.0)
    x = layers.GroupNormalization(groups=2, axis=1, center=False, name="groups_axis1")(x)
    x = layers.RMSNormalization(name="rms")(x + 0.5)
    x = layers.RMSNormalization(axis=(1, 2), name="rms_two_axes")(x)
    x = layers.UnitNormalization(name="unit")(x)
    x = layers.UnitNormalization(axis=(1, 2), name="unit_two_axes")(x * 4.0)
    x = Block(name="block")(x)
    x = OwnNorm(name="own")(x)
    return keras.Model(inputs, x)


def _randomize(model):
    rng = np.random.default_rng(1)
    for weight in model.weights:
        weight.assign(rng.normal(1.0, 0.5, weight.shape).astype("float32"))


CHANGED = ["groups", "groups_axis1", "inner_norm", "last_axis", "plain", "rms", "rms_two_axes",
           "two_axes", "unit", "unit_two_axes"]


def test_same_outputs_while_open_and_each_layers_call_is_back_after():
    model = _model()
    _randomize(model)
    x = np.random.default_rng(0).normal(2.0, 3.0, (4, 6, 8)).astype("float32")
    expected = model(x).numpy()
    found = norms.normalization_layers(model)
    # A subclass with its own call is not ours to change; deprecated rms_scaling is Keras's own.
    assert sorted(layer.name for layer, _ in found) == CHANGED
    with norms.integer_friendly_normalization(model) as changed:
        assert changed == len(CHANGED)
        np.testing.assert_allclose(model(x).numpy(), expected, rtol=1e-4, atol=1e-4)
        assert "call" in vars(model.get_layer("groups"))
        assert "call" not in vars(model.get_layer("own"))
    assert all("call" not in vars(layer) for layer, _ in found)
    np.testing.assert_array_equal(model(x).numpy(), expected)


@pytest.mark.parametrize("name", CHANGED)
def test_each_layer_alone_computes_what_keras_computes(name):
    # Layer by layer, so that one rewrite cannot hide another's error.
    model = _model()
    _randomize(model)
    layer = model.get_layer(name) if name != "inner_norm" else model.get_layer("block").norm
    rng = np.random.default_rng(2)
    x = rng.normal(1.0, 2.0, (3,) + tuple(layer.input.shape[1:]) if name != "inner_norm"
                   else (3, 6, 8)).astype("float32")
    call = dict((l.name, c) for l, c in norms.normalization_layers(model))[name]
    np.testing.assert_allclose(np.asarray(call(x)), np.asarray(layer(x)), rtol=1e-4, atol=1e-5)


def test_the_layers_are_restored_when_the_traced_code_raises():
    model = _model()
    with pytest.raises(RuntimeError):
        with norms.integer_friendly_normalization(model):
            raise RuntimeError("conversion failed")
    assert all("call" not in vars(layer) for layer, _ in norms.normalization_layers(model))


def _transformer():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 32))
    attended = keras.layers.MultiHeadAttention(4, 8, name="mha")(inputs, inputs)
    x = keras.layers.LayerNormalization(name="norm1")(inputs + attended)
    hidden = keras.layers.Dense(64, activation="gelu", name="ffn1")(x)
    x = keras.layers.RMSNormalization(name="norm2")(x + keras.layers.Dense(32, name="ffn2")(
        hidden))
    x = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(inputs, keras.layers.Dense(5, name="logits")(x), name="tiny_encoder")


def _cnn():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(16, 3, padding="same", name="conv1")(inputs)
    x = keras.layers.GroupNormalization(groups=4, name="gn")(x)
    x = keras.layers.Activation("swish")(x)
    x = keras.layers.Conv2D(16, 3, padding="same", name="conv2")(x)
    x = keras.layers.UnitNormalization(name="unit")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(5, name="logits")(x), name="norm_cnn")


@pytest.mark.parametrize("build, shape", [(_transformer, (16, 32)), (_cnn, (8, 8, 3))])
def test_models_with_these_layers_export_to_full_integer(build, shape, tmp_path):
    model = build()
    rng = np.random.default_rng(0)
    x = rng.normal(0.0, 1.0, (200,) + shape).astype("float32")
    y = np.argmax(model.predict(x, verbose=0), axis=1)
    path = tmp_path / f"{model.name}.tflite"
    report = tflite_export.export(model, str(path), quantize="int8",
                                  representative_data=x[:100], eval_data=(x[100:], y[100:]),
                                  num_threads=1, benchmark_runs=2)
    assert report.float_ops == []
    ops = inspection.describe(path.read_bytes())["op_counts"]
    assert not {"NEG", "SQUARE", "DEQUANTIZE"} & set(ops), ops
    # The INT8 model agrees with the float model it was converted from.
    assert report.fidelity["top1_agreement"] >= 0.9, report.fidelity

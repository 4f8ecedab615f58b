"""`tflite_export.layer_norm`: LayerNormalization traced without NEG, so INT8 needs no float."""

import keras
import numpy as np
import pytest

import tflite_export
from tflite_export import layer_norm

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
    inputs = keras.Input((6, 8))
    x = keras.layers.LayerNormalization(name="last_axis")(inputs)
    x = keras.layers.LayerNormalization(axis=(1, 2), name="two_axes")(x * 3.0 + 1.0)
    x = keras.layers.LayerNormalization(center=False, scale=False, name="plain")(x)
    x = keras.layers.LayerNormalization(rms_scaling=True, name="rms")(x)
    x = Block(name="block")(x)
    x = OwnNorm(name="own")(x)
    return keras.Model(inputs, x)


def _randomize(model):
    rng = np.random.default_rng(1)
    for weight in model.weights:
        weight.assign(rng.normal(1.0, 0.5, weight.shape).astype("float32"))


def test_same_outputs_while_open_and_the_layers_call_is_back_after():
    model = _model()
    _randomize(model)
    x = np.random.default_rng(0).normal(2.0, 3.0, (4, 6, 8)).astype("float32")
    expected = model(x).numpy()
    names = sorted(layer.name for layer in layer_norm.layer_norms(model))
    assert names == ["inner_norm", "last_axis", "own", "plain", "rms", "two_axes"]
    with layer_norm.integer_friendly_layer_norms(model) as changed:
        # RMS scaling has no NEG; a subclass with its own call is not ours to change.
        assert changed == 4
        np.testing.assert_allclose(model(x).numpy(), expected, rtol=1e-4, atol=1e-4)
        assert "call" in vars(model.get_layer("last_axis"))
        assert "call" not in vars(model.get_layer("own"))
    for layer in layer_norm.layer_norms(model):
        assert "call" not in vars(layer)
    np.testing.assert_array_equal(model(x).numpy(), expected)


def test_the_layers_are_restored_when_the_traced_code_raises():
    model = _model()
    with pytest.raises(RuntimeError):
        with layer_norm.integer_friendly_layer_norms(model):
            raise RuntimeError("conversion failed")
    assert all("call" not in vars(layer) for layer in layer_norm.layer_norms(model))


def _transformer():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 32))
    attended = keras.layers.MultiHeadAttention(4, 8, name="mha")(inputs, inputs)
    x = keras.layers.LayerNormalization(name="norm1")(inputs + attended)
    hidden = keras.layers.Dense(64, activation="relu", name="ffn1")(x)
    x = keras.layers.LayerNormalization(name="norm2")(x + keras.layers.Dense(32, name="ffn2")(
        hidden))
    x = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(inputs, keras.layers.Dense(5, name="logits")(x), name="tiny_encoder")


def test_a_transformer_block_exports_to_full_integer_without_float_fallback(tmp_path):
    model = _transformer()
    rng = np.random.default_rng(0)
    x = rng.normal(0.0, 1.0, (200, 16, 32)).astype("float32")
    y = np.argmax(model.predict(x, verbose=0), axis=1)
    report = tflite_export.export(model, str(tmp_path / "encoder.tflite"), quantize="int8",
                                  representative_data=x[:100], eval_data=(x[100:], y[100:]),
                                  num_threads=1, benchmark_runs=2)
    assert report.float_ops == []
    from tflite_export import inspection

    ops = inspection.describe((tmp_path / "encoder.tflite").read_bytes())["op_counts"]
    assert "NEG" not in ops and "SQUARED_DIFFERENCE" in ops and "RSQRT" in ops
    # The INT8 model agrees with the float model it was converted from.
    assert report.fidelity["top1_agreement"] >= 0.9, report.fidelity

"""What `prune_low_magnitude` accepts and refuses, as tfmot does; `prune_scope`; `strip_pruning`."""

import json
import warnings

import keras
import numpy as np
import pytest

import tfprune
from tfprune import prune_registry
from tfprune.prune import prune_scope

L = keras.layers
SCHEDULE = tfprune.ConstantSparsity(0.5, 0, frequency=1)
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def masked_paths(wrapper):
    """Paths of a built wrapper's pruned variables, relative to the wrapped layer."""
    prefix = wrapper.layer.path + "/"
    return [w.path.removeprefix(prefix) for w, _ in wrapper.masked_weights]


def fit_briefly(model, x, y):
    model.compile("adam", LOSS)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[tfprune.UpdatePruningStep()])


# -- layers without weights ------------------------------------------------------------

WEIGHTLESS = [
    lambda: L.Flatten(name="flat"),
    lambda: L.ReLU(name="relu"),
    lambda: L.MaxPooling2D(name="pool"),
    lambda: L.Dropout(0.2, name="drop"),
    lambda: L.Activation("tanh", name="act"),
    lambda: L.ZeroPadding2D(1, name="pad"),
]


@pytest.mark.parametrize("make", WEIGHTLESS)
def test_a_layer_without_weights_is_wrapped_with_nothing_to_prune(make):
    wrapper = tfprune.prune_low_magnitude(make(), SCHEDULE)
    assert isinstance(wrapper, tfprune.PruneLowMagnitude)
    out = wrapper(np.ones((2, 6, 6, 3), "float32"))
    assert out.shape[0] == 2
    assert wrapper.masked_weights == []


def test_layers_without_weights_in_a_list_are_wrapped_and_train():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras discourages input_shape; tfmot's guides use it.
        conv = L.Conv2D(4, 3, name="conv", input_shape=(8, 8, 1))
    layers = tfprune.prune_low_magnitude(
        [conv, L.MaxPooling2D(name="pool"), L.Flatten(name="flat"), L.Dense(3, name="logits")],
        SCHEDULE)
    assert all(isinstance(l, tfprune.PruneLowMagnitude) for l in layers)
    # tfmot's pattern: the first wrapper carries input_shape, so the model is built.
    model = keras.Sequential(layers)
    assert model.built
    assert [l.name for l in model.layers] == [
        "prune_low_magnitude_conv", "prune_low_magnitude_pool", "prune_low_magnitude_flat",
        "prune_low_magnitude_logits"]
    rng = np.random.default_rng(0)
    fit_briefly(model, rng.normal(size=(16, 8, 8, 1)).astype("float32"), rng.integers(0, 3, 16))
    assert model.get_layer("prune_low_magnitude_pool").masked_weights == []
    kernel = model.get_layer("prune_low_magnitude_conv").layer.kernel.numpy()
    assert (kernel == 0).mean() == pytest.approx(0.5, abs=1 / kernel.size)


def test_in_a_model_layers_without_weights_keep_their_names_unwrapped():
    inputs = keras.Input((8, 8, 1))
    x = L.Conv2D(4, 3, name="conv")(inputs)
    x = L.Flatten(name="flat")(x)
    x = L.BatchNormalization(name="bn")(x)
    model = keras.Model(inputs, L.Dense(2, name="logits")(x))
    pruned = tfprune.prune_low_magnitude(model, SCHEDULE)
    assert [l.name for l in pruned.layers[1:]] == [
        "prune_low_magnitude_conv", "flat", "bn", "prune_low_magnitude_logits"]


def test_a_custom_layer_without_weights_is_accepted_and_one_that_grows_weights_is_named():
    class Double(L.Layer):
        def call(self, x):
            return 2 * x

    class Scale(L.Layer):
        def build(self, shape):
            self.scale = self.add_weight(shape=(shape[-1],))

        def call(self, x):
            return x * self.scale

    wrapper = tfprune.prune_low_magnitude(Double(name="double"))
    np.testing.assert_allclose(wrapper(np.ones((1, 3), "float32")), 2.0)
    # Not built: it may still be weightless, so it is accepted and checked when built.
    unknown = tfprune.prune_low_magnitude(Scale(name="scale"))
    with pytest.raises(ValueError, match="'scale' of type Scale has weights.*PrunableLayer"):
        unknown(np.ones((1, 3), "float32"))


def test_no_message_says_has_weights_of_a_layer_without_weights():
    for make in WEIGHTLESS:
        layer = make()
        assert prune_registry.is_prunable(layer)
        assert "has weights" not in prune_registry.unsupported_layer_message(layer)

    class MyFlatten(L.Flatten):
        pass

    class MyDense(L.Dense):
        pass

    for layer in (MyFlatten(name="f"), MyDense(2, name="d")):
        assert "has weights" not in prune_registry.unsupported_layer_message(layer)


# -- opting in and subclasses ------------------------------------------------------------

def test_a_duck_typed_get_prunable_weights_is_used():
    class Affine(L.Layer):  # no tfprune.PrunableLayer
        def build(self, shape):
            self.kernel = self.add_weight(shape=(shape[-1], 4), name="kernel")
            self.offset = self.add_weight(shape=(4,), name="offset")

        def call(self, x):
            return x @ self.kernel + self.offset

        def get_prunable_weights(self):
            return [self.kernel]

    wrapper = tfprune.prune_low_magnitude(Affine(name="affine"), SCHEDULE)
    wrapper(np.ones((1, 6), "float32"))
    assert masked_paths(wrapper) == ["kernel"]


def test_a_subclass_of_a_builtin_layer_must_opt_in():
    class MyDense(L.Dense):
        pass

    with pytest.raises(ValueError) as error:
        tfprune.prune_low_magnitude(MyDense(3, name="mine"))
    message = str(error.value)
    for expected in ("'mine'", "MyDense", "keras.layers.Dense", "tfprune.PrunableLayer",
                     "get_prunable_weights()"):
        assert expected in message
    model = keras.Sequential([keras.Input((4,)), MyDense(3, name="mine")])
    with pytest.raises(ValueError, match="'mine' of class MyDense"):
        tfprune.prune_low_magnitude(model)
    # Either way of opting in works.

    class MixedIn(L.Dense, tfprune.PrunableLayer):
        def get_prunable_weights(self):
            return [self.kernel]

    class Ducked(L.Dense):
        def get_prunable_weights(self):
            return [self.kernel]

    for layer in (MixedIn(3, name="mixed"), Ducked(3, name="ducked")):
        wrapper = tfprune.prune_low_magnitude(layer)
        wrapper(np.ones((1, 4), "float32"))
        assert masked_paths(wrapper) == ["kernel"]
    # And ignored_layers keeps a refused subclass dense.
    pruned = tfprune.prune_low_magnitude(model, ignored_layers=["mine"])
    assert type(pruned.get_layer("mine")) is MyDense


# -- already wrapped layers ------------------------------------------------------------

def test_wrapped_layers_in_a_model_or_list_are_kept_with_their_settings():
    first = tfprune.prune_low_magnitude(L.Dense(4, name="first"), tfprune.ConstantSparsity(0.3, 0))
    model = keras.Sequential([keras.Input((6,)), first, L.Dense(2, name="second")])
    first.set_masks([np.eye(6, 4)])
    pruned = tfprune.prune_low_magnitude(model, tfprune.ConstantSparsity(0.7, 0))
    kept = pruned.get_layer("prune_low_magnitude_first")
    assert kept.pruning_schedule == tfprune.ConstantSparsity(0.3, 0)
    assert pruned.get_layer("prune_low_magnitude_second").pruning_schedule.target_sparsity == 0.7
    # A copy (models are copied), with the wrapper's masks and weights.
    assert kept is not first
    np.testing.assert_array_equal(kept.masked_weights[0][1].numpy(), np.eye(6, 4))
    np.testing.assert_array_equal(kept.layer.kernel.numpy(), first.layer.kernel.numpy())
    x = np.ones((3, 6), "float32")
    np.testing.assert_allclose(pruned(x), model(x), rtol=1e-6)

    listed = tfprune.prune_low_magnitude([first, L.Dense(2, name="third")])
    assert listed[0] is first
    assert listed[1].name == "prune_low_magnitude_third"
    with pytest.raises(ValueError, match="'prune_low_magnitude_first' is already wrapped"):
        tfprune.prune_low_magnitude(first)


# -- the layers added to the registry -------------------------------------------------------

def built(layer, *args, **kwargs):
    layer(*args, **kwargs)
    return layer


def weight_names(layer):
    return [(w.path.removeprefix(layer.path + "/"), axis)
            for w, axis in prune_registry.prunable_weights(layer)]


def test_separable_conv1d_prunes_the_pointwise_kernel():
    layer = built(L.SeparableConv1D(8, 3, name="sep"), np.ones((1, 10, 4), "float32"))
    assert weight_names(layer) == [("pointwise_kernel", -2)]


def test_rnn_layers_with_cells_prune_kernel_and_recurrent_kernel_of_each_cell():
    x = np.ones((1, 5, 4), "float32")
    simple = built(L.RNN(L.SimpleRNNCell(3, name="cell"), name="rnn"), x)
    assert weight_names(simple) == [("cell/kernel", 0), ("cell/recurrent_kernel", 0)]
    stacked = built(L.RNN([L.LSTMCell(3, name="lstm"), L.GRUCell(2, name="gru")], name="stack"), x)
    # Keras names the StackedRNNCells "stacked_rnn_cells" (with a suffix if
    # other tests made one before): compare below it.
    names = [n for n, _ in weight_names(stacked)]
    assert all(n.startswith("stacked_rnn_cells") for n in names)
    assert [n.split("/", 1)[1] for n in names] == [
        "lstm/kernel", "lstm/recurrent_kernel", "gru/kernel", "gru/recurrent_kernel"]

    class Cell(L.Layer):
        state_size = 3

        def build(self, shape):
            self.kernel = self.add_weight(shape=(shape[-1], 3))

        def call(self, x, states):
            return x @ self.kernel, states

    with pytest.raises(ValueError, match="'odd'.*cell 'mine' of type Cell.*LSTMCell"):
        tfprune.prune_low_magnitude(L.RNN(Cell(name="mine"), name="odd"))


@pytest.mark.parametrize("cls, shape", [(L.ConvLSTM1D, (2, 8, 3)), (L.ConvLSTM2D, (2, 6, 6, 3)),
                                        (L.ConvLSTM3D, (2, 4, 4, 4, 3))])
def test_conv_lstm_prunes_its_input_and_recurrent_kernels(cls, shape):
    layer = built(cls(4, 3, name="clstm"), np.ones((1,) + shape, "float32"))
    cell = layer.cell.name
    assert weight_names(layer) == [(f"{cell}/kernel", -2), (f"{cell}/recurrent_kernel", -2)]


def test_multi_head_attention_called_with_keywords_prunes_four_projections():
    wrapper = tfprune.prune_low_magnitude(L.MultiHeadAttention(2, 4, name="mha"), SCHEDULE)
    inputs = keras.Input((5, 8))
    model = keras.Model(inputs, wrapper(query=inputs, value=inputs))
    assert model(np.ones((2, 5, 8), "float32")).shape == (2, 5, 8)
    assert masked_paths(wrapper) == [
        "query/kernel", "key/kernel", "value/kernel", "attention_output/kernel"]


def test_first_wrapped_layer_gives_sequential_its_input_shape():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras discourages input_shape; tfmot's guides use it.
        model = keras.Sequential([
            tfprune.prune_low_magnitude(L.Conv2D(4, 3, input_shape=(28, 28, 1), name="conv")),
            L.Flatten(), L.Dense(10)])
    assert model.built
    assert model.input_shape == (None, 28, 28, 1)
    assert model.output_shape == (None, 10)


# -- prune_scope and strip_pruning ---------------------------------------------------------

def test_prune_scope_resolves_tfprune_classes_by_name(tmp_path):
    wrapper = tfprune.prune_low_magnitude(L.Dense(3, name="dense"), tfprune.PolynomialDecay(0.1, 0.8, 0, 10))
    config = json.loads(json.dumps(keras.saving.serialize_keras_object(wrapper)))

    def without_registration(obj):  # tfprune's classes by bare name, as tfmot-style configs
        if isinstance(obj, dict):
            ours = str(obj.get("module", "")).startswith("tfprune")
            return {k: without_registration(v) for k, v in obj.items()
                    if not (ours and k in ("registered_name", "module"))}
        return [without_registration(v) for v in obj] if isinstance(obj, list) else obj

    bare = without_registration(config)
    with pytest.raises(TypeError):
        keras.saving.deserialize_keras_object(bare)
    with prune_scope():
        restored = keras.saving.deserialize_keras_object(bare)
    assert isinstance(restored, tfprune.PruneLowMagnitude)
    assert restored.pruning_schedule == tfprune.PolynomialDecay(0.1, 0.8, 0, 10)

    # tfmot's loading idiom runs unchanged (the scope is not needed).
    model = keras.Sequential([keras.Input((4,)), wrapper])
    model.save(tmp_path / "m.keras")
    with prune_scope():
        loaded = keras.models.load_model(tmp_path / "m.keras")
    assert isinstance(loaded.layers[0], tfprune.PruneLowMagnitude)


def test_strip_pruning_takes_unwrapped_layers_as_they_are():
    class Offset(L.Layer):
        """A custom layer whose config does not round-trip (no get_config for `offset`)."""

        def __init__(self, offset, **kwargs):
            super().__init__(**kwargs)
            self.offset = offset

        def call(self, x):
            return x + self.offset

    inputs = keras.Input((6,))
    x = L.Dense(4, name="dense")(inputs)
    x = Offset(1.5, name="offset")(x)
    x = L.BatchNormalization(name="bn")(x)
    pruned = keras.Model(inputs, x)
    pruned = keras.models.clone_model(
        pruned, clone_function=lambda l: tfprune.prune_low_magnitude(l) if l.name == "dense" else l)
    pruned.get_layer("prune_low_magnitude_dense").set_masks([np.eye(6, 4)])
    stripped = tfprune.strip_pruning(pruned)
    # Unwrapped layers are the same objects: their variables are shared.
    assert stripped.get_layer("offset") is pruned.get_layer("offset")
    assert stripped.get_layer("bn") is pruned.get_layer("bn")
    # The pruned layer is a new copy with the mask baked in; the wrapper is untouched.
    dense = stripped.get_layer("dense")
    assert type(dense) is L.Dense
    np.testing.assert_array_equal(dense.kernel.numpy() != 0, np.eye(6, 4) != 0)
    assert pruned.get_layer("prune_low_magnitude_dense").layer is not dense
    x = np.random.default_rng(0).normal(size=(3, 6)).astype("float32")
    np.testing.assert_allclose(stripped(x), pruned(x), rtol=1e-6)

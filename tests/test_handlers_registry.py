"""The handler registry: one handler per layer type, and users' own layers."""

import keras
import numpy as np
import pytest
from keras import layers as L

import tfprune
from tfprune import handlers
from tfprune.handlers import builtin


@keras.saving.register_keras_serializable(package="tests")
class ChannelScale(keras.layers.Layer):
    """A user's layer: one learned scale per channel."""

    def build(self, input_shape):
        self.scale = self.add_weight(name="scale", shape=(input_shape[-1],),
                                     initializer="random_uniform")

    def call(self, x):
        return x * self.scale


class ChannelScaleHandler(tfprune.LayerHandler):
    """Channel i of the input, the scale and the output go together."""

    prunes_nothing = True

    def prunable_weights(self, layer):
        return []

    def layout(self, layer):
        layout = handlers.Layout({"channel": layer.scale.shape[0]}, [])
        layout.add(layer.scale, 0, "channel", "param")
        return layout

    def link(self, ctx):
        ctx.only_input()
        ctx.identity()
        ctx.link(ctx.tensor(ctx.inputs[0]), ctx.slot("channel"))


def _model():
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(16, 3, name="c1")(inp)
    x = ChannelScale(name="scale")(x)
    x = L.ReLU()(x)
    x = L.Conv2D(8, 3, name="c2")(x)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Dense(3, name="out")(x))


@pytest.fixture
def registered():
    previous = tfprune.register_handler(ChannelScale, ChannelScaleHandler())
    yield
    handlers.unregister_handler(ChannelScale)
    assert previous is None


def test_unknown_layer_blocks_its_channels():
    graph = tfprune.DependencyGraph(_model())
    reasons = [r for g in graph.groups for r in g.reasons]
    assert "ChannelScale 'scale': layer type with unknown channel semantics" in reasons
    assert "kept: ChannelScale 'scale'" in graph.summary()
    assert not any(layer.name == "c1" for g in graph.prunable_groups for layer, _ in g.layers)


def test_registered_layer_becomes_prunable_and_shrinks(registered):
    keras.utils.set_random_seed(0)
    model = _model()
    graph = tfprune.DependencyGraph(model)
    assert not any("ChannelScale" in r for g in graph.groups for r in g.reasons)
    assert "ChannelScale" not in graph.summary()
    group = next(g for g in graph.groups if (model.get_layer("scale"), "channel") in g.layers)
    assert group.prunable and group.size == 16
    pruned = tfprune.prune_channels(model, tfprune.ConstantSparsity(0.5, 0))
    small = tfprune.shrink(pruned)
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(small(x), pruned(x), rtol=1e-5, atol=1e-5)
    assert small.get_layer("scale").scale.shape == (8,)
    assert small.get_layer("c1").filters == 8


def test_register_by_import_path(registered):
    handlers.unregister_handler(ChannelScale)
    path = f"{ChannelScale.__module__}.{ChannelScale.__qualname__}"
    tfprune.register_handler(path, ChannelScaleHandler())
    try:
        model = _model()
        assert handlers.is_known(model.get_layer("scale"))
        assert any(layer.name == "scale" for g in tfprune.DependencyGraph(model).prunable_groups
                   for layer, _ in g.layers)
    finally:
        handlers.unregister_handler(path)


def test_registered_handler_drives_unstructured_pruning():
    class Projection(keras.layers.Layer):
        def build(self, input_shape):
            self.w = self.add_weight(name="w", shape=(input_shape[-1], 6))

        def call(self, x):
            return x @ self.w

    class ProjectionHandler(tfprune.LayerHandler):
        def prunable_weights(self, layer):
            return [(layer.w, 0)]

    def model():
        return keras.Sequential([keras.Input((4,)), Projection()])

    with pytest.raises(ValueError, match="does not know which of them to prune"):
        tfprune.prune_low_magnitude(model())
    tfprune.register_handler(Projection, ProjectionHandler())
    try:
        wrapped = tfprune.prune_low_magnitude(
            model(), pruning_schedule=tfprune.ConstantSparsity(0.5, 0))
        wrapper = wrapped.layers[0]
        assert [w.name for w in wrapper.get_masked_weights()] == ["w"]
    finally:
        handlers.unregister_handler(Projection)


@pytest.mark.parametrize("args, match", [
    ((ChannelScale, object()), "LayerHandler instance"),
    ((int, tfprune.LayerHandler()), "keras.layers.Layer subclass"),
    (("ChannelScale", tfprune.LayerHandler()), "full import path"),
])
def test_register_handler_rejects_bad_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        tfprune.register_handler(*args)


def test_one_handler_per_builtin_type_and_subclasses_inherit():
    for cls, handler in builtin.LAYERS.items():
        assert handlers.handler_for(_instance(cls)) is handler

    class MyDense(L.Dense):
        pass

    assert handlers.handler_for(MyDense(3)) is builtin.LAYERS[L.Dense]
    assert handlers.lookup(MyDense(3))[0] is L.Dense


def _instance(cls):
    return cls.__new__(cls)

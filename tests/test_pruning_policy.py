"""`pruning_policy=`: PruningPolicy and PruneForLatencyOnXNNPack, down to the sparse TFLite layout."""

import keras
import numpy as np
import pytest

import tfprune
from tfprune.pruning_policy import PruneForLatencyOnXNNPack, PruningPolicy

L = keras.layers
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def mobilenet_like(size=32, name="mbn"):
    """A small MobileNetV2-style network laid out as XNNPACK's sparse inference wants it.

    Explicit ZeroPadding2D + padding="valid" before stride-2 layers, "same" padding at
    stride 1, residual adds written as `x + shortcut` (a keras.ops node), a
    squeeze-and-excitation block, GlobalAveragePooling2D, then a Dense head.
    """

    def block(x, expand, out, stride, prefix):
        shortcut = x
        x = L.Conv2D(expand, 1, use_bias=False, name=f"{prefix}_expand")(x)
        x = L.BatchNormalization(name=f"{prefix}_expand_bn")(x)
        x = L.ReLU(6.0, name=f"{prefix}_expand_relu")(x)
        if stride == 2:
            x = L.ZeroPadding2D(1, name=f"{prefix}_pad")(x)
        x = L.DepthwiseConv2D(3, strides=stride, padding="valid" if stride == 2 else "same",
                              name=f"{prefix}_dw")(x)
        x = L.BatchNormalization(name=f"{prefix}_dw_bn")(x)
        x = L.ReLU(6.0, name=f"{prefix}_dw_relu")(x)
        x = L.Conv2D(out, 1, use_bias=False, name=f"{prefix}_project")(x)
        x = L.BatchNormalization(name=f"{prefix}_project_bn")(x)
        return x + shortcut if stride == 1 and shortcut.shape[-1] == out else x

    inputs = keras.Input((size, size, 3), name="image")
    x = L.Rescaling(1 / 255.0, name="rescale")(inputs)
    x = L.ZeroPadding2D(1, name="stem_pad")(x)
    x = L.Conv2D(16, 3, strides=2, use_bias=False, name="stem")(x)
    x = L.BatchNormalization(name="stem_bn")(x)
    x = L.ReLU(6.0, name="stem_relu")(x)
    x = block(x, 32, 16, 1, "b1")
    x = block(x, 48, 24, 2, "b2")
    x = block(x, 72, 24, 1, "b3")
    squeeze = L.GlobalAveragePooling2D(keepdims=True, name="se_pool")(x)
    squeeze = L.Conv2D(24, 1, activation="sigmoid", name="se_gate")(squeeze)
    x = L.Multiply(name="se_scale")([x, squeeze])
    x = L.Conv2D(64, 1, activation="relu6", name="head_conv")(x)
    x = L.GlobalAveragePooling2D(name="pool")(x)
    x = L.Dropout(0.1, name="dropout")(x)
    return keras.Model(inputs, L.Dense(5, name="logits")(x), name=name)


SUBGRAPH_1X1 = ["b1_expand", "b1_project", "b2_expand", "b2_project", "b3_expand", "b3_project",
                "se_gate", "head_conv"]


def wrapped_names(model):
    return sorted(l.layer.name for l in model.layers if isinstance(l, tfprune.PruneLowMagnitude))


def test_mobilenet_like_model_gets_only_its_subgraph_1x1_convolutions_wrapped():
    model = mobilenet_like()
    pruned = tfprune.prune_low_magnitude(model, tfprune.ConstantSparsity(0.8, 0),
                                         pruning_policy=PruneForLatencyOnXNNPack())
    assert wrapped_names(pruned) == sorted(SUBGRAPH_1X1)
    # The stem, depthwise convolutions and the Dense head stay dense and unwrapped.
    for name in ("stem", "b1_dw", "b2_dw", "logits"):
        assert not isinstance(pruned.get_layer(name), tfprune.PruneLowMagnitude)


def test_sequential_model_and_a_1x1_convolution_after_the_pooling_stays_dense():
    model = keras.Sequential([
        keras.Input((32, 32, 3)), L.ZeroPadding2D(1), L.Conv2D(8, 3, strides=2, name="stem"),
        L.ReLU(6.0), L.DepthwiseConv2D(3, padding="same"), L.Conv2D(16, 1, name="pointwise"),
        L.Activation("relu"), L.GlobalAveragePooling2D(keepdims=True),
        L.Conv2D(4, 1, name="classifier"), L.Flatten()])
    pruned = tfprune.prune_low_magnitude(model, pruning_policy=PruneForLatencyOnXNNPack())
    # tfmot would also prune "classifier"; it runs after the sparse subgraph, densely.
    assert wrapped_names(pruned) == ["pointwise"]


def test_allow_pruning_before_any_model_is_checked_is_tfmot_rule():
    policy = PruneForLatencyOnXNNPack()
    assert policy.allow_pruning(L.Conv2D(4, 1))
    assert not policy.allow_pruning(L.Conv2D(4, 3))
    assert not policy.allow_pruning(L.Conv2D(4, 1, strides=2))
    assert not policy.allow_pruning(L.Dense(4))


def test_keras_applications_mobilenet_v2_is_refused_naming_its_first_convolution():
    model = keras.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3), alpha=0.35)
    with pytest.raises(ValueError, match=r"no start of the sparse subgraph.*'Conv1'.*padding='same'"):
        tfprune.prune_low_magnitude(model, pruning_policy=PruneForLatencyOnXNNPack())


def _stem(size=32, channels=3):
    inputs = keras.Input((size, size, channels), name="image")
    x = L.ZeroPadding2D(1, name="stem_pad")(inputs)
    return inputs, L.Conv2D(8, 3, strides=2, name="stem")(x)


def _finish(inputs, x, extra_outputs=()):
    x = L.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, [L.Dense(2, name="logits")(x), *extra_outputs])


def _same_stride2_depthwise():
    inputs, x = _stem()
    return _finish(inputs, L.DepthwiseConv2D(3, strides=2, padding="same", name="dw")(x))


def _odd_input():
    inputs, x = _stem(size=33)
    return _finish(inputs, L.Conv2D(8, 1, name="pw")(x))


def _one_channel_input():
    inputs, x = _stem(channels=1)
    return _finish(inputs, x)


def _concatenate():
    inputs, x = _stem()
    return _finish(inputs, L.Concatenate(name="cat")([x, L.Conv2D(8, 1, name="pw")(x)]))


def _subtract_op():
    inputs, x = _stem()
    return _finish(inputs, x - L.Conv2D(8, 1, name="pw")(x))


def _spatial_conv_inside():
    inputs, x = _stem()
    return _finish(inputs, L.Conv2D(8, 3, padding="same", name="conv3x3")(x))


def _no_pooling():
    inputs, x = _stem()
    x = L.Flatten(name="flat")(L.Conv2D(8, 1, name="pw")(x))
    return keras.Model(inputs, L.Dense(2, name="logits")(x))


def _side_output_inside():
    inputs, x = _stem()
    features = L.Conv2D(8, 1, name="features")(x)
    return _finish(inputs, features, extra_outputs=[L.ReLU(name="side")(features)])


def _second_input_enters():
    inputs, x = _stem()
    hint = keras.Input((16, 16, 8), name="hint")
    x = L.Add(name="merge")([x, hint])
    pooled = L.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model([inputs, hint], L.Dense(2, name="logits")(pooled))


@pytest.mark.parametrize("make, named", [
    (_same_stride2_depthwise, r"'dw' \(DepthwiseConv2D\).*padding='same' at strides 2"),
    (_odd_input, r"'stem'.*33x33.*even"),
    (_one_channel_input, r"'stem'.*1 input channels"),
    (_concatenate, r"'cat' \(Concatenate\)"),
    # Keras numbers automatic op names per process ('subtract', 'subtract_12', ...).
    (_subtract_op, r"keras.ops call 'subtract(_\d+)?' \(Subtract\)"),
    (_spatial_conv_inside, r"'conv3x3' \(Conv2D\).*only 1x1 convolutions"),
    (_no_pooling, r"output of 'logits' \(Dense\) has no GlobalAveragePooling2D"),
    (_side_output_inside, r"output of 'side' \(ReLU\)"),
    (_second_input_enters, r"path from input 'hint' to 'logits' \(Dense\) has no start"),
], ids=lambda v: getattr(v, "__name__", "")[1:] if callable(v) else "")
def test_a_model_that_breaks_xnnpack_rules_is_refused_naming_the_layer(make, named):
    model = make()
    with pytest.raises(ValueError, match="does not fit XNNPACK's sparse inference") as error:
        tfprune.prune_low_magnitude(model, pruning_policy=PruneForLatencyOnXNNPack())
    assert error.match(named)


def test_a_custom_policy_and_bad_policy_arguments():
    class DenseOnly(PruningPolicy):
        checked = []

        def allow_pruning(self, layer):
            return isinstance(layer, L.Dense)

        def ensure_model_supports_pruning(self, model):
            self.checked.append(model.name)

    model = mobilenet_like(name="net")
    pruned = tfprune.prune_low_magnitude(model, pruning_policy=DenseOnly())
    assert wrapped_names(pruned) == ["logits"]
    assert DenseOnly.checked == ["net"]
    with pytest.raises(TypeError):
        PruningPolicy()  # abstract
    with pytest.raises(ValueError, match="pruning_policy.*PruningPolicy.*allow_pruning"):
        tfprune.prune_low_magnitude(model, pruning_policy="xnnpack")
    with pytest.raises(ValueError, match="`pruning_policy` applies when pruning a model"):
        tfprune.prune_low_magnitude(L.Conv2D(4, 1), pruning_policy=PruneForLatencyOnXNNPack())


# -- the layout XNNPACK needs, in the exported float32 TFLite file -------------------------

def _tflite_layout(path):
    """Ops (name, padding, stride, producer op of input 0) and sparse constant tensors."""
    from ai_edge_litert import schema_py_generated as schema

    with open(path, "rb") as f:
        model = schema.Model.GetRootAs(f.read(), 0)
    graph = model.Subgraphs(0)
    op_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    paddings = {v: k for k, v in vars(schema.Padding).items() if not k.startswith("_")}
    ops, producer = [], {}
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        name = op_names[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())]
        padding = stride = None
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            table = op.BuiltinOptions()
            options = schema.Conv2DOptions() if name == "CONV_2D" else schema.DepthwiseConv2DOptions()
            options.Init(table.Bytes, table.Pos)
            padding, stride = paddings[options.Padding()], options.StrideH()
        ops.append((name, padding, stride, producer.get(op.Inputs(0))))
        for t in range(op.OutputsLength()):
            producer[op.Outputs(t)] = name
    sparse = [tuple(graph.Tensors(t).ShapeAsNumpy()) for t in range(graph.TensorsLength())
              if graph.Tensors(t).Sparsity() is not None]
    return ops, sparse


def test_stripped_model_exports_sparse_float32_with_the_xnnpack_layout(tmp_path):
    import tflite_export
    from ai_edge_litert import interpreter as litert

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (32, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 5, 32)
    pruned = tfprune.prune_low_magnitude(mobilenet_like(), tfprune.ConstantSparsity(0.8, 0, frequency=1),
                                         pruning_policy=PruneForLatencyOnXNNPack())
    pruned.compile("adam", LOSS)
    pruned.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[tfprune.UpdatePruningStep()])
    stripped = tfprune.strip_pruning(pruned)
    kernels = {name: stripped.get_layer(name).kernel.numpy() for name in SUBGRAPH_1X1}
    for name, kernel in kernels.items():
        assert (kernel == 0).mean() == pytest.approx(0.8, abs=1 / kernel.size), name
    assert (stripped.get_layer("stem").kernel.numpy() != 0).all()

    path = tmp_path / "mbn.tflite"
    report = tflite_export.export(stripped, str(path), quantize="float32", sparse_format="always",
                                  num_threads=None)
    assert report.sparse_format

    # LiteRT loads it and computes what Keras computes.
    interpreter = litert.Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    for sample in x[:4]:
        interpreter.set_tensor(inp["index"], sample[None])
        interpreter.invoke()
        np.testing.assert_allclose(interpreter.get_tensor(out["index"]),
                                   stripped(sample[None]).numpy(), rtol=1e-4, atol=1e-4)

    ops, sparse = _tflite_layout(path)
    # The 1x1 convolutions' filters, and only they, are stored sparse ([out, 1, 1, in]).
    expected = sorted((k.shape[3], 1, 1, k.shape[2]) for k in kernels.values())
    assert sorted(sparse) == expected
    assert sum(name == "DENSIFY" for name, *_ in ops) == len(kernels)
    # Stride-2 layers keep explicit padding (PAD, then VALID), which XNNPACK folds in.
    stride2 = [op for op in ops if op[2] == 2]
    assert len(stride2) == 2
    assert all(padding == "VALID" and before == "PAD" for _, padding, _, before in stride2)

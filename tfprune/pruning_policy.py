"""Pruning policies: which layers of a model `prune_low_magnitude` wraps.

A policy first checks the whole model (`ensure_model_supports_pruning`),
then says layer by layer whether to wrap it (`allow_pruning`). Pass one as
`tfprune.prune_low_magnitude(model, pruning_policy=...)`, as in tfmot.

`PruneForLatencyOnXNNPack` makes unstructured sparsity pay off in latency:
XNNPACK, TensorFlow Lite's CPU backend on phones, runs a part of a CNN with
sparse kernels when that part fits its sparse-inference rules (Elsen et al.,
"Fast Sparse ConvNets", 2019, https://arxiv.org/abs/1911.09723).
"""

import abc

import keras
import numpy as np

from tfprune.dependency import trace as trace_lib
from tfprune.prune import check_graph_model

_layers = keras.layers

# Activations XNNPACK runs in the sparse (NCHW) layout, by Keras name. Fused
# into a convolution or used as layers, they become the TFLite ops RELU,
# RELU6, LEAKY_RELU, ELU, LOGISTIC and HARD_SWISH.
_ACTIVATIONS = frozenset(
    {"linear", "relu", "relu6", "leaky_relu", "elu", "sigmoid", "hard_silu", "hard_swish"}
)
# keras.ops operations allowed inside the subgraph (Keras 3 records them as
# graph nodes, where tf_keras had TFOpLambda layers).
_BINARY_OPS = frozenset({"Add", "Multiply"})
_UNARY_OPS = frozenset(
    {"Relu", "Relu6", "LeakyRelu", "Elu", "Sigmoid", "HardSilu", "Absolute", "Negative",
     "Square", "Floor", "Ceil"}
)
# Layers that are the identity at inference time.
_IDENTITY_LAYERS = (
    _layers.Dropout,
    _layers.SpatialDropout2D,
    _layers.GaussianDropout,
    _layers.GaussianNoise,
    _layers.AlphaDropout,
)
_START = (
    "a Conv2D with a 3x3 kernel, strides 2, 3 input channels and padding='valid', right "
    "after a ZeroPadding2D(padding=1), on an even-sized image"
)


class PruningPolicy(abc.ABC):
    """Decides which layers of a model `prune_low_magnitude` wraps.

    Subclass it to write your own; `prune_low_magnitude(model,
    pruning_policy=policy)` calls `ensure_model_supports_pruning(model)`
    once, then `allow_pruning(layer)` for every layer of the model (nested
    models' layers included). Layers it does not allow are copied into the
    pruned model unwrapped.

    Example:

    ```python
    class PruneOnlyDense(tfprune.pruning_policy.PruningPolicy):
        def allow_pruning(self, layer):
            return isinstance(layer, keras.layers.Dense)

        def ensure_model_supports_pruning(self, model):
            pass
    ```
    """

    @abc.abstractmethod
    def allow_pruning(self, layer):
        """Whether to wrap `layer` for pruning.

        Args:
          layer: A layer of the model being pruned.

        Returns:
          A bool.
        """

    @abc.abstractmethod
    def ensure_model_supports_pruning(self, model):
        """Checks that the policy can prune `model`.

        Args:
          model: The Keras model passed to `prune_low_magnitude`.

        Raises:
          ValueError: If it cannot, naming the layer that is in the way.
        """


def _is_layer(site):
    return isinstance(site.layer, _layers.Layer)


def _op_name(site):
    """The class name of a `keras.ops` call site, None for layers."""
    return None if _is_layer(site) else type(site.layer).__name__


def _activation_name(activation):
    try:
        return keras.activations.serialize(activation)
    except (TypeError, ValueError):
        return getattr(activation, "__name__", repr(activation))


def _describe(site):
    kind = type(site.layer).__name__
    return f"'{site.name}' ({kind})" if _is_layer(site) else f"keras.ops call '{site.name}' ({kind})"


class _Graph:
    """Producers and consumers of a traced model, by tensor key."""

    def __init__(self, trace):
        self.trace = trace
        self.producer = {}
        self.consumers = {}
        for site in trace.sites:
            for tensor in site.outputs:
                self.producer[tensor.key] = site
            for tensor in site.inputs:
                self.consumers.setdefault(tensor.key, []).append(site)
        self.output_keys = {t.key for t in trace.outputs}

    def consumers_of(self, site):
        return [c for t in site.outputs for c in self.consumers.get(t.key, [])]

    def producers_of(self, site):
        """Producing sites of `site`'s inputs; None for a model input."""
        return [self.producer.get(t.key) for t in site.inputs]

    def single_producer(self, site):
        producers = self.producers_of(site)
        return producers[0] if len(producers) == 1 else None


def _pair(value):
    return tuple(value) if isinstance(value, (list, tuple)) else (value, value)


def _padding_before(graph, site, amount):
    """Problem with the explicit padding `site` needs (None if it has it)."""
    producer = graph.single_producer(site)
    wanted = ((amount, amount), (amount, amount))
    if producer is None or not isinstance(producer.layer, _layers.ZeroPadding2D):
        return (
            f"with padding='valid' it needs a ZeroPadding2D(padding={amount}) right before "
            "it; its input comes from "
            + (_describe(producer) if producer else "the model input")
        )
    padding = tuple(_pair(p) for p in producer.layer.padding)
    if padding != wanted:
        return (
            f"the ZeroPadding2D '{producer.name}' before it pads {padding}; XNNPACK needs "
            f"{amount} on each side (padding={amount}). keras.applications pads (0, 1) "
            "before stride-2 layers, which does not fit"
        )
    return None


def _stride2_problems(graph, site, amount):
    """Padding and size rules of a stride-2 (depthwise) convolution.

    XNNPACK runs a stride-2 convolution sparse only with explicit padding of
    `amount` on each side: `ZeroPadding2D(amount)` and `padding="valid"`.
    TensorFlow's "same" padding is refused at stride 2, and on odd input
    sizes the TFLite converter turns the explicit padding back into "same"
    (they compute the same thing there), so the sizes must be even.
    """
    layer = site.layer
    if layer.padding != "valid":
        return [
            f"padding={layer.padding!r} at strides 2: XNNPACK's sparse kernels need "
            f"explicit padding here; put ZeroPadding2D(padding={amount}) before it and use "
            "padding='valid'"
        ]
    problems = [p for p in [_padding_before(graph, site, amount)] if p]
    sizes = tuple(site.inputs[0].shape[1:3]) if site.inputs else ()
    odd = [d for d in sizes if d is not None and d % 2]
    if odd:
        unpadded = tuple(d - 2 * amount if d is not None else None for d in sizes)
        problems.append(
            f"its input is {unpadded[0]}x{unpadded[1]} before padding; stride-2 layers need "
            "even sizes, because on odd sizes the TFLite converter turns ZeroPadding2D + "
            "padding='valid' into padding='same', which XNNPACK does not run sparse at "
            "strides 2 (use an even input size such as 224)"
        )
    return problems


def _conv_common_problems(layer):
    problems = []
    if _pair(layer.dilation_rate) != (1, 1):
        problems.append(f"dilation_rate={layer.dilation_rate} (must be 1)")
    if layer.data_format != "channels_last":
        problems.append(f"data_format={layer.data_format!r} (must be 'channels_last')")
    activation = _activation_name(layer.activation)
    if activation not in _ACTIVATIONS:
        problems.append(f"activation={activation!r} (use one of {sorted(_ACTIVATIONS)})")
    return problems


def _start_problems(graph, site):
    """Why `site` cannot start the sparse subgraph (empty if it can)."""
    layer = site.layer
    if not isinstance(layer, _layers.Conv2D):
        return [f"it is not a Conv2D but {type(layer).__name__}"]
    problems = _conv_common_problems(layer)
    if _pair(layer.kernel_size) != (3, 3):
        problems.append(f"kernel_size={layer.kernel_size} (must be 3x3)")
    if _pair(layer.strides) != (2, 2):
        problems.append(f"strides={layer.strides} (must be 2)")
    if layer.groups != 1:
        problems.append(f"groups={layer.groups} (must be 1)")
    channels = site.inputs[0].shape[-1] if site.inputs else None
    if channels != 3:
        problems.append(f"{channels} input channels (must be 3, an RGB image)")
    if _pair(layer.kernel_size) == (3, 3) and _pair(layer.strides) == (2, 2):
        problems.extend(_stride2_problems(graph, site, 1))
    return problems


def _end_problem(site):
    """None if `site` ends the sparse subgraph (a spatial mean), else why not."""
    layer = site.layer
    if isinstance(layer, _layers.GlobalAveragePooling2D):
        if layer.data_format != "channels_last":
            return f"data_format={layer.data_format!r} (must be 'channels_last')"
        return None
    if _op_name(site) == "Mean":
        axis = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
        rank = len(site.inputs[0].shape)
        if rank == 4 and sorted(a % rank for a in axis) == [1, 2]:
            return None
        return f"keras.ops.mean over axis={layer.axis} (must be the spatial axes [1, 2])"
    return "it is not a GlobalAveragePooling2D"


def _inner_mean_problem(site):
    """A spatial mean inside the subgraph (squeeze-and-excitation) keeps its axes."""
    problem = _end_problem(site)
    if problem is None and not site.layer.keepdims:
        problem = (
            "keepdims=False before the end of the sparse subgraph (a spatial mean inside "
            "it, as in squeeze-and-excitation, must keep the spatial axes: keepdims=True)"
        )
    return problem


def _rank4_problem(site):
    ranks = [len(t.shape) for t in site.inputs]
    if any(rank != 4 for rank in ranks):
        return f"inputs of rank {ranks} (XNNPACK needs 4-D tensors here)"
    return None


def _constant_problem(site):
    """XNNPACK takes constant operands only as scalars or vectors."""
    for arg in list(site.args) + list(site.kwargs.values()):
        if isinstance(arg, trace_lib.TensorRef) or arg is None:
            continue
        shape = np.shape(arg)
        if sum(1 for d in shape if d != 1) > 1:
            return f"a constant operand of shape {shape} (only scalars or per-channel vectors)"
    return None


def _op_problem(site):
    op = _op_name(site)
    if op in _BINARY_OPS:
        return _rank4_problem(site) or _constant_problem(site)
    if op in _UNARY_OPS:
        return _rank4_problem(site)
    if op == "Mean":
        return _inner_mean_problem(site)
    return (
        f"XNNPACK's sparse kernels do not run {op}; allowed keras.ops are "
        f"{sorted(_BINARY_OPS | _UNARY_OPS)}"
    )


def _pointwise_problem(graph, site):
    layer = site.layer
    problems = _conv_common_problems(layer)
    if _pair(layer.kernel_size) != (1, 1):
        problems.append(
            f"kernel_size={layer.kernel_size}: only 1x1 convolutions may follow the first "
            "one (use DepthwiseConv2D for spatial filtering)"
        )
    if _pair(layer.strides) != (1, 1):
        problems.append(f"strides={layer.strides} (1x1 convolutions must have strides 1)")
    if layer.groups != 1:
        problems.append(f"groups={layer.groups} (must be 1)")
    return "; ".join(problems) or None


def _depthwise_problem(graph, site):
    layer = site.layer
    problems = _conv_common_problems(layer)
    size = _pair(layer.kernel_size)
    if size not in ((3, 3), (5, 5)):
        problems.append(f"kernel_size={layer.kernel_size} (must be 3x3 or 5x5)")
    if _pair(layer.strides) not in ((1, 1), (2, 2)):
        problems.append(f"strides={layer.strides} (must be 1 or 2)")
    if layer.depth_multiplier != 1:
        problems.append(f"depth_multiplier={layer.depth_multiplier} (must be 1)")
    if size in ((3, 3), (5, 5)):
        amount = size[0] // 2
        if _pair(layer.strides) == (2, 2):
            problems.extend(_stride2_problems(graph, site, amount))
        elif layer.padding == "valid":
            # At strides 1, "same" padding is fine: XNNPACK makes it explicit.
            problems.extend(p for p in [_padding_before(graph, site, amount)] if p)
    return "; ".join(problems) or None


def _zero_padding_problem(graph, site):
    # XNNPACK folds the padding into the (depthwise) convolution after it.
    for consumer in graph.consumers_of(site):
        if not (isinstance(consumer.layer, (_layers.Conv2D, _layers.DepthwiseConv2D))
                and consumer.layer.padding == "valid"):
            return (
                f"its output feeds {_describe(consumer)}; inside the sparse subgraph a "
                "ZeroPadding2D may only feed convolutions with padding='valid', into which "
                "XNNPACK folds it"
            )
    return None


def _batch_norm_problem(graph, site):
    axis = site.layer.axis
    axis = axis if isinstance(axis, (list, tuple)) else [axis]
    if [a % 4 for a in axis] != [3]:
        return f"axis={site.layer.axis} (must be the channel axis, -1)"
    return None


def _relu_problem(graph, site):
    layer = site.layer
    if layer.threshold != 0:
        return f"threshold={layer.threshold} (must be 0)"
    if layer.negative_slope != 0 and layer.max_value is not None:
        return "both negative_slope and max_value set (use one)"
    return None


def _activation_problem(graph, site):
    name = _activation_name(site.layer.activation)
    if name not in _ACTIVATIONS:
        return f"activation {name!r} (use one of {sorted(_ACTIVATIONS)})"
    return None


def _upsampling_problem(graph, site):
    if site.layer.interpolation != "bilinear":
        return f"interpolation={site.layer.interpolation!r} (must be 'bilinear')"
    return None


# Layer classes allowed inside the subgraph, with their checks, in order.
_LAYER_RULES = (
    (_layers.Conv2D, _pointwise_problem),
    (_layers.DepthwiseConv2D, _depthwise_problem),
    (_layers.ZeroPadding2D, _zero_padding_problem),
    (_layers.BatchNormalization, _batch_norm_problem),
    (_layers.ReLU, _relu_problem),
    ((_layers.LeakyReLU, _layers.ELU) + _IDENTITY_LAYERS, lambda graph, site: None),
    (_layers.Activation, _activation_problem),
    ((_layers.Add, _layers.Multiply), lambda graph, site: _rank4_problem(site)),
    (_layers.GlobalAveragePooling2D, lambda graph, site: _inner_mean_problem(site)),
    (_layers.UpSampling2D, _upsampling_problem),
)


def _support_problem(graph, site):
    """Why `site` cannot be inside the sparse subgraph (None if it can)."""
    if not _is_layer(site):
        return _op_problem(site)
    for classes, rule in _LAYER_RULES:
        if isinstance(site.layer, classes):
            return rule(graph, site)
    return f"XNNPACK's sparse kernels do not run {type(site.layer).__name__} layers"


def is_sparse_1x1_conv(layer):
    """Whether `layer` is a convolution XNNPACK can run with sparse weights.

    A `Conv2D` with a 1x1 kernel, strides 1, no dilation, one group and
    channels-last data. Whether it actually runs sparse also depends on
    where it is in the model (see `PruneForLatencyOnXNNPack`).

    Args:
      layer: A Keras layer.

    Returns:
      A bool.
    """
    return (
        isinstance(layer, _layers.Conv2D)
        and _pair(layer.kernel_size) == (1, 1)
        and _pair(layer.strides) == (1, 1)
        and _pair(layer.dilation_rate) == (1, 1)
        and layer.groups == 1
        and layer.data_format == "channels_last"
    )


class PruneForLatencyOnXNNPack(PruningPolicy):
    """Prunes only the 1x1 convolutions XNNPACK can run with sparse kernels.

    XNNPACK (TensorFlow Lite's CPU backend) runs a part of a float model with
    sparse kernels when its weights are stored in TFLite's sparse format and
    that part (the "sparse subgraph") follows XNNPACK's rules, as in
    MobileNet-style CNNs. `ensure_model_supports_pruning` checks these rules,
    as tfmot's policy of the same name does; the model is then pruned in the
    1x1 convolutions of the subgraph only, where almost all of a MobileNet's
    weights and multiply-adds are. The speed-up shows on ARM phones.

    The rules, on every path from a model input to a model output:

    - Start: a `Conv2D` with a 3x3 kernel, strides 2, 3 input channels (an
      RGB image), `padding="valid"`, right after `ZeroPadding2D(padding=1)`.
      Layers before it (e.g. `Rescaling`) are not checked.
    - Inside: `Conv2D` 1x1 (strides 1, no dilation, one group);
      `DepthwiseConv2D` 3x3 or 5x5 with depth multiplier 1, at strides 1
      with `padding="same"` (or `"valid"` after a `ZeroPadding2D` of 1 or 2
      on each side), at strides 2 with `padding="valid"` after such a
      `ZeroPadding2D`; `BatchNormalization` on the channel axis; `ReLU`,
      `LeakyReLU`, `ELU` and `Activation` (and fused activations) relu,
      relu6, leaky_relu, elu, sigmoid, hard_silu; `Add` and `Multiply` of
      4-D tensors (layers, `x + y` or `keras.ops.add`/`multiply`, constants
      only as scalars or per-channel vectors); unary `keras.ops` of these
      activations and abs, negative, square, floor, ceil; bilinear
      `UpSampling2D`; `Dropout` and other layers that are the identity at
      inference. No tensor inside may be a model output or come from
      outside.
    - End: `GlobalAveragePooling2D` (or `keras.ops.mean` over axes 1 and 2).
      Layers after it (the classifier head) are not checked.
    - Input sizes: the inputs of stride-2 layers (the first convolution and
      stride-2 depthwise ones) must have even height and width, e.g. a
      224x224 image. On odd sizes the TFLite converter turns
      `ZeroPadding2D` + `padding="valid"` into `padding="same"`, and
      XNNPACK does not run stride-2 "same" padding sparse.

    tfmot checks the same layers, but not the input sizes; its rule for
    `TFOpLambda` layers (tf_keras) is the `keras.ops` rule here, without
    `subtract`, which XNNPACK does not run sparse.
    `keras.applications` models pad stride-2 layers with `padding="same"`
    or `(0, 1)`, so they do not fit; build the network with explicit padding
    (see the example).

    XNNPACK uses the sparse kernels only when more than 2/3 of the 1x1
    convolutions' weights (all together) are zero: prune to 70-90%. Export
    float32 with the sparse format (`tflite_export.export(model, path,
    quantize="float32", sparse_format="always")`); XNNPACK's sparse kernels
    are float only.

    Example:

    ```python
    def block(x, filters, stride):
        x = keras.layers.ZeroPadding2D(1)(x)
        x = keras.layers.DepthwiseConv2D(3, strides=stride, activation="relu6")(x)
        return keras.layers.Conv2D(filters, 1, activation="relu6")(x)

    inputs = keras.Input((224, 224, 3))
    x = keras.layers.ZeroPadding2D(1)(inputs)
    x = keras.layers.Conv2D(32, 3, strides=2, activation="relu6")(x)
    x = block(block(x, 64, 1), 128, 2)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(10)(x))
    pruned = tfprune.prune_low_magnitude(
        model, tfprune.PolynomialDecay(0.0, 0.8, 0, 2000),
        pruning_policy=tfprune.pruning_policy.PruneForLatencyOnXNNPack())
    ```

    After `ensure_model_supports_pruning(model)`, `allow_pruning` allows the
    1x1 convolutions inside that model's sparse subgraph; before any model
    was checked, every 1x1 `Conv2D` that XNNPACK could run sparse
    (`is_sparse_1x1_conv`), as tfmot.
    """

    def __init__(self):
        self._eligible = None

    def allow_pruning(self, layer):
        """Whether `layer` is a 1x1 convolution of the sparse subgraph.

        Args:
          layer: A Keras layer.

        Returns:
          A bool.
        """
        if self._eligible is not None:
            return id(layer) in self._eligible
        return is_sparse_1x1_conv(layer)

    def ensure_model_supports_pruning(self, model):
        """Checks that `model` has a sparse subgraph XNNPACK can run.

        Also records the subgraph's 1x1 convolutions for `allow_pruning`.

        Args:
          model: A built Sequential or functional Keras model.

        Raises:
          ValueError: If the model is subclassed or not built, or some path
            through it has no start or end of the sparse subgraph, or a layer
            between them breaks XNNPACK's rules (the message names the layer
            and says why).
        """
        check_graph_model(model, f"{type(self).__name__}.ensure_model_supports_pruning")
        graph = _Graph(trace_lib.trace(model))
        prefix = f"Model '{model.name}' does not fit XNNPACK's sparse inference ({type(self).__name__}): "
        starts = self._find_starts(graph, prefix)
        ends = self._find_ends(graph, prefix)
        inside = self._check_inside(graph, starts, ends, prefix)
        self._eligible = {
            id(site.layer): site.layer for site in inside if is_sparse_1x1_conv(site.layer)
        }

    def _find_starts(self, graph, prefix):
        starts, seen = set(), set()
        for tensor, name in zip(graph.trace.inputs, graph.trace.input_names):
            if tensor.key in graph.output_keys:
                raise ValueError(prefix + f"input '{name}' is also a model output.")
            near, pending = [], list(graph.consumers.get(tensor.key, []))
            while pending:
                site = pending.pop(0)
                if site.index in seen or site.index in starts:
                    continue
                seen.add(site.index)
                problems = _start_problems(graph, site)
                if not problems:
                    starts.add(site.index)
                    continue
                if isinstance(site.layer, _layers.Conv2D):
                    near.append((site, problems))
                after = graph.consumers_of(site)
                if not after or any(t.key in graph.output_keys for t in site.outputs):
                    hint = ""
                    if near:
                        first, why = min(near, key=lambda pair: pair[0].index)
                        hint = (f" The first Conv2D on the way, '{first.name}', cannot start "
                                "it: " + "; ".join(why) + ".")
                    raise ValueError(
                        prefix + f"the path from input '{name}' to {_describe(site)} has no "
                        f"start of the sparse subgraph: {_START}.{hint}"
                    )
                pending.extend(after)
        return starts

    def _find_ends(self, graph, prefix):
        ends, seen = set(), set()
        for output in graph.trace.outputs:
            last = graph.producer.get(output.key)
            pending = [last]
            while pending:
                site = pending.pop(0)
                if site is None:
                    raise ValueError(
                        prefix + "the path from the input to the output of "
                        f"{_describe(last) if last else 'the model'} has no "
                        "GlobalAveragePooling2D (or keras.ops.mean over axes 1 and 2), which "
                        "ends the sparse subgraph."
                    )
                if site.index in seen:
                    continue
                seen.add(site.index)
                if _end_problem(site) is None:
                    ends.add(site.index)
                    continue
                pending.extend(graph.producers_of(site) or [None])
        return ends

    def _check_inside(self, graph, starts, ends, prefix):
        sites = {site.index: site for site in graph.trace.sites}
        downstream = _reachable(graph, [sites[i] for i in starts])
        inside, seen = [], set(starts)
        pending = [c for i in starts for c in graph.consumers_of(sites[i])]
        while pending:
            site = pending.pop(0)
            if site.index in seen:
                continue
            seen.add(site.index)
            for producer in graph.producers_of(site):
                if producer is None or producer.index not in downstream:
                    raise ValueError(
                        prefix + f"{_describe(site)} takes an input from "
                        f"{_describe(producer) if producer else 'a model input'}, which is "
                        "outside the sparse subgraph (XNNPACK keeps the subgraph in its own "
                        "layout, so nothing may enter it but through the first convolution)."
                    )
            if site.index in ends:
                continue
            problem = _support_problem(graph, site)
            if problem:
                raise ValueError(
                    prefix + f"{_describe(site)} sits between the first convolution and the "
                    f"GlobalAveragePooling2D, where XNNPACK does not support it: {problem}."
                )
            if any(t.key in graph.output_keys for t in site.outputs):
                raise ValueError(
                    prefix + f"the output of {_describe(site)} is a model output, but it is "
                    "inside the sparse subgraph; outputs must come after the "
                    "GlobalAveragePooling2D."
                )
            inside.append(site)
            pending.extend(graph.consumers_of(site))
        return inside


def _reachable(graph, sources):
    """Indices of `sources` and of every site downstream of them."""
    found, pending = set(), list(sources)
    while pending:
        site = pending.pop()
        if site.index not in found:
            found.add(site.index)
            pending.extend(graph.consumers_of(site))
    return found

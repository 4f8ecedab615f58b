"""Multiply-accumulate (MAC) counting, per single example (batch size 1).

Two counters:

* `count_macs(keras_model)` walks a functional or Sequential Keras 3 model
  (nested models included) and counts Conv1D/2D/3D (grouped too),
  Conv1D/2D/3DTranspose, DepthwiseConv1D/2D, SeparableConv1D/2D, Dense and
  EinsumDense. Other layers contribute no MACs (activations, pooling and
  normalisation are cheap next to these and are not multiply-accumulates).
* `count_tflite_macs(model)` counts CONV_2D, CONV_3D, DEPTHWISE_CONV_2D,
  TRANSPOSE_CONV, FULLY_CONNECTED and BATCH_MATMUL in a `.tflite` graph; it is
  used for inputs that are not Keras 3 models (SavedModel, tf_keras).

Bias additions are not counted.
"""

import math

import numpy as np
from absl import logging


class MacCountError(ValueError):
    """The model cannot be counted layer by layer (e.g. a subclassed model)."""


def _prod(values):
    return int(math.prod(1 if v is None else int(v) for v in values))


def _shapes(tensors):
    if not isinstance(tensors, (list, tuple)):
        tensors = [tensors]
    return [tuple(t.shape) for t in tensors if hasattr(t, "shape")]


def _graph_of(model):
    """Returns the functional graph model (Sequential keeps one inside)."""
    functional = getattr(model, "_functional", None)
    if functional is not None:
        return functional
    if hasattr(model, "_nodes") and hasattr(model, "_operations"):
        return model
    return None


def _layer_macs(layer, in_shape, out_shape):
    """MACs of one call of a layer for one example."""
    import keras

    layers = keras.layers
    out_elems = _prod(out_shape[1:])
    kernel = getattr(layer, "kernel", None)
    if isinstance(layer, (layers.SeparableConv1D, layers.SeparableConv2D)):
        dw = tuple(layer.depthwise_kernel.shape)  # kernel_size + (in, multiplier)
        pw = tuple(layer.pointwise_kernel.shape)  # (1,...,1, in*multiplier, filters)
        spatial = out_elems // pw[-1]
        return spatial * _prod(dw) + spatial * pw[-2] * pw[-1]
    if isinstance(layer, (layers.DepthwiseConv1D, layers.DepthwiseConv2D)):
        kernel_size = tuple(layer.kernel.shape)[:-2]
        return out_elems * _prod(kernel_size)
    if isinstance(layer, (layers.Conv1DTranspose, layers.Conv2DTranspose,
                          layers.Conv3DTranspose)):
        # Each input pixel scatters a kernel_size x filters patch per channel.
        shape = tuple(kernel.shape)  # kernel_size + (filters, in)
        in_channels = shape[-1]
        in_spatial = _prod(in_shape[1:]) // in_channels
        return in_spatial * _prod(shape)
    if isinstance(layer, (layers.Conv1D, layers.Conv2D, layers.Conv3D)):
        # kernel_size + (in / groups, filters): grouped conv is covered since
        # each output sees only in/groups channels.
        return out_elems * _prod(tuple(kernel.shape)[:-1])
    if isinstance(layer, layers.EinsumDense):
        inputs, out = layer.equation.split("->")
        in_letters, kernel_letters = inputs.split(",")
        sizes = {}
        shape = (1,) + tuple(in_shape[1:])
        for letter, size in zip(in_letters[-len(shape):], shape):
            sizes[letter] = 1 if size is None else int(size)
        for letter, size in zip(kernel_letters, tuple(layer.kernel.shape)):
            sizes[letter] = int(size)
        # Every combination of all indices is one multiply-accumulate.
        return _prod(sizes.values())
    if isinstance(layer, layers.Dense):
        return out_elems * int(kernel.shape[0])
    return 0



def _count(model):
    import keras

    graph = _graph_of(model)
    if graph is None:
        raise MacCountError(
            f"model {model.name!r} is a subclassed model without a layer graph; its MACs "
            "can only be counted from the converted .tflite (count_tflite_macs)."
        )
    total = 0
    for layer in graph.layers:
        nodes = [
            node for i, node in enumerate(layer._inbound_nodes)
            if f"{id(layer)}_ib-{i}" in graph._nodes
        ]
        if isinstance(layer, keras.Model) or _graph_of(layer) is not None:
            total += _count(layer) * max(1, len(nodes))
            continue
        for node in nodes:
            in_shapes = _shapes(node.input_tensors)
            out_shapes = _shapes(node.outputs)
            if not in_shapes or not out_shapes:
                continue
            macs = _layer_macs(layer, in_shapes[0], out_shapes[0])
            if macs == 0 and layer.weights and not isinstance(
                layer, (keras.layers.BatchNormalization, keras.layers.LayerNormalization,
                        keras.layers.Embedding, keras.layers.Normalization)
            ):
                logging.warning("MACs of layer %r (%s) are not counted.", layer.name,
                                type(layer).__name__)
            total += macs
    return total


def count_macs(model):
    """Counts the MACs of one inference of a Keras 3 model (batch size 1).

    Args:
      model: A functional or Sequential Keras 3 model (nested models allowed).

    Returns:
      The number of multiply-accumulates as an int.

    Raises:
      MacCountError: If the model is subclassed (no layer graph).
    """
    return int(_count(model))


def count_tflite_macs(model):
    """Counts the MACs of one inference of a `.tflite` model.

    Args:
      model: Path of a `.tflite` file or its bytes.

    Returns:
      The number of multiply-accumulates as an int.
    """
    from tflite_export import litert

    interpreter = litert.make_interpreter(model, use_xnnpack=False)
    tensors = {t["index"]: tuple(int(d) for d in t["shape"])
               for t in interpreter.get_tensor_details()}
    total = 0
    for op in interpreter._get_ops_details():
        name = op["op_name"]
        ins = [tensors.get(i, ()) for i in op["inputs"] if i >= 0]
        outs = [tensors.get(i, ()) for i in op["outputs"] if i >= 0]
        if not outs:
            continue
        out_elems = _prod(outs[0])
        if name == "CONV_2D" and len(ins) >= 2:
            total += out_elems * _prod(ins[1][1:])  # filter (O, H, W, I)
        elif name == "CONV_3D" and len(ins) >= 2:
            total += out_elems * _prod(ins[1][:-1])  # filter (D, H, W, I, O)
        elif name == "DEPTHWISE_CONV_2D" and len(ins) >= 2:
            total += out_elems * _prod(ins[1][1:3])  # filter (1, H, W, O)
        elif name == "FULLY_CONNECTED" and len(ins) >= 2:
            total += out_elems * int(ins[1][-1])  # weights (units, in)
        elif name == "TRANSPOSE_CONV" and len(ins) >= 3:
            total += _prod(ins[2]) * _prod(ins[1][:3])  # input x (O, H, W)
        elif name == "BATCH_MATMUL" and len(ins) >= 2 and ins[0]:
            total += out_elems * int(ins[0][-1])
    return int(total)


def count_params(weights):
    """Counts parameters and non-zero parameters.

    Args:
      weights: Iterable of arrays or variables.

    Returns:
      `(params, nonzero_params)` as ints.
    """
    params = nonzero = 0
    for w in weights:
        array = np.asarray(w.numpy() if hasattr(w, "numpy") else w)
        params += int(array.size)
        nonzero += int(np.count_nonzero(array))
    return params, nonzero

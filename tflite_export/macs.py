"""Multiply-accumulate (MAC) counting, per single example (batch size 1).

Two counters:

* `count_macs(keras_model)` is `tfprune.count_macs` (the count channel pruning
  works with): Conv1D/2D/3D (grouped too), Conv1D/2D/3DTranspose,
  DepthwiseConv1D/2D, SeparableConv1D/2D, Dense and EinsumDense, nested
  models and shared layers included. Other layers contribute no MACs.
* `count_tflite_macs(model)` counts CONV_2D, CONV_3D, DEPTHWISE_CONV_2D,
  TRANSPOSE_CONV, FULLY_CONNECTED and BATCH_MATMUL in a `.tflite` graph; it is
  used for inputs that are not Keras 3 models (SavedModel, tf_keras).

Bias additions are not counted.
"""

import math

import numpy as np


class MacCountError(ValueError):
    """The model cannot be counted layer by layer (e.g. a subclassed model)."""


def _prod(values):
    return int(math.prod(1 if v is None else int(v) for v in values))


def count_macs(model):
    """Counts the MACs of one inference of a Keras 3 model (batch size 1).

    The count is `tfprune.count_macs`, the one the channel pruner and `shrink`
    use, so a report's MACs match what pruning promised.

    Args:
      model: A functional or Sequential Keras 3 model (nested models allowed)
        with a fixed input shape.

    Returns:
      The number of multiply-accumulates as an int.

    Raises:
      MacCountError: If the model is subclassed (no layer graph) or a layer's
        shape is not fixed; `count_tflite_macs` counts such models from the
        converted file.
    """
    import tfprune

    try:
        return int(tfprune.count_macs(model))
    except ValueError as e:
        raise MacCountError(str(e)) from e


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

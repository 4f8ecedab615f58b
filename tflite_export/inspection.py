"""Reading facts out of a `.tflite` file: tensors, ops, weight types."""

import collections

import numpy as np

from tflite_export import litert


def _tensor_info(detail):
    scale, zero_point = detail["quantization"]
    return {
        "name": detail["name"],
        "shape": [int(d) for d in detail["shape"]],
        "dtype": np.dtype(detail["dtype"]).name,
        "scale": float(scale),
        "zero_point": int(zero_point),
    }


def _constant_tensors(content):
    """Yields (type name, rank, is_sparse) of constant tensors from the flatbuffer."""
    from ai_edge_litert import schema_py_generated as schema

    names = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    model = schema.Model.GetRootAs(content, 0)
    for g in range(model.SubgraphsLength()):
        graph = model.Subgraphs(g)
        for t in range(graph.TensorsLength()):
            tensor = graph.Tensors(t)
            buffer = model.Buffers(tensor.Buffer()) if tensor.Buffer() > 0 else None
            if buffer is None or (buffer.DataLength() == 0 and buffer.Offset() == 0):
                continue
            yield names.get(tensor.Type(), str(tensor.Type())), tensor.ShapeLength(), \
                tensor.Sparsity() is not None


def describe(model):
    """Describes a `.tflite` model.

    Args:
      model: Path of a `.tflite` file or its bytes.

    Returns:
      A dict with `inputs` and `outputs` (name, shape, dtype, scale,
      zero_point), `op_counts` (op name -> count), `weight_dtypes` (dtype ->
      number of constant tensors of rank >= 2, i.e. kernels) and
      `sparse_tensors` (constant tensors stored in the sparse format).
    """
    if not isinstance(model, (bytes, bytearray)):
        with open(model, "rb") as f:
            model = f.read()
    interpreter = litert.make_interpreter(model, use_xnnpack=False)
    ops = collections.Counter(op["op_name"] for op in interpreter._get_ops_details())
    weights = collections.Counter()
    sparse = 0
    for dtype, rank, is_sparse in _constant_tensors(bytes(model)):
        if rank >= 2:
            weights[dtype] += 1
        sparse += int(is_sparse)
    return {
        "inputs": [_tensor_info(d) for d in interpreter.get_input_details()],
        "outputs": [_tensor_info(d) for d in interpreter.get_output_details()],
        "op_counts": dict(sorted(ops.items())),
        "weight_dtypes": dict(sorted(weights.items())),
        "sparse_tensors": sparse,
    }

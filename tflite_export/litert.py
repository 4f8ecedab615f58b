"""Thin helpers around the LiteRT interpreter (`ai_edge_litert`).

One place decides how an interpreter is created (XNNPACK on or off, thread
count) and how NumPy data is quantised into and out of integer tensors, so
the benchmark, the evaluation and the inspection code agree.
"""

import os

import numpy as np


def make_interpreter(model, num_threads=1, use_xnnpack=True):
    """Creates a LiteRT interpreter.

    Args:
      model: Path of a `.tflite` file, or its bytes.
      num_threads: Interpreter threads.
      use_xnnpack: Keep the default XNNPACK delegate (LiteRT's default). When
        False the builtin kernels run without default delegates.

    Returns:
      An `ai_edge_litert.interpreter.Interpreter` (tensors not yet allocated).

    Raises:
      ValueError: If `model` is a path that does not exist.
    """
    from ai_edge_litert import interpreter as litert

    resolver = (
        litert.OpResolverType.AUTO
        if use_xnnpack
        else litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    if isinstance(model, (bytes, bytearray)):
        return litert.Interpreter(
            model_content=bytes(model),
            num_threads=num_threads,
            experimental_op_resolver_type=resolver,
        )
    path = os.fspath(model)
    if not os.path.isfile(path):
        raise ValueError(f"model_path={path!r} does not exist or is not a file.")
    return litert.Interpreter(
        model_path=path, num_threads=num_threads, experimental_op_resolver_type=resolver
    )


def quantize_input(x, detail):
    """Converts float data to the dtype an input tensor expects.

    Args:
      x: Array of float (or already integer) values.
      detail: An entry of `get_input_details()`.

    Returns:
      The array in the tensor's dtype, quantised with its scale and zero point
      when the tensor is an integer tensor.
    """
    dtype = np.dtype(detail["dtype"])
    if np.issubdtype(dtype, np.integer) and not np.issubdtype(np.asarray(x).dtype, np.integer):
        scale, zero_point = detail["quantization"]
        if scale:
            info = np.iinfo(dtype)
            q = np.round(np.asarray(x, np.float32) / scale + zero_point)
            return np.clip(q, info.min, info.max).astype(dtype)
    return np.asarray(x).astype(dtype, copy=False)


def dequantize_output(y, detail):
    """Converts an output tensor to float32, undoing its quantisation."""
    y = np.asarray(y)
    scale, zero_point = detail["quantization"]
    if np.issubdtype(y.dtype, np.integer) and scale:
        return (y.astype(np.float32) - zero_point) * scale
    return y.astype(np.float32, copy=False)


def random_input(detail, rng):
    """Makes a random input for one tensor, for benchmarking.

    Args:
      detail: An entry of `get_input_details()`.
      rng: A `numpy.random.Generator`.

    Returns:
      An array of the tensor's shape and dtype.
    """
    dtype = np.dtype(detail["dtype"])
    shape = tuple(int(d) for d in detail["shape"])
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
    if dtype == np.bool_:
        return rng.integers(0, 1, size=shape, endpoint=True).astype(bool)
    return rng.random(size=shape).astype(dtype)

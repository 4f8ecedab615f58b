"""TFLite conversion of a prepared SavedModel, one quantization mode at a time.

Quantization modes:

* `"int8"`: full-integer post-training quantization calibrated on the
  representative data. Weights and activations are int8; input and output
  tensors are int8 by default (`inference_input_type` /
  `inference_output_type` may be `"float32"` or `"uint8"`). The converter
  silently leaves ops without an INT8 kernel in float, so the converted
  graph is inspected and such ops are an error unless
  `allow_float_fallback=True`.
* `"dynamic"`: int8 weights, float activations (dynamic-range quantization).
* `"float16"`: float16 weights.
* `"float32"`: no quantization.

Unstructured-sparse weights: the model is also converted with
`tf.lite.Optimize.EXPERIMENTAL_SPARSITY` and that variant is kept when it is
smaller and LiteRT (with XNNPACK, as deployed) can run it. With LiteRT 2.3
the XNNPACK delegate fails to prepare sparse int8/dynamic FULLY_CONNECTED, so
in practice the sparse format is kept for float32/float16 exports only.
"""

import dataclasses
import re

import numpy as np
from absl import logging

from tflite_export import _quiet

QUANTIZE_MODES = ("int8", "dynamic", "float16", "float32")
"""The values `export(quantize=...)` accepts."""
IO_TYPES = ("int8", "uint8", "float32")
SPARSE_FORMATS = ("auto", "always", "never")
# Zero fraction above which trying the sparse encoding is worthwhile: below
# it the index arrays cost more than the zeros they remove.
SPARSITY_THRESHOLD = 0.5
_BOUNDARY_OPS = {"QUANTIZE", "DEQUANTIZE"}
_FLOAT_DTYPES = (np.float32, np.float16, np.float64)


class UnsupportedOpsError(ValueError):
    """Ops of the model cannot run as requested (e.g. no INT8 kernel).

    Attributes:
      ops: Names of the offending ops.
    """

    def __init__(self, message, ops):
        super().__init__(message)
        self.ops = list(ops)


@dataclasses.dataclass
class ConversionResult:
    """Outcome of a conversion.

    Attributes:
      content: The `.tflite` flatbuffer bytes that were kept.
      sparse: Whether `content` uses TFLite's sparse tensor format.
      dense_size: Size of the dense conversion in bytes.
      sparse_size: Size of the sparse conversion, if one was made.
      float_ops: Ops left in float in an int8 model (only with
        `allow_float_fallback=True`).
    """

    content: bytes
    sparse: bool
    dense_size: int
    sparse_size: int | None = None
    float_ops: list = dataclasses.field(default_factory=list)


def resolve_options(quantize, inference_input_type, inference_output_type, sparse_format):
    """Checks the conversion options before anything runs.

    Args:
      quantize: One of `QUANTIZE_MODES`.
      inference_input_type: One of `IO_TYPES`, or None for the default
        (`"int8"` for int8 models, `"float32"` otherwise).
      inference_output_type: Same, for the outputs.
      sparse_format: One of `SPARSE_FORMATS`.

    Returns:
      `(inference_input_type, inference_output_type)` with defaults filled.

    Raises:
      ValueError: If an option has an unknown or incompatible value.
    """
    if quantize not in QUANTIZE_MODES:
        raise ValueError(f"quantize={quantize!r} is not one of {QUANTIZE_MODES}.")
    resolved = []
    for name, value in (("inference_input_type", inference_input_type),
                        ("inference_output_type", inference_output_type)):
        if value is None:
            value = "int8" if quantize == "int8" else "float32"
        value = getattr(value, "name", value)  # Accept tf.int8 / np.dtype too.
        value = np.dtype(value).name if not isinstance(value, str) else value
        if value not in IO_TYPES:
            raise ValueError(f"{name}={value!r} is not one of {IO_TYPES}.")
        if quantize != "int8" and value != "float32":
            raise ValueError(f"{name}={value!r} needs quantize='int8'; quantize={quantize!r} "
                             "models have float32 inputs and outputs.")
        resolved.append(value)
    if sparse_format not in SPARSE_FORMATS:
        raise ValueError(f"sparse_format={sparse_format!r} is not one of {SPARSE_FORMATS}.")
    return tuple(resolved)


def _make_converter(saved_model_dir, quantize, samples, input_type, output_type,
                    allow_float_fallback, sparse):
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
    optimizations = []
    if quantize != "float32":
        optimizations.append(tf.lite.Optimize.DEFAULT)
    if sparse:
        optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    converter.optimizations = optimizations
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "int8":
        def representative_dataset():
            for sample in samples:
                yield list(sample)

        converter.representative_dataset = representative_dataset
        ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if allow_float_fallback:
            ops.append(tf.lite.OpsSet.TFLITE_BUILTINS)
        converter.target_spec.supported_ops = ops
        converter.inference_input_type = tf.as_dtype(input_type)
        converter.inference_output_type = tf.as_dtype(output_type)
    return converter


_SELECT_RE = re.compile(r"TF Select ops: ([^\n]+)")
_FLEX_RE = re.compile(r"'tf\.(\w+)' op is neither a custom op nor a flex op")


def _run_converter(converter):
    """Converts, turning converter errors about missing ops into ValueErrors.

    The converter's native stderr goes through `_quiet.filtered_stderr()`: its
    known noise (`fully_quantize: 0, ...`) is dropped, everything else shows,
    and all of it shows if the conversion fails.
    """
    try:
        with _quiet.filtered_stderr():
            return converter.convert()
    except Exception as e:  # ConverterError has no stable import path.
        text = str(e)
        ops = []
        for match in _SELECT_RE.finditer(text):
            ops += [o.strip() for o in match.group(1).split(",")]
        ops += _FLEX_RE.findall(text)
        if ops and re.search(r"x(?:b)?f16>", text):
            ops = sorted(set(ops))
            raise UnsupportedOpsError(
                f"The model computes in float16 (mixed precision: {', '.join(ops)} take "
                "float16 tensors), and TFLite has no builtin float16 kernels for them. Export "
                "the Keras model or .keras file instead (tflite_export converts a float32 copy "
                "of float16 models), or write the SavedModel from a float32 copy: rebuild the "
                "model under keras.mixed_precision.set_global_policy('float32') and copy the "
                "weights with set_weights(...).", ops) from e
        if ops:
            ops = sorted(set(ops))
            raise UnsupportedOpsError(
                f"The model uses TensorFlow ops that have no TFLite builtin kernel: "
                f"{', '.join(ops)}. Replace the layers that use them (they would need the "
                "Flex delegate, which tflite_export does not enable).", ops) from e
        raise


def float_ops(content):
    """Lists the ops of an int8 model that compute in float.

    Args:
      content: `.tflite` bytes.

    Returns:
      Sorted unique op names (QUANTIZE/DEQUANTIZE at the edges are expected
      and not listed).
    """
    from tflite_export import litert

    interpreter = litert.make_interpreter(content, use_xnnpack=False)
    dtypes = {t["index"]: np.dtype(t["dtype"]) for t in interpreter.get_tensor_details()}
    found = set()
    for op in interpreter._get_ops_details():
        if op["op_name"] in _BOUNDARY_OPS:
            continue
        indices = [i for i in list(op["inputs"]) + list(op["outputs"]) if i >= 0]
        if any(dtypes.get(i) in _FLOAT_DTYPES for i in indices):
            found.add(op["op_name"])
    return sorted(found)


def _runs_in_litert(content):
    """True if LiteRT with its default delegates can prepare and run the model."""
    from tflite_export import litert

    try:
        interpreter = litert.make_interpreter(content, use_xnnpack=True)
        interpreter.allocate_tensors()
        rng = np.random.default_rng(0)
        for detail in interpreter.get_input_details():
            interpreter.set_tensor(detail["index"], litert.random_input(detail, rng))
        interpreter.invoke()
        return True
    except (RuntimeError, ValueError) as e:
        logging.info("Sparse variant does not run in LiteRT: %s", e)
        return False


# Ops that read or write TensorFlow resource variables at run time: the
# converter did not freeze the weights, and LiteRT starts them uninitialised.
_VARIABLE_OPS = ("VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE")


def _check_frozen(content):
    """Refuses a `.tflite` whose weights were not frozen into constants.

    Raises:
      ValueError: Naming the variable ops (the model would compute with
        uninitialised weights: NaN or garbage outputs).
    """
    from tflite_export import inspection

    ops = inspection.describe(content)["op_counts"]
    found = [op for op in _VARIABLE_OPS if op in ops]
    if found:
        raise ValueError(
            f"The converted model keeps its weights as TensorFlow variables "
            f"({', '.join(f'{op} x{ops[op]}' for op in found)}) instead of constants, so "
            "LiteRT would run it with uninitialised weights (NaN outputs). Export the Keras "
            "model or a .keras file, or write the SavedModel with "
            "model.export(path, format='tf_saved_model').")


def convert(saved_model_dir, quantize="int8", samples=None, inference_input_type="int8",
            inference_output_type="int8", allow_float_fallback=False, sparse_format="auto",
            weight_sparsity=0.0):
    """Converts a SavedModel to TFLite bytes.

    Args:
      saved_model_dir: SavedModel with a fixed-shape serving signature.
      quantize: One of `QUANTIZE_MODES`.
      samples: Calibration samples from `data.representative_samples`
        (required for `"int8"`).
      inference_input_type: `"int8"`, `"uint8"` or `"float32"` (int8 only).
      inference_output_type: Same choices, for the outputs.
      allow_float_fallback: Let ops without an INT8 kernel run in float.
      sparse_format: `"auto"` tries the sparse encoding when some weight is
        at least `SPARSITY_THRESHOLD` zeros and keeps it if smaller; `"always"`
        keeps it whenever LiteRT runs it; `"never"` skips it.
      weight_sparsity: Largest fraction of zeros of any weight of the model.

    Returns:
      A `ConversionResult`.

    Raises:
      ValueError: If `samples` is missing for int8, or the weights were not
        frozen into constants (variable ops left in the model).
      UnsupportedOpsError: If ops have no INT8 (or no TFLite) kernel.
    """
    if quantize == "int8" and not samples:
        raise ValueError("quantize='int8' needs representative_data to calibrate activation "
                         "ranges (e.g. 100-500 training examples).")
    logging.info("Converting to TFLite (quantize=%s)", quantize)
    content = _run_converter(_make_converter(
        saved_model_dir, quantize, samples, inference_input_type, inference_output_type,
        allow_float_fallback, sparse=False))
    floats = []
    if quantize == "int8":
        floats = float_ops(content)
        if floats and not allow_float_fallback:
            raise UnsupportedOpsError(
                f"quantize='int8': these ops have no INT8 kernel and would run in float: "
                f"{', '.join(floats)}. Pass allow_float_fallback=True to keep them in float "
                "(the model is then not fully integer), or replace the layers that use them.",
                floats)
    _check_frozen(content)
    result = ConversionResult(content=content, sparse=False, dense_size=len(content),
                              float_ops=floats)

    want_sparse = sparse_format == "always" or (
        sparse_format == "auto" and weight_sparsity >= SPARSITY_THRESHOLD)
    if want_sparse:
        logging.info("Converting again with the sparse tensor format (weights up to "
                     "%.0f%% zeros)", 100 * weight_sparsity)
        sparse = _run_converter(_make_converter(
            saved_model_dir, quantize, samples, inference_input_type, inference_output_type,
            allow_float_fallback, sparse=True))
        result.sparse_size = len(sparse)
        smaller = len(sparse) < len(content)
        if (smaller or sparse_format == "always") and _runs_in_litert(sparse):
            result.content, result.sparse = sparse, True
        logging.info("Dense %d bytes, sparse %d bytes: keeping %s", len(content), len(sparse),
                     "sparse" if result.sparse else "dense")
    return result

"""Turning whatever the user passes to `export` into a convertible SavedModel.

Every accepted input (Keras 3 model with or without tfprune wrappers, a
`.keras` file, a SavedModel folder, a tf_keras model pruned with tfmot)
becomes a `PreparedModel`: a SavedModel whose serving signature has a fixed
batch size of 1 (what on-device inference uses, and what keeps shapes static
for the converter and the MAC count), the input signatures, a reference
function to compare the `.tflite` against, and the weight counts.

Why a SavedModel for Keras 3: `TFLiteConverter.from_concrete_functions` on a
tf.function that calls a Keras 3 model keeps the weights as resource
variables (the converted model returns NaN), while `model.export(...,
format="tf_saved_model")` followed by `from_saved_model` freezes them
correctly; `from_keras_model` does the same export internally but cannot fix
the input shape.
"""

import os
import shutil
import tempfile

import numpy as np
from absl import logging

from tflite_export.data import InputSignature
from tflite_export.macs import count_params

SERVING_KEY = "serving_default"


class PreparedModel:
    """A model ready for conversion.

    Attributes:
      kind: `"keras"`, `"keras_file"`, `"saved_model"` or `"tf_keras"`.
      name: Model name for reports.
      saved_model_dir: SavedModel with a batch-1 `serving_default` signature.
      signatures: `InputSignature` per input (batch dimension 1).
      keras_model: The Keras 3 model that was exported (after strip/shrink),
        or None for SavedModel and tf_keras inputs.
      params, nonzero_params: Weight counts of the exported model.
      max_weight_sparsity: Largest fraction of zeros in any kernel (>= 2-D
        weight); decides whether TFLite's sparse format is worth trying.
      stripped, shrunk: Whether pruning wrappers were stripped / channels
        physically removed.
      source_path: The file or folder the model came from, if any.
    """

    def __init__(self, *, kind, name, saved_model_dir, signatures, reference_fn, weights,
                 keras_model=None, stripped=False, shrunk=False, source_path=None,
                 temp_dir=None):
        self.kind = kind
        self.name = name
        self.saved_model_dir = saved_model_dir
        self.signatures = signatures
        self._reference_fn = reference_fn
        self.keras_model = keras_model
        self.stripped = stripped
        self.shrunk = shrunk
        self.source_path = source_path
        self._temp_dir = temp_dir
        arrays = [np.asarray(w.numpy() if hasattr(w, "numpy") else w) for w in weights]
        self.params, self.nonzero_params = count_params(arrays)
        kernels = [a for a in arrays if a.ndim >= 2 and a.size]
        self.max_weight_sparsity = max(
            (1.0 - np.count_nonzero(a) / a.size for a in kernels), default=0.0)

    def reference(self, inputs, batch_size=256):
        """Runs the source model on a batch.

        Args:
          inputs: List of arrays, one per input.
          batch_size: Examples per call.

        Returns:
          List of float32 output arrays, in signature order.
        """
        n = inputs[0].shape[0]
        chunks = []
        for start in range(0, n, batch_size):
            chunk = [x[start : start + batch_size] for x in inputs]
            chunks.append([np.asarray(o, np.float32) for o in self._reference_fn(chunk)])
        return [np.concatenate([c[i] for c in chunks]) for i in range(len(chunks[0]))]

    def cleanup(self):
        """Removes the temporary SavedModel, if one was written."""
        if self._temp_dir:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None


def _as_shapes(input_shape, num_inputs):
    """Normalises the `input_shape` override to one tuple per input."""
    if input_shape is None:
        return [None] * num_inputs
    shapes = list(input_shape)
    if shapes and all(isinstance(d, (int, np.integer)) or d is None for d in shapes):
        shapes = [tuple(shapes)]
    if len(shapes) != num_inputs:
        raise ValueError(
            f"input_shape={input_shape!r} gives {len(shapes)} shape(s) but the model has "
            f"{num_inputs} input(s); give one shape per input, without the batch dimension."
        )
    return [None if s is None else tuple(s) for s in shapes]


def _fixed_signatures(names, shapes, dtypes, input_shape):
    """Builds batch-1 signatures, filling unknown sizes from `input_shape`."""
    overrides = _as_shapes(input_shape, len(names))
    signatures = []
    for name, shape, dtype, override in zip(names, shapes, dtypes, overrides):
        sample = tuple(shape[1:])
        if override is not None:
            if len(override) != len(sample) or any(
                s is not None and o is not None and s != o for s, o in zip(sample, override)
            ):
                raise ValueError(
                    f"input_shape={input_shape!r} does not fit model input {name!r} of shape "
                    f"{tuple(shape)}; give the example shape without the batch dimension."
                )
            sample = tuple(o if o is not None else s for s, o in zip(sample, override))
        if any(d is None for d in sample):
            raise ValueError(
                f"Model input {name!r} has unknown sizes {tuple(shape)}. TFLite needs a fixed "
                f"shape: pass input_shape=(...) without the batch dimension, e.g. "
                f"input_shape={tuple(224 if d is None else d for d in sample)}."
            )
        signatures.append(InputSignature(name, (1,) + sample, np.dtype(dtype)))
    return signatures


def _find_layers(model):
    try:
        return list(model._flatten_layers(include_self=False, recursive=True))
    except (AttributeError, TypeError):
        found, stack = [], list(getattr(model, "layers", []))
        while stack:
            layer = stack.pop()
            found.append(layer)
            stack.extend(getattr(layer, "layers", []))
            inner = getattr(layer, "layer", None)
            if inner is not None:
                stack.append(inner)
        return found


def has_tfprune_wrappers(model):
    """True if any (nested) layer is a `tfprune.MaskedWeightsWrapper`."""
    try:
        from tfprune import MaskedWeightsWrapper
    except ImportError:  # tfprune not importable: fall back to class names.
        MaskedWeightsWrapper = None
    for layer in _find_layers(model):
        if MaskedWeightsWrapper is not None and isinstance(layer, MaskedWeightsWrapper):
            return True
        if any(c.__name__ == "MaskedWeightsWrapper" for c in type(layer).__mro__):
            return True
    return False


def _is_tf_keras_model(model):
    module = type(model).__module__
    return module.startswith("tf_keras") or module.startswith("tensorflow_model_optimization")


def _prepare_keras(model, input_shape, kind, source_path=None):
    import keras

    stripped = shrunk = False
    if has_tfprune_wrappers(model):
        import tfprune

        if hasattr(tfprune, "shrink"):
            logging.info("Shrinking pruned channels and stripping masks with tfprune.shrink")
            model = tfprune.shrink(model)
            shrunk = stripped = True
        else:
            logging.info("Stripping pruning masks with tfprune.strip_pruning")
            model = tfprune.strip_pruning(model)
            stripped = True

    try:
        inputs = list(model.inputs)
    except (AttributeError, ValueError):
        inputs = []
    if inputs:
        names = [getattr(t, "name", f"input_{i}") for i, t in enumerate(inputs)]
        shapes = [tuple(t.shape) for t in inputs]
        dtypes = [np.dtype(keras.backend.standardize_dtype(t.dtype)) for t in inputs]
    else:
        if input_shape is None:
            raise ValueError(
                f"Model {model.name!r} has no defined inputs (a subclassed model?); pass "
                "input_shape=(...) without the batch dimension."
            )
        shapes = [(None,) + tuple(s) for s in _as_shapes(input_shape, 1)]
        names, dtypes = ["input_0"], [np.dtype("float32")]
        model(np.zeros((1,) + tuple(shapes[0][1:]), np.float32))
    signatures = _fixed_signatures(names, shapes, dtypes, input_shape)

    temp_dir = tempfile.mkdtemp(prefix="tflite_export_")
    saved_model_dir = os.path.join(temp_dir, "saved_model")
    specs = [keras.InputSpec(shape=s.shape, dtype=s.dtype.name) for s in signatures]
    try:
        model.export(saved_model_dir, format="tf_saved_model", verbose=False,
                     input_signature=[specs] if len(specs) > 1 else specs)
    except Exception:
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise

    def reference(chunk):
        outputs = model(chunk if len(chunk) > 1 else chunk[0], training=False)
        if isinstance(outputs, dict):
            outputs = list(outputs.values())
        if not isinstance(outputs, (list, tuple)):
            outputs = [outputs]
        return [keras.ops.convert_to_numpy(o) for o in outputs]

    return PreparedModel(
        kind=kind, name=model.name, saved_model_dir=saved_model_dir, signatures=signatures,
        reference_fn=reference, weights=model.weights, keras_model=model,
        stripped=stripped, shrunk=shrunk, source_path=source_path, temp_dir=temp_dir)


def _prepare_tf_keras(model, input_shape):
    import tensorflow as tf

    stripped = False
    if any(type(l).__name__ == "PruneLowMagnitude" for l in _find_layers(model)):
        # Imported here only: tfmot/tf_keras are an optional extra.
        import tensorflow_model_optimization as tfmot

        logging.info("Stripping tfmot pruning wrappers with tfmot.sparsity.keras.strip_pruning")
        model = tfmot.sparsity.keras.strip_pruning(model)
        stripped = True
    inputs = list(model.inputs or [])
    if not inputs:
        raise ValueError(f"tf_keras model {model.name!r} has no defined inputs; build it with "
                         "an Input layer before exporting.")
    names = [t.name.split(":")[0] for t in inputs]
    shapes = [tuple(t.shape) for t in inputs]
    dtypes = [np.dtype(t.dtype.as_numpy_dtype) for t in inputs]
    signatures = _fixed_signatures(names, shapes, dtypes, input_shape)
    specs = [tf.TensorSpec(s.shape, tf.as_dtype(s.dtype), name=f"input_{i}")
             for i, s in enumerate(signatures)]

    @tf.function(input_signature=specs)
    def serve(*args):
        outputs = model(list(args) if len(args) > 1 else args[0], training=False)
        if isinstance(outputs, (list, tuple)):
            return {f"output_{i}": o for i, o in enumerate(outputs)}
        return {"output_0": outputs}

    temp_dir = tempfile.mkdtemp(prefix="tflite_export_")
    saved_model_dir = os.path.join(temp_dir, "saved_model")
    try:
        module = tf.Module()
        module.model = model
        module.serve = serve
        tf.saved_model.save(module, saved_model_dir, signatures={SERVING_KEY: serve})
    except Exception:
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise

    def reference(chunk):
        outputs = model(chunk if len(chunk) > 1 else chunk[0], training=False)
        if not isinstance(outputs, (list, tuple)):
            outputs = [outputs]
        return [np.asarray(o) for o in outputs]

    return PreparedModel(
        kind="tf_keras", name=model.name, saved_model_dir=saved_model_dir,
        signatures=signatures, reference_fn=reference, weights=model.weights,
        stripped=stripped, temp_dir=temp_dir)


def _prepare_saved_model(path, input_shape):
    import tensorflow as tf

    loaded = tf.saved_model.load(path)
    if SERVING_KEY in loaded.signatures:
        fn = loaded.signatures[SERVING_KEY]
    elif len(loaded.signatures) == 1:
        fn = next(iter(loaded.signatures.values()))
    else:
        raise ValueError(
            f"SavedModel {path!r} has no {SERVING_KEY!r} signature (it has "
            f"{sorted(loaded.signatures) or 'none'}); export it with a serving signature."
        )
    spec_dict = fn.structured_input_signature[1]
    names = sorted(spec_dict)
    shapes = [tuple(spec_dict[n].shape.as_list()) for n in names]
    dtypes = [np.dtype(spec_dict[n].dtype.as_numpy_dtype) for n in names]
    signatures = _fixed_signatures(names, shapes, dtypes, input_shape)

    saved_model_dir, temp_dir = path, None
    if any(tuple(s.shape[1:]) != shape[1:] for s, shape in zip(signatures, shapes)):
        # Unknown non-batch sizes: re-save with a fixed-shape signature.
        specs = {n: tf.TensorSpec(s.shape, tf.as_dtype(s.dtype), name=n)
                 for n, s in zip(names, signatures)}

        @tf.function(input_signature=[specs])
        def serve(kwargs):
            return fn(**kwargs)

        concrete = serve.get_concrete_function()
        temp_dir = tempfile.mkdtemp(prefix="tflite_export_")
        saved_model_dir = os.path.join(temp_dir, "saved_model")
        try:
            tf.saved_model.save(loaded, saved_model_dir, signatures={SERVING_KEY: concrete})
        except Exception:
            shutil.rmtree(temp_dir, ignore_errors=True)
            raise

    from tflite_export.evaluation import natural_key

    output_keys = sorted(fn.structured_outputs, key=natural_key)

    def reference(chunk):
        outputs = fn(**{n: tf.constant(x) for n, x in zip(names, chunk)})
        return [outputs[k].numpy() for k in output_keys]

    return PreparedModel(
        kind="saved_model", name=os.path.basename(os.path.normpath(path)),
        saved_model_dir=saved_model_dir, signatures=signatures, reference_fn=reference,
        weights=list(getattr(loaded, "variables", [])), source_path=path, temp_dir=temp_dir)


def prepare(model, input_shape=None):
    """Resolves an `export` input into a `PreparedModel`.

    Args:
      model: A Keras 3 model (tfprune wrappers are stripped and pruned
        channels removed with `tfprune.shrink`), a path to a `.keras` file, a
        SavedModel folder, or a tf_keras model (tfmot pruning wrappers are
        stripped with `tfmot.sparsity.keras.strip_pruning`).
      input_shape: Example shape without the batch dimension (or one per
        input) that fills unknown input sizes.

    Returns:
      A `PreparedModel`; call its `cleanup()` when done.

    Raises:
      ValueError: If the model type, path or input shape is not usable.
    """
    import keras

    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        if os.path.isdir(path):
            if not os.path.exists(os.path.join(path, "saved_model.pb")):
                raise ValueError(f"model={path!r} is a folder without saved_model.pb; pass a "
                                 "SavedModel folder or a .keras file.")
            return _prepare_saved_model(path, input_shape)
        if not os.path.isfile(path):
            raise ValueError(f"model={path!r} does not exist.")
        if not path.endswith((".keras", ".h5")):
            raise ValueError(f"model={path!r} is neither a .keras file nor a SavedModel "
                             "folder.")
        try:
            import tfprune  # noqa: F401  Registers the wrapper classes for loading.
        except ImportError:
            pass
        try:
            loaded = keras.saving.load_model(path, compile=False)
        except Exception as e:
            raise ValueError(f"model={path!r} could not be loaded with "
                             f"keras.saving.load_model: {e}") from e
        return _prepare_keras(loaded, input_shape, "keras_file", source_path=path)
    if isinstance(model, keras.Model):
        return _prepare_keras(model, input_shape, "keras")
    if _is_tf_keras_model(model):
        return _prepare_tf_keras(model, input_shape)
    raise ValueError(
        f"model must be a Keras 3 model, a tf_keras model, a .keras path or a SavedModel "
        f"folder; got {type(model).__module__}.{type(model).__name__}."
    )

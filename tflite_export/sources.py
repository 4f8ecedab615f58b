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
import re
import shutil
import tempfile
import time

import numpy as np
from absl import logging

from tflite_export.data import InputSignature
from tflite_export.macs import count_params

SERVING_KEY = "serving_default"
# Seconds between progress messages while the source model runs.
PROGRESS_INTERVAL_S = 10.0


class PreparedModel:
    """A model ready for conversion.

    Attributes:
      kind: `"keras"`, `"keras_file"`, `"saved_model"` or `"tf_keras"`.
      name: Model name for reports.
      saved_model_dir: SavedModel with a batch-1 `serving_default` signature.
      signatures: `InputSignature` per input (batch dimension 1).
      keras_model: The Keras 3 model that was exported (after strip/shrink),
        or None for SavedModel and tf_keras inputs.
      params, nonzero_params: Weight counts of the exported model: its
        layers' weights, without pruning masks, thresholds, steps, Taylor
        probes or optimizer slots (see `model_weights`).
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
        started = last_log = time.monotonic()
        for start in range(0, n, batch_size):
            chunk = [x[start : start + batch_size] for x in inputs]
            chunks.append([np.asarray(o, np.float32) for o in self._reference_fn(chunk)])
            done = min(start + batch_size, n)
            if time.monotonic() - last_log >= PROGRESS_INTERVAL_S and done < n:
                last_log = time.monotonic()
                logging.info("Running the source model: %d/%d examples (%.0f%%), %.0f s",
                             done, n, 100 * done / n, last_log - started)
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
    from tfprune.layer_walk import all_layers

    return all_layers(model)[1:]


# Variables that pruning wrappers keep next to a layer's weights: tfprune's
# `<weight>_mask`, `<slot>_channel_mask`, `threshold_<i>`, `pruning_step`,
# `taylor_probe`, `taylor_score`; tfmot's `mask`, `threshold`, `pruning_step`.
# They live directly under the wrapper's path, and every wrapper of both has
# a `pruning_step`; the wrapped layer's own weights keep the layer's path.
_WRAPPER_VARIABLE_RE = re.compile(
    r"pruning_step|taylor_probe|taylor_score|(?:.+_)?mask|threshold(?:_\d+)?")
# tfprune's step counter (created by UpdatePruningStep), wherever it is.
_PRUNING_VARIABLES = frozenset({"tfprune_step_offset"})


def variable_path(variable):
    """`sequential/dense/kernel` for a Keras 3 or TensorFlow variable."""
    path = getattr(variable, "path", None) or getattr(variable, "name", "") or ""
    return re.sub(r":\d+$", "", str(path))


def model_weights(variables, context=None):
    """Drops pruning bookkeeping from a list of variables.

    The parameters of a model are its layers' weights (including
    non-trainable state such as BatchNormalization statistics, as Keras's
    `count_params` counts them), not the masks, thresholds, steps, channel
    masks or Taylor probes and scores of tfprune (or tfmot) wrappers. Those are
    recognised by their names: a variable `<wrapper>/<leaf>` is bookkeeping if
    some variable `<wrapper>/pruning_step` exists and `<leaf>` is one of
    `pruning_step`, `taylor_probe`, `taylor_score`, `mask`, `*_mask`,
    `threshold` or `threshold_<i>`; and `tfprune_step_offset` anywhere.

    Args:
      variables: Variables (Keras 3 or `tf.Variable`) to filter.
      context: All variables of the model, to find the wrappers (default
        `variables`).

    Returns:
      The variables that are model weights, in order.
    """
    context = variables if context is None else context
    wrappers = set()
    for v in context:
        parent, _, leaf = variable_path(v).rpartition("/")
        if leaf == "pruning_step":
            wrappers.add(parent)
    kept = []
    for v in variables:
        parent, _, leaf = variable_path(v).rpartition("/")
        if leaf in _PRUNING_VARIABLES or (
                parent in wrappers and _WRAPPER_VARIABLE_RE.fullmatch(leaf)):
            continue
        kept.append(v)
    return kept


def _all_tf_variables(root):
    """Every `tf.Variable` reachable from a loaded SavedModel object."""
    import tensorflow as tf

    found, seen, stack = [], set(), [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, tf.Variable):
            found.append(obj)
            continue
        try:
            children = obj._trackable_children()  # pylint: disable=protected-access
        except Exception:  # pylint: disable=broad-except  Not a trackable.
            continue
        stack.extend(children.values())
    return found


def _saved_model_weights(loaded, fn):
    """The weights a SavedModel's serving function reads, without pruning state.

    Only the variables the signature captures count: a SavedModel may also
    hold optimizer slots, metrics and pruning masks and steps that inference
    never reads (`tf.saved_model.save(model)` keeps them all, and
    `loaded.variables` is empty for it). Falls back to `loaded.variables` when
    the captured variables cannot be matched.
    """
    everything = _all_tf_variables(loaded)
    captured = {id(t) for t in getattr(fn, "captured_inputs", [])}
    used, seen = [], set()
    for v in everything:
        handle = getattr(v, "handle", None)
        if id(handle) in captured and id(handle) not in seen:
            seen.add(id(handle))
            used.append(v)
    if not used:
        used = list(getattr(loaded, "variables", []))
    return model_weights(used, context=everything + list(getattr(loaded, "variables", [])))


_LOW_PRECISION = ("float16", "bfloat16")


def _low_precision_layers(model):
    """Names (with policy) of layers that compute or store weights in float16."""
    found = []
    for layer in [model] + _find_layers(model):
        policy = getattr(layer, "dtype_policy", None)
        dtypes = {getattr(policy, "compute_dtype", None), getattr(policy, "variable_dtype", None)}
        if dtypes & set(_LOW_PRECISION):
            found.append(f"{layer.name} ({getattr(policy, 'name', policy)})")
    if not found:
        import keras

        found = [variable_path(w) for w in model.weights
                 if keras.backend.standardize_dtype(w.dtype) in _LOW_PRECISION]
    return found


def _float32_policy(value):
    """The float32 version of a serialized dtype policy or dtype, else None."""
    if isinstance(value, str):
        if value in _LOW_PRECISION or value in ("mixed_float16", "mixed_bfloat16"):
            return "float32"
        return None
    if isinstance(value, dict) and isinstance(value.get("config"), dict):
        config = dict(value["config"])
        changed = False
        for key in ("name", "source_name"):
            name = config.get(key)
            if isinstance(name, str) and re.search(r"(?:^|_)b?float16$", name):
                config[key] = re.sub(r"(?:mixed_)?b?float16$", "float32", name)
                changed = True
        if changed:
            return dict(value, config=config)
    return None


def _with_float32_policies(config):
    """A copy of a serialized model with every float16 dtype (policy) float32."""
    if isinstance(config, list):
        return [_with_float32_policies(c) for c in config]
    if not isinstance(config, dict):
        return config
    result = {}
    for key, value in config.items():
        replaced = _float32_policy(value) if key == "dtype" else None
        result[key] = replaced if replaced is not None else _with_float32_policies(value)
    return result


def _float32_copy(model, low):
    """Rebuilds a float16 / mixed-precision Keras model in float32.

    TFLite's converter has no builtin kernels for float16 Conv2D, MatMul,
    BiasAdd and friends (the float16 quantization mode stores float16 weights
    but computes in float32), so a model whose layers compute in float16
    (`mixed_float16`, `float16`, `mixed_bfloat16` policies, global or per
    layer) is serialized, every float16 dtype policy in its config replaced by
    float32, rebuilt, and given the original weights cast to float32.

    Raises:
      ValueError: If the model cannot be rebuilt from its config.
    """
    import keras

    serialized = keras.saving.serialize_keras_object(model)
    serialized.pop("compile_config", None)
    serialized = _with_float32_policies(serialized)
    previous = keras.mixed_precision.global_policy()
    try:
        keras.mixed_precision.set_global_policy("float32")
        copy = keras.saving.deserialize_keras_object(serialized, safe_mode=False)
        weights = [np.asarray(w) for w in model.get_weights()]
        copy.set_weights([
            w.astype(np.float32) if keras.backend.standardize_dtype(w.dtype) in _LOW_PRECISION
            else w for w in weights])
    except Exception as e:  # pylint: disable=broad-except  Any rebuild failure.
        raise ValueError(
            f"Model {model.name!r} computes in float16 ({', '.join(low[:3])}"
            f"{', ...' if len(low) > 3 else ''}), and TFLite has no builtin float16 kernels "
            f"for Conv2D/MatMul; tflite_export converts a float32 copy, but rebuilding the "
            f"model from its config failed: {type(e).__name__}: {e}. Build it again under "
            "keras.mixed_precision.set_global_policy('float32'), copy the weights with "
            "set_weights(...) and export that model.") from e
    finally:
        keras.mixed_precision.set_global_policy(previous)
    left = _low_precision_layers(copy)
    if left:
        raise ValueError(
            f"Model {model.name!r}: these layers still compute in float16 after rebuilding "
            f"with float32 policies: {', '.join(left[:5])}. Build the model under "
            "keras.mixed_precision.set_global_policy('float32') and export that.")
    return copy


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


def _prepare_keras(model, input_shape, kind, source_path=None, temp_dir=None):
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
    source_model = model
    low = _low_precision_layers(model)
    if low:
        logging.info("Model %r computes in float16 (%s): converting a float32 copy (TFLite has "
                     "no float16 kernels for Conv2D/MatMul)", model.name, ", ".join(low[:3]))
        model = _float32_copy(model, low)

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

    temp_dir = tempfile.mkdtemp(prefix="tflite_export_", dir=temp_dir)
    saved_model_dir = os.path.join(temp_dir, "saved_model")
    specs = [keras.InputSpec(shape=s.shape, dtype=s.dtype.name) for s in signatures]
    try:
        # Normalization layers traced with INT8-friendly ops (no float NEG or SQUARE).
        from tflite_export import integer_normalization

        with integer_normalization.integer_friendly_normalization(model):
            model.export(saved_model_dir, format="tf_saved_model", verbose=False,
                         input_signature=[specs] if len(specs) > 1 else specs)
    except Exception:
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise

    def reference(chunk):
        # The model as given (in float16 if it computes in float16), not the copy.
        outputs = source_model(chunk if len(chunk) > 1 else chunk[0], training=False)
        if isinstance(outputs, dict):
            outputs = list(outputs.values())
        if not isinstance(outputs, (list, tuple)):
            outputs = [outputs]
        return [keras.ops.convert_to_numpy(o) for o in outputs]

    return PreparedModel(
        kind=kind, name=model.name, saved_model_dir=saved_model_dir, signatures=signatures,
        reference_fn=reference, weights=model_weights(model.weights), keras_model=model,
        stripped=stripped, shrunk=shrunk, source_path=source_path, temp_dir=temp_dir)


def _prepare_tf_keras(model, input_shape, temp_dir=None):
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

    temp_dir = tempfile.mkdtemp(prefix="tflite_export_", dir=temp_dir)
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
        signatures=signatures, reference_fn=reference, weights=model_weights(model.weights),
        stripped=stripped, temp_dir=temp_dir)


def _prepare_saved_model(path, input_shape, temp_dir=None):
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

    # Re-save with a batch-1 signature that only wraps the serving function.
    # It fixes unknown sizes, and lets the converter freeze the weights: a
    # SavedModel written by tf.saved_model.save(keras_model) converts as is
    # with its variables left as VAR_HANDLE/READ_VARIABLE ops, which LiteRT
    # runs uninitialised (the .tflite outputs NaN).
    specs = {n: tf.TensorSpec(s.shape, tf.as_dtype(s.dtype), name=n)
             for n, s in zip(names, signatures)}

    @tf.function(input_signature=[specs])
    def serve(kwargs):
        return fn(**kwargs)

    temp_dir = tempfile.mkdtemp(prefix="tflite_export_", dir=temp_dir)
    saved_model_dir = os.path.join(temp_dir, "saved_model")
    try:
        tf.saved_model.save(loaded, saved_model_dir,
                            signatures={SERVING_KEY: serve.get_concrete_function()})
    except Exception as e:  # pylint: disable=broad-except  Convert the original then.
        shutil.rmtree(temp_dir, ignore_errors=True)
        if any(tuple(s.shape[1:]) != shape[1:] for s, shape in zip(signatures, shapes)):
            raise
        logging.info("Could not re-save SavedModel %r with a batch-1 signature (%s); "
                     "converting it as it is", path, e)
        saved_model_dir, temp_dir = path, None

    from tflite_export.evaluation import natural_key

    output_keys = sorted(fn.structured_outputs, key=natural_key)

    def reference(chunk):
        outputs = fn(**{n: tf.constant(x) for n, x in zip(names, chunk)})
        return [outputs[k].numpy() for k in output_keys]

    return PreparedModel(
        kind="saved_model", name=os.path.basename(os.path.normpath(path)),
        saved_model_dir=saved_model_dir, signatures=signatures, reference_fn=reference,
        weights=_saved_model_weights(loaded, fn), source_path=path, temp_dir=temp_dir)


def prepare(model, input_shape=None, temp_dir=None):
    """Resolves an `export` input into a `PreparedModel`.

    Args:
      model: A Keras 3 model (tfprune wrappers are stripped and pruned
        channels removed with `tfprune.shrink`), a path to a `.keras` file, a
        SavedModel folder, or a tf_keras model (tfmot pruning wrappers are
        stripped with `tfmot.sparsity.keras.strip_pruning`).
      input_shape: Example shape without the batch dimension (or one per
        input) that fills unknown input sizes.
      temp_dir: The folder for the temporary SavedModel (default: the
        system's temp folder); `export` uses its work folder beside the
        output.

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
            return _prepare_saved_model(path, input_shape, temp_dir)
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
        return _prepare_keras(loaded, input_shape, "keras_file", source_path=path,
                              temp_dir=temp_dir)
    if isinstance(model, keras.Model):
        return _prepare_keras(model, input_shape, "keras", temp_dir=temp_dir)
    if _is_tf_keras_model(model):
        return _prepare_tf_keras(model, input_shape, temp_dir)
    raise ValueError(
        f"model must be a Keras 3 model, a tf_keras model, a .keras path or a SavedModel "
        f"folder; got {type(model).__module__}.{type(model).__name__}."
    )

"""Validation of representative and evaluation data.

Everything is turned into NumPy samples and checked against the model's input
signature before any conversion starts, so bad data fails fast with a message
that names the argument, and never after a file has been written.
"""

import dataclasses
import inspect

import numpy as np


@dataclasses.dataclass(frozen=True)
class InputSignature:
    """Shape and dtype of one model input.

    Attributes:
      name: Input name (for messages).
      shape: Full shape with batch dimension; `None` marks an unknown size.
      dtype: NumPy dtype the model expects.
    """

    name: str
    shape: tuple
    dtype: np.dtype

    @property
    def sample_shape(self):
        """Shape of one example (without the batch dimension)."""
        return tuple(self.shape[1:])

    def describe(self):
        dims = ", ".join("None" if d is None else str(d) for d in self.shape)
        return f"'{self.name}' with shape ({dims}) and dtype {np.dtype(self.dtype).name}"


def _is_tf_dataset(data):
    return type(data).__module__.startswith("tensorflow") and hasattr(data, "element_spec")


def _to_numpy(value):
    if hasattr(value, "numpy"):
        value = value.numpy()
    return np.asarray(value)


def _iterate(data, argument):
    """Yields the elements of a Dataset, generator, generator function or iterable."""
    if _is_tf_dataset(data):
        return iter(data.as_numpy_iterator())
    if inspect.isgeneratorfunction(data) or (callable(data) and not hasattr(data, "__iter__")):
        data = data()
    if hasattr(data, "__iter__"):
        return iter(data)
    raise ValueError(
        f"{argument} must be a NumPy array, a tf.data.Dataset, a generator or a callable "
        f"returning one; got {type(data).__name__}."
    )


def _split_element(element, num_inputs, with_labels):
    """Splits a dataset element into (inputs, label).

    Keras convention: an element is `x` or `(x, y)` or `(x, y, sample_weight)`;
    a TFLite representative generator yields `[x]`. For a model with one
    input, `(x, y)` is recognised by its length.
    """
    label = None
    if isinstance(element, dict):
        return [np.asarray(v) for v in element.values()], None
    if isinstance(element, (tuple, list)):
        items = list(element)
        if num_inputs == 1:
            if len(items) == 1:
                return [items[0]], None
            if len(items) in (2, 3):
                return [items[0]], items[1] if with_labels else None
        else:
            if len(items) == num_inputs:
                return items, None
            if len(items) in (2, 3) and isinstance(items[0], (tuple, list)):
                return list(items[0]), items[1] if with_labels else None
        raise ValueError(f"element with {len(items)} parts does not match {num_inputs} input(s)")
    return [element], label


def _matches(shape, expected):
    return len(shape) == len(expected) and all(
        e is None or e == a for e, a in zip(expected, shape))


def _check_array(array, signature, argument):
    """Checks one input array (a batch or one example) and returns it batched."""
    array = _to_numpy(array)
    expected = signature.sample_shape
    if _matches(array.shape, expected):
        array = array[None]
    elif not (array.ndim == len(expected) + 1 and _matches(array.shape[1:], expected)):
        hint = ""
        if expected and expected[-1] == 1 and _matches(array.shape[1:] + (1,), expected):
            hint = " Add the channel axis, e.g. x[..., None]."
        want = tuple("None" if d is None else d for d in expected)
        raise ValueError(
            f"{argument} has shape {tuple(array.shape)} but the model input "
            f"{signature.describe()} expects a batch of shape (N, {', '.join(map(str, want))})"
            f" or one example of shape {want}.{hint}"
        )
    want = np.dtype(signature.dtype)
    got = array.dtype
    same_kind = (
        (np.issubdtype(want, np.floating) and np.issubdtype(got, np.floating))
        or (np.issubdtype(want, np.integer) and np.issubdtype(got, np.integer))
        or want == got
    )
    if not same_kind:
        hint = ""
        if np.issubdtype(want, np.floating) and np.issubdtype(got, np.integer):
            hint = (" Preprocess it the way the model was trained, e.g. "
                    "x.astype('float32') / 255.")
        raise ValueError(
            f"{argument} has dtype {got.name} but the model input {signature.describe()} "
            f"expects {want.name}.{hint}"
        )
    return array.astype(want, copy=False)


def _normalize(data, signatures, argument, max_samples, with_labels):
    num_inputs = len(signatures)
    labels = None
    if data is None:
        raise ValueError(f"{argument} is None.")
    if isinstance(data, np.ndarray) or (
        isinstance(data, (list, tuple)) and data and all(isinstance(d, np.ndarray) for d in data)
    ):
        if isinstance(data, np.ndarray):
            arrays = [data]
        elif with_labels and len(data) == 2 and num_inputs == 1:
            arrays, labels = [data[0]], data[1]
        elif len(data) == num_inputs:
            arrays = list(data)
        elif with_labels and len(data) == 2:
            arrays, labels = list(data[0]), data[1]
        else:
            raise ValueError(
                f"{argument} is a sequence of {len(data)} arrays but the model has "
                f"{num_inputs} input(s)."
            )
        if len(arrays) != num_inputs:
            raise ValueError(f"{argument} gives {len(arrays)} input array(s) but the model has "
                             f"{num_inputs} input(s).")
        batches = [[_check_array(a, s, argument)
                    for a, s in zip(arrays, signatures)]]
        label_batches = [np.asarray(labels)] if labels is not None else []
    else:
        batches, label_batches = [], []
        count = 0
        try:
            for element in _iterate(data, argument):
                parts, label = _split_element(element, num_inputs, with_labels)
                if len(parts) != num_inputs:
                    raise ValueError(f"element has {len(parts)} input(s)")
                checked = [_check_array(p, s, argument)
                           for p, s in zip(parts, signatures)]
                batches.append(checked)
                if label is not None:
                    label_batches.append(np.atleast_1d(_to_numpy(label)))
                count += checked[0].shape[0]
                if max_samples is not None and count >= max_samples:
                    break
        except ValueError as e:
            if str(e).startswith(argument):
                raise
            raise ValueError(f"{argument}: {e}") from e
    if not batches or sum(b[0].shape[0] for b in batches) == 0:
        raise ValueError(f"{argument} is empty: give at least one example of the model input "
                         f"{signatures[0].describe()}.")
    inputs = [np.concatenate([b[i] for b in batches]) for i in range(num_inputs)]
    if max_samples is not None:
        inputs = [x[:max_samples] for x in inputs]
    if label_batches:
        labels = np.concatenate([np.atleast_1d(l) for l in label_batches])
        if labels.ndim == 2 and labels.shape[1] > 1:  # one-hot
            labels = labels.argmax(axis=1)
        labels = labels.reshape(-1)[: inputs[0].shape[0]]
        if labels.shape[0] != inputs[0].shape[0]:
            raise ValueError(f"{argument} has {inputs[0].shape[0]} examples but "
                             f"{labels.shape[0]} labels.")
    else:
        labels = None
    for x in inputs:
        if np.issubdtype(x.dtype, np.floating) and not np.all(np.isfinite(x)):
            raise ValueError(f"{argument} contains NaN or infinite values.")
    return inputs, labels


def representative_samples(data, signatures, max_samples=200, argument="representative_data"):
    """Validates representative data and returns it as calibration samples.

    Args:
      data: A NumPy array of examples `(N, *input_shape)` (or a list of arrays,
        one per input), a `tf.data.Dataset`, a generator, or a callable
        returning an iterable. Dataset and generator elements may be single
        examples or batches, `x`, `[x]` or `(x, y)` (labels are ignored).
      signatures: `InputSignature` per model input.
      max_samples: Keep at most this many examples.
      argument: Argument name used in error messages.

    Returns:
      A list of examples; each is a list (one per input) of arrays with
      batch dimension 1, in the model's dtypes.

    Raises:
      ValueError: If the data is empty or has the wrong shape or dtype.
    """
    inputs, _ = _normalize(data, signatures, argument, max_samples, with_labels=False)
    n = inputs[0].shape[0]
    return [[x[i : i + 1] for x in inputs] for i in range(n)]


def eval_arrays(data, signatures, max_samples=None, argument="eval_data"):
    """Validates evaluation data.

    Args:
      data: Inputs `x` (array or list of arrays), `(x, y)`, a
        `tf.data.Dataset` or a generator yielding `x` or `(x, y)`.
        Labels are class indices or one-hot vectors.
      signatures: `InputSignature` per model input.
      max_samples: Keep at most this many examples.
      argument: Argument name used in error messages.

    Returns:
      `(inputs, labels)`: a list of arrays (one per input) and an int array of
      labels or None.

    Raises:
      ValueError: If the data is empty or has the wrong shape or dtype.
    """
    inputs, labels = _normalize(data, signatures, argument, max_samples, with_labels=True)
    if labels is not None:
        labels = labels.astype(np.int64)
    return inputs, labels


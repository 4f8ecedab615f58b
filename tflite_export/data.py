"""Validation of representative and evaluation data.

Everything is turned into NumPy samples and checked against the model's input
signature before any conversion starts, so bad data fails fast with a message
that names the argument, and never after a file has been written.

Data of unknown or infinite length is bounded: a `tf.data.Dataset` of
INFINITE cardinality (e.g. made with `.repeat()`) is refused unless a sample
limit (`max_eval_samples` / `max_calibration_samples`) is given, and a
generator or a Dataset of UNKNOWN cardinality is read up to
`DEFAULT_MAX_UNKNOWN_LENGTH_SAMPLES` examples, with a warning if it had more.
"""

import dataclasses
import inspect
import time

import numpy as np
from absl import logging

# Examples read at most from a generator (or a tf.data.Dataset of unknown
# cardinality) when no sample limit is given: it may never end.
DEFAULT_MAX_UNKNOWN_LENGTH_SAMPLES = 10_000
# Seconds between progress messages while data is read.
PROGRESS_INTERVAL_S = 10.0
_INFINITE_CARDINALITY = -1
_UNKNOWN_CARDINALITY = -2


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
    if array.dtype == object:
        raise ValueError(
            f"{argument} holds Python objects (dtype object, shape {tuple(array.shape)}) "
            f"where the model input {signature.describe()} expects numbers; give a numeric "
            "NumPy array.")
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


def _is_array(value):
    """True for in-memory arrays: NumPy arrays and eager TensorFlow tensors."""
    if isinstance(value, np.ndarray):
        return True
    return (type(value).__module__.startswith("tensorflow") and hasattr(value, "numpy")
            and hasattr(value, "shape") and not hasattr(value, "element_spec"))


def _is_label_list(value):
    return isinstance(value, list) and bool(value) and all(
        isinstance(v, (int, float, np.number, bool)) or _is_array(v) for v in value)


def _array_parts(data, num_inputs):
    """Splits in-memory data into `(input arrays, labels)`, or None for iterables.

    Accepted: `x`; `(x, y)` / `(x, y, sample_weight)` for a one-input model;
    `[x1, x2, ...]` (one array per input); `([x1, x2, ...], y[, w])`.
    """
    if _is_array(data):
        return [data], None
    if not isinstance(data, (list, tuple)) or not data:
        return None
    items = list(data)
    if all(_is_array(d) for d in items):
        if len(items) == num_inputs:
            return items, None
        if num_inputs == 1 and len(items) in (2, 3):
            return [items[0]], items[1]
        return None
    if (num_inputs == 1 and isinstance(data, tuple) and len(items) in (2, 3)
            and _is_array(items[0]) and _is_label_list(items[1])):
        return [items[0]], items[1]
    if (isinstance(data, tuple) and len(items) in (2, 3) and isinstance(items[0], (list, tuple))
            and len(items[0]) == num_inputs and all(_is_array(d) for d in items[0])
            and (_is_array(items[1]) or _is_label_list(items[1]))):
        return list(items[0]), items[1]
    return None


def _check_limit(max_samples, limit_name):
    """Checks a sample limit: None or a whole number >= 1."""
    if max_samples is None:
        return None
    if (isinstance(max_samples, bool) or not isinstance(max_samples, (int, np.integer))
            or max_samples < 1):
        raise ValueError(
            f"{limit_name}={max_samples!r}: give the number of examples to use, a whole "
            f"number >= 1, or None to use all of them (data of unknown length stops after "
            f"{DEFAULT_MAX_UNKNOWN_LENGTH_SAMPLES:,}).")
    return int(max_samples)


def _read_limit(data, argument, max_samples, limit_name):
    """Returns `(limit, is_default_cap)`: how many examples to read at most.

    Raises:
      ValueError: For a tf.data.Dataset that never ends and no `max_samples`.
    """
    if max_samples is not None:
        return max_samples, False
    if _is_tf_dataset(data):
        try:
            cardinality = int(data.cardinality())
        except Exception:  # pylint: disable=broad-except  Not a standard Dataset.
            cardinality = _UNKNOWN_CARDINALITY
        if cardinality == _INFINITE_CARDINALITY:
            raise ValueError(
                f"{argument} is a tf.data.Dataset that never ends (cardinality INFINITE, "
                f"e.g. made with .repeat()): pass {limit_name}=N to read N examples, or "
                "remove the .repeat().")
        if cardinality >= 0:
            return None, False
        return DEFAULT_MAX_UNKNOWN_LENGTH_SAMPLES, True
    if hasattr(data, "__len__"):
        return None, False
    return DEFAULT_MAX_UNKNOWN_LENGTH_SAMPLES, True


def _flat_labels(label):
    label = _to_numpy(label)
    if label.ndim == 2 and label.shape[1] == 1:
        label = label.reshape(-1)
    return label


def _iterated_parts(data, signatures, argument, limit, is_default_cap, limit_name,
                    with_labels):
    """Reads a Dataset, generator or iterable into checked batches and labels."""
    num_inputs = len(signatures)
    sample_ndim = len(signatures[0].sample_shape)
    batches, label_batches = [], []
    count = 0
    labelled = None
    started = last_log = time.monotonic()
    iterator = _iterate(data, argument)
    try:
        for index, element in enumerate(iterator):
            parts, label = _split_element(element, num_inputs, with_labels)
            if len(parts) != num_inputs:
                raise ValueError(f"element {index} has {len(parts)} input(s)")
            parts = [_to_numpy(p) for p in parts]
            checked = [_check_array(p, s, argument) for p, s in zip(parts, signatures)]
            n = checked[0].shape[0]
            if any(c.shape[0] != n for c in checked):
                raise ValueError(f"element {index} has inputs with different numbers of "
                                 f"examples: {[c.shape[0] for c in checked]}")
            if with_labels:
                if labelled is not None and labelled != (label is not None):
                    raise ValueError(
                        f"element {index} {'has' if label is not None else 'has no'} label "
                        f"but earlier elements {'had none' if label is not None else 'had'}; "
                        "give labels with every element or with none")
                labelled = label is not None
                if label is not None:
                    label = _to_numpy(label)
                    if parts[0].ndim == sample_ndim or label.ndim == 0:
                        label = label[None]  # One example: one label (or one one-hot row).
                    if label.shape[0] != n:
                        raise ValueError(f"element {index} has {n} example(s) but "
                                         f"{label.shape[0]} label(s) (label shape "
                                         f"{tuple(label.shape)})")
                    label_batches.append(_flat_labels(label))
            batches.append(checked)
            count += n
            if limit is not None and count >= limit:
                if is_default_cap and next(iterator, None) is not None:
                    logging.warning(
                        "%s: stopped reading after %s examples (the default cap "
                        "DEFAULT_MAX_UNKNOWN_LENGTH_SAMPLES for data of unknown length, such "
                        "as a generator); pass %s=N to use more or fewer.",
                        argument, f"{DEFAULT_MAX_UNKNOWN_LENGTH_SAMPLES:,}", limit_name)
                break
            now = time.monotonic()
            if now - last_log >= PROGRESS_INTERVAL_S:
                logging.info("%s: read %d examples in %.0f s%s", argument, count,
                             now - started, "" if limit is None else f" (of at most {limit})")
                last_log = now
    except ValueError as e:
        if str(e).startswith(argument):
            raise
        raise ValueError(f"{argument}: {e}") from e
    return batches, label_batches


def _check_labels(labels, argument):
    """Turns labels into int64 class indices, refusing values that are not.

    Class indices (ints, or floats that are whole numbers) are kept; one-hot or
    per-class score rows become their argmax. Negative, fractional and
    non-finite labels are refused (they would be truncated or never match).
    """
    labels = np.asarray(labels)
    if labels.dtype == bool:
        labels = labels.astype(np.int64)
    if not (np.issubdtype(labels.dtype, np.integer) or np.issubdtype(labels.dtype, np.floating)):
        raise ValueError(
            f"{argument} labels have dtype {labels.dtype} (e.g. {labels.reshape(-1)[:3]!r}); "
            "give class indices as integers (or one-hot rows), e.g. map class names to "
            "0..num_classes-1.")
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels.reshape(-1)
    if labels.ndim == 2:  # One-hot (or per-class scores): the class is the argmax.
        finite = np.isfinite(labels).all(axis=1) if labels.dtype.kind == "f" else None
        if finite is not None and not finite.all():
            i = int(np.flatnonzero(~finite)[0])
            raise ValueError(f"{argument} has a one-hot label row with NaN or infinite values "
                             f"at index {i}: {labels[i]!r}; fix or drop that example.")
        return labels.argmax(axis=1).astype(np.int64)
    if labels.ndim != 1:
        raise ValueError(
            f"{argument} labels have shape {tuple(labels.shape)}; give one class index per "
            "example (shape (N,)) or one-hot rows (shape (N, num_classes)).")
    if labels.dtype.kind == "f":
        bad = ~np.isfinite(labels) | (labels != np.round(labels))
        if bad.any():
            i = np.flatnonzero(bad)
            raise ValueError(
                f"{argument} has {i.size} label(s) that are not whole class indices, e.g. "
                f"{_where(labels, i)}. Labels must be class indices 0..num_classes-1; float "
                "labels are not truncated. Round them on purpose (np.rint(y).astype(int)) "
                "or fix the labels.")
    if labels.size and labels.min() < 0:
        i = np.flatnonzero(labels < 0)
        raise ValueError(
            f"{argument} has {i.size} negative label(s), e.g. {_where(labels, i)}. Labels "
            "must be class indices 0..num_classes-1 (drop 'unknown' examples such as -1).")
    return labels.astype(np.int64)


def _where(values, indices, limit=3):
    """`index 4: 1.5, index 9: -1` for the first few offending entries."""
    shown = ", ".join(f"index {int(i)}: {values[i].item()!r}" for i in indices[:limit])
    return shown + (", ..." if len(indices) > limit else "")


def _check_finite(inputs, signatures, argument):
    for x, signature in zip(inputs, signatures):
        if not np.issubdtype(x.dtype, np.floating):
            continue
        finite = np.isfinite(x.reshape(x.shape[0], -1)).all(axis=1)
        if not finite.all():
            bad = np.flatnonzero(~finite)
            raise ValueError(
                f"{argument} contains NaN or infinite values in {bad.size} example(s) of the "
                f"input '{signature.name}', e.g. at index {', '.join(map(str, bad[:3]))}. "
                "Fix the preprocessing or drop them: keep = np.isfinite(x.reshape(len(x), "
                "-1)).all(axis=1); x, y = x[keep], y[keep].")


def _normalize(data, signatures, argument, max_samples, with_labels, limit_name):
    num_inputs = len(signatures)
    max_samples = _check_limit(max_samples, limit_name)
    labels = None
    if data is None:
        raise ValueError(f"{argument} is None.")
    parts = _array_parts(data, num_inputs)
    if parts is None and isinstance(data, (list, tuple)) and data and all(
            _is_array(d) for d in data):
        raise ValueError(
            f"{argument} is a sequence of {len(data)} arrays but the model has "
            f"{num_inputs} input(s); give x, (x, y) or one array per input.")
    limit = max_samples
    if parts is not None:
        arrays, labels = parts
        batches = [[_check_array(a, s, argument) for a, s in zip(arrays, signatures)]]
        sizes = [b.shape[0] for b in batches[0]]
        if len(set(sizes)) > 1:
            raise ValueError(f"{argument} has input arrays with different numbers of "
                             f"examples: {sizes}; give the same examples to every input.")
        label_batches = []
        if labels is not None and with_labels:
            labels = _flat_labels(labels)
            if labels.ndim == 0 or labels.shape[0] != sizes[0]:
                raise ValueError(
                    f"{argument} has {sizes[0]} examples but "
                    f"{1 if labels.ndim == 0 else labels.shape[0]} labels (label shape "
                    f"{tuple(labels.shape)}); give one label per example.")
            label_batches = [labels]
    else:
        limit, is_default_cap = _read_limit(data, argument, max_samples, limit_name)
        batches, label_batches = _iterated_parts(
            data, signatures, argument, limit, is_default_cap, limit_name, with_labels)
    if not batches or sum(b[0].shape[0] for b in batches) == 0:
        raise ValueError(f"{argument} is empty: give at least one example of the model input "
                         f"{signatures[0].describe()}.")
    inputs = [np.concatenate([b[i] for b in batches]) for i in range(num_inputs)]
    labels = None
    if label_batches:
        shapes = {tuple(l.shape[1:]) for l in label_batches}
        if len(shapes) > 1:
            raise ValueError(f"{argument} mixes labels of shapes {sorted(shapes)}; give class "
                             "indices everywhere or one-hot rows everywhere.")
        labels = np.concatenate(label_batches)
    if limit is not None:
        inputs = [x[:limit] for x in inputs]
        labels = None if labels is None else labels[:limit]
    if labels is not None:
        labels = _check_labels(labels, argument)
    _check_finite(inputs, signatures, argument)
    return inputs, labels


def representative_samples(data, signatures, max_samples=200, argument="representative_data",
                           limit_name="max_calibration_samples"):
    """Validates representative data and returns it as calibration samples.

    Args:
      data: A NumPy array of examples `(N, *input_shape)` (or a list of arrays,
        one per input), a `tf.data.Dataset`, a generator, or a callable
        returning an iterable. Dataset and generator elements may be single
        examples or batches, `x`, `[x]` or `(x, y)` (labels are ignored).
      signatures: `InputSignature` per model input.
      max_samples: Keep at most this many examples (None: all; a generator or
        a Dataset of unknown length stops after
        `DEFAULT_MAX_UNKNOWN_LENGTH_SAMPLES`).
      argument: Argument name used in error messages.
      limit_name: Name of the `max_samples` option, for messages.

    Returns:
      A list of examples; each is a list (one per input) of arrays with
      batch dimension 1, in the model's dtypes.

    Raises:
      ValueError: If the data is empty, endless without `max_samples`, or has
        the wrong shape or dtype, or NaN or infinite values.
    """
    inputs, _ = _normalize(data, signatures, argument, max_samples, with_labels=False,
                           limit_name=limit_name)
    n = inputs[0].shape[0]
    return [[x[i : i + 1] for x in inputs] for i in range(n)]


def eval_arrays(data, signatures, max_samples=None, argument="eval_data",
                limit_name="max_eval_samples"):
    """Validates evaluation data.

    Args:
      data: Inputs `x` (array or list of arrays), `(x, y)`, a
        `tf.data.Dataset` or a generator yielding `x` or `(x, y)`.
        Labels are class indices (integers, or floats that are whole
        numbers) or one-hot rows.
      signatures: `InputSignature` per model input.
      max_samples: Keep at most this many examples (None: all; a generator or
        a Dataset of unknown length stops after
        `DEFAULT_MAX_UNKNOWN_LENGTH_SAMPLES` with a warning, an infinite
        Dataset is refused).
      argument: Argument name used in error messages.
      limit_name: Name of the `max_samples` option, for messages.

    Returns:
      `(inputs, labels)`: a list of arrays (one per input) and an int64 array
      of class indices or None.

    Raises:
      ValueError: If the data is empty, endless without `max_samples`, has
        the wrong shape or dtype, NaN or infinite values, or labels that are
        not class indices (negative, fractional, not one per example).
    """
    return _normalize(data, signatures, argument, max_samples, with_labels=True,
                      limit_name=limit_name)


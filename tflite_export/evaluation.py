"""Comparing a `.tflite` model with the model it was converted from."""

import re
import time

import numpy as np
from absl import logging

from tflite_export import litert

SERVING_KEY = "serving_default"
# Seconds between progress messages of a long evaluation.
PROGRESS_INTERVAL_S = 10.0


def natural_key(name):
    """Sort key that puts `output_2` before `output_10`."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


class TFLiteRunner:
    """Runs a `.tflite` model example by example through its signature.

    Float inputs are quantised and integer outputs dequantised with the
    tensors' own parameters, so callers always deal in float32.

    Args:
      model: Path of the `.tflite` file or its bytes.
      num_threads: Interpreter threads.
    """

    def __init__(self, model, num_threads=1):
        self._interpreter = litert.make_interpreter(model, num_threads=num_threads)
        signatures = self._interpreter.get_signature_list()
        key = SERVING_KEY if SERVING_KEY in signatures else next(iter(signatures))
        self._runner = self._interpreter.get_signature_runner(key)
        self._inputs = self._runner.get_input_details()
        self._outputs = self._runner.get_output_details()
        self.input_names = sorted(self._inputs, key=natural_key)
        self.output_names = sorted(self._outputs, key=natural_key)

    def _input_names_for(self, names):
        # Signature names usually match the source model's; otherwise fall
        # back to order, which is the order both sides sort by.
        if names is not None and set(names) == set(self.input_names):
            return list(names)
        return self.input_names

    def predict(self, inputs, names=None, verbose=0):
        """Runs the model on a batch, one example at a time.

        Progress is logged (absl, INFO) every `PROGRESS_INTERVAL_S` seconds
        with the examples done and the time left, unless a progress bar is
        shown.

        Args:
          inputs: List of arrays (one per input), batch first.
          names: Source input names, in the order of `inputs`.
          verbose: 1 shows a `keras.utils.Progbar`.

        Returns:
          List of float32 output arrays in `output_names` order.
        """
        order = self._input_names_for(names)
        n = inputs[0].shape[0]
        outputs = {name: [] for name in self.output_names}
        progbar = None
        if verbose:
            import keras

            progbar = keras.utils.Progbar(n, unit_name="example")
        started = last_log = time.monotonic()
        for i in range(n):
            feed = {name: litert.quantize_input(x[i : i + 1], self._inputs[name])
                    for name, x in zip(order, inputs)}
            result = self._runner(**feed)
            for name in self.output_names:
                outputs[name].append(litert.dequantize_output(result[name], self._outputs[name]))
            if progbar is not None:
                if (i + 1) % 100 == 0 or i + 1 == n:
                    progbar.update(i + 1)
            elif time.monotonic() - last_log >= PROGRESS_INTERVAL_S and i + 1 < n:
                last_log = time.monotonic()
                elapsed = last_log - started
                logging.info("Evaluating the .tflite: %d/%d examples (%.0f%%), %.0f s, about "
                             "%.0f s left", i + 1, n, 100 * (i + 1) / n, elapsed,
                             elapsed / (i + 1) * (n - i - 1))
        if progbar is None and time.monotonic() - started >= PROGRESS_INTERVAL_S:
            logging.info("Evaluated the .tflite on %d examples in %.0f s", n,
                         time.monotonic() - started)
        return [np.concatenate(outputs[name]) for name in self.output_names]


def _top1(outputs):
    flat = outputs.reshape(outputs.shape[0], -1)
    return flat.argmax(axis=1) if flat.shape[1] > 1 else None


def check_labels(labels, num_classes, argument="eval_data"):
    """Checks that every label is a class of the model's first output.

    Args:
      labels: int class indices (from `data.eval_arrays`).
      num_classes: Scores per example of the first output.
      argument: Argument name used in the message.

    Raises:
      ValueError: Naming the labels outside `[0, num_classes)` (they would
        silently count as wrong predictions).
    """
    labels = np.asarray(labels)
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        shown = ", ".join(f"index {int(i)}: {labels[i].item()}" for i in bad[:3])
        hint = (" They look 1-based: subtract 1." if labels.min() >= 1
                and labels.max() == num_classes else "")
        raise ValueError(
            f"{argument} has {bad.size} label(s) outside [0, {num_classes}), the classes of "
            f"the model's first output ({num_classes} scores per example), e.g. {shown}"
            f"{', ...' if bad.size > 3 else ''}. Give class indices 0..{num_classes - 1} "
            f"or drop those examples.{hint}")


def check_eval_labels(prepared, inputs, labels):
    """Refuses labels that are not classes of the model, before any conversion.

    Runs the source model on one example to learn the size of its first
    output; a single-value output has no classes and is not checked.

    Args:
      prepared: The `sources.PreparedModel`.
      inputs: Evaluation inputs (list of arrays, one per input).
      labels: int class indices from `data.eval_arrays`, or None.

    Raises:
      ValueError: If a label is outside `[0, num_classes)` (see `check_labels`).
    """
    if labels is None:
        return
    first = np.asarray(prepared.reference([x[:1] for x in inputs])[0])
    if first[0].size > 1:
        check_labels(labels, first[0].size)


def compare(reference, tflite, labels=None):
    """Computes fidelity and accuracy of the `.tflite` outputs.

    Args:
      reference: List of float outputs of the source model.
      tflite: List of float outputs of the `.tflite` model (same order).
      labels: Optional int class labels.

    Returns:
      `(fidelity, accuracy)`: fidelity is a dict with `num_samples`,
      `top1_agreement` (None for single-value outputs), `max_abs_error`,
      `mean_abs_error` (over all outputs); accuracy is None without labels,
      else a dict with `reference` and `tflite` top-1 accuracy of the first
      output.

    Raises:
      ValueError: If the output counts differ, an output is NaN or infinite
        (the numbers would be meaningless), or a label is not a class of the
        first output.
    """
    if len(reference) != len(tflite):
        raise ValueError(f"The source model has {len(reference)} outputs but the .tflite "
                         f"has {len(tflite)}.")
    for outputs, which, fix in (
            (reference, "The source model", "the model or eval_data is broken (e.g. a log or "
             "division of values the model never saw in training); check both in Keras"),
            (tflite, "The converted .tflite", "the source model's outputs are finite, so the "
             "conversion is at fault; try quantize='float32' to narrow it down, and for int8 "
             "representative_data that covers eval_data's range")):
        bad = sorted(set().union(*(
            np.flatnonzero(~np.isfinite(o.reshape(o.shape[0], -1)).all(axis=1)).tolist()
            for o in outputs)))
        if bad:
            raise ValueError(
                f"{which} outputs NaN or infinite values for {len(bad)} of "
                f"{outputs[0].shape[0]} eval_data examples (e.g. index "
                f"{', '.join(map(str, bad[:3]))}): {fix}.")
    errors = [np.abs(r.reshape(r.shape[0], -1) - t.reshape(t.shape[0], -1))
              for r, t in zip(reference, tflite)]
    ref_top1, tfl_top1 = _top1(reference[0]), _top1(tflite[0])
    fidelity = {
        "num_samples": int(reference[0].shape[0]),
        "top1_agreement": None if ref_top1 is None else float(np.mean(ref_top1 == tfl_top1)),
        "max_abs_error": float(max(e.max() for e in errors)),
        "mean_abs_error": float(np.mean([e.mean() for e in errors])),
    }
    accuracy = None
    if labels is not None and ref_top1 is None:
        logging.warning("eval_data has labels but the first output has one value per "
                        "example, not one score per class: no accuracy is reported.")
    if labels is not None and ref_top1 is not None:
        check_labels(labels, reference[0][0].size)
        accuracy = {
            "reference": float(np.mean(ref_top1 == labels)),
            "tflite": float(np.mean(tfl_top1 == labels)),
        }
    logging.info("Fidelity %s, accuracy %s", fidelity, accuracy)
    return fidelity, accuracy

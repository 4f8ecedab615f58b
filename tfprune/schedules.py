"""Pruning schedules: from a training step to `(should_prune, sparsity)`.

A schedule answers two questions for a global training step: should the masks
be recomputed at this step, and what fraction of the weights (or channels)
should be zero then. For the same arguments the answers are those of
`tfmot.sparsity.keras.ConstantSparsity` and `PolynomialDecay`, bit for bit:
tfmot computes the sparsity in float32 TensorFlow ops, and so do these
schedules, in two forms:

- On a Python or NumPy integer step, `should_prune(step)` is a Python bool
  and `sparsity(step)` a Python float holding the float32 value that tfmot
  computes eagerly for that step (NumPy float32 scalar arithmetic, whose
  `**` is the same C `powf` as TensorFlow's scalar `Pow` kernel).
- On a tensor step (e.g. the pruning step variable inside a compiled train
  step, `tf.function(jit_compile=True)` included), both are backend tensors
  (bool and float32) built with `keras.ops`. They hold the same values as
  the first form: the graph is written so that the rewrites of Grappler and
  XLA leave its float32 arithmetic as written (see `PolynomialDecay`; tested
  eagerly, in `tf.function` and under XLA). tfmot's own graph is
  not protected that way: traced in a `tf.function` it can drift from its
  eager value by one float32 ulp at some steps (Grappler turns the division
  by `end_step - begin_step` into a multiplication by its reciprocal and
  `pow(x, 3)` into `x * x * x`). These schedules give tfmot's eager value
  everywhere.

This module holds no layers or wrappers and does not import TensorFlow.
"""

import abc
import math
import numbers

import keras
import numpy as np
from keras import ops

_F32 = np.float32


def _finite_number(value):
    """A finite Python/NumPy real number from `value`, or None.

    Accepts numbers and 0-d arrays or tensors; refuses booleans, NaN and
    infinities.
    """
    if not isinstance(value, numbers.Real):
        try:
            array = np.asarray(value)
        except Exception:  # A symbolic tensor has no value yet.
            return None
        if array.ndim != 0 or array.dtype.kind not in "iuf":
            return None
        value = array.item()
    if isinstance(value, (bool, np.bool_)) or not math.isfinite(value):
        return None
    return value


def _as_int(value, name, requirement):
    """`value` as a Python int; integral floats and 0-d integer tensors are accepted."""
    number = _finite_number(value)
    if number is None or number != int(number):
        raise ValueError(
            f"`{name}` must be an integer {requirement}. Received: {name}={value!r}. "
            f"Pass a Python or NumPy integer, e.g. {name}=int(np.ceil(...))."
        )
    return int(number)


def _as_fraction(value, name):
    """`value` as a Python float in [0, 1), the range tfmot allows for sparsities."""
    number = _finite_number(value)
    if number is None or not 0.0 <= number < 1.0:
        raise ValueError(
            f"`{name}` must be a number in [0, 1): the fraction of weights set to "
            f"zero (1 would remove every weight). Received: {name}={value!r}"
        )
    return float(number)


def _as_power(value):
    """The decay exponent: an int stays an int, other real numbers become floats."""
    number = _finite_number(value)
    if number is None or number <= 0:
        raise ValueError(
            "`power` must be a finite number > 0 (3 is the usual choice; 0 keeps the "
            "sparsity at initial_sparsity forever, and a negative power makes it leave "
            f"[0, 1)). Received: power={value!r}"
        )
    return int(number) if isinstance(number, numbers.Integral) else float(number)


def _validate_steps(begin_step, end_step, frequency, allow_endless):
    """Checks the step arguments as tfmot does; returns them as Python ints."""
    begin_step = _as_int(begin_step, "begin_step", ">= 0")
    if begin_step < 0:
        raise ValueError(
            "`begin_step` must be >= 0: the first step at which masks are computed. "
            f"Received: begin_step={begin_step}"
        )
    end_step = _as_int(end_step, "end_step", ">= begin_step")
    if end_step == -1 and not allow_endless:
        raise ValueError(
            "`end_step` must be a step >= begin_step: this schedule interpolates the "
            "sparsity up to end_step, so it cannot run forever (use ConstantSparsity "
            f"for that). Received: end_step={end_step}"
        )
    if end_step != -1 and end_step < begin_step:
        raise ValueError(
            "`end_step` must be >= `begin_step`"
            + (", or -1 to prune until training ends" if allow_endless else "")
            + f". Received: begin_step={begin_step}, end_step={end_step}"
        )
    frequency = _as_int(frequency, "frequency", "> 0")
    if frequency <= 0:
        raise ValueError(
            "`frequency` must be an integer > 0: masks are recomputed every `frequency` "
            f"steps. Received: frequency={frequency}"
        )
    return begin_step, end_step, frequency


def _host_step(step):
    """`step` as a Python int when it is a host integer, or None for a tensor.

    Raises:
      ValueError: If `step` is a host number that is not an integer.
    """
    if isinstance(step, (bool, np.bool_)):
        raise ValueError(f"`step` must be an integer training step. Received: step={step!r}")
    if isinstance(step, numbers.Integral):
        return int(step)
    if isinstance(step, np.ndarray) and step.ndim == 0 and step.dtype.kind in "iu":
        return int(step)
    if isinstance(step, (numbers.Real, np.ndarray)):
        raise ValueError(
            "`step` must be an integer training step (a Python or NumPy integer, or an "
            f"integer tensor). Received: step={step!r}; pass int(step) if it is whole."
        )
    return None


class PruningSchedule(abc.ABC):
    """Base class: maps a training step to `(should_prune, sparsity)`.

    Subclasses implement `sparsity(step)` and `get_config()`; the update
    decision, shared by all schedules, is `should_prune(step)`. Both accept a
    host integer (and return Python values) or a tensor (and return tensors
    built with `keras.ops`, usable inside a compiled train step).

    Args:
      begin_step: First step at which masks are computed.
      end_step: Last step at which masks are recomputed; -1 means never stop.
      frequency: Masks are recomputed every `frequency` steps from
        `begin_step`.
    """

    def __init__(self, begin_step, end_step, frequency):
        self.begin_step = begin_step
        self.end_step = end_step
        self.frequency = frequency

    def should_prune(self, step):
        """Whether masks are recomputed at `step` (tfmot's `_should_prune_in_step`).

        True every `frequency` steps from `begin_step` up to and including
        `end_step` (with no end when `end_step` is negative).

        Args:
          step: The training step: a Python or NumPy integer, or an integer
            tensor (e.g. inside a `tf.function`, `jit_compile=True` included).

        Returns:
          A Python bool for a host integer, else a bool tensor.

        Raises:
          ValueError: If `step` is a host number that is not an integer.
        """
        host = _host_step(step)
        if host is not None:
            in_range = host >= self.begin_step and (self.end_step < 0 or host <= self.end_step)
            return in_range and (host - self.begin_step) % self.frequency == 0
        step = ops.convert_to_tensor(step)
        in_range = ops.greater_equal(step, self.begin_step)
        if self.end_step >= 0:
            in_range = ops.logical_and(in_range, ops.less_equal(step, self.end_step))
        turn = ops.equal(ops.mod(ops.subtract(step, self.begin_step), self.frequency), 0)
        return ops.logical_and(in_range, turn)

    def first_update_after(self, step):
        """The first step greater than `step` at which masks are recomputed, or None.

        Args:
          step: A host integer.

        Returns:
          A Python int, or None if the schedule never updates after `step`.
        """
        candidate = max(int(step) + 1, self.begin_step)
        candidate += -(candidate - self.begin_step) % self.frequency
        if self.end_step >= 0 and candidate > self.end_step:
            return None
        return candidate

    @abc.abstractmethod
    def sparsity(self, step):
        """The target sparsity at `step`.

        Args:
          step: As for `should_prune`.

        Returns:
          A Python float (a float32 value) for a host integer, else a float32
          tensor.
        """

    def __call__(self, step):
        """Returns `(should_prune(step), sparsity(step))`, as tfmot's schedules do."""
        return self.should_prune(step), self.sparsity(step)

    @abc.abstractmethod
    def get_config(self):
        """The constructor arguments, for serialization."""

    @classmethod
    def from_config(cls, config):
        """Builds a schedule from `get_config()` output.

        Also accepts tfmot's `get_config()` form,
        `{"class_name": ..., "config": {...}}`.
        """
        if "config" in config and "class_name" in config:
            config = config["config"]
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{self.__class__.__name__}({args})"

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self):
        return hash((type(self).__name__, tuple(sorted(self.get_config().items()))))


@keras.saving.register_keras_serializable(package="tfprune")
class ConstantSparsity(PruningSchedule):
    """Prunes to a constant sparsity every `frequency` steps.

    The sparsity is `target_sparsity` rounded to float32, at every step (as
    tfmot's `tf.constant(target_sparsity, tf.float32)`): e.g. `0.8` gives
    `0.800000011920929`.

    Args:
      target_sparsity: Fraction of weights set to zero, in [0, 1).
      begin_step: First step at which masks are computed (an integer >= 0).
      end_step: Last step at which masks are recomputed; -1 (the default)
        prunes until training ends.
      frequency: Masks are recomputed every `frequency` steps.

    Raises:
      ValueError: If an argument is out of range or not an integer where one
        is needed.
    """

    def __init__(self, target_sparsity, begin_step, end_step=-1, frequency=100):
        begin_step, end_step, frequency = _validate_steps(
            begin_step, end_step, frequency, allow_endless=True
        )
        super().__init__(begin_step, end_step, frequency)
        self.target_sparsity = _as_fraction(target_sparsity, "target_sparsity")

    def sparsity(self, step):
        value = _F32(self.target_sparsity)
        if _host_step(step) is not None:
            return float(value)
        return ops.convert_to_tensor(value, dtype="float32")

    def get_config(self):
        return {
            "target_sparsity": self.target_sparsity,
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "frequency": self.frequency,
        }


@keras.saving.register_keras_serializable(package="tfprune")
class PolynomialDecay(PruningSchedule):
    """Sparsity that rises fast, then levels off (Zhu & Gupta, 2017).

    In float32, exactly as tfmot:
    `p = min(1, max(0, float32(step - begin_step) / float32(end_step - begin_step)))`,
    `sparsity = float32(initial_sparsity - final_sparsity) * (1 - p) ** power
    + float32(final_sparsity)`, each operation rounded to float32.

    So the sparsity is `initial_sparsity` (up to float32 rounding) before
    `begin_step` and `final_sparsity` from `end_step` on. With
    `end_step == begin_step`, tfmot divides by zero: its sparsity is
    `initial` before the step, `final` after it and NaN at it, while masks
    are due at it. Here `p` is 1 at that step, so the sparsity is
    `final_sparsity` there too.

    On a tensor step the graph guards this arithmetic against optimizers:
    the divisor and the exponent are runtime values (a constant divisor
    would become a reciprocal multiplication, `pow(x, 3)` would become
    `x * x * x`), and the product is rounded before the addition (XLA would
    fuse the multiply-add into one FMA). The
    result equals the host-integer value at every step, eagerly, in a
    `tf.function` and under XLA.

    Args:
      initial_sparsity: Sparsity at `begin_step`, in [0, 1).
      final_sparsity: Sparsity from `end_step` on, in [0, 1).
      begin_step: First step at which masks are computed (an integer >= 0).
      end_step: Step at which `final_sparsity` is reached, >= `begin_step`.
      power: Exponent of the decay, a number >= 0 (3 by default).
      frequency: Masks are recomputed every `frequency` steps.

    Raises:
      ValueError: If an argument is out of range or not an integer where one
        is needed.
    """

    def __init__(
        self, initial_sparsity, final_sparsity, begin_step, end_step, power=3, frequency=100
    ):
        begin_step, end_step, frequency = _validate_steps(
            begin_step, end_step, frequency, allow_endless=False
        )
        super().__init__(begin_step, end_step, frequency)
        self.initial_sparsity = _as_fraction(initial_sparsity, "initial_sparsity")
        self.final_sparsity = _as_fraction(final_sparsity, "final_sparsity")
        self.power = _as_power(power)

    def _constants(self):
        """The float32 scale and offset, rounded as tfmot rounds its Python floats."""
        return _F32(self.initial_sparsity - self.final_sparsity), _F32(self.final_sparsity)

    def sparsity(self, step):
        span = self.end_step - self.begin_step
        scale, offset = self._constants()
        host = _host_step(step)
        if host is not None:
            if span == 0:
                progress = _F32(1.0 if host >= self.begin_step else 0.0)
            else:
                progress = _F32(host - self.begin_step) / _F32(span)
                progress = np.minimum(_F32(1.0), np.maximum(_F32(0.0), progress))
            return float(scale * (_F32(1.0) - progress) ** _F32(self.power) + offset)

        step = ops.convert_to_tensor(step)
        # A float32 zero that only exists at run time: constants added to it
        # are out of reach of constant folding and XLA's simplifier.
        as_float = ops.cast(step, "float32")
        runtime_zero = ops.subtract(as_float, as_float)
        if span == 0:
            progress = ops.cast(ops.greater_equal(step, self.begin_step), "float32")
        else:
            progress = ops.divide(
                ops.cast(ops.subtract(step, self.begin_step), "float32"),
                ops.add(runtime_zero, float(span)),
            )
            progress = ops.minimum(1.0, ops.maximum(0.0, progress))
        decay = ops.power(ops.subtract(1.0, progress), ops.add(runtime_zero, float(self.power)))
        # Adding the runtime zero rounds the product on its own: XLA may fuse
        # a multiply-add into one FMA, and `fma(a, b, 0)` is the rounded `a * b`.
        scaled = ops.add(ops.multiply(decay, float(scale)), runtime_zero)
        return ops.add(scaled, float(offset))

    def get_config(self):
        return {
            "initial_sparsity": self.initial_sparsity,
            "final_sparsity": self.final_sparsity,
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "power": self.power,
            "frequency": self.frequency,
        }


_BUILT_IN = {cls.__name__: cls for cls in (ConstantSparsity, PolynomialDecay)}


def serialize(schedule):
    """A schedule as `{"class_name": ..., "config": {...}}`.

    This is the form tfmot's schedules return from `get_config()` and store
    in a wrapper's config; `deserialize` reads it back.

    Args:
      schedule: A `PruningSchedule`.

    Returns:
      A dict with the class name and the schedule's `get_config()`.
    """
    return {"class_name": type(schedule).__name__, "config": schedule.get_config()}


def deserialize(config, custom_objects=None):
    """Builds a schedule from any of its serialized forms.

    Args:
      config: One of: a `PruningSchedule` (returned as is); tfmot's form
        `{"class_name": "PolynomialDecay", "config": {...}}` (what
        `serialize` and tfmot's `get_config()` return); the output of
        `keras.saving.serialize_keras_object`; or a tfmot schedule object,
        rebuilt as the tfprune schedule of the same name.
      custom_objects: Optional dict of custom schedule classes by name.

    Returns:
      A `PruningSchedule`.

    Raises:
      ValueError: If `config` describes no known schedule.
    """
    if isinstance(config, PruningSchedule):
        return config
    if not isinstance(config, dict) and type(config).__name__ in _BUILT_IN:
        if hasattr(config, "get_config"):  # A tfmot schedule object.
            return _BUILT_IN[type(config).__name__].from_config(config.get_config())
    if isinstance(config, dict) and "class_name" in config:
        name = config["class_name"]
        plain_form = "module" not in config and "registered_name" not in config
        if plain_form and name in _BUILT_IN and not (custom_objects and name in custom_objects):
            return _BUILT_IN[name].from_config(config.get("config", {}))
        schedule = keras.saving.deserialize_keras_object(config, custom_objects=custom_objects)
        if isinstance(schedule, PruningSchedule):
            return schedule
    raise ValueError(
        "`pruning_schedule` must be a pruning schedule or a serialized one. "
        f"Received: {config!r}. Pass a tfprune.PruningSchedule, the output of "
        "tfprune.schedules.serialize or keras.saving.serialize_keras_object, or "
        "{'class_name': 'PolynomialDecay', 'config': {...}} (register custom "
        "schedules with keras.saving.register_keras_serializable)."
    )

"""Pruning schedules: pure functions from a training step to a target sparsity.

A schedule answers two questions for a global training step: should the masks
be recomputed at this step, and what fraction of the weights (or channels)
should be zero then. The arithmetic and the update decision match
`tfmot.sparsity.keras.ConstantSparsity` and `PolynomialDecay` for the same
arguments, so a tfmot user gets the same pruning trajectory; unlike tfmot's,
these schedules work on plain Python integers and need no TensorFlow graph.
"""

import abc

import keras


def _validate_sparsity(value, name):
    if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(
            f"`{name}` must be a number in [0, 1): the fraction of weights set "
            f"to zero. Received: {name}={value!r}"
        )


def _validate_steps(begin_step, end_step, frequency, allow_endless):
    if not isinstance(begin_step, int) or begin_step < 0:
        raise ValueError(
            f"`begin_step` must be an integer >= 0. Received: begin_step={begin_step!r}"
        )
    if not isinstance(end_step, int):
        raise ValueError(f"`end_step` must be an integer. Received: end_step={end_step!r}")
    if end_step == -1:
        if not allow_endless:
            raise ValueError(
                "`end_step` must be a step >= begin_step: this schedule "
                "interpolates sparsity up to end_step, so it cannot run forever. "
                f"Received: end_step={end_step}"
            )
    elif end_step < begin_step:
        raise ValueError(
            "`end_step` must be >= `begin_step` (or -1 to prune forever where "
            f"allowed). Received: begin_step={begin_step}, end_step={end_step}"
        )
    if not isinstance(frequency, int) or frequency <= 0:
        raise ValueError(
            f"`frequency` must be an integer > 0. Received: frequency={frequency!r}"
        )


class PruningSchedule(abc.ABC):
    """Base class: maps a training step to `(should_prune, sparsity)`.

    Subclasses implement `sparsity(step)` and `get_config()`; the update
    decision, shared by all schedules, is `should_prune(step)`.
    """

    def __init__(self, begin_step, end_step, frequency):
        self.begin_step = begin_step
        self.end_step = end_step
        self.frequency = frequency

    def should_prune(self, step):
        """Whether masks are recomputed at `step`.

        True every `frequency` steps from `begin_step` up to and including
        `end_step` (forever when `end_step` is -1).

        Args:
          step: The global training step, an integer.

        Returns:
          A Python bool.
        """
        step = int(step)
        in_range = step >= self.begin_step and (self.end_step < 0 or step <= self.end_step)
        return in_range and (step - self.begin_step) % self.frequency == 0

    @abc.abstractmethod
    def sparsity(self, step):
        """The target sparsity at `step`, a float in [0, 1)."""

    def __call__(self, step):
        """Returns `(should_prune, sparsity)` for `step`, as tfmot's schedules do."""
        return self.should_prune(step), self.sparsity(step)

    @abc.abstractmethod
    def get_config(self):
        """The constructor arguments, for serialization."""

    @classmethod
    def from_config(cls, config):
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

    Args:
      target_sparsity: Fraction of weights set to zero, in [0, 1).
      begin_step: First step at which masks are computed.
      end_step: Last step at which masks are recomputed; -1 prunes forever.
      frequency: Masks are recomputed every `frequency` steps.

    Raises:
      ValueError: If an argument is out of range.
    """

    def __init__(self, target_sparsity, begin_step, end_step=-1, frequency=100):
        _validate_sparsity(target_sparsity, "target_sparsity")
        _validate_steps(begin_step, end_step, frequency, allow_endless=True)
        super().__init__(begin_step, end_step, frequency)
        self.target_sparsity = float(target_sparsity)

    def sparsity(self, step):
        return self.target_sparsity

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

    `s(t) = s_f + (s_i - s_f) * (1 - p) ** power` with
    `p = clip((t - begin_step) / (end_step - begin_step), 0, 1)`.

    Args:
      initial_sparsity: Sparsity at `begin_step`, in [0, 1).
      final_sparsity: Sparsity from `end_step` on, in [0, 1).
      begin_step: First step at which masks are computed.
      end_step: Step at which `final_sparsity` is reached (> begin_step is
        typical; equal steps give `final_sparsity` at once).
      power: Exponent of the decay.
      frequency: Masks are recomputed every `frequency` steps.

    Raises:
      ValueError: If an argument is out of range.
    """

    def __init__(
        self, initial_sparsity, final_sparsity, begin_step, end_step, power=3, frequency=100
    ):
        _validate_sparsity(initial_sparsity, "initial_sparsity")
        _validate_sparsity(final_sparsity, "final_sparsity")
        _validate_steps(begin_step, end_step, frequency, allow_endless=False)
        super().__init__(begin_step, end_step, frequency)
        self.initial_sparsity = float(initial_sparsity)
        self.final_sparsity = float(final_sparsity)
        self.power = power

    def sparsity(self, step):
        span = self.end_step - self.begin_step
        if span == 0:
            progress = 1.0 if step >= self.begin_step else 0.0
        else:
            progress = min(1.0, max(0.0, (int(step) - self.begin_step) / span))
        return self.final_sparsity + (self.initial_sparsity - self.final_sparsity) * (
            1.0 - progress
        ) ** self.power

    def get_config(self):
        return {
            "initial_sparsity": self.initial_sparsity,
            "final_sparsity": self.final_sparsity,
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "power": self.power,
            "frequency": self.frequency,
        }


def deserialize(config):
    """Builds a schedule from `keras.saving.serialize_keras_object` output."""
    if isinstance(config, PruningSchedule):
        return config
    return keras.saving.deserialize_keras_object(config)

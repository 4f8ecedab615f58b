"""Pruning under `tf.distribute.MultiWorkerMirroredStrategy`.

Two pieces, both explicit:

- `enable_multi_worker_fit()`: Keras 3 (up to at least 3.15.1,
  keras-team/keras#20585) cannot run `model.fit` under a
  `MultiWorkerMirroredStrategy` with more than one worker. Call this once,
  before `fit`, in every worker process; it patches two functions of Keras's
  TensorFlow trainer, and leaves every other strategy's path unchanged.
- `WorkerAgreement`: what `UpdatePruningStep` uses to prove that every worker
  holds the same pruning state (one all-reduce of exact checksums).
"""

import keras
import numpy as np
from absl import logging

_PATCHED = False


def other_workers_strategy(model):
    """The model's strategy if its replicas span several workers, else None."""
    strategy = getattr(model, "distribute_strategy", None)
    try:
        local = len(strategy.extended.worker_devices)
        return strategy if strategy.num_replicas_in_sync > local else None
    except (AttributeError, TypeError, NotImplementedError, RuntimeError):
        # The default strategy has no worker_devices.
        return None


def _strategy_name(strategy):
    import tensorflow as tf

    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return "tf.distribute.MultiWorkerMirroredStrategy"
    return type(strategy).__name__


def is_enabled():
    """Whether `enable_multi_worker_fit` has patched Keras in this process."""
    return _PATCHED


def enable_multi_worker_fit():
    """Lets Keras 3 `model.fit` run under a multi-worker strategy.

    Keras 3's `_maybe_symbolic_build` hands a whole (x, y) batch of
    per-replica values to `strategy.reduce`, which takes one value, and its
    train step reduces the scalar loss with `axis=0`; both fail with several
    workers. This replaces the two for multi-worker collective all-reduce
    strategies only (every other strategy calls the originals unchanged).
    Idempotent; does nothing if the Keras internals it replaces are absent.

    Returns:
      Whether Keras is patched.
    """
    global _PATCHED
    if _PATCHED:
        return True
    try:
        import tensorflow as tf
        from keras.src.backend.tensorflow import trainer as tf_trainer

        trainer_class = tf_trainer.TensorFlowTrainer
        original_build = trainer_class._maybe_symbolic_build
        original_reduce = tf_trainer.reduce_per_replica
        is_multi_worker = tf_trainer._collective_all_reduce_multi_worker
    except (ImportError, AttributeError):
        logging.warning("tfprune: this Keras %s has no multi-worker internals to patch.",
                        keras.version())
        return False

    def maybe_symbolic_build(self, iterator=None, data_batch=None):
        strategy = self._distribute_strategy
        if strategy is None or iterator is None or not is_multi_worker(strategy):
            return original_build(self, iterator=iterator, data_batch=data_batch)
        for _, _, step_iterator in iterator:
            batch = next(step_iterator)
            # Only the shapes matter here; reduce each tensor on its own.
            data_batch = keras.tree.map_structure(
                lambda v: (
                    strategy.reduce("MEAN", v, axis=None)
                    if isinstance(v, tf.distribute.DistributedValues)
                    else v
                ),
                batch,
            )
            break
        return original_build(self, iterator=None, data_batch=data_batch)

    def reduce_per_replica(values, strategy, reduction="auto"):
        if reduction in ("auto", "mean") and is_multi_worker(strategy):

            def reduce(v):
                if v is None:
                    return v
                local = strategy.experimental_local_results(v)[0]
                rank = getattr(getattr(local, "shape", None), "rank", None)
                return strategy.reduce("MEAN", v, axis=0 if rank else None)

            return keras.tree.map_structure(reduce, values)
        return original_reduce(values, strategy, reduction=reduction)

    trainer_class._maybe_symbolic_build = maybe_symbolic_build
    tf_trainer.reduce_per_replica = reduce_per_replica
    _PATCHED = True
    logging.vlog(1, "tfprune: patched Keras %s for MultiWorkerMirroredStrategy fit.", keras.version())
    return True


class WorkerAgreement:
    """Checks that every worker of a multi-worker strategy holds the same pruning state.

    Every worker runs `UpdatePruningStep` and computes masks itself; one
    all-reduce of exact checksums proves that they agree.

    Args:
      model: The model being trained.
      strategy: Its multi-worker strategy (`other_workers_strategy(model)`).
      wrappers: The model's pruning wrappers.
    """

    def __init__(self, model, strategy, wrappers):
        self.model = model
        self.strategy = strategy
        self.wrappers = wrappers

    def _fingerprint(self):
        """Exact float64 checksums of every wrapper's step and masks, and their names."""
        values, names = [], []
        for wrapper in self.wrappers:
            if not wrapper.built:
                continue
            values.append(float(wrapper.pruning_step.numpy()))
            names.append(f"the pruning_step of layer '{wrapper.name}'")
            for weight, mask in wrapper.masked_weights:
                flat = np.asarray(mask.numpy(), dtype=np.float64).reshape(-1)
                positions = (np.arange(flat.size, dtype=np.int64) % 65521 + 1).astype(np.float64)
                values.append(float(flat.sum()))  # exact: integers below 2**53
                values.append(float(flat @ positions))
                names.extend([f"the mask of '{weight.path}' in layer '{wrapper.name}'"] * 2)
        return np.asarray(values, dtype=np.float64), names

    def check(self, step=None):
        """Raises if the workers' masks or steps differ.

        Args:
          step: The step whose mask update is checked, or None when training
            starts.

        Raises:
          ValueError: Naming what differs, why, and the remedy.
        """
        import tensorflow as tf

        strategy = self.strategy
        local, names = self._fingerprint()
        total = strategy.reduce(
            "SUM",
            strategy.experimental_distribute_values_from_function(lambda _: tf.constant(local)),
            axis=None,
        )
        differ = np.nonzero(np.asarray(total) != local * strategy.num_replicas_in_sync)[0]
        if not differ.size:
            return
        what = sorted({names[i] for i in differ})
        workers = f"workers of {_strategy_name(strategy)}"
        listed = "; ".join(what[:5]) + (f"; and {len(what) - 5} more" if len(what) > 5 else "")
        if step is None:
            raise ValueError(
                f"The {workers} start training model "
                f"'{self.model.name}' from different pruning states ({listed} differ). "
                "They restored different backups or checkpoints. Remedy: give each "
                "worker its own BackupAndRestore backup_dir, written by the same run "
                "(or delete them all to start afresh), and load the same checkpoint on "
                "every worker."
            )
        raise ValueError(
            f"After the mask update at step {step}, the {workers} hold different masks for model "
            f"'{self.model.name}' ({listed}). Every worker computes the masks itself, "
            "so the values they come from must be the same on every worker: weights "
            "(synchronized by the strategy) or variables whose aggregation combines "
            "all replicas ('mean' or 'sum'), not per-replica state such as an "
            "'only_first_replica' accumulator. Remedy: compute the masks from "
            "synchronized values in the pruning controller (make_controllers) of "
            "these layers' wrapper class."
        )

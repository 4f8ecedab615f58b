"""Conditional variable updates inside a compiled training step, on any backend.

A wrapper that recomputes its masks inside the training step needs one
operation: "if `pred`, assign these new values to these variables", where
the new values are costly (a sort of the weight) and must only be computed
when `pred` holds. Each backend spells that differently:

- TensorFlow: a `tf.cond` whose true branch assigns. Under a `tf.distribute`
  strategy, the update runs once in cross-replica context (`merge_call`) and
  is mirrored to every replica, as the strategy requires for variables that
  are not aggregated per replica; every replica then sees the same values.
- JAX and PyTorch: a `keras.ops.cond` that returns either the new values or
  the current ones, assigned afterwards (JAX traces pure functions).
"""

import keras


def _assign(variable, value):
    return variable.assign(value)


def assign_if(pred, values_fn, targets, *args):
    """Assigns `values_fn(*args)` to `targets` where `pred` holds.

    Args:
      pred: A scalar boolean tensor (or Python bool).
      values_fn: A function of `*args` returning one new value per target.
      targets: A list of `keras.Variable`s.
      *args: Passed to `values_fn`.
    """
    if not targets:
        return
    if keras.backend.backend() == "tensorflow":
        _assign_if_tensorflow(pred, values_fn, targets, args)
        return
    values = keras.ops.cond(
        pred, lambda: list(values_fn(*args)), lambda: [t.value for t in targets]
    )
    for target, value in zip(targets, values):
        target.assign(value)


def _assign_if_tensorflow(pred, values_fn, targets, args):
    import tensorflow as tf

    def update_here():
        for target, value in zip(targets, values_fn(*args)):
            target.assign(value)
        return tf.constant(True)

    context = tf.distribute.get_replica_context()
    if not tf.distribute.has_strategy() or context is None:
        # Outside a strategy, or already in cross-replica context.
        tf.cond(tf.convert_to_tensor(pred), update_here, lambda: tf.constant(False))
        return

    def update_mirrored(strategy, pred, *args):
        first = strategy.experimental_local_results
        pred = first(pred)[0]
        args = [first(a)[0] for a in args]

        def update():
            values = values_fn(*args)
            for target, value in zip(targets, values):
                strategy.extended.update(target.value, _assign, args=(value,))
            return tf.constant(True)

        return tf.cond(tf.convert_to_tensor(pred), update, lambda: tf.constant(False))

    context.merge_call(update_mirrored, args=(tf.convert_to_tensor(pred),) + tuple(args))

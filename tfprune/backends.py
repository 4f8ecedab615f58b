"""What differs between the Keras backends, in one place.

tfprune's wrappers hold masks as non-trainable variables and keep pruned
weights at zero. On TensorFlow and PyTorch, a Keras variable constraint does
that: every optimizer applies it right after its update, and it reads the
mask. JAX trains statelessly: `fit` passes the model's variables through a
pure function, the optimizer sees only the trainable weights and its own
state, and a constraint cannot read a mask. So on JAX:

- the wrapped layer reads each masked weight as `weight * mask` inside the
  forward pass (`masked_weights_scope`), so pruned weights neither act nor
  receive gradients;
- a wrapper counts its own training calls (`counts_steps_per_call`), as
  tfmot does, since the optimizer's step count is not visible to the
  forward pass;
- mask updates rank `weight * mask`, so a pruned weight stays pruned.
"""

import contextlib

import keras


def name():
    """The Keras backend in use (`"tensorflow"`, `"jax"`, `"torch"`, ...)."""
    return keras.backend.backend()


def constraints_read_masks():
    """Whether optimizer constraints can read mask variables (not on JAX)."""
    return name() != "jax"


def counts_steps_per_call():
    """Whether a wrapper counts its own training calls instead of optimizer steps (JAX)."""
    return name() == "jax"


def step_dtype():
    """The integer type of step counters: int64 as in tfmot, or int32 on JAX without x64.

    JAX without `jax_enable_x64` has no 64-bit integers: an int64 variable
    would be truncated to int32 with a warning at every creation and cast.
    int32 counts 2**31 - 1 steps.
    """
    if name() == "jax":
        import jax

        if not jax.config.jax_enable_x64:
            return "int32"
    return "int64"


@contextlib.contextmanager
def reading(values, variables=()):
    """Variables read as other values inside the block; assignments still count.

    Args:
      values: `[(keras.Variable, value)]`: inside the block, reading the
        variable gives the value (e.g. `weight * mask`, so gradients flow
        through the product).
      variables: The variables the block may assign (e.g. a layer's moving
        statistics and seeds): their new values are handed on afterwards.

    Within an enclosing `keras.StatelessScope` (JAX's `fit`), the other
    variables keep the values that scope gives them and assignments go to
    it; outside one, assignments are applied to the variables.
    """
    from keras.src.backend.common.stateless_scope import get_stateless_scope

    outer = get_stateless_scope()
    mapped = {id(variable) for variable, _ in values}
    with keras.StatelessScope(state_mapping=list(values)) as scope:
        if outer is not None:
            for key, value in outer.state_mapping.items():
                scope.state_mapping.setdefault(key, value)
        before = dict(scope.state_mapping)
        yield scope
    for variable in variables:
        key = id(variable)
        if key in mapped:
            continue
        value = scope.state_mapping.get(key)
        if value is not None and before.get(key) is not value:
            variable.assign(value)


@contextlib.contextmanager
def masked_weights_scope(pairs, variables=()):
    """On JAX, the block reads each weight of `pairs` as `weight * mask`.

    Args:
      pairs: `[(weight, mask)]`.
      variables: Every variable the block may assign (the wrapped layer's).

    Elsewhere (constraints keep pruned weights at zero) it does nothing.
    """
    if constraints_read_masks() or not pairs:
        yield
        return
    values = [(w, w.value * keras.ops.cast(m.value, w.dtype)) for w, m in pairs]
    with reading(values, variables):
        yield

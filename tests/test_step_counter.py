"""StepCounter: one pruning step per optimizer step, continuing from the wrappers' steps."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfprune.step_counter import StepCounter


def compiled_model():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(keras.optimizers.SGD(0.1), "mse")
    return model


def test_counts_optimizer_steps_from_the_start_step():
    model = compiled_model()
    counter = StepCounter.for_model(model)
    counter.begin(7)
    assert counter.steps_done() == 7 and counter.next_step() == 8
    assert int(counter.current_step()) == 8
    model.fit(np.zeros((8, 3)), np.zeros((8, 2)), batch_size=2, verbose=0)  # 4 optimizer steps
    assert counter.steps_done() == 11 and int(counter.current_step()) == 12
    counter.begin(11)  # a later run that continues: the same count
    assert counter.next_step() == 12


def test_current_step_inside_a_compiled_function_follows_the_optimizer():
    model = compiled_model()
    counter = StepCounter.for_model(model)
    counter.begin(0)
    optimizer = model.optimizer
    optimizer.build(model.trainable_variables)

    @tf.function(jit_compile=True)
    def step():
        seen = counter.current_step()
        grads = [tf.zeros_like(v) for v in model.trainable_variables]
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return seen

    assert [int(step()) for _ in range(3)] == [1, 2, 3]
    counter.begin(40)  # the offset is a variable: the traced function sees it
    assert int(step()) == 41


def test_one_counter_per_model_and_optimizer():
    model = compiled_model()
    assert StepCounter.for_model(model) is StepCounter.for_model(model)
    first = StepCounter.for_model(model)
    model.compile(keras.optimizers.Adam(), "mse")
    assert StepCounter.for_model(model) is not first


def test_a_model_without_an_optimizer_is_a_clear_error():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)], name="bare")
    with pytest.raises(ValueError, match=r"'bare' has no optimizer.*model.optimizer = "):
        StepCounter.for_model(model)

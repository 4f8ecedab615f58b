"""Schedules: tfmot's update decisions and float32 sparsities, bit for bit, on
host integers and on tensor steps (eager, `tf.function`, XLA)."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

import tfprune
from tfprune import schedules

CASES = [
    ("ConstantSparsity", dict(target_sparsity=0.5, begin_step=0)),
    ("ConstantSparsity", dict(target_sparsity=0.8, begin_step=7, end_step=250, frequency=13)),
    ("PolynomialDecay", dict(initial_sparsity=0.0, final_sparsity=0.8, begin_step=0, end_step=500)),
    ("PolynomialDecay", dict(initial_sparsity=0.2, final_sparsity=0.9, begin_step=30,
                             end_step=410, power=2, frequency=7)),
    ("PolynomialDecay", dict(initial_sparsity=0.1, final_sparsity=0.5, begin_step=5,
                             end_step=105, power=1, frequency=1)),
    ("PolynomialDecay", dict(initial_sparsity=0.6, final_sparsity=0.1, begin_step=3,
                             end_step=290, power=2.5, frequency=4)),
    ("PolynomialDecay", dict(initial_sparsity=0.2, final_sparsity=0.8, begin_step=10,
                             end_step=10, frequency=1)),
]


def _tfmot():
    import tensorflow_model_optimization as tfmot

    return tfmot.sparsity.keras


def _pair(name, kwargs):
    return getattr(schedules, name)(**kwargs), getattr(_tfmot(), name)(**kwargs)


def _tfmot_values(theirs, step):
    prune, sparsity = theirs(tf.constant(step, tf.int64))
    return bool(prune.numpy()), float(sparsity.numpy())


def _nan_step(ours, step):
    """tfmot divides 0 by 0 at step == begin_step == end_step (documented)."""
    return getattr(ours, "end_step", -1) == ours.begin_step == step


def _assert_host_parity(ours, theirs, steps):
    for step in steps:
        if _nan_step(ours, step):
            continue
        prune, sparsity = ours(step)
        assert type(prune) is bool and type(sparsity) is float
        assert (prune, sparsity) == _tfmot_values(theirs, step), f"step {step}"


@pytest.mark.parametrize("name, kwargs", CASES)
def test_host_steps_match_tfmot_bit_for_bit(name, kwargs):
    ours, theirs = _pair(name, kwargs)
    _assert_host_parity(ours, theirs, range(0, 520))


@settings(max_examples=25, deadline=None)
@given(
    begin=st.integers(0, 200),
    span=st.integers(0, 5000),
    initial=st.floats(0.0, 0.999),
    final=st.floats(0.0, 0.999),
    power=st.one_of(st.integers(1, 6), st.floats(0.01, 6.0)),
    frequency=st.integers(1, 60),
    data=st.data(),
)
def test_polynomial_decay_matches_tfmot_for_any_arguments(
    begin, span, initial, final, power, frequency, data
):
    kwargs = dict(initial_sparsity=initial, final_sparsity=final, begin_step=begin,
                  end_step=begin + span, power=power, frequency=frequency)
    ours, theirs = _pair("PolynomialDecay", kwargs)
    steps = data.draw(st.lists(st.integers(0, begin + span + 10), min_size=1, max_size=40))
    _assert_host_parity(ours, theirs, steps + [begin, begin + span, begin + span + 1])


def test_equal_begin_and_end_steps_give_final_sparsity_where_tfmot_gives_nan():
    ours, theirs = _pair("PolynomialDecay", dict(initial_sparsity=0.2, final_sparsity=0.8,
                                                 begin_step=10, end_step=10, frequency=1))
    prune, sparsity = _tfmot_values(theirs, 10)
    assert prune and np.isnan(sparsity)
    assert ours(10) == (True, float(np.float32(0.8)))
    assert ours(tf.constant(10, tf.int64))[1].numpy() == np.float32(0.8)


def test_constant_sparsity_is_the_float32_value():
    schedule = tfprune.ConstantSparsity(0.8, 0)
    assert schedule.sparsity(3) == float(np.float32(0.8)) == 0.800000011920929
    assert schedule.sparsity(tf.constant(3)).dtype == tf.float32


def test_endless_constant_sparsity_prunes_on_every_turn():
    schedule = tfprune.ConstantSparsity(0.5, begin_step=4, frequency=3)
    assert [s for s in range(20) if schedule.should_prune(s)] == [4, 7, 10, 13, 16, 19]
    assert schedule.should_prune(10**9 + 3 - (10**9 + 3 - 4) % 3)


TENSOR_CASES = [case for case in CASES if case[0] == "PolynomialDecay"] + [CASES[1]]


@pytest.mark.parametrize("name, kwargs", TENSOR_CASES)
def test_tensor_steps_give_host_values_eagerly_in_graphs_and_under_xla(name, kwargs):
    schedule = getattr(schedules, name)(**kwargs)
    step_var = keras.Variable(0, dtype="int64", trainable=False)
    modes = {
        "eager": schedule,
        "tf.function": tf.function(schedule),
        "xla": tf.function(schedule, jit_compile=True),
        "xla-variable": tf.function(lambda _: schedule(step_var), jit_compile=True),
    }
    end = schedule.end_step if schedule.end_step >= 0 else 300
    steps = sorted(set(range(0, end + 3, 3)) | {schedule.begin_step, end, end + 1})
    for step in steps:
        expected = schedule(step)
        step_var.assign(step)
        for mode, function in modes.items():
            prune, sparsity = function(tf.constant(step, tf.int64))
            assert prune.dtype == tf.bool and sparsity.dtype == tf.float32
            assert (bool(prune), float(sparsity)) == expected, f"{mode} at step {step}"


def test_int32_tensor_steps_work():
    schedule = tfprune.PolynomialDecay(0.1, 0.7, 2, 50, frequency=4)
    prune, sparsity = tf.function(schedule, jit_compile=True)(tf.constant(6, tf.int32))
    assert (bool(prune), float(sparsity)) == schedule(6)


def test_numpy_integer_steps_give_python_values():
    schedule = tfprune.PolynomialDecay(0.1, 0.7, 2, 50, frequency=4)
    for step in (np.int32(6), np.int64(6), np.array(6)):
        prune, sparsity = schedule(step)
        assert (type(prune), type(sparsity)) == (bool, float)
        assert (prune, sparsity) == schedule(6)
    with pytest.raises(ValueError, match="step=2.5"):
        schedule.sparsity(2.5)


def test_constructor_accepts_numpy_and_tensor_integers_as_tfmot_guides_compute_them():
    end_step = np.ceil(60000 / 128).astype(np.int32) * 2
    schedule = tfprune.PolynomialDecay(np.float64(0.5), np.float32(0.8), np.int64(0), end_step,
                                       power=np.int64(3), frequency=tf.constant(10))
    config = schedule.get_config()
    assert config == dict(initial_sparsity=0.5, final_sparsity=float(np.float32(0.8)),
                          begin_step=0, end_step=938, power=3, frequency=10)
    assert [type(config[k]) for k in ("begin_step", "end_step", "frequency", "power")] == [int] * 4
    assert tfprune.ConstantSparsity(0.5, np.float64(4.0)).begin_step == 4


@pytest.mark.parametrize(
    "factory, message",
    [
        (lambda: tfprune.ConstantSparsity(1.0, 0), r"target_sparsity.*\[0, 1\).*target_sparsity=1.0"),
        (lambda: tfprune.ConstantSparsity(-0.1, 0), "target_sparsity=-0.1"),
        (lambda: tfprune.ConstantSparsity(float("nan"), 0), "target_sparsity=nan"),
        (lambda: tfprune.ConstantSparsity(0.5, -1), "begin_step.*begin_step=-1"),
        (lambda: tfprune.ConstantSparsity(0.5, 2.5), "begin_step.*integer.*begin_step=2.5"),
        (lambda: tfprune.ConstantSparsity(0.5, 10, end_step=5), "end_step.*-1.*end_step=5"),
        (lambda: tfprune.ConstantSparsity(0.5, 0, frequency=0), "frequency.*frequency=0"),
        (lambda: tfprune.ConstantSparsity(0.5, 0, frequency="10"), "frequency.*'10'"),
        (lambda: tfprune.PolynomialDecay(0.0, 1.2, 0, 100), "final_sparsity=1.2"),
        (lambda: tfprune.PolynomialDecay(0.0, 0.5, 0, -1), "ConstantSparsity.*end_step=-1"),
        (lambda: tfprune.PolynomialDecay(0.0, 0.5, 100, 50), "end_step.*begin_step=100, end_step=50"),
        (lambda: tfprune.PolynomialDecay(0.0, 0.5, 0, 50, power=-1), "power=-1"),
        (lambda: tfprune.PolynomialDecay(0.0, 0.5, 0, 50, power=0), "power.*> 0.*power=0"),
        (lambda: tfprune.PolynomialDecay(0.0, 0.5, 0, 50, power=float("nan")), "power=nan"),
        (lambda: tfprune.PolynomialDecay(True, 0.5, 0, 50), "initial_sparsity=True"),
    ],
)
def test_bad_arguments_name_the_argument_and_value(factory, message):
    with pytest.raises(ValueError, match=message):
        factory()


@pytest.mark.parametrize("name, kwargs", CASES)
def test_serialization_round_trips(name, kwargs):
    schedule = getattr(schedules, name)(**kwargs)
    assert type(schedule).from_config(schedule.get_config()) == schedule
    keras_form = keras.saving.serialize_keras_object(schedule)
    assert keras.saving.deserialize_keras_object(keras_form) == schedule
    assert schedules.deserialize(keras_form) == schedule
    assert schedules.deserialize(schedules.serialize(schedule)) == schedule
    assert schedules.deserialize(schedule) is schedule


@pytest.mark.parametrize("name, kwargs", CASES)
def test_tfmot_forms_deserialize(name, kwargs):
    ours, theirs = _pair(name, kwargs)
    assert schedules.serialize(ours) == theirs.get_config()
    assert schedules.deserialize(theirs.get_config()) == ours
    assert type(ours).from_config(theirs.get_config()) == ours
    assert schedules.deserialize(theirs) == ours


def test_tfmot_config_with_numpy_steps_deserializes():
    config = {"class_name": "PolynomialDecay",
              "config": {"initial_sparsity": 0.5, "final_sparsity": 0.8, "power": 3,
                         "begin_step": 0, "end_step": np.int32(1876), "frequency": 100}}
    schedule = schedules.deserialize(config)
    assert schedule.end_step == 1876 and type(schedule.end_step) is int


def test_unknown_forms_are_clear_errors():
    with pytest.raises(ValueError, match="pruning_schedule.*'initial_sparsity'.*'class_name'"):
        schedules.deserialize({"initial_sparsity": 0.5})
    with pytest.raises(ValueError, match="pruning_schedule.*Received: 0.5"):
        schedules.deserialize(0.5)


@settings(max_examples=200, deadline=None)
@given(begin=st.integers(0, 50), span=st.integers(-1, 60), frequency=st.integers(1, 9),
       after=st.integers(-1, 120))
def test_first_update_after_is_the_first_step_should_prune_selects(begin, span, frequency, after):
    end = -1 if span < 0 else begin + span
    schedule = tfprune.ConstantSparsity(0.5, begin, end_step=end, frequency=frequency)
    expected = next((s for s in range(after + 1, 400) if schedule.should_prune(s)), None)
    assert schedule.first_update_after(after) == expected

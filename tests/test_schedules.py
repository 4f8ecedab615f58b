"""Schedules: same sparsity and update decision as tfmot's, step by step."""

import pytest
from absl.testing import parameterized

import tfprune

CASES = [
    ("constant", dict(target_sparsity=0.5, begin_step=0)),
    ("constant_window", dict(target_sparsity=0.8, begin_step=7, end_step=250, frequency=13)),
    ("poly", dict(initial_sparsity=0.0, final_sparsity=0.8, begin_step=0, end_step=500)),
    ("poly_offset", dict(initial_sparsity=0.2, final_sparsity=0.9, begin_step=30,
                         end_step=410, power=2, frequency=7)),
    ("poly_linear", dict(initial_sparsity=0.1, final_sparsity=0.5, begin_step=5,
                         end_step=105, power=1, frequency=1)),
]


class ScheduleParityTest(parameterized.TestCase):
    @parameterized.named_parameters(*CASES)
    def test_matches_tfmot(self, kwargs):
        import tensorflow_model_optimization as tfmot

        name = "ConstantSparsity" if "target_sparsity" in kwargs else "PolynomialDecay"
        ours = getattr(tfprune, name)(**kwargs)
        theirs = getattr(tfmot.sparsity.keras, name)(**kwargs)
        for step in range(0, 600):
            their_prune, their_sparsity = theirs(step)
            our_prune, our_sparsity = ours(step)
            self.assertEqual(our_prune, bool(their_prune), f"update decision at step {step}")
            self.assertAlmostEqual(our_sparsity, float(their_sparsity), places=6,
                                   msg=f"sparsity at step {step}")

    @parameterized.named_parameters(*CASES)
    def test_config_round_trip(self, kwargs):
        import keras

        name = "ConstantSparsity" if "target_sparsity" in kwargs else "PolynomialDecay"
        schedule = getattr(tfprune, name)(**kwargs)
        restored = keras.saving.deserialize_keras_object(
            keras.saving.serialize_keras_object(schedule))
        self.assertEqual(schedule, restored)


@pytest.mark.parametrize(
    "factory, message",
    [
        (lambda: tfprune.ConstantSparsity(1.0, 0), "target_sparsity"),
        (lambda: tfprune.ConstantSparsity(-0.1, 0), "target_sparsity"),
        (lambda: tfprune.ConstantSparsity(0.5, -1), "begin_step"),
        (lambda: tfprune.ConstantSparsity(0.5, 10, end_step=5), "end_step"),
        (lambda: tfprune.ConstantSparsity(0.5, 0, frequency=0), "frequency"),
        (lambda: tfprune.PolynomialDecay(0.0, 1.2, 0, 100), "final_sparsity"),
        (lambda: tfprune.PolynomialDecay(0.0, 0.5, 0, -1), "end_step"),
        (lambda: tfprune.PolynomialDecay(0.0, 0.5, 100, 50), "end_step"),
    ],
)
def test_bad_arguments_name_the_argument(factory, message):
    with pytest.raises(ValueError, match=message):
        factory()

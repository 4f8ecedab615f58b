"""UpdatePruningStep and PruningSummaries: warnings and errors that name the cause."""

import logging

import keras
import numpy as np
import pytest

import tfprune

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
RNG = np.random.default_rng(0)
X = RNG.normal(size=(64, 6)).astype("float32")
Y = RNG.integers(0, 3, size=64).astype("int32")


def pruned(schedule, **kwargs):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, name="hidden"),
                              keras.layers.Dense(3, name="out")])
    model = tfprune.prune_low_magnitude(model, schedule, **kwargs)
    model.compile(keras.optimizers.Adam(1e-2), LOSS)
    return model


def fit(model, epochs=2, callbacks=()):
    model.fit(X, Y, batch_size=16, epochs=epochs, verbose=0, shuffle=False,
              callbacks=[tfprune.UpdatePruningStep(), *callbacks])


def warnings_in(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


@pytest.mark.parametrize(
    "schedule, reason",
    [
        (tfprune.ConstantSparsity(0.5, 0, end_step=50), "no update step at all"),  # frequency 100
        (tfprune.PolynomialDecay(0.0, 0.5, begin_step=20, end_step=40, frequency=5),
         "first update is at step 20, after the last step"),
    ],
)
def test_a_schedule_that_never_prunes_in_the_training_warns_once(caplog, schedule, reason):
    model = pruned(schedule)
    with caplog.at_level(logging.WARNING):
        fit(model)  # 8 steps
    messages = [m for m in warnings_in(caplog) if "never prunes" in m]
    assert len(messages) == 1, messages
    assert reason in messages[0] and "steps 1 to 8" in messages[0]


def test_a_schedule_that_prunes_or_has_pruned_does_not_warn(caplog):
    model = pruned(tfprune.ConstantSparsity(0.5, 0, end_step=4, frequency=2))
    with caplog.at_level(logging.WARNING):
        fit(model)
        fit(model)  # fine-tuning after end_step: pruned already, no warning
    assert not [m for m in warnings_in(caplog) if "never prunes" in m]


@pytest.mark.parametrize("order", ["stopping_first", "stopping_last"])
def test_early_stopping_that_restores_a_less_sparse_epoch_warns(caplog, order):
    schedule = tfprune.PolynomialDecay(0.0, 0.8, begin_step=1, end_step=16, frequency=1)
    model = pruned(schedule)

    class Worse(keras.callbacks.Callback):  # the first epoch is the best one
        def on_epoch_end(self, epoch, logs=None):
            logs["val_score"] = float(epoch)

    stopping = keras.callbacks.EarlyStopping(monitor="val_score", mode="min", patience=1,
                                             restore_best_weights=True)
    update = tfprune.UpdatePruningStep()
    callbacks = [Worse(), stopping, update] if order == "stopping_first" else [update, Worse(), stopping]
    with caplog.at_level(logging.WARNING):
        model.fit(X, Y, batch_size=16, epochs=4, verbose=0, shuffle=False, callbacks=callbacks)
    messages = [m for m in warnings_in(caplog) if "replaced by an earlier state" in m]
    assert len(messages) == 1, warnings_in(caplog)
    assert "of step 4" in messages[0] and "restore_best_weights" in messages[0]


def test_pruning_summaries_log_dir_under_a_file_is_a_clear_error(tmp_path):
    blocker = tmp_path / "logs"
    blocker.write_text("not a folder")
    model = pruned(tfprune.ConstantSparsity(0.5, 0, frequency=1))
    with pytest.raises(ValueError, match=r"log folder .*logs.*(Not a directory|File exists)"):
        fit(model, callbacks=[tfprune.PruningSummaries(str(blocker))])

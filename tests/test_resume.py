"""Interrupted pruning runs resume with step, masks and schedule intact; bad files fail clearly."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import tfprune
from tfprune import checkpointing
from pruning_oracle import expected_zeros, last_update_step

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
WORKER = os.path.join(os.path.dirname(__file__), "_workers", "resume_worker.py")
ORDERS = ["step_first", "backup_first"]

# -- small in-process runs ------------------------------------------------------

SCHEDULE = tfprune.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=40, frequency=2)
RNG = np.random.default_rng(0)
X = RNG.normal(size=(128, 20)).astype("float32")
Y = RNG.integers(0, 3, size=128).astype("int32")
BATCH = 16  # 8 steps per epoch


class Interrupt(Exception):
    pass


def small_model(units=16, prune=True, optimizer=None):
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [keras.Input((20,)), keras.layers.Dense(units, name="d1"), keras.layers.Dense(3, name="d2")],
        name="small",
    )
    if prune:
        model = tfprune.prune_low_magnitude(model, SCHEDULE)
    model.compile(optimizer or keras.optimizers.Adam(1e-2), LOSS)
    return model


def wrappers(model):
    return tfprune.callbacks.collect_wrappers(model)


def interrupted_backup(backup_dir, model, at_batch=5, data=(X, Y), **backup_kwargs):
    """Trains with BackupAndRestore(save_freq=2) until an exception after `at_batch`."""

    class Stop(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == at_batch:
                raise Interrupt()

    callbacks = [keras.callbacks.BackupAndRestore(backup_dir, save_freq=2, **backup_kwargs)]
    if wrappers(model):
        callbacks.append(tfprune.UpdatePruningStep())
    with pytest.raises(Interrupt):
        model.fit(*data, batch_size=BATCH, epochs=2, verbose=0, shuffle=False,
                  callbacks=callbacks + [Stop()])


def resume(backup_dir, model, order="step_first", data=(X, Y), **backup_kwargs):
    """Fits with [UpdatePruningStep, BackupAndRestore] (or reversed); returns the first batch's view."""
    update = tfprune.UpdatePruningStep()
    backup = keras.callbacks.BackupAndRestore(backup_dir, save_freq=2, **backup_kwargs)
    first = {}

    class Probe(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            steps = {int(w.pruning_step.numpy()) for w in wrappers(model)}
            first.setdefault("graph", steps)
            first.setdefault("callback", update.step)
            assert steps == {update.step}, (steps, update.step)

    callbacks = [update, backup] if order == "step_first" else [backup, update]
    model.fit(*data, batch_size=BATCH, epochs=2, verbose=0, shuffle=False,
              callbacks=callbacks + [Probe()])
    return first


def assert_schedule_state(model, schedule, final_step):
    for wrapper in wrappers(model):
        assert int(wrapper.pruning_step.numpy()) == final_step
        for weight, mask in wrapper.masked_weights:
            w, m = weight.numpy(), mask.numpy()
            assert int((m == 0).sum()) == expected_zeros(w.size, schedule, final_step), weight.path
            assert np.all(w[m == 0] == 0), weight.path


@pytest.mark.parametrize("order", ORDERS)
def test_in_process_resume_takes_step_from_backup_in_either_callback_order(tmp_path, order):
    backup_dir = str(tmp_path / "backup")
    interrupted_backup(backup_dir, small_model(), at_batch=5)  # backups after batches 1, 3, 5
    model = small_model()
    first = resume(backup_dir, model, order)
    # The interrupted epoch is run again from its first batch (Keras 3 restores
    # the epoch, not the batch); pruning continues counting from the backup.
    assert first == {"graph": {6}, "callback": 6}
    assert int(model.optimizer.iterations.numpy()) == 6 + 16
    assert_schedule_state(model, SCHEDULE, 6 + 16)
    assert not os.path.exists(backup_dir)


def small_channel_model():
    keras.utils.set_random_seed(1)
    inputs = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(8, 3, name="c1")(inputs)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.ReLU(name="relu")(h)
    h = keras.layers.Conv2D(8, 3, name="c2")(h)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    model = keras.Model(inputs, keras.layers.Dense(3, name="out")(h), name="channels")
    model = tfprune.prune_channels(model, SCHEDULE)
    model.compile(keras.optimizers.Adam(1e-2), LOSS)
    return model


@pytest.mark.skipif(not hasattr(tfprune, "prune_channels"), reason="channel pruning has not landed")
@pytest.mark.parametrize("order", ORDERS)
def test_in_process_resume_of_channel_pruning_in_either_callback_order(tmp_path, order):
    from tfprune.channel_pruning import kept_count

    images = (RNG.normal(size=(128, 8, 8, 3)).astype("float32"), Y)
    backup_dir = str(tmp_path / "backup")
    interrupted_backup(backup_dir, small_channel_model(), at_batch=5, data=images)
    model = small_channel_model()
    assert resume(backup_dir, model, order, data=images) == {"graph": {6}, "callback": 6}
    final = 6 + 16
    assert int(model.optimizer.iterations.numpy()) == final
    checkpointing.validate_restored_masks(model)  # every masked weight is zero
    sparsity = SCHEDULE.sparsity(last_update_step(SCHEDULE, final))
    for wrapper in wrappers(model):
        assert int(wrapper.pruning_step.numpy()) == final
        for slot, mask in wrapper.channel_masks().items():
            if wrapper.name in ("prune_channels_c1", "prune_channels_bn", "prune_channels_c2") \
                    and slot in ("out", "channel"):
                assert int((mask == 0).sum()) == 8 - kept_count(8, sparsity), (wrapper.name, slot)


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
@pytest.mark.parametrize("order", ORDERS)
def test_unreadable_backup_is_a_clear_error(tmp_path, damage, order):
    backup_dir = str(tmp_path / "backup")
    interrupted_backup(backup_dir, small_model())
    path = os.path.join(backup_dir, "latest.weights.h5")
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2] if damage == "truncated" else b"\x00garbage" * 64)
    model = small_model()
    with pytest.raises(ValueError, match="cannot be read") as raised:
        resume(backup_dir, model, order)
    message = str(raised.value)
    assert isinstance(raised.value, checkpointing.CheckpointError)
    assert path in message and "delete the backup directory" in message
    assert "double_checkpoint=True" in message
    assert int(wrappers(model)[0].pruning_step.numpy()) <= 0  # nothing trained


def test_damaged_backup_falls_back_to_previous_one_with_double_checkpoint(tmp_path):
    backup_dir = str(tmp_path / "backup")
    interrupted_backup(backup_dir, small_model(), at_batch=5, double_checkpoint=True)
    path = os.path.join(backup_dir, "latest.weights.h5")
    with open(path, "r+b") as f:
        f.truncate(100)
    model = small_model()
    # CheckpointError is also an OSError, so BackupAndRestore takes the previous backup.
    first = resume(backup_dir, model, double_checkpoint=True)
    assert first == {"graph": {4}, "callback": 4}
    assert_schedule_state(model, SCHEDULE, 4 + 16)


@pytest.mark.parametrize("order", ORDERS)
def test_backup_of_a_different_model_is_a_clear_error(tmp_path, order):
    backup_dir = str(tmp_path / "backup")
    interrupted_backup(backup_dir, small_model(prune=False))  # the unpruned model's backup
    with pytest.raises(ValueError, match="fits only the model that wrote it") as raised:
        resume(backup_dir, small_model(), order)
    assert os.path.join(backup_dir, "latest.weights.h5") in str(raised.value)
    other_dir = str(tmp_path / "other")
    interrupted_backup(other_dir, small_model(units=8))  # pruned, other shapes
    with pytest.raises(ValueError, match="fits only the model that wrote it"):
        resume(other_dir, small_model(), order)


@pytest.mark.parametrize("order", ORDERS)
def test_backup_whose_masks_do_not_belong_to_its_weights_is_a_clear_error(tmp_path, order):
    backup_dir = str(tmp_path / "backup")
    path = os.path.join(backup_dir, "latest.weights.h5")
    source = small_model()
    interrupted_backup(backup_dir, source)
    weight, mask = wrappers(source)[0].masked_weights[0]

    mask.assign(np.full(mask.shape, 0.5, "float32"))  # not a mask
    source.save_weights(path)
    with pytest.raises(ValueError, match=r"prune_low_magnitude_d1.*other than 0 and 1") as raised:
        resume(backup_dir, small_model(), order)
    assert path in str(raised.value)

    mask.assign(np.zeros(mask.shape, "float32"))  # removes weights that are not zero
    weight.assign(np.ones(weight.shape, "float32"))
    source.save_weights(path)
    with pytest.raises(ValueError, match=r"weights of 'd1/kernel'.*nonzero although"):
        resume(backup_dir, small_model(), order)


@pytest.mark.parametrize("order", ORDERS)
def test_backup_metadata_without_weights_is_a_clear_error(tmp_path, order):
    backup_dir = str(tmp_path / "backup")
    interrupted_backup(backup_dir, small_model())
    os.remove(os.path.join(backup_dir, "latest.weights.h5"))
    with pytest.raises(ValueError, match="restored no weights"):
        resume(backup_dir, small_model(), order)


# -- ModelCheckpoint files --------------------------------------------------------


def test_model_checkpoint_files_load_and_resume(tmp_path):
    keras_path, weights_path = str(tmp_path / "ckpt.keras"), str(tmp_path / "ckpt.weights.h5")
    model = small_model()
    model.fit(X, Y, batch_size=BATCH, epochs=1, verbose=0, shuffle=False, callbacks=[
        tfprune.UpdatePruningStep(),
        keras.callbacks.ModelCheckpoint(keras_path),
        keras.callbacks.ModelCheckpoint(weights_path, save_weights_only=True),
    ])
    restored = [checkpointing.load_model(keras_path), keras.models.load_model(keras_path)]
    fresh = small_model()
    checkpointing.load_weights(fresh, weights_path)
    restored.append(fresh)
    fresh = small_model()
    fresh.optimizer.build(fresh.trainable_variables)  # else Keras skips the optimizer's state
    fresh.load_weights(weights_path)
    restored.append(fresh)

    def fit_more(m):
        m.fit(X, Y, batch_size=BATCH, epochs=1, verbose=0, shuffle=False,
              callbacks=[tfprune.UpdatePruningStep()])

    fit_more(model)
    reference = [mask.numpy() for w in wrappers(model) for _, mask in w.masked_weights]
    for m in restored:
        assert [int(w.pruning_step.numpy()) for w in wrappers(m)] == [8, 8]
        fit_more(m)
        assert_schedule_state(m, SCHEDULE, 16)
        for mask, expected in zip((mask for w in wrappers(m) for _, mask in w.masked_weights), reference):
            np.testing.assert_array_equal(mask.numpy(), expected)


def test_damaged_or_foreign_checkpoint_files_are_clear_errors(tmp_path):
    keras_path, weights_path = str(tmp_path / "ckpt.keras"), str(tmp_path / "ckpt.weights.h5")
    model = small_model()
    model.fit(X, Y, batch_size=BATCH, epochs=1, verbose=0, callbacks=[tfprune.UpdatePruningStep()])
    model.save(keras_path)
    model.save_weights(weights_path)
    for path in (keras_path, weights_path):
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
    with pytest.raises(ValueError, match="cannot be read") as raised:
        checkpointing.load_model(keras_path)
    assert keras_path in str(raised.value)
    with pytest.raises(ValueError, match="cannot be read") as raised:
        checkpointing.load_weights(small_model(), weights_path)
    assert weights_path in str(raised.value)

    small_model(units=8).save_weights(weights_path)
    with pytest.raises(ValueError, match="fits only the model that wrote it"):
        checkpointing.load_weights(small_model(), weights_path)

    # A loaded state that is not consistent is refused when training starts, too.
    model.save(keras_path)
    loaded = keras.models.load_model(keras_path)
    weight, mask = wrappers(loaded)[1].masked_weights[0]
    mask.assign(np.zeros(mask.shape, "float32"))
    weight.assign(np.ones(weight.shape, "float32"))
    with pytest.raises(ValueError, match=r"prune_low_magnitude_d2.*apply_masks"):
        loaded.fit(X, Y, batch_size=BATCH, verbose=0, callbacks=[tfprune.UpdatePruningStep()])
    checkpointing.apply_masks(loaded)
    loaded.fit(X, Y, batch_size=BATCH, verbose=0, callbacks=[tfprune.UpdatePruningStep()])


def test_a_damaged_or_foreign_weights_payload_inside_a_sound_keras_zip_is_a_clear_error(tmp_path):
    import zipfile

    good, other = str(tmp_path / "good.keras"), str(tmp_path / "other.keras")
    small_model().save(good)
    small_model(units=8, prune=False).save(other)
    with zipfile.ZipFile(good) as original, zipfile.ZipFile(other) as foreign:
        names = original.namelist()
        parts = {n: original.read(n) for n in names}
        foreign_weights = foreign.read("model.weights.h5")
    payload = parts["model.weights.h5"]
    for name, weights, message in [
        ("damaged.keras", payload[:512] + bytes(len(payload) - 512), "cannot be read"),
        ("foreign.keras", foreign_weights, "fits only the model that wrote it"),
    ]:
        path = str(tmp_path / name)
        with zipfile.ZipFile(path, "w") as out:
            for n in names:
                out.writestr(n, weights if n == "model.weights.h5" else parts[n])
        with pytest.raises(ValueError, match=message) as raised:
            checkpointing.load_model(path)
        assert path in str(raised.value)


def test_masked_weights_stay_zero_when_the_optimizer_swaps_in_averages():
    # Adam(use_ema=True) replaces the weights by their moving averages when fit
    # ends; the callback re-applies the masks after that.
    model = small_model(optimizer=keras.optimizers.Adam(1e-2, use_ema=True))
    for _ in range(2):
        model.fit(X, Y, batch_size=BATCH, epochs=1, verbose=0, callbacks=[tfprune.UpdatePruningStep()])
        for wrapper in wrappers(model):
            for weight, mask in wrapper.masked_weights:
                assert (mask.numpy() == 0).any()
                assert np.all(weight.numpy()[mask.numpy() == 0] == 0)


# -- a real kill -------------------------------------------------------------------


@pytest.mark.parametrize("order", ORDERS)
def test_sigkill_mid_epoch_then_restart_resumes_from_last_backup(tmp_path, order):
    sys.path.insert(0, os.path.dirname(WORKER))
    try:
        import resume_worker as spec
    finally:
        sys.path.pop(0)
    backup_dir, out = str(tmp_path / "backup"), str(tmp_path / "result.json")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}

    def run(kill_at):
        return subprocess.run([sys.executable, WORKER, backup_dir, out, order, str(kill_at)],
                              capture_output=True, text=True, timeout=240, env=env)

    # 10 batches an epoch, a backup every 3 batches: the last backup before the
    # kill after batch 17 (epoch 1, batch 6) holds 15 steps.
    killed = run(17)
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert not os.path.exists(out)
    with open(os.path.join(backup_dir, "training_metadata.json")) as f:
        assert json.load(f)["epoch"] == 1
    finished = run(-1)
    assert finished.returncode == 0, finished.stderr[-3000:]
    with open(out) as f:
        result = json.load(f)
    assert result["first"] == {"pruning_step": 15, "callback_step": 15, "iterations": 15}
    assert result["disagreements"] == []
    # Epoch 1 runs again from its first batch, then epoch 2: 20 more steps.
    final = 15 + 2 * spec.STEPS_PER_EPOCH
    assert result["epochs_run"] == 2 and result["batches"] == 20
    assert result["pruning_steps"] == [final] * 3 and result["iterations"] == final
    schedule = tfprune.PolynomialDecay(**spec.SCHEDULE)
    for path, layer in result["layers"].items():
        assert layer["mask_zeros"] == expected_zeros(layer["size"], schedule, final), path
        assert layer["masked_nonzero"] == 0, path
    assert not result["backup_left"]

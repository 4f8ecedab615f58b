"""A pruning run with BackupAndRestore that can SIGKILL itself (tests/test_resume.py).

Usage: python resume_worker.py BACKUP_DIR OUT_JSON ORDER KILL_AT

ORDER is "step_first" ([UpdatePruningStep, BackupAndRestore]) or "backup_first".
KILL_AT is the number of training batches after which the process kills
itself with SIGKILL (after that batch's backup, if any), or -1 to train to the
end. A run that ends writes OUT_JSON: what the first batch saw, whether the
callback's step ever disagreed with the in-graph counter, and the final state.
"""

import json
import os
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfprune  # noqa: E402

EPOCHS = 3
STEPS_PER_EPOCH = 10
BATCH = 32
SAVE_FREQ = 3
SCHEDULE = dict(initial_sparsity=0.0, final_sparsity=0.9, begin_step=0, end_step=60, frequency=2)


def build():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((28, 28, 1))
    h = keras.layers.Conv2D(4, 3, strides=2, activation="relu", name="conv")(inputs)
    h = keras.layers.Flatten(name="flatten")(h)
    h = keras.layers.Dense(16, activation="relu", name="hidden")(h)
    model = keras.Model(inputs, keras.layers.Dense(10, name="logits")(h))
    model = tfprune.prune_low_magnitude(model, tfprune.PolynomialDecay(**SCHEDULE))
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def main(backup_dir, out_json, order, kill_at):
    (x, y), _ = tfprune.datasets.load_fashion_mnist()
    n = STEPS_PER_EPOCH * BATCH
    x = x[:n, ..., None].astype("float32") / 255.0
    y = y[:n].astype("int32")
    model = build()
    wrappers = tfprune.callbacks.collect_wrappers(model)
    update = tfprune.UpdatePruningStep()
    backup = keras.callbacks.BackupAndRestore(backup_dir, save_freq=SAVE_FREQ)
    seen = {"batches": 0, "first": None, "disagreements": []}

    class Probe(keras.callbacks.Callback):
        """Last in the list: sees each batch after every other callback's begin."""

        def on_train_batch_begin(self, batch, logs=None):
            graph_step = int(wrappers[0].pruning_step.numpy())
            if seen["first"] is None:
                seen["first"] = {
                    "pruning_step": graph_step,
                    "callback_step": update.step,
                    "iterations": int(model.optimizer.iterations.numpy()),
                }
            if graph_step != update.step:
                seen["disagreements"].append([graph_step, update.step])

        def on_train_batch_end(self, batch, logs=None):
            seen["batches"] += 1
            if seen["batches"] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

    callbacks = [update, backup] if order == "step_first" else [backup, update]
    history = model.fit(
        x, y, batch_size=BATCH, epochs=EPOCHS, shuffle=False, verbose=0,
        callbacks=callbacks + [Probe()],
    )
    layers = {}
    for wrapper in wrappers:
        for weight, mask in wrapper.masked_weights:
            w, m = weight.numpy(), mask.numpy()
            layers[weight.path] = {
                "size": int(w.size),
                "mask_zeros": int((m == 0).sum()),
                "masked_nonzero": int((w[m == 0] != 0).sum()),
            }
    result = {
        "first": seen["first"],
        "disagreements": seen["disagreements"],
        "batches": seen["batches"],
        "epochs_run": len(history.history.get("loss", [])),
        "pruning_steps": [int(w.pruning_step.numpy()) for w in wrappers],
        "iterations": int(model.optimizer.iterations.numpy()),
        "layers": layers,
        "backup_left": os.path.exists(backup_dir),
    }
    with open(out_json, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))

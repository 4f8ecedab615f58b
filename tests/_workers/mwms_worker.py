"""One worker of a two-process MultiWorkerMirroredStrategy run (tests/test_distributed.py).

Usage: TF_CONFIG=... python mwms_worker.py OUT_DIR KIND [KIND ...]

KIND is one of shared.KINDS. The same script runs on every worker, as
a user's would: build and wrap the model in the strategy's scope, fit with
UpdatePruningStep. For each kind it writes OUT_DIR/<kind>_worker<i>.json: a
digest of all masks and all weights at every mask update and at the end, the
steps and sparsities. The chief (worker 0) saves OUT_DIR/<kind>.keras.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import shared  # noqa: E402

STEPS = 12
GLOBAL_BATCH = 32


def train(strategy, kind, index, out_dir):
    import keras

    import tfprune

    x, y = shared.fashion(STEPS * GLOBAL_BATCH)
    keras.utils.set_random_seed(index + 1)  # different seeds: the strategy must sync the weights
    with strategy.scope():
        model, _ = shared.pruned_cnn(kind)
    pairs = shared.masked_pairs(model)
    wrappers = tfprune.callbacks.collect_wrappers(model)
    updates = []
    if kind == "unstructured_diverged" and index == 1:
        # As if this worker had restored another run's backup.
        mask = np.ones(pairs[0][1].shape, "float32")
        mask.reshape(-1)[0] = 0
        wrappers[0].set_masks([mask])

    def masks():
        return [mask.numpy() for _, mask in pairs]

    class Record(keras.callbacks.Callback):
        """After each batch: the step at which masks changed (before its forward pass)."""

        last = None

        def on_train_batch_end(self, batch, logs=None):
            current = shared.digest(masks())
            if current != self.last:
                self.last = current
                step = int(wrappers[0].pruning_step.numpy())
                updates.append([step, current, shared.digest([v.numpy() for v in model.weights])])
            for weight, mask in pairs if shared.pruned_weights_must_be_zero(model) else ():
                w = weight.numpy()
                if np.any(w[shared.removed(w, mask.numpy())] != 0):
                    raise AssertionError(f"{weight.path}: a masked weight is nonzero after batch {batch}")

    Record.last = shared.digest([mask.numpy() for _, mask in pairs])  # the masks before training
    model.fit(x, y, batch_size=GLOBAL_BATCH, epochs=1, shuffle=False, verbose=0,
              callbacks=[tfprune.UpdatePruningStep(), Record()])
    result = {
        "index": index,
        "replicas": int(strategy.num_replicas_in_sync),
        "updates": updates,
        "masks": shared.digest(masks()),
        "weights": {v.path: shared.digest([v.numpy()]) for v in model.weights},
        "pruning_steps": [int(w.pruning_step.numpy()) for w in wrappers],
        "iterations": int(model.optimizer.iterations.numpy()),
        "sparsity": {
            weight.path: float(np.mean(weight.numpy() == 0)) for weight, _ in pairs
        },
    }
    if index == 0:  # the chief writes the model
        model.save(os.path.join(out_dir, f"{kind}.keras"))
    path = os.path.join(out_dir, f"{kind}_worker{index}.json")
    with open(path + ".tmp", "w") as f:
        json.dump(result, f)
    os.replace(path + ".tmp", path)


def main(out_dir, kinds):
    tf.config.threading.set_intra_op_parallelism_threads(1)
    import tfprune

    tfprune.multi_worker.enable_multi_worker_fit()  # Keras 3 fit under MultiWorkerMirroredStrategy
    # The strategy must exist before any other TensorFlow op runs.
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    index = int(json.loads(os.environ["TF_CONFIG"])["task"]["index"])
    for kind in kinds:
        try:
            train(strategy, kind, index, out_dir)
        except ValueError as error:  # every worker raises at the same step
            with open(os.path.join(out_dir, f"{kind}_worker{index}.json"), "w") as f:
                json.dump({"index": index, "error": str(error)}, f)
    # A last collective: neither worker leaves while the other still needs it.
    strategy.reduce("SUM", strategy.run(lambda: tf.constant(1.0)), axis=None)
    print(f"WORKER_{index}_DONE", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown: the collective runtime can block it once the peer has left.
    os._exit(0)

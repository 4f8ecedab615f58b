"""MirroredStrategy over two logical CPUs (tests/test_distributed.py).

Usage: python mirrored_worker.py OUT_JSON KIND [KIND ...]

After every batch's mask update, and after every optimizer step, compares the
two replicas' copies of every mask and every weight, and checks that each
replica's masked weights are zero. Writes what it saw to OUT_JSON.
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


def per_replica(variable):
    return [np.asarray(v.numpy()) for v in variable.value.values]


def train(strategy, kind):
    import keras

    import tfprune

    x, y = shared.fashion(STEPS * GLOBAL_BATCH)
    with strategy.scope():
        model, schedule = shared.pruned_cnn(kind)
    pairs = shared.masked_pairs(model)
    wrappers = tfprune.callbacks.collect_wrappers(model)
    seen = {"updates": [], "checks": 0, "problems": []}

    def compare(where):
        seen["checks"] += 1
        for variable in model.weights:
            copies = per_replica(variable)
            if len(copies) != 2:
                seen["problems"].append(f"{where}: {variable.path} has {len(copies)} replicas")
            elif not np.array_equal(copies[0], copies[1]):
                seen["problems"].append(f"{where}: replicas differ in {variable.path}")
        for weight, mask in pairs if shared.pruned_weights_must_be_zero(model) else ():
            for w, m in zip(per_replica(weight), per_replica(mask)):
                if np.any(w[shared.removed(w, m)] != 0):
                    seen["problems"].append(f"{where}: masked weight of {weight.path} nonzero")

    class Check(keras.callbacks.Callback):
        """After each batch: masks changed at its step (before its forward pass)?"""

        last = None

        def on_train_batch_end(self, batch, logs=None):
            current = shared.digest([mask.numpy() for _, mask in pairs])
            if current != self.last:
                self.last = current
                seen["updates"].append(int(wrappers[0].pruning_step.numpy()))
                compare(f"after the mask update at batch {batch}")
            compare(f"after the optimizer step of batch {batch}")

    Check.last = shared.digest([mask.numpy() for _, mask in pairs])  # the masks before training
    model.fit(x, y, batch_size=GLOBAL_BATCH, epochs=1, shuffle=False, verbose=0,
              callbacks=[tfprune.UpdatePruningStep(), Check()])
    seen["expected_updates"] = [s for s in range(1, STEPS + 1) if schedule.should_prune(s)]
    seen["pruning_steps"] = sorted({int(w.pruning_step.numpy()) for w in wrappers})
    seen["sparsity"] = {weight.path: float(np.mean(weight.numpy() == 0)) for weight, _ in pairs}
    return seen


def main(out_json, kinds):
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    result = {kind: train(strategy, kind) for kind in kinds}
    with open(out_json, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])

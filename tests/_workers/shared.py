"""What the worker scripts share: the model, the schedule, the data, digests."""

import hashlib

import numpy as np

KINDS = ("unstructured", "channels", "channels_taylor", "unstructured_diverged")


def digest(arrays):
    h = hashlib.sha256()
    for array in arrays:
        h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()


def fashion(n):
    import tfprune

    (x, y), _ = tfprune.datasets.load_fashion_mnist()
    return x[:n, ..., None].astype("float32") / 255.0, y[:n].astype("int32")


def pruned_cnn(kind):
    """A small CNN with BatchNormalization, pruned as `kind` says; build it in the strategy's scope.

    BatchNormalization is `synchronized=True`: Keras otherwise keeps one set of
    moving statistics per replica, each from its own share of the batch.
    """
    import keras

    import tfprune

    inputs = keras.Input((28, 28, 1), name="image")
    h = keras.layers.Conv2D(8, 3, activation="relu", name="conv1")(inputs)
    h = keras.layers.MaxPooling2D(name="pool")(h)
    h = keras.layers.Conv2D(16, 3, name="conv2")(h)
    h = keras.layers.BatchNormalization(synchronized=True, name="bn")(h)
    h = keras.layers.ReLU(name="relu")(h)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    outputs = keras.layers.Dense(10, name="logits")(h)
    model = keras.Model(inputs, outputs, name=f"{kind}_cnn")
    schedule = tfprune.PolynomialDecay(0.0, 0.6, begin_step=0, end_step=8, frequency=2)
    if kind == "channels":
        model = tfprune.prune_channels(model, schedule)
    elif kind == "channels_taylor":  # importance from gradients seen in training
        model = tfprune.prune_channels(model, schedule, importance="taylor")
    else:  # "unstructured", or "unstructured_diverged" (the workers start from different masks)
        model = tfprune.prune_low_magnitude(model, schedule)
    model.compile(
        keras.optimizers.Adam(1e-2),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model, schedule


def masked_pairs(model):
    import tfprune

    return [pair for w in tfprune.callbacks.collect_wrappers(model) for pair in w.masked_weights]


def removed(weight_value, mask_value):
    """Where the mask removes weights, broadcast to the weight's shape."""
    return np.broadcast_to(mask_value == 0, weight_value.shape)


def pruned_weights_must_be_zero(model):
    """False right before a magnitude-mask update, where tfprune (as tfmot) keeps
    the optimizer's values of pruned weights for the update to rank."""
    import tfprune

    return not any(
        w.pruned_values_may_be_nonzero(int(w.pruning_step.numpy()))
        for w in tfprune.callbacks.collect_wrappers(model)
    )

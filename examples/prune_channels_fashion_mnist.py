r"""Structured channel pruning on Fashion-MNIST: a thinner model, not a sparser one.

1. Train a small CNN with BatchNormalization and a residual block (dense).
2. Wrap it with `tfprune.prune_channels` and fine-tune while a
   `PolynomialDecay` schedule removes channels gradually, up to half of the
   channels of every prunable group (the residual block's channels are one
   group: the `Add` couples them).
3. `tfprune.shrink`: a plain Keras model with fewer filters, which computes
   what the masked model computed.

For a fair baseline the dense model is also fine-tuned for the same epochs,
with the same learning-rate schedule, without pruning; the shrunk model is
compared with the better of the two dense accuracies. Prints the dependency
summary, the accuracies, the parameter and MAC reduction, and whether the
shrunk model is within `--max_drop` points of dense.

Usage:
  python examples/prune_channels_fashion_mnist.py
  python examples/prune_channels_fashion_mnist.py --importance=taylor --finetune_epochs=4
"""

import os
import time

from tflite_export import _quiet  # noqa: E402

_quiet.setup()  # before TensorFlow: no CUDA/oneDNN start-up lines

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("dense_epochs", 6, "Epochs of dense training.")
flags.DEFINE_integer("finetune_epochs", 6, "Epochs of fine-tuning with channel pruning.")
flags.DEFINE_integer("batch_size", 128, "Batch size for both phases.")
flags.DEFINE_float("learning_rate", 2e-3, "Peak Adam learning rate for dense training (cosine).")
flags.DEFINE_float("finetune_learning_rate", 1e-3, "Peak Adam learning rate for fine-tuning (cosine).")
flags.DEFINE_float("final_sparsity", 0.5, "Fraction of channels removed per group at the end.")
flags.DEFINE_float("ramp_fraction", 0.34,
                   "Fraction of fine-tuning over which channels are removed; the rest recovers.")
flags.DEFINE_integer("frequency", 50, "Steps between mask updates.")
flags.DEFINE_enum("importance", "l2", ["l1", "l2", "bn_scale", "taylor"], "Channel importance.")
flags.DEFINE_integer("round_to", 1, "Kept channels per group are a multiple of this.")
flags.DEFINE_float("max_drop", 1.0, "Target: shrunk accuracy at most this many points below dense.")
flags.DEFINE_integer("num_train", 60000, "Training images used (<= 60000).")
flags.DEFINE_integer("seed", 0, "Random seed.")
flags.DEFINE_integer("verbose", 2, "Keras fit verbosity (0, 1 or 2).")


def build_model(keras):
    layers = keras.layers
    inputs = keras.Input((28, 28, 1), name="image")
    x = layers.Conv2D(32, 3, padding="same", use_bias=False, name="stem")(inputs)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    x = layers.MaxPooling2D(2, name="pool1")(x)  # 14x14
    x = layers.Conv2D(64, 3, padding="same", use_bias=False, name="conv2")(x)
    x = layers.BatchNormalization(name="conv2_bn")(x)
    x = layers.ReLU(name="conv2_relu")(x)
    x = layers.MaxPooling2D(2, name="pool2")(x)  # 7x7
    # Residual block: block_b's output is added to the block input, so
    # conv2, block_b and the Add share one channel group.
    y = layers.Conv2D(64, 3, padding="same", use_bias=False, name="block_a")(x)
    y = layers.BatchNormalization(name="block_a_bn")(y)
    y = layers.ReLU(name="block_a_relu")(y)
    y = layers.Conv2D(64, 3, padding="same", use_bias=False, name="block_b")(y)
    y = layers.BatchNormalization(name="block_b_bn")(y)
    x = layers.Add(name="residual")([x, y])
    x = layers.ReLU(name="residual_relu")(x)
    x = layers.Conv2D(128, 3, padding="same", use_bias=False, name="conv3")(x)
    x = layers.BatchNormalization(name="conv3_bn")(x)
    x = layers.ReLU(name="conv3_relu")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(0.2, name="dropout")(x)
    outputs = layers.Dense(10, name="logits")(x)
    return keras.Model(inputs, outputs, name="fashion_resnet")


def compile_model(keras, model, learning_rate, steps=None):
    if steps:
        learning_rate = keras.optimizers.schedules.CosineDecay(learning_rate, steps, alpha=0.05)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def main(argv):
    del argv
    import keras
    import numpy as np

    import tfprune

    keras.utils.set_random_seed(FLAGS.seed)
    (x_train, y_train), (x_test, y_test) = tfprune.datasets.load_fashion_mnist()
    x_train = x_train[: FLAGS.num_train, ..., None].astype(np.float32) / 255.0
    y_train = y_train[: FLAGS.num_train].astype(np.int32)
    x_test = x_test[..., None].astype(np.float32) / 255.0
    y_test = y_test.astype(np.int32)

    steps_per_epoch = int(np.ceil(len(x_train) / FLAGS.batch_size))
    fit_args = dict(batch_size=FLAGS.batch_size, verbose=FLAGS.verbose)
    dense = compile_model(keras, build_model(keras), FLAGS.learning_rate,
                          steps_per_epoch * FLAGS.dense_epochs)
    start = time.time()
    dense.fit(x_train, y_train, epochs=FLAGS.dense_epochs, **fit_args)
    dense_acc = dense.evaluate(x_test, y_test, verbose=0)[1]
    print(f"Dense: test accuracy {dense_acc:.4f} ({time.time() - start:.0f} s)")

    total_steps = steps_per_epoch * FLAGS.finetune_epochs
    # Baseline: the same fine-tuning without pruning.
    continued = keras.models.clone_model(dense)
    continued.set_weights(dense.get_weights())
    compile_model(keras, continued, FLAGS.finetune_learning_rate, total_steps)
    continued.fit(x_train, y_train, epochs=FLAGS.finetune_epochs, **fit_args)
    continued_acc = continued.evaluate(x_test, y_test, verbose=0)[1]
    print(f"Dense, fine-tuned as long without pruning: test accuracy {continued_acc:.4f}")

    end_step = max(1, int(total_steps * FLAGS.ramp_fraction))
    schedule = tfprune.PolynomialDecay(
        initial_sparsity=0.0, final_sparsity=FLAGS.final_sparsity, begin_step=0,
        end_step=end_step, frequency=FLAGS.frequency,
    )
    pruned = tfprune.prune_channels(dense, schedule, importance=FLAGS.importance,
                                    round_to=FLAGS.round_to)
    print(tfprune.DependencyGraph(dense).summary())
    compile_model(keras, pruned, FLAGS.finetune_learning_rate, total_steps)
    start = time.time()
    pruned.fit(x_train, y_train, epochs=FLAGS.finetune_epochs,
               callbacks=[tfprune.UpdatePruningStep()], **fit_args)
    print(f"Fine-tuning with channel pruning: {time.time() - start:.0f} s")
    print(tfprune.get_channel_pruner(pruned).summary())

    small = compile_model(keras, tfprune.shrink(pruned), FLAGS.finetune_learning_rate)
    masked_acc = compile_model(keras, pruned, FLAGS.finetune_learning_rate).evaluate(
        x_test, y_test, verbose=0)[1]
    small_acc = small.evaluate(x_test, y_test, verbose=0)[1]
    dense_macs, small_macs = tfprune.count_macs(dense), tfprune.count_macs(small)
    best_dense = max(dense_acc, continued_acc)
    drop = 100.0 * (best_dense - small_acc)
    print("\nLayer widths (dense -> shrunk):")
    for layer in dense.layers:
        width = getattr(layer, "filters", None) or getattr(layer, "units", None)
        if width:
            new = small.get_layer(layer.name)
            print(f"  {layer.name:8s} {width:4d} -> {getattr(new, 'filters', None) or new.units}")
    print(f"\nDense accuracy          {dense_acc:.4f} (fine-tuned as long: {continued_acc:.4f})")
    print(f"Masked accuracy         {masked_acc:.4f}")
    print(f"Shrunk accuracy         {small_acc:.4f}  ({drop:+.2f} points below the best dense)")
    print(f"Parameters              {dense.count_params():,} -> {small.count_params():,} "
          f"({small.count_params() / dense.count_params():.1%})")
    print(f"MACs                    {dense_macs / 1e6:.2f} M -> {small_macs / 1e6:.2f} M "
          f"({dense_macs / small_macs:.2f}x fewer, {1 - small_macs / dense_macs:.1%} reduction)")
    print(f"Within {FLAGS.max_drop} point of dense: {'PASS' if drop <= FLAGS.max_drop else 'FAIL'}")


if __name__ == "__main__":
    app.run(main)

r"""tfmot's "Pruning comprehensive guide" (guide/pruning/comprehensive_guide), on tfprune.

Every section of the guide, in order, with the guide's calls:
1. Prune the whole model (`prune_low_magnitude(base_model)`).
2. Prune some layers (`keras.models.clone_model(clone_function=...)`), or wrap
   layers while defining a functional or Sequential model.
3. A custom layer made prunable with `tfprune.PrunableLayer` and
   `get_prunable_weights()` (kernel and bias, as in the guide).
4. Train with `model.fit` and `UpdatePruningStep` + `PruningSummaries`.
5. A custom training loop that drives both callbacks by hand, with tfmot's
   exact calls (`model.optimizer = opt`, `set_model`, `on_train_begin()`,
   `on_train_batch_begin(batch=-1)`, `on_epoch_end(batch=-1)`,
   `on_epoch_begin(epoch=-1)`).
6. Checkpoint (`.keras`, optimizer included) and deserialize, with and
   without `tfprune.prune_scope()` (tfprune needs no scope).
7. `strip_pruning` and export: gzipped sizes without and with stripping, and
   a `.tflite` file (`tflite_export`).
8. Block sparsity (`block_size=[1, 16]`).

The import change (everything else is the guide's code):

    import tensorflow_model_optimization as tfmot   ->  import tfprune
    tfmot.sparsity.keras.<name>                      ->  tfprune.<name>
      (prune_low_magnitude, strip_pruning, UpdatePruningStep,
       PruningSummaries, PrunableLayer, prune_scope)

Differences from the guide, and why:
* The guide trains a Dense(20) on one random example, which measures
  nothing. Here `setup_model()` is a small MLP on Fashion-MNIST (Debian
  package `dataset-fashion-mnist`), so accuracies and sparsities mean
  something; the custom loop runs real mini-batches instead of one batch.
* Keras 3 spellings: `keras.Input(...)` first in a Sequential instead of
  `input_shape=` on a layer, `.weights.h5` / `.keras` files instead of
  `.tf` / `.h5`.
* Keras 3 ignores `include_optimizer=False` for `.keras` files, so the
  gzipped sizes are measured on uncompiled copies (`save_for_size`).
* Export goes through `tflite_export.export` (float32, with its accuracy)
  instead of only zipping the Keras file.
* The guide's default schedule (`ConstantSparsity(0.5, 0)`, masks every 100
  steps) is spelled out, so that `--frequency` can make a tiny run prune.

Defaults (all 60,000 training images, 1 pretraining epoch, 2 pruning epochs
each for fit and for the custom loop) take about 30 s on 2 CPU cores; expect
about 84% test accuracy dense and 85% at 50% sparsity (the pruned models
train two more epochs).

    python examples/tfmot_comprehensive_guide.py --output_dir=/tmp/tfmot_guide
"""

import os

import numpy as np
from absl import app, flags

import _tfmot_common as common

FLAGS = flags.FLAGS
common.define_flags(train_images=60000)
flags.DEFINE_integer("epochs", 2, "Epochs of pruning, with model.fit and with the custom loop.")
flags.DEFINE_integer("batch_size", 128, "Batch size.")


def main(argv):
    del argv
    keras, out, ((x_train, y_train), (x_test, y_test)) = common.start(
        "tfmot_comprehensive_guide")
    import tensorflow as tf

    import tflite_export
    import tfprune

    step = common.Progress(7)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    schedule = tfprune.ConstantSparsity(0.5, begin_step=0, frequency=FLAGS.frequency)

    def setup_model():
        return keras.Sequential([
            keras.Input(shape=(28, 28)),
            keras.layers.Flatten(),
            keras.layers.Dense(128, activation="relu", name="hidden"),
            keras.layers.Dense(10, name="logits"),
        ])

    def wrapped(model):
        return ", ".join(layer.layer.name for layer in model.layers
                         if isinstance(layer, tfprune.PruneLowMagnitude)) or "none"

    def evaluate(model):
        logits = model.predict(x_test, batch_size=512, verbose=0)
        accuracy = np.mean(np.argmax(logits, axis=-1) == y_test)
        kernels = [w.numpy() for w in model.weights if w.path.endswith("/kernel")]
        zeros = sum(int(np.sum(k == 0)) for k in kernels)
        return (f"test accuracy {100 * accuracy:.2f}%, kernel sparsity "
                f"{100 * zeros / sum(k.size for k in kernels):.1f}%")

    step("Pretrain the dense model (1 epoch) and save its weights")
    pretrained_weights = os.path.join(out, "pretrained.weights.h5")
    model = setup_model()
    model.compile(optimizer="adam", loss=loss, metrics=["accuracy"])
    model.fit(x_train, y_train, batch_size=FLAGS.batch_size, epochs=1, verbose=2)
    model.save_weights(pretrained_weights)
    step.add("Dense model", evaluate(model))

    step("Define models for pruning: whole model, some layers, custom layer")
    base_model = setup_model()
    base_model.load_weights(pretrained_weights)
    model_for_pruning = tfprune.prune_low_magnitude(base_model, pruning_schedule=schedule)
    step.add("Prune whole model wraps", wrapped(model_for_pruning))

    def apply_pruning_to_hidden(layer):
        if layer.name == "hidden":
            return tfprune.prune_low_magnitude(layer, pruning_schedule=schedule)
        return layer

    base_model = setup_model()
    base_model.load_weights(pretrained_weights)
    some_layers = keras.models.clone_model(base_model, clone_function=apply_pruning_to_hidden)
    step.add("clone_model(clone_function) wraps", wrapped(some_layers))

    i = keras.Input(shape=(20,))
    x = tfprune.prune_low_magnitude(keras.layers.Dense(10))(i)
    o = keras.layers.Flatten()(x)
    functional = keras.Model(inputs=i, outputs=o)
    sequential = keras.Sequential([
        keras.Input(shape=(20,)),
        tfprune.prune_low_magnitude(keras.layers.Dense(20)),
        keras.layers.Flatten(),
    ])
    step.add("Wrapped at definition",
             f"functional {wrapped(functional)}, Sequential {wrapped(sequential)}")

    class MyDenseLayer(keras.layers.Dense, tfprune.PrunableLayer):
        def get_prunable_weights(self):
            # Prune bias also, though that usually harms model accuracy too much.
            return [self.kernel, self.bias]

    custom = keras.Sequential([
        keras.Input(shape=(20,)),
        tfprune.prune_low_magnitude(MyDenseLayer(20)),
        keras.layers.Flatten(),
    ])
    pruned_names = [w.path.split("/")[-1] for w in custom.layers[0].get_prunable_weights()]
    step.add("Custom PrunableLayer prunes", ", ".join(pruned_names))

    step(f"Train the whole-model pruning with model.fit ({FLAGS.epochs} epochs)")
    log_dir = os.path.join(out, "logs_fit")
    callbacks = [
        tfprune.UpdatePruningStep(),
        # Log sparsity and other metrics in Tensorboard.
        tfprune.PruningSummaries(log_dir=log_dir),
    ]
    model_for_pruning.compile(loss=loss, optimizer="adam", metrics=["accuracy"])
    model_for_pruning.fit(x_train, y_train, batch_size=FLAGS.batch_size, epochs=FLAGS.epochs,
                          callbacks=callbacks, verbose=2)
    step.add("model.fit", evaluate(model_for_pruning))

    step(f"Train with a custom training loop driving the callbacks ({FLAGS.epochs} epochs)")
    base_model = setup_model()
    base_model.load_weights(pretrained_weights)
    loop_model = tfprune.prune_low_magnitude(base_model, pruning_schedule=schedule)
    optimizer = keras.optimizers.Adam()
    unused_arg = -1
    batches = tf.data.Dataset.from_tensor_slices((x_train, y_train)).batch(FLAGS.batch_size)
    # Non-boilerplate, as in the guide.
    loop_model.optimizer = optimizer
    step_callback = tfprune.UpdatePruningStep()
    step_callback.set_model(loop_model)
    log_callback = tfprune.PruningSummaries(log_dir=os.path.join(out, "logs_loop"))
    log_callback.set_model(loop_model)
    step_callback.on_train_begin()
    for epoch in range(FLAGS.epochs):
        log_callback.on_epoch_begin(epoch=unused_arg)
        for images, labels in batches:
            step_callback.on_train_batch_begin(batch=unused_arg)
            with tf.GradientTape() as tape:
                logits = loop_model(images, training=True)
                loss_value = loss(labels, logits)
            grads = tape.gradient(loss_value, loop_model.trainable_variables)
            optimizer.apply_gradients(zip(grads, loop_model.trainable_variables))
        step_callback.on_epoch_end(batch=unused_arg)
        print(f"epoch {epoch + 1}/{FLAGS.epochs}: loss {float(loss_value):.4f}", flush=True)
    step.add("Custom training loop", evaluate(loop_model))

    step("Checkpoint (.keras with the optimizer) and deserialize")
    keras_model_file = os.path.join(out, "pruned_checkpoint.keras")
    model_for_pruning.save(keras_model_file)  # include_optimizer=True is the default
    loaded_model = keras.models.load_model(keras_model_file)
    with tfprune.prune_scope():
        scoped_model = keras.models.load_model(keras_model_file)
    reference = model_for_pruning.predict(x_test[:256], verbose=0)
    for label, loaded in (("without a scope", loaded_model), ("in prune_scope()", scoped_model)):
        same = np.allclose(loaded.predict(x_test[:256], verbose=0), reference, atol=1e-6)
        steps = int(loaded.layers[1].pruning_step.numpy())
        step.add(f"Loaded {label}", f"{'same outputs' if same else 'OUTPUTS DIFFER'}, "
                 f"pruning_step {steps}, optimizer step "
                 f"{int(loaded.optimizer.iterations.numpy())}")

    step("strip_pruning, compare gzipped sizes, export to TFLite")
    model_for_export = tfprune.strip_pruning(model_for_pruning)
    sizes = [common.save_for_size(m, os.path.join(out, f"{name}.keras"))
             for name, m in (("not_stripped", model_for_pruning), ("stripped", model_for_export))]
    step.add("Gzipped .keras", f"{sizes[0]} bytes without stripping, {sizes[1]} bytes with")
    with common.quiet():
        report = tflite_export.export(model_for_export, os.path.join(out, "pruned.tflite"),
                                      quantize="float32", eval_data=(x_test, y_test),
                                      num_threads=None)
    step.add("TFLite float32", f"{report.size_bytes} bytes ({report.gzip_size_bytes} gzipped, "
             f"sparse tensor format: {'yes' if report.sparse_format else 'no'}), "
             f"test accuracy {100 * report.accuracy['tflite']:.2f}%")

    step("Block sparsity: block_size=[1, 16]")
    base_model = setup_model()
    pruning_params = {"block_size": [1, 16]}
    model_for_pruning = tfprune.prune_low_magnitude(base_model, **pruning_params)
    step.add("block_size [1, 16] wraps", wrapped(model_for_pruning))
    step.finish(out)


if __name__ == "__main__":
    app.run(main)

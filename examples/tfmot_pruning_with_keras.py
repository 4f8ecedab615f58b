r"""tfmot's "Pruning in Keras example" (guide/pruning/pruning_with_keras), on tfprune.

The same steps as the guide: train a small CNN, fine-tune it with
`prune_low_magnitude` (PolynomialDecay from 50% to 80% sparsity, with the
guide's NumPy `end_step`), `UpdatePruningStep` and `PruningSummaries`,
`strip_pruning`, compare the gzipped sizes of the dense and pruned `.keras` and
`.tflite` files, quantize to INT8 and measure the TFLite model's accuracy.

The import change (everything else is the guide's code):

    import tensorflow_model_optimization as tfmot   ->  import tfprune
    tfmot.sparsity.keras.prune_low_magnitude         ->  tfprune.prune_low_magnitude
    tfmot.sparsity.keras.PolynomialDecay             ->  tfprune.PolynomialDecay
    tfmot.sparsity.keras.UpdatePruningStep           ->  tfprune.UpdatePruningStep
    tfmot.sparsity.keras.PruningSummaries            ->  tfprune.PruningSummaries
    tfmot.sparsity.keras.strip_pruning               ->  tfprune.strip_pruning

Differences from the guide, and why:
* Fashion-MNIST (Debian package `dataset-fashion-mnist`, nothing is
  downloaded) instead of MNIST; `.keras` files instead of `.h5` (Keras 3).
* Conversion, quantization and the TFLite accuracy use `tflite_export.export`
  instead of `tf.lite.TFLiteConverter` and a hand-written interpreter loop. Its
  INT8 is full-integer post-training quantization calibrated on 500 training
  images (the guide's `Optimize.DEFAULT` without data is dynamic-range).
  Pruned float32 TFLite files use TFLite's sparse tensor format when that is
  smaller (see the printed line).
* Sizes are gzip level 9 of each file (the guide zips with `zipfile`). Keras 3
  ignores `include_optimizer=False` for `.keras` files, so the Keras sizes are
  measured on uncompiled copies (`_tfmot_common.save_for_size`).

Defaults are the guide's (all 60,000 training images, 4 dense epochs, 2
pruning epochs, batch 128, 10% validation) and take about 35 s on 2 CPU
cores; expect about 88% dense accuracy, 86% pruned (80% of the weights are
zero), and an INT8 pruned `.tflite` that gzips about 10x smaller than the
dense `.keras` file.

    python examples/tfmot_pruning_with_keras.py --output_dir=/tmp/tfmot_keras
    python examples/tfmot_pruning_with_keras.py --train_images=2000 --epochs=1 --prune_epochs=1
"""

import os

import numpy as np
from absl import app, flags

import _tfmot_common as common

FLAGS = flags.FLAGS
common.define_flags(train_images=60000)
flags.DEFINE_integer("epochs", 4, "Epochs of dense training.")
flags.DEFINE_integer("prune_epochs", 2, "Epochs of fine-tuning with pruning.")
flags.DEFINE_integer("batch_size", 128, "Batch size of the fine-tuning (the guide's 128).")


def main(argv):
    del argv
    keras, out, data = common.start("tfmot_pruning_with_keras")
    import tflite_export
    import tfprune

    (train_images, train_labels), (test_images, test_labels) = data
    step = common.Progress(5)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    step(f"Train the dense model: {FLAGS.epochs} epochs on {len(train_images)} images")
    model = keras.Sequential([
        keras.Input(shape=(28, 28)),
        keras.layers.Reshape(target_shape=(28, 28, 1)),
        keras.layers.Conv2D(filters=12, kernel_size=(3, 3), activation="relu"),
        keras.layers.MaxPooling2D(pool_size=(2, 2)),
        keras.layers.Flatten(),
        keras.layers.Dense(10),
    ])
    model.compile(optimizer="adam", loss=loss, metrics=["accuracy"])
    model.fit(train_images, train_labels, epochs=FLAGS.epochs, validation_split=0.1, verbose=2)
    _, baseline_model_accuracy = model.evaluate(test_images, test_labels, verbose=0)
    baseline_gz = common.save_for_size(model, os.path.join(out, "baseline.keras"))

    # The guide's pruning parameters, NumPy end_step included.
    batch_size = FLAGS.batch_size
    epochs = FLAGS.prune_epochs
    validation_split = 0.1
    num_images = train_images.shape[0] * (1 - validation_split)
    end_step = np.ceil(num_images / batch_size).astype(np.int32) * epochs
    pruning_params = {
        "pruning_schedule": tfprune.PolynomialDecay(
            initial_sparsity=0.50, final_sparsity=0.80, begin_step=0, end_step=end_step,
            frequency=FLAGS.frequency)
    }
    step(f"Fine-tune with pruning: {epochs} epochs, {pruning_params['pruning_schedule']}")
    model_for_pruning = tfprune.prune_low_magnitude(model, **pruning_params)
    model_for_pruning.compile(optimizer="adam", loss=loss, metrics=["accuracy"])
    logdir = os.path.join(out, "logs")
    callbacks = [
        tfprune.UpdatePruningStep(),
        tfprune.PruningSummaries(log_dir=logdir),
    ]
    model_for_pruning.fit(train_images, train_labels, batch_size=batch_size, epochs=epochs,
                          validation_split=validation_split, callbacks=callbacks, verbose=2)
    _, model_for_pruning_accuracy = model_for_pruning.evaluate(test_images, test_labels,
                                                               verbose=0)

    step("strip_pruning and save the pruned .keras file")
    model_for_export = tfprune.strip_pruning(model_for_pruning)
    pruned_gz = common.save_for_size(model_for_export, os.path.join(out, "pruned.keras"))
    kernels = {layer.name: layer.kernel.numpy() for layer in model_for_export.layers
               if hasattr(layer, "kernel")}

    step("Convert the pruned model to float32 TFLite (tflite_export)")
    with common.quiet():
        pruned_tflite = tflite_export.export(
            model_for_export, os.path.join(out, "pruned.tflite"), quantize="float32",
            num_threads=None)

    step("Quantize the pruned model to INT8 and evaluate it in LiteRT")
    with common.quiet():
        quantized = tflite_export.export(
            model_for_export, os.path.join(out, "pruned_int8.tflite"), quantize="int8",
            representative_data=train_images[:500], eval_data=(test_images, test_labels),
            inference_input_type="float32", inference_output_type="float32",
            num_threads=None)
    step.add("Baseline test accuracy", f"{100 * baseline_model_accuracy:.2f}%")
    step.add("Pruned test accuracy", f"{100 * model_for_pruning_accuracy:.2f}%")
    step.add("Kernel sparsity after strip_pruning", ", ".join(
        f"{name} {100 * tfprune.masks.sparsity_of(k):.1f}%" for name, k in kernels.items()))
    step.add("Gzipped baseline Keras model", f"{baseline_gz} bytes")
    step.add("Gzipped pruned Keras model", f"{pruned_gz} bytes")
    step.add("Gzipped pruned TFLite model", f"{pruned_tflite.gzip_size_bytes} bytes (sparse "
             f"tensor format: {'yes' if pruned_tflite.sparse_format else 'no'})")
    step.add("Gzipped pruned + INT8 TFLite model", f"{quantized.gzip_size_bytes} bytes "
             f"({baseline_gz / quantized.gzip_size_bytes:.1f}x smaller than the baseline)")
    step.add("Pruned + INT8 TFLite test accuracy",
             f"{100 * quantized.accuracy['tflite']:.2f}% on {len(test_images)} images")
    step.finish(out)


if __name__ == "__main__":
    app.run(main)

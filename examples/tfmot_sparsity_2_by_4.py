r"""tfmot's "Sparsity 2x4" guide (guide/pruning/pruning_with_sparsity_2_by_4), on tfprune.

As in the guide: a CNN whose larger Conv2D and inner Dense layer are wrapped
with `prune_low_magnitude(..., sparsity_m_by_n=(2, 4))` (2 zeros in every 4
consecutive weights along the input channels: the pattern NVIDIA's sparse
tensor cores accelerate), while the first Conv2D, which has
a single input channel and so no groups of 4, gets 50% unstructured pruning
and the output layer stays dense. Train, `strip_pruning`, convert to TFLite,
and check the pattern in the converted weight tensors.

The import change (everything else is the guide's code):

    import tensorflow_model_optimization as tfmot   ->  import tfprune
    tfmot.sparsity.keras.prune_low_magnitude         ->  tfprune.prune_low_magnitude
    tfmot.sparsity.keras.ConstantSparsity            ->  tfprune.ConstantSparsity
    tfmot.sparsity.keras.UpdatePruningStep           ->  tfprune.UpdatePruningStep
    tfmot.sparsity.keras.strip_pruning               ->  tfprune.strip_pruning

Differences from the guide, and why:
* Fashion-MNIST (Debian package `dataset-fashion-mnist`) instead of MNIST;
  `keras.Input` first instead of `input_shape=` on the first layer (Keras 3).
* The guide's output layer is `Dense(10, activation='softmax')` trained with
  `from_logits=True`, a mismatch; here it outputs logits.
* Instead of plotting a corner of each weight tensor, every group of 4 of
  every 2:4 layer is checked, in the Keras weights and in the `.tflite` file
  (where TFLite stores kernels input-channels-last). The tfmot guide points to
  its `check_sparsity_m_by_n.py` script for that.
* Conversion goes through `tflite_export.export` (float32, with accuracy).

Defaults (10,000 training images, 2 epochs, batch 128, 10% validation; the
guide uses all 60,000) take about 40 s on 2 CPU cores; expect about 83%
test accuracy with exactly 50% zeros in each 2:4 layer.

    python examples/tfmot_sparsity_2_by_4.py --output_dir=/tmp/tfmot_2by4
"""

import os

import numpy as np
from absl import app, flags

import _tfmot_common as common

FLAGS = flags.FLAGS
common.define_flags(train_images=10000)
flags.DEFINE_integer("tflite_test_images", 1000, "Test images evaluated in LiteRT, which runs "
                     "one image at a time (at most --test_images).")
flags.DEFINE_integer("epochs", 2, "Training epochs (the guide's 2).")
flags.DEFINE_integer("batch_size", 128, "Batch size (the guide's 128).")

M_BY_N = (2, 4)


def groups_with_m_zeros(weights, m_by_n=M_BY_N):
    """`(groups with at least m zeros, groups)` over groups of n consecutive weights (last axis)."""
    m, n = m_by_n
    groups = np.asarray(weights).reshape(-1, n)
    return int(np.sum(np.sum(groups == 0, axis=1) >= m)), len(groups)


def main(argv):
    del argv
    keras, out, data = common.start("tfmot_sparsity_2_by_4", channel_axis=True)
    import tflite_export
    import tfprune
    from tflite_export import litert

    (train_images, train_labels), (test_images, test_labels) = data
    step = common.Progress(2)
    prune_low_magnitude = tfprune.prune_low_magnitude

    pruning_params_2_by_4 = {"sparsity_m_by_n": M_BY_N}
    pruning_params_unstructured = {
        "pruning_schedule": tfprune.ConstantSparsity(target_sparsity=0.5, begin_step=0,
                                                     frequency=FLAGS.frequency)
    }

    step(f"Train with pruning: {FLAGS.epochs} epochs on {len(train_images)} images")
    model = keras.Sequential([
        keras.Input(shape=(28, 28, 1)),
        prune_low_magnitude(
            keras.layers.Conv2D(32, 5, padding="same", activation="relu",
                                name="unstructured_pruning"),
            **pruning_params_unstructured),
        keras.layers.MaxPooling2D((2, 2), (2, 2), padding="same"),
        prune_low_magnitude(
            keras.layers.Conv2D(64, 5, padding="same", name="structural_pruning"),
            **pruning_params_2_by_4),
        keras.layers.BatchNormalization(),
        keras.layers.ReLU(),
        keras.layers.MaxPooling2D((2, 2), (2, 2), padding="same"),
        keras.layers.Flatten(),
        prune_low_magnitude(
            keras.layers.Dense(1024, activation="relu", name="structural_pruning_dense"),
            **pruning_params_2_by_4),
        keras.layers.Dropout(0.4),
        keras.layers.Dense(10),
    ])
    model.compile(optimizer="adam",
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(train_images, train_labels, batch_size=FLAGS.batch_size, epochs=FLAGS.epochs,
              verbose=2, callbacks=tfprune.UpdatePruningStep(), validation_split=0.1)
    _, model_for_pruning_accuracy = model.evaluate(test_images, test_labels, verbose=0)
    step.add("Pruned test accuracy",
             f"{100 * model_for_pruning_accuracy:.2f}% on {len(test_images)} images")

    step("strip_pruning, convert to TFLite, check every group of 4 in both")
    model = tfprune.strip_pruning(model)
    tflite_file = os.path.join(out, "pruned_2_by_4.tflite")
    with common.quiet():
        report = tflite_export.export(model, tflite_file, quantize="float32",
                                      sparse_format="never", num_threads=None,
                                      eval_data=(test_images, test_labels),
                                      max_eval_samples=FLAGS.tflite_test_images)
        interpreter = litert.make_interpreter(tflite_file, use_xnnpack=False)
        interpreter.allocate_tensors()
    tensors = interpreter.get_tensor_details()
    for layer in model.layers:
        if not hasattr(layer, "kernel"):
            continue
        kernel = layer.kernel.numpy()  # (..., input channels, output channels)
        line = (f"{str(kernel.shape):18s} "
                f"sparsity {100 * tfprune.masks.sparsity_of(kernel):5.1f}%")
        if kernel.shape[-2] % M_BY_N[1]:
            step.add(layer.name, f"{line}, no groups of 4 ({kernel.shape[-2]} input channel)")
            continue
        # TFLite stores the same weights output channels first, input channels
        # last: the groups of 4 are consecutive there.
        tflite_shape = np.moveaxis(kernel, -1, 0).shape
        [detail] = [d for d in tensors
                    if layer.name in d["name"] and tuple(d["shape"]) == tflite_shape]
        ok, total = groups_with_m_zeros(np.moveaxis(kernel, -2, -1))
        tflite_ok, _ = groups_with_m_zeros(interpreter.get_tensor(detail["index"]))
        step.add(layer.name, f"{line}, groups of 4 with >= 2 zeros: {ok} of {total} (Keras), "
                             f"{tflite_ok} of {total} (TFLite)")
    step.add("TFLite float32 model", f"{report.size_bytes} bytes, test accuracy "
             f"{100 * report.accuracy['tflite']:.2f}% on {report.fidelity['num_samples']} images")
    step.finish(out)


if __name__ == "__main__":
    app.run(main)

"""The main job: Fashion-MNIST CNN -> pruning (weights and channels) -> INT8 TFLite -> report.

Trains a CNN (4 epochs), then derives four compressed variants from it by
fine-tuning with tfprune callbacks (2 epochs each; combined twice), distilling
from the dense reference model (`keras.distillation`; --nodistill turns it off).
By default it trains on the first 8,000 of the 60,000 training images in
batches of 64 (about 4 minutes on 2 cores) and evaluates on all 10,000 test
images; `benchmarks/compression_table.py` runs the full protocol (all images,
batches of 128, 4 epochs per pruning step) with these functions.

  dense float32          the trained model, fine-tuned without pruning as long as
                         the longest variant (no variant trains longer)
  dense int8             the same model, full-integer post-training quantization
  80% unstructured int8  prune_low_magnitude to 80% (global ranking, first conv
                         kept dense), strip, sparse-encoded int8
  50% channels int8      prune_channels to 50%, shrink to a thinner model, int8
  combined int8          50% channels, shrink, then 70% unstructured, int8

Each `.tflite` file is written with its JSON/Markdown report into --output_dir,
and a comparison table (and a PNG plot when matplotlib is installed) is printed.

    python examples/quickstart.py --output_dir=out/quickstart
"""

import os
import time

from tflite_export import _quiet

_quiet.setup()  # before TensorFlow is imported: no CUDA/oneDNN start-up lines

import keras  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags, logging  # noqa: E402

import tflite_export  # noqa: E402
import tfprune  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("output_dir", "out/quickstart", "Folder for .tflite files, reports and the plot.")
flags.DEFINE_integer("epochs", 4, "Epochs of dense training.")
flags.DEFINE_integer("finetune_epochs", 2, "Epochs of fine-tuning with pruning, per variant.")
flags.DEFINE_integer("batch_size", 64, "Training batch size.")
flags.DEFINE_integer("train_images", 8000, "Training images used (at most 60000; the first ones).")
flags.DEFINE_integer("test_images", 10000, "Test images evaluated (at most 10000).")
flags.DEFINE_list("num_threads", ["1", "2"], "LiteRT thread counts to time.")
flags.DEFINE_integer("seed", 0, "Random seed.")
flags.DEFINE_bool("distill", True,
                  "Fine-tune the pruned variants with knowledge distillation from the dense "
                  "reference model (keras.distillation); --nodistill uses the labels alone.")

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def load_data(train_images, test_images=10000):
    """Fashion-MNIST as float32 images in [0, 1] with a channel axis."""
    (x_train, y_train), (x_test, y_test) = tfprune.datasets.load_fashion_mnist()
    prep = lambda x: (x[..., None] / 255.0).astype(np.float32)
    return (prep(x_train[:train_images]), y_train[:train_images].astype(np.int32)), (
        prep(x_test[:test_images]), y_test[:test_images].astype(np.int32))


def build_cnn():
    """A CNN with BatchNormalization, a residual block and a Flatten -> Dense head.

    Channel pruning has to follow the residual `Add` (one group for conv2,
    res_b and the block output) and the `Flatten` (each conv3 channel owns
    3*3 rows of fc's kernel).
    """
    layers = keras.layers
    inputs = keras.Input((28, 28, 1), name="image")

    def conv_bn(x, filters, name):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=name)(x)
        x = layers.BatchNormalization(name=f"{name}_bn")(x)
        return layers.ReLU(name=f"{name}_relu")(x)

    x = conv_bn(inputs, 32, "stem")
    x = layers.MaxPooling2D(name="pool1")(x)  # 14x14
    x = conv_bn(x, 64, "conv2")
    x = layers.MaxPooling2D(name="pool2")(x)  # 7x7
    shortcut = x
    x = conv_bn(x, 64, "res_a")
    x = layers.Conv2D(64, 3, padding="same", use_bias=False, name="res_b")(x)
    x = layers.BatchNormalization(name="res_b_bn")(x)
    x = layers.ReLU(name="res_relu")(layers.Add(name="res_add")([x, shortcut]))
    x = conv_bn(x, 128, "conv3")
    x = layers.MaxPooling2D(name="pool3")(x)  # 3x3
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dropout(0.3, name="dropout")(x)
    x = layers.Dense(256, activation="relu", name="fc")(x)
    outputs = layers.Dense(10, name="logits")(x)
    return keras.Model(inputs, outputs, name="fashion_cnn")


def compile_model(model, learning_rate, decay_steps):
    """Adam with a cosine learning-rate decay over `decay_steps`."""
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps, alpha=0.02)
    model.compile(keras.optimizers.Adam(schedule), LOSS, metrics=["accuracy"])
    return model


def accuracy(model, x, y):
    logits = model.predict(x, batch_size=512, verbose=0)
    return float(np.mean(np.argmax(logits, axis=-1) == y))


def steps_per_epoch(data, batch_size):
    return int(np.ceil(len(data[0][0]) / batch_size))


def fine_tune(model, data, epochs, batch_size, learning_rate=1e-3, pruning=True, teacher=None):
    """Fine-tunes with a fresh cosine schedule (and the pruning callback).

    With a `teacher`, the model learns from the teacher's softened logits as
    well as from the labels (`keras.distillation.Distiller`); the pruning
    wrappers inside the student are found and stepped by `UpdatePruningStep`
    as usual. Returns `model` itself, never the distiller.
    """
    (x, y), _ = data
    trainee = model
    if teacher is not None:
        # Temperature 4 and 70% of the loss on the teacher: common values
        # (2-5 and 0.5-0.9), not tuned here. The KLDivergence instance
        # matters: with the default loss="kl_divergence" Keras 3.15 compares
        # the scaled logits as if they were probabilities.
        trainee = keras.distillation.Distiller(
            teacher=teacher, student=model,
            distillation_losses=keras.distillation.LogitsDistillation(
                temperature=4.0, loss=keras.losses.KLDivergence()),
            student_loss_weight=0.3)
    compile_model(trainee, learning_rate, steps_per_epoch(data, batch_size) * epochs)
    trainee.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=2,
                callbacks=[tfprune.UpdatePruningStep()] if pruning else [])
    return model


def train_variants(data, epochs, finetune_epochs, batch_size, distill=True, progress=None):
    """Trains the dense model and the pruned variants.

    Every variant starts from the same dense model; the dense rows use that
    model fine-tuned without pruning as long as the longest variant, so no
    variant is compared with a less-trained model. With `distill`, that dense
    reference is also the teacher the pruned variants distill from.

    `progress`, if given, is called with a one-line description before each
    training step.

    Returns:
      `(variants, start)`: a dict from variant name to `(plain Keras model,
      quantize)` ready for export, and the dense model the variants start from.
    """
    (x, y), _ = data
    say = progress or (lambda message: None)
    say(f"Train the dense CNN: {len(x):,} images, {epochs} epochs")
    start = compile_model(build_cnn(), 2e-3, steps_per_epoch(data, batch_size) * epochs)
    start.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=2)

    # The longest variant (combined) fine-tunes twice: channels, then weights.
    reference = keras.models.clone_model(start)
    reference.set_weights(start.get_weights())
    say(f"Fine-tune the dense model {2 * finetune_epochs} more epochs without pruning "
        "(the dense rows" + (", and the teacher of the pruned variants)" if distill else ")"))
    reference = fine_tune(reference, data, 2 * finetune_epochs, batch_size, pruning=False)
    teacher = reference if distill else None

    steps = steps_per_epoch(data, batch_size) * finetune_epochs
    # Reach the target sparsity a third of the way in; the remaining steps
    # (where the cosine learning rate decays) recover accuracy at that sparsity.
    ramp = dict(begin_step=0, end_step=max(1, steps // 3), frequency=max(1, steps // 30))

    # Weight pruning leaves the first convolution dense (288 weights that every
    # later layer reads) and ranks all other weights together: one magnitude
    # threshold, so the large, redundant Dense layers give up the most.
    weights = dict(ignored_layers=["stem"], global_pruning=True)
    say(f"80% unstructured: prune_low_magnitude, {finetune_epochs} epochs with "
        "UpdatePruningStep, strip_pruning")
    unstructured = tfprune.prune_low_magnitude(
        start, tfprune.PolynomialDecay(0.0, 0.8, **ramp), **weights)
    unstructured = tfprune.strip_pruning(
        fine_tune(unstructured, data, finetune_epochs, batch_size, teacher=teacher))

    say(f"50% channels: prune_channels, {finetune_epochs} epochs with UpdatePruningStep, "
        "shrink")
    channels = tfprune.prune_channels(
        start, tfprune.PolynomialDecay(0.0, 0.5, **ramp), importance="l2", round_to=8)
    channels = tfprune.shrink(
        fine_tune(channels, data, finetune_epochs, batch_size, teacher=teacher))

    say(f"Combined: 70% unstructured on the shrunk 50% channels model, {finetune_epochs} "
        "epochs, strip_pruning")
    combined = tfprune.prune_low_magnitude(
        channels, tfprune.PolynomialDecay(0.0, 0.7, **ramp), **weights)
    combined = tfprune.strip_pruning(
        fine_tune(combined, data, finetune_epochs, batch_size, teacher=teacher))
    variants = {
        "dense float32": (reference, "float32"),
        "dense int8": (reference, "int8"),
        "80% unstructured int8": (unstructured, "int8"),
        "50% channels int8": (channels, "int8"),
        "combined int8": (combined, "int8"),
    }
    return variants, start


def export_variants(variants, data, output_dir, num_threads, progress=None):
    """Exports each variant; returns (labels, reports)."""
    (x, _), (x_test, y_test) = data
    labels, reports = [], []
    for label, (model, quantize) in variants.items():
        path = os.path.join(output_dir, label.replace("%", "pct").replace(" ", "_") + ".tflite")
        if progress:
            progress(f"Export {label}: {os.path.basename(path)}, evaluate on {len(x_test):,} "
                     f"test images, time at {'/'.join(map(str, num_threads))} thread(s)")
        report = tflite_export.export(
            model, path, quantize=quantize,
            representative_data=x[:500] if quantize == "int8" else None,
            eval_data=(x_test, y_test), num_threads=num_threads,
            inference_input_type="float32" if quantize == "int8" else None,
            inference_output_type="float32" if quantize == "int8" else None)
        labels.append(label)
        reports.append(report)
    return labels, reports


class Steps:
    """Prints numbered progress lines, `[i/n] what (m:ss so far)`, as each step starts."""

    def __init__(self, total):
        self.total, self.index, self.started = total, 0, time.perf_counter()

    def __call__(self, what):
        self.index += 1
        elapsed = int(time.perf_counter() - self.started)
        print(f"\n[{self.index}/{self.total}] {what} ({elapsed // 60}:{elapsed % 60:02d} so far)",
              flush=True)


def summary(labels, reports):
    """Lines comparing the compressed variants with the dense rows."""
    by = dict(zip(labels, reports))
    dense, dense_int8 = by["dense float32"], by["dense int8"]

    def acc(r):
        return 100 * r.accuracy["tflite"] if r.accuracy else None

    def latency(r):
        stats = r.latency_ms.get(sorted(r.latency_ms, key=int)[0]) if r.latency_ms else None
        return stats.get("median_ms") if stats else None

    lines = []
    for label in labels[2:]:
        r = by[label]
        parts = [f"{dense.gzip_size_bytes / r.gzip_size_bytes:.1f}x smaller gzipped than "
                 "dense float32"]
        if latency(r) and latency(dense_int8):
            speed = latency(dense_int8) / latency(r)
            parts.append("as fast as dense int8" if abs(speed - 1) < 0.05 else
                         f"{speed:.1f}x faster than dense int8" if speed > 1 else
                         f"{1 / speed:.1f}x slower than dense int8")
        if acc(r) is not None and acc(dense) is not None:
            parts.append(f"{acc(r) - acc(dense):+.2f} accuracy points")
        lines.append(f"  {label}: " + ", ".join(parts))
    return lines


def main(argv):
    del argv
    if not FLAGS["verbosity"].present:
        # The exporter's per-stage INFO lines (absl's default under app.run)
        # would drown the steps below; --verbosity=0 brings them back.
        logging.set_verbosity(logging.WARNING)
    keras.utils.set_random_seed(FLAGS.seed)
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    start = time.perf_counter()
    threads = tuple(int(t) for t in FLAGS.num_threads)
    progress = Steps(1 + 5 + 5 + 1)
    progress(f"Load Fashion-MNIST: {FLAGS.train_images:,} training images (of 60,000), "
             f"{FLAGS.test_images:,} test images")
    data = load_data(FLAGS.train_images, FLAGS.test_images)
    variants, start_model = train_variants(data, FLAGS.epochs, FLAGS.finetune_epochs,
                                           FLAGS.batch_size, distill=FLAGS.distill,
                                           progress=progress)
    print(f"Dense model the variants start from: test accuracy "
          f"{100 * accuracy(start_model, *data[1]):.2f}%")
    labels, reports = export_variants(variants, data, FLAGS.output_dir, threads, progress)

    progress("Compare")
    print(f"\n## Fashion-MNIST CNN, {len(data[1][0])} test images\n")
    for count in threads:
        print(f"Latency at {count} thread(s):\n")
        print(tflite_export.compare_reports(reports, labels=labels, num_threads=count))
    print("\n".join(summary(labels, reports)))
    try:
        plot = tflite_export.plot_reports(reports, os.path.join(FLAGS.output_dir, "comparison.png"),
                                          labels=labels, num_threads=threads[0])
        print(f"\nPlot: {os.path.abspath(plot)}")
    except ImportError as e:
        logging.warning("No plot: %s", e)
    print(f"Files and reports in {os.path.abspath(FLAGS.output_dir)}; "
          f"total time {time.perf_counter() - start:.0f} s")
    print(f"\nThis run trained on {len(data[0][0]):,} of the 60,000 training images "
          f"({FLAGS.epochs} epochs dense, {FLAGS.finetune_epochs} per pruning step). The full "
          "table (all 60,000 images, 4 epochs per pruning step, MobileNetV2 rows; about 35 "
          "minutes on 2 cores): python benchmarks/compression_table.py")


if __name__ == "__main__":
    app.run(main)

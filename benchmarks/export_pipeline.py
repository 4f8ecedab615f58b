"""End-to-end timing and quality of tflite_export.

1. MobileNetV2 (weights=None, 224x224) INT8 export end to end: preparation,
   conversion, inspection and a 50-run LiteRT benchmark. Target: < 60 s.
2. The Fashion-MNIST CNN trained for 2 epochs on the full training set:
   INT8 top-1 accuracy on the 10k test images within 0.5 points of float,
   plus a float32-vs-int8 comparison table and plot.

Usage: python benchmarks/export_pipeline.py [--output_dir=DIR]
"""

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tflite_export import _quiet  # noqa: E402

_quiet.setup()  # before TensorFlow: no CUDA/oneDNN start-up lines

import numpy as np  # noqa: E402


class Clock:
    """Prints the wall time of each stage."""

    def __init__(self):
        self.start = time.perf_counter()

    def lap(self, label):
        now = time.perf_counter()
        print(f"  {label:<42s} {now - self.start:7.2f} s", flush=True)
        self.start = now


def mobilenet_v2(out_dir):
    import keras

    import tflite_export

    print("== MobileNetV2 (weights=None, 224x224x3) INT8 export ==")
    total = time.perf_counter()
    clock = Clock()
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3))
    # Random weights: any images calibrate them; 16 examples keep it fast.
    rep = np.random.default_rng(0).uniform(-1, 1, (16, 224, 224, 3)).astype(np.float32)
    clock.lap("build model + calibration data")
    report = tflite_export.export(model, os.path.join(out_dir, "mobilenet_v2_int8.tflite"),
                                  representative_data=rep, num_threads=(1,),
                                  benchmark_runs=50, benchmark_warmup=5)
    clock.lap("export (all stages below)")
    for stage, seconds in report.timings_s.items():
        print(f"    {stage:<40s} {seconds:7.2f} s")
    elapsed = time.perf_counter() - total
    stats = report.latency(1)
    print(f"  size {report.size_bytes / 1e6:.2f} MB (gzip {report.gzip_size_bytes / 1e6:.2f} MB),"
          f" params {report.params:,}, MACs {report.macs:,}")
    print(f"  weights {report.weight_dtypes}, inputs {report.input_dtypes}, "
          f"outputs {report.output_dtypes}")
    print(f"  latency 1 thread: {stats.summary()}")
    print(f"  TOTAL end to end: {elapsed:.1f} s (target < 60 s) -> "
          f"{'OK' if elapsed < 60 else 'OVER'}")
    return elapsed


def fashion_cnn(out_dir, epochs):
    import keras

    import tflite_export
    import tfprune

    print(f"\n== Fashion-MNIST CNN: {epochs} epochs on 60k, INT8 vs float on 10k test ==")
    clock = Clock()
    (x_train, y_train), (x_test, y_test) = tfprune.datasets.load_fashion_mnist()
    x_train = x_train[..., None].astype(np.float32) / 255.0
    x_test = x_test[..., None].astype(np.float32) / 255.0
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(16, 3, activation="relu6"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(32, 3, activation="relu6"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(10, activation="softmax"),
    ], name="fashion_cnn")
    model.compile(keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=epochs, batch_size=128, verbose=0)
    clock.lap("train")
    rng = np.random.default_rng(0)
    rep = x_train[rng.choice(len(x_train), 500, replace=False)]
    f32 = tflite_export.export(model, os.path.join(out_dir, "cnn_float32.tflite"),
                               quantize="float32", eval_data=(x_test, y_test), num_threads=(1,))
    clock.lap("float32 export + eval + benchmark")
    q = tflite_export.export(model, os.path.join(out_dir, "cnn_int8.tflite"),
                             representative_data=rep, eval_data=(x_test, y_test),
                             num_threads=(1,), max_calibration_samples=500)
    clock.lap("int8 export + eval + benchmark")
    float_acc = 100 * q.accuracy["reference"]
    int8_acc = 100 * q.accuracy["tflite"]
    gap = float_acc - int8_acc
    print(f"  Keras float accuracy  {float_acc:.2f}%")
    print(f"  TFLite float32        {100 * f32.accuracy['tflite']:.2f}%")
    print(f"  TFLite INT8           {int8_acc:.2f}%  (top-1 agreement "
          f"{100 * q.fidelity['top1_agreement']:.2f}%)")
    print(f"  gap {gap:+.2f} points (target within 0.5) -> {'OK' if abs(gap) <= 0.5 else 'OVER'}")
    print()
    print(tflite_export.compare_reports([f32, q], labels=["float32", "int8"]))
    png = tflite_export.plot_reports([f32, q], os.path.join(out_dir, "cnn_comparison.png"),
                                     labels=["float32", "int8"])
    print(f"  plot: {png}")
    return gap


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", default=None,
                        help="Where to write the .tflite files and reports (default: temp).")
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    out_dir = args.output_dir or tempfile.mkdtemp(prefix="export_pipeline_")
    os.makedirs(out_dir, exist_ok=True)
    print(f"output folder: {out_dir}")
    mobilenet_v2(out_dir)
    fashion_cnn(out_dir, args.epochs)


if __name__ == "__main__":
    main()

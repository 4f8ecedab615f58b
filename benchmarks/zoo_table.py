r"""Channel pruning over the whole keras.applications zoo.

For every constructor in `keras.applications` (weights=None, logits output,
a small input size: channel coupling does not depend on resolution, and
MACs scale with the image area, so the ratios hold at 224):

  1. `tfprune.DependencyGraph`: groups, and the share of channels prunable;
  2. `tfprune.prune_channels(model, ConstantSparsity(0.3, 0))`: 30% of the
     channels of every prunable group, one-shot (l2);
  3. `tfprune.shrink`: parameters and MACs before/after, and the relative
     error max|shrunk(x) - masked(x)| / max|masked(x)| on random inputs.

Prints a Markdown table. About 8 minutes on 2 CPU cores for all 40.

Usage:
  python benchmarks/zoo_table.py
  python benchmarks/zoo_table.py --models=ResNet50,ConvNeXtTiny --size=96
"""

import gc
import os
import time

from tflite_export import _quiet  # noqa: E402

_quiet.setup()  # before TensorFlow: no CUDA/oneDNN start-up lines

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("models", [], "Constructors to run (default: all of keras.applications).")
flags.DEFINE_integer("size", 64, "Input height and width (raised to each model's minimum).")
flags.DEFINE_float("sparsity", 0.3, "Fraction of channels removed from each prunable group.")
flags.DEFINE_integer("batch", 2, "Random examples for the equivalence check.")

# Models whose smallest allowed input is larger than the default size.
MIN_SIZE = {"InceptionV3": 75, "InceptionResNetV2": 75, "Xception": 71}


def constructors():
    import keras

    names = sorted(n for n in dir(keras.applications) if n[:1].isupper())
    return [n for n in names if callable(getattr(keras.applications, n))]


def run_one(name, size, sparsity, batch):
    import keras

    import tfprune

    size = max(size, MIN_SIZE.get(name, 0))
    start = time.perf_counter()
    model = getattr(keras.applications, name)(
        weights=None, input_shape=(size, size, 3), classifier_activation=None
    )
    graph = tfprune.DependencyGraph(model)
    channels = sum(g.size for g in graph.groups if g.layers)
    prunable = sum(g.size for g in graph.prunable_groups)
    pruned = tfprune.prune_channels(model, tfprune.ConstantSparsity(sparsity, 0))
    small = tfprune.shrink(pruned)
    x = np.random.default_rng(0).uniform(0, 255, size=(batch, size, size, 3)).astype("float32")
    expected, got = np.asarray(pruned(x)), np.asarray(small(x))
    error = float(np.abs(expected - got).max() / max(np.abs(expected).max(), 1e-12))
    row = dict(
        model=name, size=size, groups=len(graph.groups), prunable_groups=len(graph.prunable_groups),
        prunable=prunable / channels, params=(model.count_params(), small.count_params()),
        macs=(tfprune.count_macs(model), tfprune.count_macs(small)), error=error,
        seconds=time.perf_counter() - start,
    )
    return row


def main(argv):
    del argv
    import keras

    names = FLAGS.models or constructors()
    print(f"{len(names)} constructors; input {FLAGS.size}x{FLAGS.size} (or the model's minimum), "
          f"{FLAGS.sparsity:.0%} of channels per prunable group, l2 importance.\n")
    header = ("| model | input | groups (prunable) | channels prunable | params before -> after | "
              "MACs before -> after | rel. error | time |")
    print(header)
    print("|---|---|---|---|---|---|---|---|")
    failures = 0
    for name in names:
        keras.backend.clear_session()
        gc.collect()
        try:
            r = run_one(name, FLAGS.size, FLAGS.sparsity, FLAGS.batch)
        except Exception as err:  # A benchmark reports every model, failures included.
            failures += 1
            print(f"| {name} | | FAILED: {type(err).__name__}: {str(err)[:120]} | | | | | |",
                  flush=True)
            continue
        (p0, p1), (m0, m1) = r["params"], r["macs"]
        ok = r["error"] <= 1e-5 and p1 < p0 and m1 < m0
        failures += not ok
        print(f"| {r['model']} | {r['size']} | {r['groups']} ({r['prunable_groups']}) | "
              f"{r['prunable']:.1%} | {p0 / 1e6:.2f}M -> {p1 / 1e6:.2f}M ({p1 / p0:.0%}) | "
              f"{m0 / 1e6:.1f}M -> {m1 / 1e6:.1f}M ({m1 / m0:.0%}) | {r['error']:.1e} | "
              f"{r['seconds']:.0f} s |", flush=True)
    print(f"\n{len(names) - failures}/{len(names)} models pruned and shrunk with relative "
          "error <= 1e-5 and fewer parameters and MACs.")


if __name__ == "__main__":
    app.run(main)

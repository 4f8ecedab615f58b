r"""Channel pruning over the whole keras.applications zoo, and KerasHub backbones.

For every constructor in `keras.applications` (weights=None, logits output,
a small input size: channel coupling does not depend on resolution, and
MACs scale with the image area, so the ratios hold at 224), and for the
KerasHub backbones of `KERAS_HUB` (the layouts of BERT-Tiny, ViT-Ti/16 and
MobileNetV3-Small, random weights: nothing is downloaded; needs `keras-hub`):

  1. `tfprune.DependencyGraph`: groups, and the share of channels prunable;
  2. `tfprune.prune_channels(model, ConstantSparsity(0.3, 0))`: 30% of the
     channels of every prunable group, one-shot (l2);
  3. `tfprune.shrink`: parameters and MACs before/after, and the relative
     error max|shrunk(x) - masked(x)| / max|masked(x)| on random inputs.

Prints a Markdown table. About 8 minutes on 2 CPU cores for all 40, and
seconds for the KerasHub rows. KerasHub's transformers keep their heads and
model dimension (its layers size heads as hidden_dim // num_heads, see
`tfprune.handlers.keras_hub`): their feedforward units are what goes.

Usage:
  python benchmarks/zoo_table.py
  python benchmarks/zoo_table.py --models=ResNet50,ConvNeXtTiny --size=96
  python benchmarks/zoo_table.py --models=BertBackbone,MobileNetBackbone
"""

import gc
import os
import time

from tflite_export import _quiet  # noqa: E402

_quiet.setup()  # before TensorFlow: no CUDA/oneDNN start-up lines

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("models", [], "Constructors to run (default: all of keras.applications, "
                  "then the KerasHub backbones of KERAS_HUB).")
flags.DEFINE_integer("size", 64, "Input height and width (raised to each model's minimum).")
flags.DEFINE_float("sparsity", 0.3, "Fraction of channels removed from each prunable group.")
flags.DEFINE_integer("batch", 2, "Random examples for the equivalence check.")
flags.DEFINE_integer("sequence_length", 128, "Tokens per example for KerasHub text backbones.")

# Models whose smallest allowed input is larger than the default size.
MIN_SIZE = {"InceptionV3": 75, "InceptionResNetV2": 75, "Xception": 71}


def bert_tiny(sequence_length, batch, rng):
    """BERT-Tiny's layout (`bert_tiny_en_uncased`), on inputs of fixed length.

    `BertBackbone` takes any length; MACs need a fixed one, so its layers
    are run again on `(sequence_length,)` inputs.
    """
    import keras
    import keras_hub

    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=30522, num_layers=2, num_heads=2, hidden_dim=128,
        intermediate_dim=512, max_sequence_length=512)
    inputs = {name: keras.Input((sequence_length,), dtype="int32", name=name)
              for name in ("token_ids", "segment_ids", "padding_mask")}
    model = keras.Model(inputs, backbone.call(inputs), name="bert_tiny")
    x = {"token_ids": rng.integers(0, 30522, (batch, sequence_length)).astype("int32"),
         "segment_ids": rng.integers(0, 2, (batch, sequence_length)).astype("int32"),
         "padding_mask": np.ones((batch, sequence_length), "int32")}
    return model, x, f"{sequence_length} tokens"


def vit_tiny(size, batch, rng):
    """ViT-Ti/16's layout (hidden 192, 3 heads, 12 layers, MLP 768)."""
    import keras_hub

    size = max(16, size // 16 * 16)
    model = keras_hub.models.ViTBackbone(
        image_shape=(size, size, 3), patch_size=16, num_layers=12, num_heads=3,
        hidden_dim=192, mlp_dim=768)
    x = rng.uniform(0, 1, size=(batch, size, size, 3)).astype("float32")
    return model, x, size


def mobilenet_v3_small(size, batch, rng):
    """MobileNetV3-Small 1.0's layout (939,120 parameters, as the KerasHub preset)."""
    import keras_hub_layouts

    model = keras_hub_layouts.mobilenet_v3_small(size)
    x = rng.uniform(0, 1, size=(batch, size, size, 3)).astype("float32")
    return model, x, size


# KerasHub backbones: name -> fn(size, batch, rng) -> (model, inputs, input label).
KERAS_HUB = {
    "BertBackbone": lambda size, batch, rng: bert_tiny(FLAGS.sequence_length, batch, rng),
    "ViTBackbone": vit_tiny,
    "MobileNetBackbone": mobilenet_v3_small,
}


def constructors():
    import keras

    names = sorted(n for n in dir(keras.applications) if n[:1].isupper())
    return [n for n in names if callable(getattr(keras.applications, n))]


def build(name, size, batch):
    """`(model, inputs, input label)` of a keras.applications or KerasHub row."""
    import keras

    rng = np.random.default_rng(0)
    if name in KERAS_HUB:
        return KERAS_HUB[name](size, batch, rng)
    size = max(size, MIN_SIZE.get(name, 0))
    model = getattr(keras.applications, name)(
        weights=None, input_shape=(size, size, 3), classifier_activation=None
    )
    return model, rng.uniform(0, 255, size=(batch, size, size, 3)).astype("float32"), size


def relative_error(expected, got):
    """max |got - expected| / max |expected|, the worst over the model's outputs."""
    import keras

    worst = 0.0
    for a, b in zip(keras.tree.flatten(expected), keras.tree.flatten(got)):
        a, b = np.asarray(a), np.asarray(b)
        worst = max(worst, float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-12)))
    return worst


def run_one(name, size, sparsity, batch):
    import tfprune

    start = time.perf_counter()
    model, x, size = build(name, size, batch)
    graph = tfprune.DependencyGraph(model)
    channels = sum(g.size for g in graph.groups if g.layers)
    prunable = sum(g.size for g in graph.prunable_groups)
    pruned = tfprune.prune_channels(model, tfprune.ConstantSparsity(sparsity, 0))
    small = tfprune.shrink(pruned)
    error = relative_error(pruned(x), small(x))
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

    names = FLAGS.models or constructors() + list(KERAS_HUB)
    print(f"{len(names)} models; input {FLAGS.size}x{FLAGS.size} (or the model's minimum; "
          f"KerasHub text: {FLAGS.sequence_length} tokens), {FLAGS.sparsity:.0%} of channels "
          "per prunable group, l2 importance.\n")
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

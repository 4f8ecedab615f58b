r"""Does removing attention heads and FFN channels make transformers faster, as MACs promise?

Two on-device-sized transformers (plain Keras 3 layers, random weights: speed
does not depend on their values):

  vit   ViT-style: 224x224 image, 16x16 patches (196 tokens), width 192,
        6 heads, MLP 768, 6 pre-norm blocks, learned position embedding,
        average-pooled classifier
  bert  BERT-style: 128 tokens, vocabulary 8192, width 256, 4 heads, FFN
        1024, 4 blocks, token and position Embedding, average pooling,
        tanh pooler and classifier

are wrapped with `tfprune.prune_channels`; in every block half of the
attention heads (groups holding a MultiHeadAttention `[heads]` slot) and half
of the FFN channels (the group of `<block>_ffn_up[out]`, `<block>_ffn_down[in]`)
are kept, the ones with the highest l2 importance (`ChannelPruner.scores()`);
every other group (the residual stream, the pooler) stays whole. The model is
shrunk with `tfprune.shrink`, checked against the masked model (relative
error <= 1e-5), and MACs are counted with `tfprune.count_macs`.

Dense and pruned models are converted to float32 and INT8 (full-integer, a
small random calibration set) TFLite with `tflite_export.conversion` (the
path `tflite_export.export` takes, fully integer: LayerNormalization is
traced without the float NEG Keras 3 would leave, see
`tflite_export.integer_normalization`), and timed in LiteRT (XNNPACK) at each
thread count, all in one run. For each model and precision, the dense and
pruned interpreters of every thread count run in interleaved rounds: each
round times dense and pruned back to back (`--runs_per_round` invokes each,
which one goes first alternating), so both see the same load from other
processes. The speedup is the median over rounds of dense ms / pruned ms
(on a shared machine the load comes in bursts, which makes the median of
each model's own rounds jump between the loaded and the quiet mode, while
the two halves of a round see the same load). Milliseconds are printed as
median round (fastest round).

Reported per row: speedup (dense ms / pruned ms), MAC ratio (dense MACs /
pruned MACs), speedup / MAC ratio, and the target speedup >= 0.8 x MAC ratio
(PASS/FAIL per row and overall). Also printed: the ops an INT8 conversion
left in float, and how LiteRT split each graph between XNNPACK partitions
and its own kernels.

Measured on x86 (AMD EPYC, 2 shared cores, 2026-11-30, LiteRT 2.3), two runs:
float32 graphs run as one XNNPACK partition, speedup / MAC ratio 0.93-0.98.
INT8 graphs split into 23-32 partitions: XNNPACK takes no int8 SOFTMAX,
GELU, BATCH_MATMUL (attention scores and weighted values) or RSQRT, which run
in LiteRT's own kernels; INT8 speedup / MAC ratio was ViT 1.06-1.08 and BERT
0.91-0.94 (8/8 rows PASS). Earlier runs measured BERT INT8 at 0.77-0.80:
first with Keras's LayerNormalization converted as it is (a float NEG), then
with the NEG removed but the variance a SQUARED_DIFFERENCE, which XNNPACK
does not take in int8 (INT8 BERT 11.4 ms dense, 7.2 ms pruned at one
thread; now 9.0 and 4.8). The LayerNorm parts work on the residual stream,
which is not pruned here, so the part LiteRT ran outside XNNPACK did not
shrink; with the square as a product (MUL) XNNPACK runs it.

Usage:
  python benchmarks/transformer_speedup.py
  python benchmarks/transformer_speedup.py --models=bert --threads=1,2,4 --rounds=40
  python benchmarks/transformer_speedup.py --quick   # tiny models, seconds (a smoke test)
"""

import time

from tflite_export import _quiet  # noqa: E402

_quiet.setup()  # before TensorFlow: no CUDA/oneDNN start-up lines

import numpy as np  # noqa: E402
from absl import app, flags, logging  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("models", "vit,bert", "Models to benchmark (vit, bert).")
flags.DEFINE_list("precisions", "float32,int8", "TFLite precisions to time.")
flags.DEFINE_list("threads", "1,2", "LiteRT thread counts.")
flags.DEFINE_float("heads_keep", 0.5, "Fraction of attention heads kept in every block.")
flags.DEFINE_float("ffn_keep", 0.5, "Fraction of FFN channels kept in every block.")
flags.DEFINE_integer("rounds", 60, "Interleaved timing rounds.")
flags.DEFINE_integer("runs_per_round", 3, "Invokes per interpreter per round.")
flags.DEFINE_integer("calibration_samples", 8, "Random examples calibrating INT8.")
flags.DEFINE_float("target", 0.8, "Required speedup / MAC ratio.")
flags.DEFINE_bool("quick", False, "Tiny models, at most 3 rounds of 2 invokes and 2 "
                  "calibration examples: a smoke test in seconds.")

# Layer-name suffix of the first FFN Dense of a block: its output group is an FFN group.
FFN_UP = "_ffn_up"
MAX_REL_ERR = 1e-5

CONFIGS = {
    "vit": dict(image_size=224, patch=16, dim=192, heads=6, mlp=768, blocks=6, classes=1000),
    "bert": dict(seq_len=128, vocab=8192, dim=256, heads=4, mlp=1024, blocks=4, classes=2),
}
QUICK_CONFIGS = {
    "vit": dict(image_size=32, patch=8, dim=32, heads=4, mlp=64, blocks=2, classes=10),
    "bert": dict(seq_len=16, vocab=128, dim=32, heads=4, mlp=64, blocks=2, classes=2),
}


def encoder_block(x, name, heads, dim, mlp):
    """Pre-norm transformer block: LN, self-attention, residual; LN, GELU FFN, residual."""
    from keras import layers

    h = layers.LayerNormalization(epsilon=1e-6, name=f"{name}_ln1")(x)
    h = layers.MultiHeadAttention(heads, dim // heads, name=f"{name}_mha")(h, h)
    x = layers.Add(name=f"{name}_attn_residual")([x, h])
    h = layers.LayerNormalization(epsilon=1e-6, name=f"{name}_ln2")(x)
    h = layers.Dense(mlp, activation="gelu", name=f"{name}{FFN_UP}")(h)
    h = layers.Dense(dim, name=f"{name}_ffn_down")(h)
    return layers.Add(name=f"{name}_ffn_residual")([x, h])


def position_ids(batch_column, length):
    """`(batch, length)` int32 positions 0..length-1 built from a `(batch, 1)` tensor.

    Deriving the ids from the model input (rather than from a constant
    `keras.ops.arange` alone) puts the position Embedding in the functional
    graph, so its table is a weight of the model.
    """
    import keras

    zero = keras.ops.cast(keras.ops.zeros_like(batch_column), "int32")
    return zero + keras.ops.arange(length, dtype="int32")


def vit(image_size, patch, dim, heads, mlp, blocks, classes):
    """ViT-style classifier: patch embedding, learned positions, encoder, average pooling."""
    import keras
    from keras import layers

    tokens = (image_size // patch) ** 2
    image = keras.Input((image_size, image_size, 3), name="image")
    x = layers.Conv2D(dim, patch, strides=patch, name="patch_embedding")(image)
    x = layers.Reshape((tokens, dim), name="patches")(x)
    positions = position_ids(image[:, 0, 0, :1], tokens)
    x = layers.Add(name="add_positions")(
        [x, layers.Embedding(tokens, dim, name="position_embedding")(positions)])
    for i in range(blocks):
        x = encoder_block(x, f"block{i}", heads, dim, mlp)
    x = layers.LayerNormalization(epsilon=1e-6, name="final_ln")(x)
    x = layers.GlobalAveragePooling1D(name="pool")(x)
    return keras.Model(image, layers.Dense(classes, name="head")(x), name="vit")


def bert(seq_len, vocab, dim, heads, mlp, blocks, classes):
    """BERT-style classifier: token + position Embedding, LN, encoder, pooler, head."""
    import keras
    from keras import layers

    token_ids = keras.Input((seq_len,), dtype="int32", name="token_ids")
    x = layers.Embedding(vocab, dim, name="token_embedding")(token_ids)
    positions = position_ids(token_ids[:, :1], seq_len)
    x = layers.Add(name="add_positions")(
        [x, layers.Embedding(seq_len, dim, name="position_embedding")(positions)])
    x = layers.LayerNormalization(epsilon=1e-6, name="embedding_ln")(x)
    for i in range(blocks):
        x = encoder_block(x, f"block{i}", heads, dim, mlp)
    x = layers.GlobalAveragePooling1D(name="pool")(x)
    x = layers.Dense(dim, activation="tanh", name="pooler")(x)
    return keras.Model(token_ids, layers.Dense(classes, name="head")(x), name="bert")


BUILDERS = {"vit": vit, "bert": bert}


def random_inputs(name, config, count, rng):
    """`count` random examples for a model: images in [0, 1), or token ids below the vocab."""
    if name == "vit":
        size = config["image_size"]
        return rng.random((count, size, size, 3), dtype=np.float32)
    return rng.integers(0, config["vocab"], size=(count, config["seq_len"]), dtype=np.int32)


def group_kind(group):
    """'heads', 'ffn' or None (kept whole) for a channel group."""
    if any(slot == "heads" for _, slot in group.layers):
        return "heads"
    if any(layer.name.endswith(FFN_UP) and slot == "out" for layer, slot in group.layers):
        return "ffn"
    return None


def prune_heads_and_ffn(model, heads_keep, ffn_keep):
    """Masks the least important heads and FFN channels of every block, then shrinks.

    Returns:
      `(masked, shrunk, kept)`: the `prune_channels` model with the masks set,
      its `tfprune.shrink`, and `{kind: [(kept, total, first layer[slot]), ...]}`
      per group, kind "heads", "ffn" or "whole".
    """
    import tfprune

    masked = tfprune.prune_channels(model, tfprune.ConstantSparsity(0.0, 0))
    pruner = tfprune.get_channel_pruner(masked)
    scores = pruner.scores()
    fractions = {"heads": heads_keep, "ffn": ffn_keep}
    keep, kept = {}, {"heads": [], "ffn": [], "whole": []}
    for group in pruner.groups:
        kind = group_kind(group)
        flags_ = np.ones(group.size, dtype=bool)
        if kind is not None:
            count = max(1, int(round(group.size * fractions[kind])))
            order = np.argsort(-np.asarray(scores[group.id]), kind="stable")
            flags_[:] = False
            flags_[order[:count]] = True
        keep[group.id] = flags_
        layer, slot = group.layers[0]
        kept[kind or "whole"].append((int(flags_.sum()), group.size, f"{layer.name}[{slot}]"))
    pruner.set_keep(keep)
    return masked, tfprune.shrink(masked), kept


def relative_error(reference, other, x):
    """max |reference(x) - other(x)| / max |reference(x)|."""
    a = np.asarray(reference(x, training=False))
    b = np.asarray(other(x, training=False))
    return float(np.abs(a - b).max() / np.abs(a).max())


def to_tflite(model, precision, calibration):
    """Converts `model` through `tflite_export` (int8: full-integer, int8 I/O).

    No float fallback: an op without an INT8 kernel fails the run
    (`tflite_export.UnsupportedOpsError` names it).

    Returns:
      A `tflite_export.conversion.ConversionResult`.
    """
    from tflite_export import conversion, data, sources

    prepared = sources.prepare(model)
    try:
        samples = None
        if precision == "int8":
            samples = data.representative_samples(calibration, prepared.signatures)
        io_type = "int8" if precision == "int8" else "float32"
        return conversion.convert(prepared.saved_model_dir, precision, samples, io_type,
                                  io_type, allow_float_fallback=False,
                                  sparse_format="never")
    finally:
        prepared.cleanup()


def make_interpreter(content, threads, example):
    """A LiteRT interpreter (XNNPACK) with `example` set as its input, warmed up."""
    from tflite_export import litert

    interpreter = litert.make_interpreter(content, num_threads=threads)
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    interpreter.set_tensor(detail["index"], litert.quantize_input(example, detail))
    for _ in range(3):  # the first runs pack weights
        interpreter.invoke()
    return interpreter


def xnnpack_coverage(interpreter):
    """How LiteRT split an (allocated) interpreter's graph between XNNPACK and its own kernels.

    Each DELEGATE node stands for one XNNPACK partition; the original nodes
    it replaced are found by walking back from its output tensors to its
    input tensors (TFLite partitions are convex).

    Returns:
      `(partitions, outside)`: the number of XNNPACK partitions and a
      `collections.Counter` of the op names LiteRT runs itself.
    """
    import collections

    ops = interpreter._get_ops_details()  # As tflite_export.conversion.float_ops.
    delegates = [op for op in ops if op["op_name"] == "DELEGATE"]
    nodes = [op for op in ops if op["op_name"] != "DELEGATE"]
    producer = {t: op["index"] for op in nodes for t in op["outputs"]}
    by_index = {op["index"]: op for op in nodes}
    delegated = set()
    for delegate in delegates:
        boundary = set(int(t) for t in delegate["inputs"])
        todo = [int(t) for t in delegate["outputs"]]
        while todo:
            tensor = todo.pop()
            index = producer.get(tensor)
            if tensor in boundary or index is None or index in delegated:
                continue
            delegated.add(index)
            todo += [int(t) for t in by_index[index]["inputs"] if t >= 0]
    outside = collections.Counter(op["op_name"] for op in nodes if op["index"] not in delegated)
    return len(delegates), outside


def time_pairs(pairs, rounds, runs):
    """Times dense/pruned interpreter pairs in interleaved rounds.

    Every round times each pair back to back (which of the two goes first
    alternates, and so does the order of the pairs), `runs` invokes each, so
    the two models of a pair see the same load from other processes.

    Args:
      pairs: `{key: (dense_interpreter, pruned_interpreter)}`.
      rounds: Number of rounds.
      runs: Invokes per interpreter per round.

    Returns:
      `{key: (dense_ms, pruned_ms)}`: per-round mean milliseconds per invoke.
    """
    times = {key: ([], []) for key in pairs}
    keys = list(pairs)
    for r in range(rounds):
        for key in keys if r % 2 == 0 else keys[::-1]:
            for which in ((0, 1) if (r // 2) % 2 == 0 else (1, 0)):
                interpreter = pairs[key][which]
                start = time.perf_counter()
                for _ in range(runs):
                    interpreter.invoke()
                times[key][which].append((time.perf_counter() - start) * 1e3 / runs)
    return times


def benchmark_model(name, config, threads, rng):
    """Builds, prunes, checks, converts and times one model; returns its table rows."""
    import keras
    import tfprune

    start = time.perf_counter()
    dense = BUILDERS[name](**config)
    masked, pruned, kept = prune_heads_and_ffn(dense, FLAGS.heads_keep, FLAGS.ffn_keep)
    x = random_inputs(name, config, 4, rng)
    err = relative_error(masked, pruned, x)
    macs = {"dense": tfprune.count_macs(dense), "pruned": tfprune.count_macs(pruned)}
    params = {"dense": dense.count_params(), "pruned": pruned.count_params()}
    mac_ratio = macs["dense"] / macs["pruned"]
    print(f"\n## {name}: {', '.join(f'{k}={v}' for k, v in config.items())}")
    for kind, label in (("heads", "attention heads"), ("ffn", "FFN channels")):
        print(f"  {label}: kept {' '.join(f'{k}/{t}' for k, t, _ in kept[kind])}")
    print(f"  kept whole: {', '.join(f'{first} ({t})' for _, t, first in kept['whole']) or 'none'}")
    for which in ("dense", "pruned"):
        print(f"  {which:6s} MACs {macs[which] / 1e6:8.1f} M  params {params[which] / 1e6:6.2f} M")
    print(f"  MAC ratio {mac_ratio:.2f}x; shrunk vs masked relative error {err:.1e} "
          f"(<= {MAX_REL_ERR:g}: {'PASS' if err <= MAX_REL_ERR else 'FAIL'})")

    calibration = random_inputs(name, config, FLAGS.calibration_samples, rng)
    example = random_inputs(name, config, 1, rng)
    rows = []
    for precision in FLAGS.precisions:
        results = {which: to_tflite(model, precision, calibration)
                   for which, model in (("dense", dense), ("pruned", pruned))}
        contents = {which: result.content for which, result in results.items()}
        floats = sorted({op for result in results.values() for op in result.float_ops})
        print(f"  {precision}: .tflite {len(contents['dense']) / 1e6:.2f} MB dense, "
              f"{len(contents['pruned']) / 1e6:.2f} MB pruned"
              + (f"; ops left in float: {', '.join(floats)}" if floats else ""))
        pairs = {n: tuple(make_interpreter(contents[which], n, example)
                          for which in ("dense", "pruned")) for n in threads}
        partitions, outside = xnnpack_coverage(pairs[threads[0]][0])
        print(f"    LiteRT: {partitions} XNNPACK partition(s); run by LiteRT's own kernels: "
              f"{', '.join(f'{op} x{n}' for op, n in sorted(outside.items())) or 'none'}")
        times = time_pairs(pairs, FLAGS.rounds, FLAGS.runs_per_round)
        for n in threads:
            dense_ms, pruned_ms = (np.asarray(t) for t in times[n])
            speedup = float(np.median(dense_ms / pruned_ms))
            rows.append(dict(model=name, precision=precision, threads=n,
                             median={"dense": np.median(dense_ms), "pruned": np.median(pruned_ms)},
                             best={"dense": dense_ms.min(), "pruned": pruned_ms.min()},
                             speedup=speedup, mac_ratio=mac_ratio,
                             efficiency=speedup / mac_ratio))
        del pairs
    keras.backend.clear_session()
    print(f"  ({time.perf_counter() - start:.0f} s)")
    return rows, err


def print_table(rows, target):
    print("\n| model | precision | threads | dense ms | pruned ms | speedup | MAC ratio | "
          "speedup / MAC ratio | target |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        verdict = "PASS" if r["efficiency"] >= target else "FAIL"
        print(f"| {r['model']} | {r['precision']} | {r['threads']} | "
              f"{r['median']['dense']:.2f} ({r['best']['dense']:.2f}) | "
              f"{r['median']['pruned']:.2f} ({r['best']['pruned']:.2f}) | "
              f"{r['speedup']:.2f}x | {r['mac_ratio']:.2f}x | {r['efficiency']:.3f} | "
              f"{verdict} |")
    print("(per-invoke ms: median round, fastest round in parentheses; speedup: median over "
          "rounds of dense ms / pruned ms measured back to back in the same round)")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    import keras

    unknown = [m for m in FLAGS.models if m not in BUILDERS]
    if unknown:
        raise app.UsageError(f"--models: unknown {unknown}; choose from {sorted(BUILDERS)}.")
    for flag in ("heads_keep", "ffn_keep"):
        if not 0.0 <= FLAGS[flag].value <= 1.0:
            raise app.UsageError(f"--{flag}={FLAGS[flag].value} must be in [0, 1] (at least "
                                 "one head / channel per block is always kept).")
    if FLAGS.quick:
        FLAGS.rounds = min(FLAGS.rounds, 3)
        FLAGS.runs_per_round = min(FLAGS.runs_per_round, 2)
        FLAGS.calibration_samples = min(FLAGS.calibration_samples, 2)
    configs = QUICK_CONFIGS if FLAGS.quick else CONFIGS
    threads = [int(t) for t in FLAGS.threads]
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    print(f"Keep {FLAGS.heads_keep:.0%} of heads and {FLAGS.ffn_keep:.0%} of FFN channels "
          f"per block (l2 importance); LiteRT threads {threads}, {FLAGS.rounds} rounds x "
          f"{FLAGS.runs_per_round} invokes")
    rows, errors = [], []
    for name in FLAGS.models:
        model_rows, err = benchmark_model(name, configs[name], threads, rng)
        rows += model_rows
        errors.append(err)
    print_table(rows, FLAGS.target)
    ok_rows = all(r["efficiency"] >= FLAGS.target for r in rows)
    ok_err = all(e <= MAX_REL_ERR for e in errors)
    print(f"speedup >= {FLAGS.target} x MAC ratio: {'PASS' if ok_rows else 'FAIL'} "
          f"({sum(r['efficiency'] >= FLAGS.target for r in rows)}/{len(rows)} rows)")
    print(f"shrunk == masked (relative error <= {MAX_REL_ERR:g}): "
          f"{'PASS' if ok_err else 'FAIL'} (max {max(errors):.1e})")
    print(f"Total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    app.run(main)

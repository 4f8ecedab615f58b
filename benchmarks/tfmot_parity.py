r"""tfprune against tfmot, side by side: the same schedules, weights and batches.

Two parts, in one run:

1. Parity. For each case in `CASES`, the same architecture with the same
   initial weights is pruned twice: in `tf_keras` with tfmot
   (`tfmot.sparsity.keras.prune_low_magnitude` + `UpdatePruningStep`) and in
   Keras 3 with tfprune (`tfprune.prune_low_magnitude` +
   `tfprune.UpdatePruningStep`), with the same schedule and the same batches
   in the same order (no shuffling). After every batch both record each
   wrapper's `pruning_step` and masks. Steps and the number of zeros in each
   mask are compared after every batch; masks wherever both compute them
   from the same weights, which each case arranges in one of four ways
   (`Case.mode`):
     frozen    SGD with learning rate 0: the weights never change.
     copied    Adam; before every step the schedule updates masks at,
               tfmot's weights (the values its mask update is about to read)
               are copied into the Keras 3 model.
     lockstep  the same on the Fashion-MNIST CNN, at every batch: the
               weights both libraries hold after the same optimizer step
               (pruned weights as the optimizer moved them off zero, which
               both rank at the next update; zero again at epoch ends).
     trained   no copying: masks until the schedule's second update (float
               round-off separates the two runs after that).
   Printed: (a) per-batch sparsity of both over all pruned weights, and
   (b) the fraction of identical masks (target 100%), with the first
   difference of each case that has one.

2. Overhead. The training time per epoch of each library's wrapped model
   against its own plain model (same architecture, same framework), on the
   CNN and data of `training_overhead.py` (whose worker processes are
   reused): four processes take turns every few steps (`_timing.TokenRing`),
   so all four see the same outside load. Many short epochs; the ratio is
   the median of the per-epoch ratios wrapped/plain. Targets: tfprune at
   most 1.10x, and below tfmot's ratio.

Usage:
  python benchmarks/tfmot_parity.py                  # both parts, a few minutes
  python benchmarks/tfmot_parity.py --skip_overhead  # parity only (~1 minute)

`tests/test_tfmot_parity.py` runs the same cases (`CASES`, `run_case`) with
assertions.
"""

import argparse
import contextlib
import dataclasses
import functools
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))

# -- the two frameworks ------------------------------------------------------------


@contextlib.contextmanager
def quiet_native_stderr(path=os.devnull):
    """Sends what TensorFlow's C++ code writes to stderr to `path` instead.

    TF 2.21 logs its start-up (oneDNN, CUDA drivers, cuInit) before absl
    logging is initialized, where TF_CPP_MIN_LOG_LEVEL does not apply, and
    some kernels log errors while running. File descriptor 2 goes to `path`;
    Python's `sys.stderr` (warnings, tracebacks) stays on the terminal.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    python_stderr = sys.stderr
    try:
        os.dup2(target, 2)
        sys.stderr = os.fdopen(os.dup(saved), "w", buffering=1)
        yield
    finally:
        sys.stderr.flush()
        sys.stderr.close()
        sys.stderr = python_stderr
        os.dup2(saved, 2)
        os.close(saved)
        os.close(target)


def import_frameworks():
    """Imports Keras 3 + tfprune and tf_keras + tfmot; returns a namespace.

    Importing tfmot sets TF_USE_LEGACY_KERAS=1 for the process; tfprune uses
    `keras` (Keras 3) directly, so both live side by side.
    """
    legacy = os.environ.get("TF_USE_LEGACY_KERAS")
    import keras
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot
    import tf_keras

    import tfprune

    if legacy is None:  # tfmot has its tf_keras; keep the variable out of this process
        os.environ.pop("TF_USE_LEGACY_KERAS", None)
    tf.get_logger().setLevel("ERROR")
    return dataclasses.make_dataclass("Frameworks", ["keras", "tf_keras", "tfmot", "tfprune", "tf"])(
        keras, tf_keras, tfmot, tfprune, tf
    )


# -- architectures (written once for both layer APIs) ---------------------------------


def mlp(features, *units, activation=None):
    """An architecture of Dense layers `d1, d2, ...` on `features` inputs."""

    def build(layers, Input):
        inputs = x = Input((features,), name="x")
        for number, width in enumerate(units, 1):
            last = number == len(units)
            x = layers.Dense(width, activation=None if last else activation, name=f"d{number}")(x)
        return inputs, x

    return build


dense_net = mlp(16, 5, 3)  # an 80-weight and a 15-weight kernel
wide_dense_net = mlp(16, 10, 7, 2, activation="tanh")  # 160, 70, 14 weights: many roundings
block_net = mlp(16, 6, 4)  # 16x6 and 6x4 kernels, both tiled by 2x2 blocks
small_dense_net = mlp(8, 5, 2)  # a 40-weight and a 10-weight kernel


def conv_net(layers, Input):
    """Conv2D 3x3 4->8 on 6x6x4, then Dense 128 -> 4 (4 divides both inputs)."""
    inputs = Input((6, 6, 4), name="x")
    x = layers.Conv2D(8, 3, activation="relu", name="conv")(inputs)
    x = layers.Flatten(name="flatten")(x)
    return inputs, layers.Dense(4, name="d1")(x)


def fashion_cnn(layers, Input):
    """A small Fashion-MNIST CNN: two strided convolutions and a classifier."""
    inputs = Input((28, 28, 1), name="image")
    x = layers.Conv2D(8, 3, strides=2, activation="relu", name="conv1")(inputs)
    x = layers.Conv2D(16, 3, strides=2, activation="relu", name="conv2")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(32, activation="relu", name="fc1")(x)
    return inputs, layers.Dense(10, name="logits")(x)


# -- cases ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Case:
    """One side-by-side run.

    Attributes:
      build: An architecture function above.
      schedule: `(class name, ((argument, value), ...))`, the same for tfmot
        and tfprune.
      prune: Extra `prune_low_magnitude` arguments (block_size, sparsity_m_by_n).
      learning_rate: 0.0 freezes the weights (SGD); otherwise Adam.
      mode: How masks are compared: "frozen" (every batch); "copied"
        (tfmot's weights, as its mask update reads them, are copied into the
        Keras 3 model before every update step; every batch); "lockstep"
        (the same, but times the masks tfmot held, as tfprune's constraints
        leave the weights after an optimizer step; every batch)
        or "trained" (no copying: masks until the second update, sparsity
        and steps every batch).
      data: "random" (Gaussian inputs, regression targets) or "fashion"
        (Fashion-MNIST images and labels).
      steps_per_execution: tfprune's; tfmot always runs one step per call,
        and batches are compared where tfprune's executions end.
      jit_compile: tfprune's (XLA); tfmot runs without.
      fits: `fit` calls one after the other, of `epochs` epochs each.
      weights: "init" (the Keras 3 initializers) or "ties" (kernels rounded
        to multiples of 0.1, some exactly 0: many equal magnitudes).
    """

    build: object
    schedule: tuple
    prune: tuple = ()
    learning_rate: float = 0.0
    mode: str = "frozen"
    data: str = "random"
    examples: int = 64
    batch_size: int = 8
    epochs: int = 1
    steps_per_execution: int = 1
    jit_compile: bool = False
    fits: int = 1
    weights: str = "init"
    seed: int = 0

    @property
    def description(self):
        name, kwargs = self.schedule
        args = ", ".join(f"{k}={v}" for k, v in kwargs)
        extra = "".join(f", {k}={v}" for k, v in self.prune)
        return f"{name}({args}){extra}"


def _poly(initial, final, begin, end, frequency, power=3):
    return ("PolynomialDecay", (("initial_sparsity", initial), ("final_sparsity", final),
                                ("begin_step", begin), ("end_step", end), ("power", power),
                                ("frequency", frequency)))


def _constant(target, begin, end=-1, frequency=100):
    return ("ConstantSparsity", (("target_sparsity", target), ("begin_step", begin),
                                 ("end_step", end), ("frequency", frequency)))


CASES = {
    # tfmot: sparsity 0.2, 0.4875, 0.5875, 0.6 after batches 1-4 (80-weight kernel).
    "poly_every_step": Case(dense_net, _poly(0.2, 0.6, 1, 4, 1)),
    # Two fit calls of 12 batches: the second continues the step count.
    "poly_long": Case(wide_dense_net, _poly(0.0, 0.9, 0, 23, 1), examples=96, fits=2),
    "constant_begin3_freq4": Case(dense_net, _constant(0.5, 3, 14, 4), examples=128),
    # 10 weights at 0.25: tfmot keeps round(7.5) = 8 (half to even).
    "constant_rounding": Case(small_dense_net, _constant(0.25, 0, -1, 1), examples=32),
    # 40 weights at 0.99: tfmot keeps max(round(0.4), 1) = 1.
    "constant_0.99": Case(small_dense_net, _constant(0.99, 2, -1, 3), examples=48),
    # Equal magnitudes; at first more zeros than the sparsity prunes (threshold 0).
    "ties": Case(dense_net, _poly(0.05, 0.6, 1, 5, 1), weights="ties", examples=48),
    "ties_xla": Case(dense_net, _poly(0.05, 0.6, 1, 5, 1), weights="ties", examples=48,
                     jit_compile=True),
    "block_2x2_avg": Case(block_net, _poly(0.1, 0.7, 1, 6, 1), prune=(("block_size", (2, 2)),)),
    "block_2x2_max": Case(block_net, _poly(0.1, 0.7, 1, 6, 1),
                          prune=(("block_size", (2, 2)), ("block_pooling_type", "MAX"))),
    # 16x5 and 5x3 kernels: tfmot pools 2x2 blocks with SAME padding.
    "block_2x2_not_dividing": Case(dense_net, _poly(0.1, 0.7, 1, 6, 1),
                                   prune=(("block_size", (2, 2)),)),
    "m_by_n_2_4": Case(conv_net, _poly(0.2, 0.8, 0, 6, 2), prune=(("sparsity_m_by_n", (2, 4)),)),
    "m_by_n_2_4_trained": Case(conv_net, _constant(0.5, 0, -1, 1),
                               prune=(("sparsity_m_by_n", (2, 4)),), learning_rate=1e-2,
                               mode="trained"),
    "steps_per_execution_3": Case(wide_dense_net, _poly(0.1, 0.8, 1, 12, 1), examples=128,
                                  steps_per_execution=3),
    # Adam at a high rate, masks recomputed at every step for 4 epochs: tfmot
    # keeps some pruned weights again; tfprune, given the same weights, must too.
    "adam_copied": Case(dense_net, _constant(0.5, 1, -1, 1), learning_rate=5e-2, mode="copied",
                        epochs=4),
    "fashion_cnn_lockstep": Case(fashion_cnn, _poly(0.3, 0.8, 1, 16, 3), learning_rate=1e-3,
                                 mode="lockstep", data="fashion", examples=256, batch_size=32,
                                 epochs=2),
    # Masks recomputed at every one of 64 steps at a constant sparsity.
    "fashion_cnn_constant_lockstep": Case(fashion_cnn, _constant(0.5, 1, -1, 1),
                                          learning_rate=1e-3, mode="lockstep", data="fashion",
                                          examples=2048, batch_size=32),
    "fashion_cnn_trained": Case(fashion_cnn, _poly(0.3, 0.8, 1, 16, 3), learning_rate=1e-3,
                                mode="trained", data="fashion", examples=256, batch_size=32,
                                epochs=2),
}


@functools.lru_cache(maxsize=1)
def _fashion_mnist_train():
    import tfprune

    return tfprune.datasets.load_fashion_mnist()[0]


def make_data(case, fw):
    """Inputs and targets, float32, in a fixed order."""
    rng = np.random.default_rng(case.seed)
    if case.data == "fashion":
        x, y = _fashion_mnist_train()
        x = (x[: case.examples].astype(np.float32) / 255.0)[..., None]
        return x, y[: case.examples].astype(np.int32)
    inputs, outputs = case.build(fw.keras.layers, fw.keras.Input)
    x = rng.normal(size=(case.examples, *inputs.shape[1:])).astype(np.float32)
    y = rng.normal(size=(case.examples, *outputs.shape[1:])).astype(np.float32)
    return x, y


def initial_weights(case, fw):
    """One set of initial weights for both frameworks (Keras 3's initializers)."""
    fw.keras.utils.set_random_seed(case.seed)
    weights = fw.keras.Model(*case.build(fw.keras.layers, fw.keras.Input)).get_weights()
    if case.weights == "ties":
        # Kernels to multiples of 0.1 (a fifth of them 0): ranks full of ties.
        weights = [np.round(w * 5.0, 0) / 10.0 if w.ndim > 1 else w for w in weights]
    return [np.asarray(w, dtype=np.float32) for w in weights]


# -- recording ------------------------------------------------------------------------


@dataclasses.dataclass
class Record:
    """The state after one batch (or one execution): `batch` is 1-based."""

    batch: int
    steps: list  # pruning_step of each wrapper
    masks: list  # per wrapper, a list of mask arrays


@dataclasses.dataclass
class Trace:
    names: list  # wrapper names
    records: dict  # batch -> Record
    inputs: dict = dataclasses.field(default_factory=dict)  # batch -> per wrapper, layer weights
    revived: int = 0  # weights a mask update kept that the previous mask removed


def _tfmot_masks(wrapper):
    return [mask for _, mask, _ in wrapper.pruning_vars]


def _tfprune_masks(wrapper):
    return [mask for _, mask in wrapper.masked_weights]


def _recorder(callback_base, steps_per_epoch, get_masks, before_step=None):
    """A callback recording every wrapper's step and masks after each batch.

    `before_step(batch, wrappers, trace)`, if given, runs before each
    training call (`batch` is the 1-based number of the call's first batch).
    """

    class Recorder(callback_base):
        def __init__(self):
            super().__init__()
            self.trace = None
            self._epoch = 0

        def on_train_begin(self, logs=None):
            # tfmot also wraps layers without weights (Flatten); those mask nothing.
            self.wrappers = [l for l in self.model.layers
                             if hasattr(l, "pruning_step") and get_masks(l)]
            if self.trace is None:  # a later fit continues the trace
                self.trace = Trace([w.name for w in self.wrappers], {})

        def on_epoch_begin(self, epoch, logs=None):
            self._epoch = epoch

        def _batch(self, batch):
            # Keras 3 reports a short last execution as if it were full.
            return self._epoch * steps_per_epoch + min(batch, steps_per_epoch - 1) + 1

        def on_train_batch_begin(self, batch, logs=None):
            if before_step is not None:
                before_step(self._batch(batch), self.wrappers, self.trace)

        def on_train_batch_end(self, batch, logs=None):
            number = self._batch(batch)
            previous = self.trace.records.get(max(self.trace.records, default=None))
            masks = [[np.array(m.numpy()) for m in get_masks(w)] for w in self.wrappers]
            if previous is not None:
                for old, new in zip(previous.masks, masks):
                    self.trace.revived += sum(
                        int(np.count_nonzero((o == 0) & (n != 0))) for o, n in zip(old, new)
                    )
            steps = [int(np.asarray(w.pruning_step.numpy())) for w in self.wrappers]
            self.trace.records[number] = Record(number, steps, masks)

    return Recorder()


def _schedule(module, case):
    name, kwargs = case.schedule
    return getattr(module, name)(**dict(kwargs))


def _prune_kwargs(case, module):
    return dict(pruning_schedule=_schedule(module, case), **dict(case.prune))


def update_steps(case, fw, last_step):
    """The steps at which tfmot recomputes masks (its own schedule decides)."""
    if dict(case.prune).get("sparsity_m_by_n"):
        return {1}
    schedule = _schedule(fw.tfmot.sparsity.keras, case)
    return {s for s in range(1, last_step + 1)
            if bool(schedule(fw.tf.constant(s, fw.tf.int64))[0])}


def _fit(model, module, case, x, y, callbacks, **compile_kwargs):
    """Compiles, then trains `case.fits` times `case.epochs` epochs (epochs numbered on)."""
    if case.learning_rate == 0.0:
        optimizer = module.optimizers.SGD(0.0)
    else:
        optimizer = module.optimizers.Adam(case.learning_rate)
    if case.data == "fashion":
        loss = module.losses.SparseCategoricalCrossentropy(from_logits=True)
    else:
        loss = module.losses.MeanSquaredError()
    model.compile(optimizer=optimizer, loss=loss, **compile_kwargs)
    for fit in range(case.fits):
        model.fit(x, y, batch_size=case.batch_size, initial_epoch=fit * case.epochs,
                  epochs=(fit + 1) * case.epochs, shuffle=False, verbose=0, callbacks=callbacks)


def steps_per_epoch(case):
    return -(-case.examples // case.batch_size)


def total_batches(case):
    return steps_per_epoch(case) * case.epochs * case.fits


def run_tfmot(case, fw, weights, x, y):
    """Trains the tf_keras twin with tfmot; returns its `Trace`."""
    sparsity = fw.tfmot.sparsity.keras
    model = fw.tf_keras.Model(*case.build(fw.tf_keras.layers, fw.tf_keras.Input))
    model.set_weights(weights)
    model = sparsity.prune_low_magnitude(model, **_prune_kwargs(case, sparsity))
    total = total_batches(case)
    updates = update_steps(case, fw, total) if case.learning_rate else set()

    def keep_inputs(batch, wrappers, trace):
        if batch in updates:  # the weights its mask update is about to read
            trace.inputs[batch] = [[np.array(v) for v in w.layer.get_weights()] for w in wrappers]

    recorder = _recorder(fw.tf_keras.callbacks.Callback, steps_per_epoch(case), _tfmot_masks,
                         keep_inputs)
    _fit(model, fw.tf_keras, case, x, y, [sparsity.UpdatePruningStep(), recorder])
    return recorder.trace


def run_tfprune(case, fw, weights, x, y, reference=None):
    """Trains the Keras 3 twin with tfprune; returns its `Trace`.

    With `reference` (tfmot's trace of a "copied" or "lockstep" case),
    tfmot's weights are copied in before each step whose inputs it kept.
    """
    model = fw.keras.Model(*case.build(fw.keras.layers, fw.keras.Input))
    model.set_weights(weights)
    model = fw.tfprune.prune_low_magnitude(model, **_prune_kwargs(case, fw.tfprune))

    def copy_inputs(batch, wrappers, trace):
        if case.mode in ("copied", "lockstep") and batch in reference.inputs:
            for wrapper, values in zip(wrappers, reference.inputs[batch]):
                wrapper.layer.set_weights(values)

    recorder = _recorder(fw.keras.callbacks.Callback, steps_per_epoch(case), _tfprune_masks,
                         copy_inputs)
    compile_kwargs = {"jit_compile": case.jit_compile}
    if case.steps_per_execution > 1:
        compile_kwargs["steps_per_execution"] = case.steps_per_execution
    _fit(model, fw.keras, case, x, y, [fw.tfprune.UpdatePruningStep(), recorder],
         **compile_kwargs)
    return recorder.trace


_TFMOT_TRACES = {}  # cases that differ only on the tfprune side share tfmot's run


def run_case(case, fw):
    """Runs both twins; returns `(tfmot_trace, tfprune_trace)`."""
    x, y = make_data(case, fw)
    weights = initial_weights(case, fw)
    key = dataclasses.replace(case, mode="", steps_per_execution=1, jit_compile=False)
    if key not in _TFMOT_TRACES:
        _TFMOT_TRACES[key] = run_tfmot(case, fw, weights, x, y)
    theirs = _TFMOT_TRACES[key]
    ours = run_tfprune(case, fw, weights, x, y, reference=theirs)
    return theirs, ours


# -- comparing ------------------------------------------------------------------------


def sparsity(record):
    """Fraction of zeros over all masks of a record."""
    zeros = sum(int(np.count_nonzero(m == 0)) for masks in record.masks for m in masks)
    total = sum(m.size for masks in record.masks for m in masks)
    return zeros / total


def comparable_batches(case, theirs, ours, fw):
    """The batches at which both computed their masks from the same weights."""
    batches = sorted(set(theirs.records) & set(ours.records))
    if case.mode != "trained":
        return batches
    updates = sorted(update_steps(case, fw, max(batches)))
    second = updates[1] if len(updates) > 1 else max(batches) + 1
    return [b for b in batches if b < second]


@dataclasses.dataclass
class Comparison:
    batches: list  # batches both recorded
    step_mismatches: list  # (batch, wrapper, tfmot step, tfprune step)
    sparsity_mismatches: list  # (batch, wrapper, index, tfmot, tfprune)
    mask_mismatches: list  # (batch, wrapper, index, differing entries, size)
    masks_compared: int
    masks_identical: int


def compare(case, theirs, ours, fw):
    """Steps and sparsity at every common batch; masks where comparable."""
    batches = sorted(set(theirs.records) & set(ours.records))
    same_weights = set(comparable_batches(case, theirs, ours, fw))
    result = Comparison(batches, [], [], [], 0, 0)
    for batch in batches:
        a, b = theirs.records[batch], ours.records[batch]
        for name, sa, sb in zip(theirs.names, a.steps, b.steps):
            if sa != sb:
                result.step_mismatches.append((batch, name, sa, sb))
        for name, masks_a, masks_b in zip(theirs.names, a.masks, b.masks):
            for index, (ma, mb) in enumerate(zip(masks_a, masks_b)):
                za, zb = int(np.count_nonzero(ma == 0)), int(np.count_nonzero(mb == 0))
                if za != zb:
                    result.sparsity_mismatches.append(
                        (batch, name, index, za / ma.size, zb / mb.size))
                if batch in same_weights:
                    result.masks_compared += 1
                    differing = int(np.count_nonzero(ma != mb))
                    if differing:
                        result.mask_mismatches.append((batch, name, index, differing, ma.size))
                    else:
                        result.masks_identical += 1
    return result


def _positions(mask):
    return [tuple(int(i) for i in p) for p in np.argwhere(mask)]


def describe_mask_mismatch(theirs, ours, batch, layer, index, mode="frozen"):
    """Where two masks of one batch differ, with the weights tfmot read."""
    at = theirs.names.index(layer)
    a = theirs.records[batch].masks[at][index]
    b = ours.records[batch].masks[at][index]
    lines = [f"batch {batch}, {layer}, weight {index} (shape {a.shape}): "
             f"tfmot keeps {int(a.sum())}, tfprune keeps {int(b.sum())}"]
    inputs = theirs.inputs.get(batch)
    magnitudes = None if inputs is None else np.abs(inputs[at][index])
    previous = theirs.records.get(batch - 1)
    for label, places in (("kept only by tfmot", _positions((a != 0) & (b == 0))),
                          ("kept only by tfprune", _positions((a == 0) & (b != 0)))):
        if not places:
            continue
        details = []
        for place in places[:6]:
            text = str(place)
            if magnitudes is not None:
                text += f" |w| {magnitudes[place]:.6f} as tfmot read it"
            if previous is not None:
                pruned = previous.masks[at][index][place] == 0
                text += ", pruned the batch before" if pruned else ", kept the batch before"
            details.append(text)
        lines.append(f"  {label} ({len(places)}): " + "; ".join(details))
    return "\n".join(lines)


# -- overhead (reuses training_overhead.py's workers) ----------------------------------------


def measure_overhead(num_train, batch_size, warmup_epochs, epochs, frequency, steps_per_turn,
                     seed=0, progress=print):
    """Times epochs of the four training_overhead.py configurations, taking turns.

    Returns:
      `{config: [seconds per timed epoch]}`.
    """
    sys.path.insert(0, HERE)
    import _timing
    import training_overhead

    import keras

    import tfprune

    keras.utils.set_random_seed(seed)
    (x_train, y_train), _ = tfprune.datasets.load_fashion_mnist()
    per_epoch = -(-num_train // batch_size)
    total_epochs = warmup_epochs + epochs
    settings = dict(
        x=x_train[:num_train], y=y_train[:num_train],
        initial_weights=keras.Model(*training_overhead.build_cnn(keras.layers, keras.Input))
        .get_weights(),
        batch_size=batch_size, seed=seed, epochs=total_epochs, steps_per_epoch=per_epoch,
        end_step=per_epoch * total_epochs - 1, initial_sparsity=0.5, final_sparsity=0.8,
        frequency=frequency, steps_per_turn=steps_per_turn,
        log_dir=tempfile.mkdtemp(prefix="tfmot_parity_"),
    )
    names = list(training_overhead.ALL_CONFIGS)
    times = {name: {} for name in names}

    def on_epoch(name, epoch, walls, cpus):
        times[name][epoch] = sum(walls)
        if all(epoch in times[n] for n in names):
            kind = "warm-up" if epoch < warmup_epochs else "timed"
            line = ", ".join(f"{n} {times[n][epoch]:.2f}s" for n in names)
            progress(f"  epoch {epoch + 1}/{total_epochs} ({kind}): {line}")

    ring = _timing.TokenRing(training_overhead.worker_main, names, settings)
    try:
        ring.wait_ready()
        ring.run(on_epoch)
    except _timing.WorkerFailed as error:
        raise SystemExit(f"overhead benchmark failed: {error}; worker logs in "
                         f"{settings['log_dir']}")
    finally:
        ring.close()
    return {n: [times[n][e] for e in range(warmup_epochs, total_epochs)] for n in names}


# -- main -------------------------------------------------------------------------------


def _sparsity_table(theirs, ours, width=12):
    """Two lines per row block: per-batch sparsity of tfmot and tfprune."""
    batches = sorted(theirs.records)
    lines = []
    for start in range(0, len(batches), width):
        chunk = batches[start:start + width]
        lines.append("    batch    " + "".join(f"{b:>7d}" for b in chunk))
        for label, trace in (("tfmot  ", theirs), ("tfprune", ours)):
            cells = "".join(
                f"{sparsity(trace.records[b]):7.3f}" if b in trace.records else f"{'-':>7s}"
                for b in chunk)
            lines.append(f"    {label}  {cells}")
    return lines


def run_parity(names, fw):
    """Part 1: prints (a) and (b); returns whether every target passed."""
    print("(a) sparsity over all pruned weights after each batch (tfprune: after each execution)")
    verdicts = []  # (name, state, identical masks, compared masks)
    for index, name in enumerate(names, 1):
        case = CASES[name]
        t0 = time.perf_counter()
        title = f"[{index}/{len(names)}] {name}: {case.description}; {case.mode}"
        try:
            theirs, ours = run_case(case, fw)
        except Exception as error:  # a case tfprune refuses is a mismatch, not a crash
            print(f"{title}\n    FAILED: {type(error).__name__}: "
                  f"{str(error).splitlines()[0][:200]}", flush=True)
            verdicts.append((name, "error", 0, 0))
            continue
        result = compare(case, theirs, ours, fw)
        print(f"{title}; {', '.join(theirs.names)} ({time.perf_counter() - t0:.1f} s)")
        for line in _sparsity_table(theirs, ours):
            print(line)
        for line in _problems(case, result, theirs, ours):
            print(f"    {line}")
        sys.stdout.flush()
        clean = not (result.step_mismatches or result.sparsity_mismatches
                     or result.mask_mismatches)
        verdicts.append((name, "ok" if clean else "mismatch", result.masks_identical,
                         result.masks_compared))
    print()
    print("(b) identical masks where both compute them from the same weights")
    for name, state, same, total in verdicts:
        share = f"{same}/{total} ({100.0 * same / total:.1f}%)" if total else "-"
        print(f"    {name:24s} {share:>18s}  {state}")
    identical = sum(v[2] for v in verdicts)
    compared = sum(v[3] for v in verdicts)
    failed = [name for name, state, _, _ in verdicts if state != "ok"]
    masks_pass = compared > 0 and identical == compared and not failed
    share = 100.0 * identical / compared if compared else 0.0
    print(f"target 100% identical masks: {'PASS' if masks_pass else 'FAIL'} "
          f"({identical}/{compared}, {share:.1f}%)")
    print(f"target identical pruning steps, sparsity and masks in every case: "
          f"{'PASS' if not failed else 'FAIL'}"
          + (f" (not in: {', '.join(failed)})" if failed else ""))
    return masks_pass and not failed


def _problems(case, result, theirs, ours):
    lines = []
    if result.step_mismatches:
        batch, layer, a, b = result.step_mismatches[0]
        lines.append(f"{len(result.step_mismatches)} pruning_step mismatches (first: batch "
                     f"{batch}, {layer}: tfmot {a}, tfprune {b})")
    if result.sparsity_mismatches:
        batch, layer, i, a, b = result.sparsity_mismatches[0]
        lines.append(f"{len(result.sparsity_mismatches)} sparsity mismatches (first: batch "
                     f"{batch}, {layer} weight {i}: tfmot {a:.4f}, tfprune {b:.4f})")
    if result.mask_mismatches:
        lines.append(f"{len(result.mask_mismatches)} masks differ; the first:")
        lines.extend("  " + line for line in describe_mask_mismatch(
            theirs, ours, *result.mask_mismatches[0][:3], mode=case.mode).splitlines())
    if case.mode == "trained":
        lines.append(f"pruned weights a later mask update kept again: tfmot {theirs.revived}, "
                     f"tfprune {ours.revived}")
    elif case.mode != "frozen":
        # tfprune's count means nothing here: its weights are tfmot's.
        lines.append(f"pruned weights tfmot's later mask updates kept again: {theirs.revived}")
    return lines


def run_overhead(args):
    """Part 2: prints (c); returns whether both targets passed."""
    print(f"(c) training overhead, wrapped vs plain in the same framework: training_overhead.py's "
          f"CNN on {args.num_train} Fashion-MNIST images, batch {args.batch_size}, Adam, "
          f"PolynomialDecay(0.5 -> 0.8, frequency={args.frequency}); {args.warmup_epochs} "
          f"warm-up + {args.epochs} timed epochs; 4 processes taking turns every "
          f"{args.steps_per_turn} steps", flush=True)
    times = measure_overhead(args.num_train, args.batch_size, args.warmup_epochs, args.epochs,
                             args.frequency, args.steps_per_turn,
                             progress=lambda line: print(line, flush=True))
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, values in times.items():
        print(f"    {name:16s} median {medians[name]:.3f} s/epoch (min {min(values):.3f}, "
              f"max {max(values):.3f})")
    # Verdicts on the median of per-epoch ratios: the wrapped and plain epochs
    # of one pair ran in alternating turns over the same stretch of time, so
    # a burst of outside load lands on both, where it would move one median.
    ratios = {}
    for wrapped, plain, label in (("keras3_tfprune", "keras3_plain", "tfprune"),
                                  ("tfkeras_tfmot", "tfkeras_plain", "tfmot")):
        paired = [w / p for w, p in zip(times[wrapped], times[plain])]
        ratios[label] = statistics.median(paired)
        print(f"    {label} overhead: {ratios[label]:.3f}x ({wrapped} / {plain}, median of "
              f"{len(paired)} per-epoch ratios, range {min(paired):.3f}-{max(paired):.3f}; "
              f"ratio of medians {medians[wrapped] / medians[plain]:.3f}x)")
    ours, theirs = ratios["tfprune"], ratios["tfmot"]
    low = ours <= args.target_ratio
    print(f"target tfprune <= {args.target_ratio:.2f}x: {'PASS' if low else 'FAIL'} "
          f"({ours:.3f}x)")
    print(f"target tfprune below tfmot: {'PASS' if ours < theirs else 'FAIL'} "
          f"({ours:.3f}x vs {theirs:.3f}x)")
    return low and ours < theirs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default=",".join(CASES),
                        help="Comma-separated parity cases (default: all).")
    parser.add_argument("--skip_overhead", action="store_true", help="Parity only.")
    parser.add_argument("--num_train", type=int, default=2560,
                        help="Fashion-MNIST images per timed epoch.")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=10, help="Timed epochs per configuration.")
    parser.add_argument("--warmup_epochs", type=int, default=1)
    parser.add_argument("--frequency", type=int, default=40,
                        help="Pruning frequency in the overhead run (steps between updates).")
    parser.add_argument("--steps_per_turn", type=int, default=5)
    parser.add_argument("--target_ratio", type=float, default=1.10)
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.cases.split(",") if n.strip()]
    unknown = sorted(set(names) - set(CASES))
    if unknown:
        parser.error(f"unknown --cases {unknown}; choose from {sorted(CASES)}")
    if not 0 < args.num_train <= 60000 or args.epochs < 1 or args.steps_per_turn < 1:
        parser.error("--num_train must be in 1..60000, --epochs and --steps_per_turn >= 1")

    start = time.perf_counter()
    native_log = os.path.join(tempfile.mkdtemp(prefix="tfmot_parity_"), "tensorflow_native.log")
    with quiet_native_stderr(native_log):
        print(f"importing TensorFlow, Keras 3 + tfprune, tf_keras + tfmot (TensorFlow's own "
              f"log: {native_log}) ...", flush=True)
        fw = import_frameworks()
        print(f"tensorflow {fw.tf.__version__}, keras {fw.keras.__version__}, "
              f"tf_keras {fw.tf_keras.__version__}, tfmot {fw.tfmot.__version__}; "
              f"{os.cpu_count()} cpus\n")
        passed = run_parity(names, fw)
        print(f"parity time: {time.perf_counter() - start:.0f} s\n", flush=True)
        if not args.skip_overhead:
            passed = run_overhead(args) and passed
    print(f"total time: {time.perf_counter() - start:.0f} s; "
          f"{'all targets met' if passed else 'some targets FAILED'}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())

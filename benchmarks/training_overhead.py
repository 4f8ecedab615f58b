r"""Training overhead of pruning wrappers: tfprune on TensorFlow, JAX and PyTorch, and tfmot.

Times epochs of the same small CNN on Fashion-MNIST in eight configurations,
in one run, on the same batches:

  keras3_plain    Keras 3 model on TensorFlow, no wrappers
  keras3_tfprune  the same model through tfprune.prune_low_magnitude
                  (PolynomialDecay, frequency=100) + tfprune.UpdatePruningStep
  jax_plain       the Keras 3 model on JAX (KERAS_BACKEND=jax), no wrappers
  jax_tfprune     that model through tfprune (the same schedule and callback)
  torch_plain     the Keras 3 model on PyTorch (KERAS_BACKEND=torch)
  torch_tfprune   that model through tfprune
  tfkeras_plain   the same architecture built in tf_keras, no wrappers
  tfkeras_tfmot   that model through tfmot.sparsity.keras.prune_low_magnitude
                  (the same schedule) + tfmot's UpdatePruningStep

Each wrapped configuration is compared with the plain one of its backend
(the verdict: at most `--target_ratio`, 1.10x, on each).

Fairness: every configuration trains on the same images (`steps_per_epoch`
= one pass over `--num_train` images), from the same initial weights, with
the same batch size, Adam and loss, `verbose=0`, in one `model.fit` over all
epochs (as users train), with each backend's default compilation: no XLA on
TensorFlow (the Keras 3 default on CPU; tf_keras' default), XLA on JAX
(`jit_compile` defaults to True there), eager PyTorch (its default). The
TensorFlow configurations read one repeated `tf.data` pipeline definition
(one seed); JAX and PyTorch read the NumPy arrays (`shuffle=True`, one
seed), as users of those backends train, without importing TensorFlow. The
first epoch (graph tracing, XLA compilation) is a warm-up and is not
counted.

Noise: the machine is shared, so the configurations run in one process
each (a Keras backend is chosen per process) and take turns, one at a time, every `--steps_per_turn` steps
(`_timing.TokenRing`). An epoch's time is the time its process held the turn,
so every configuration's epoch is spread over the same stretch of wall-clock
time and sees the same outside load. JAX dispatches work asynchronously: its
processes wait for their computations to finish before passing the turn, so
no computation runs in another process's turn. Reported per configuration:
median, min and max epoch time, and median process CPU time; then the ratio
of median epoch times for each backend and framework, and as a noise check
the median over epochs of the paired per-epoch ratio. The pruning schedule runs from step 0
to the last step, so masks are recomputed every `--frequency` steps
throughout every timed epoch (once per epoch at the defaults).

Usage:
  python benchmarks/training_overhead.py                 # defaults, about 10 minutes
  python benchmarks/training_overhead.py --epochs=9 --num_train=60000
  python benchmarks/training_overhead.py --configs=torch_plain,torch_tfprune --profile

`--profile` runs each configuration's timed `fit` under cProfile and prints
the functions that cost the wrapped configurations most (the profiler slows
every configuration down; use it to see where overhead goes, not to time).

tfmot and tf_keras are imported only here (in the tf_keras workers); tfprune
never imports them.
"""

import os
import statistics
import sys
import tempfile
import time
import traceback

from tflite_export import _quiet  # noqa: E402

if __name__ == "__main__":
    # Not in the workers: they import this module too (multiprocessing's
    # spawn), and must choose their Keras backend before Keras is imported.
    _quiet.setup()  # before TensorFlow: no CUDA/oneDNN start-up lines

from absl import app, flags  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _timing  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("epochs", 4, "Timed epochs per configuration (after the warm-up).")
flags.DEFINE_integer("warmup_epochs", 1, "Untimed warm-up epochs per configuration (tracing).")
flags.DEFINE_integer("batch_size", 128, "Batch size, the same for every configuration.")
flags.DEFINE_integer("num_train", 12800, "Training images per epoch (<= 60000).")
flags.DEFINE_integer("frequency", 100, "Pruning schedule frequency (steps between mask updates).")
flags.DEFINE_float("initial_sparsity", 0.5, "PolynomialDecay initial sparsity.")
flags.DEFINE_float("final_sparsity", 0.8, "PolynomialDecay final sparsity.")
flags.DEFINE_integer("steps_per_turn", 5, "Training steps a process runs before passing the turn.")
flags.DEFINE_float("target_ratio", 1.10, "Pass if tfprune wrapped/plain is at most this.")
ALL_CONFIGS = ("keras3_plain", "keras3_tfprune", "jax_plain", "jax_tfprune", "torch_plain",
               "torch_tfprune", "tfkeras_plain", "tfkeras_tfmot")
flags.DEFINE_list(
    "configs",
    ",".join(ALL_CONFIGS),
    "Configurations to run (a subset is allowed; a verdict needs both configurations of "
    "its pair).",
)
flags.DEFINE_integer("seed", 0, "Seed for weights and shuffling.")
flags.DEFINE_bool("profile", False,
                  "Profile each configuration's fit with cProfile and print where the wrapped "
                  "configurations spend their time (slows every configuration down).")
flags.DEFINE_integer("profile_top", 25, "Functions listed per profiled configuration.")

# (wrapped, plain, label): the pairs whose epoch times are compared.
PAIRS = (
    ("keras3_tfprune", "keras3_plain", "tfprune on tensorflow"),
    ("jax_tfprune", "jax_plain", "tfprune on jax"),
    ("torch_tfprune", "torch_plain", "tfprune on torch"),
    ("tfkeras_tfmot", "tfkeras_plain", "tfmot (tf_keras)"),
)
# The Keras backend of each configuration's process.
BACKENDS = {"keras3": "tensorflow", "tfkeras": "tensorflow", "jax": "jax", "torch": "torch"}


def backend_of(name):
    """The Keras backend a configuration runs on."""
    return BACKENDS[name.split("_")[0]]


def build_cnn(layers_module, input_module):
    """The benchmark CNN, written once for either framework's layer API."""
    L = layers_module
    inputs = input_module(shape=(28, 28, 1), name="image")
    x = L.Conv2D(32, 3, activation="relu", name="conv1")(inputs)
    x = L.Conv2D(64, 3, activation="relu", name="conv2")(x)
    x = L.MaxPooling2D(2, name="pool")(x)
    x = L.Flatten(name="flatten")(x)
    x = L.Dense(128, activation="relu", name="fc1")(x)
    outputs = L.Dense(10, name="logits")(x)
    return inputs, outputs


def make_dataset(x, y, batch_size, seed):
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y))
    ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    # Repeated, with fit(steps_per_epoch=...): one iterator for the whole fit.
    # Keras 3 otherwise makes a new iterator at every epoch end, and a process
    # that then waits for its turn sometimes stalls for seconds (up to ~50 s
    # seen, with no CPU used) at the start of its next epoch.
    return ds.batch(batch_size).repeat().prefetch(tf.data.AUTOTUNE)


def kernel_sparsity(model):
    """Fraction of exact zeros over the kernels of a trained model (sanity check)."""
    import numpy as np

    zeros = total = 0
    for weight in model.weights:
        name = getattr(weight, "path", None) or weight.name
        if "kernel" in name and "mask" not in name:
            value = np.array(weight.numpy())
            zeros += int(np.count_nonzero(value == 0))
            total += value.size
    return zeros / max(total, 1)


# -- worker processes ----------------------------------------------------------


def worker_main(name, settings, conn):
    """Entry point of one configuration's process (see `_timing.TokenRing`)."""
    log = open(os.path.join(settings["log_dir"], f"{name}.log"), "w")
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    os.environ["KERAS_BACKEND"] = backend_of(name)  # before Keras is imported
    try:
        if backend_of(name) == "tensorflow":
            _quiet.setup(litert=False)
        _train(name, settings, conn)
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        raise


def jax_turn_barrier(callback_base, steps_per_turn):
    """A callback that waits for JAX's dispatched computations before each hand-over.

    JAX returns from a training step before the step has run. Put before the
    turn timer in the callback list: at the batches where the timer passes
    the turn, and at every epoch end, it blocks until this process's
    computations are done, so they are counted in its own turn.
    """
    import jax

    class JaxTurnBarrier(callback_base):
        def _wait(self):
            # The state of the last step (Keras keeps it in a tracked dict
            # of tracked lists, which JAX does not see into: hence the lists).
            state = getattr(self.model, "_jax_state", None) or {}
            arrays = [a for values in state.values() if values for a in values]
            jax.block_until_ready(arrays or [v.value for v in self.model.variables])

        def on_train_batch_begin(self, batch, logs=None):
            if batch and batch % steps_per_turn == 0:
                self._wait()

        def on_epoch_end(self, epoch, logs=None):
            jax.block_until_ready([v.value for v in self.model.variables])

    return JaxTurnBarrier()


def _train(name, settings, conn):
    backend = backend_of(name)
    x = (settings["x"].astype("float32") / 255.0)[..., None]
    y = settings["y"].astype("int32")
    if backend == "tensorflow":
        import tensorflow as tf

        data = dict(x=make_dataset(x, y, settings["batch_size"], settings["seed"]),
                    steps_per_epoch=settings["steps_per_epoch"],
                    shuffle=False)  # the dataset shuffles itself
    else:
        data = dict(x=x, y=y, batch_size=settings["batch_size"], shuffle=True)
    schedule_args = dict(
        initial_sparsity=settings["initial_sparsity"],
        final_sparsity=settings["final_sparsity"],
        begin_step=0,
        end_step=settings["end_step"],
        frequency=settings["frequency"],
    )
    callbacks = []
    if not name.startswith("tfkeras"):
        import keras

        import tfprune

        keras.utils.set_random_seed(settings["seed"])  # the same shuffling order
        framework = keras
        model = keras.Model(*build_cnn(keras.layers, keras.Input), name="cnn")
        model.set_weights(settings["initial_weights"])
        if name.endswith("_tfprune"):
            schedule = tfprune.PolynomialDecay(**schedule_args)
            model = tfprune.prune_low_magnitude(model, pruning_schedule=schedule)
            callbacks = [tfprune.UpdatePruningStep()]
        info = f"keras {keras.__version__}, backend {keras.backend.backend()}"
        if backend == "jax":
            import jax

            info += f" (jax {jax.__version__}, XLA)"
        elif backend == "torch":
            import torch

            info += f" (torch {torch.__version__}, eager, {torch.get_num_threads()} threads)"
    else:
        import tensorflow_model_optimization as tfmot
        import tf_keras

        framework = tf_keras
        model = tf_keras.Model(*build_cnn(tf_keras.layers, tf_keras.Input), name="cnn")
        model.set_weights(settings["initial_weights"])
        if name == "tfkeras_tfmot":
            sparsity = tfmot.sparsity.keras
            schedule = sparsity.PolynomialDecay(**schedule_args)
            model = sparsity.prune_low_magnitude(model, pruning_schedule=schedule)
            callbacks = [sparsity.UpdatePruningStep()]
        info = f"tf_keras {tf_keras.__version__}, tfmot {tfmot.__version__}"
    model.compile(
        optimizer=framework.optimizers.Adam(1e-3),
        loss=framework.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    if backend == "tensorflow":
        info += f", tensorflow {tf.__version__}"
    timer = _timing.make_turn_timer(framework.callbacks.Callback, conn, settings["steps_per_turn"])
    if backend == "jax":
        # Before the timer: the wait counts in this process's turn.
        callbacks.append(jax_turn_barrier(framework.callbacks.Callback,
                                          settings["steps_per_turn"]))
    conn.send(("ready", info))
    conn.recv()
    profiler = None
    if settings["profile"]:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    model.fit(
        epochs=settings["epochs"],
        verbose=0,
        callbacks=callbacks + [timer],
        **data,
    )
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(os.path.join(settings["log_dir"], f"{name}.prof"))
    conn.send(("done", {"sparsity": kernel_sparsity(model)}))
    conn.close()


def print_profile(path, top):
    """Prints the functions with the most cumulative and own time in a cProfile dump."""
    import io
    import pstats

    for key, title in (("cumulative", "cumulative time"), ("tottime", "own time")):
        out = io.StringIO()
        pstats.Stats(path, stream=out).sort_stats(key).print_stats(top)
        lines = out.getvalue().splitlines()
        start = next((i for i, l in enumerate(lines) if l.lstrip().startswith("ncalls")), 0)
        print(f"  by {title}:")
        for line in lines[start:]:
            if line.strip():
                print("    " + line.rstrip())


# -- parent ----------------------------------------------------------------------


def main(argv):
    del argv
    names = [n.strip() for n in FLAGS.configs if n.strip()]
    unknown = sorted(set(names) - set(ALL_CONFIGS))
    if unknown:
        raise app.UsageError(f"Unknown --configs {unknown}; choose from {ALL_CONFIGS}.")
    if not 0 < FLAGS.num_train <= 60000:
        raise app.UsageError("--num_train must be in 1..60000.")
    if FLAGS.epochs < 1 or FLAGS.warmup_epochs < 0 or FLAGS.steps_per_turn < 1:
        raise app.UsageError("--epochs and --steps_per_turn must be >= 1, --warmup_epochs >= 0.")

    import keras
    import numpy as np

    import tfprune

    keras.utils.set_random_seed(FLAGS.seed)
    (x_train, y_train), _ = tfprune.datasets.load_fashion_mnist()
    steps_per_epoch = -(-FLAGS.num_train // FLAGS.batch_size)
    total_epochs = FLAGS.warmup_epochs + FLAGS.epochs
    # One set of initial weights for every configuration.
    initial_weights = keras.Model(*build_cnn(keras.layers, keras.Input)).get_weights()
    log_dir = tempfile.mkdtemp(prefix="training_overhead_")
    settings = dict(
        x=x_train[: FLAGS.num_train],
        y=y_train[: FLAGS.num_train],
        initial_weights=initial_weights,
        batch_size=FLAGS.batch_size,
        seed=FLAGS.seed,
        epochs=total_epochs,
        steps_per_epoch=steps_per_epoch,
        end_step=steps_per_epoch * total_epochs - 1,
        initial_sparsity=FLAGS.initial_sparsity,
        final_sparsity=FLAGS.final_sparsity,
        frequency=FLAGS.frequency,
        steps_per_turn=FLAGS.steps_per_turn,
        log_dir=log_dir,
        profile=FLAGS.profile,
    )

    params = sum(int(np.prod(w.shape)) for w in initial_weights)
    print(f"cpus {os.cpu_count()}; worker logs in {log_dir}")
    print(
        f"model: conv3x3(32) -> conv3x3(64) -> maxpool2 -> dense(128) -> dense(10), "
        f"{params} params; Adam; TensorFlow without XLA, JAX with XLA, PyTorch eager "
        "(each backend's default)"
    )
    print(
        f"data: {FLAGS.num_train} Fashion-MNIST images, batch {FLAGS.batch_size}, "
        f"{steps_per_epoch} steps/epoch; {FLAGS.warmup_epochs} warm-up + {FLAGS.epochs} timed "
        f"epochs in one fit per config; turns of {FLAGS.steps_per_turn} steps"
    )
    print(
        f"pruning: PolynomialDecay({FLAGS.initial_sparsity} -> {FLAGS.final_sparsity}, steps "
        f"0..{settings['end_step']}, frequency={FLAGS.frequency}) for tfprune and tfmot alike"
    )
    sys.stdout.flush()

    epochs = {}  # epoch index -> {name: (wall, cpu)}

    def on_epoch(name, epoch, walls, cpus):
        epochs.setdefault(epoch, {})[name] = (sum(walls), sum(cpus))
        if len(epochs[epoch]) == len(names):
            kind = "warm-up" if epoch < FLAGS.warmup_epochs else "timed"
            line = ", ".join(f"{n} {epochs[epoch][n][0]:.2f}s" for n in names)
            print(f"  epoch {epoch + 1}/{total_epochs} ({kind}): {line}", flush=True)

    ring = _timing.TokenRing(worker_main, names, settings)
    start = time.perf_counter()
    try:
        infos = ring.wait_ready()
        for name in names:
            print(f"  {name:15s} {infos[name]}")
        done = ring.run(on_epoch)
    except _timing.WorkerFailed as error:
        for name in names:
            path = os.path.join(log_dir, f"{name}.log")
            if os.path.exists(path):
                with open(path) as f:
                    tail = f.read()[-3000:]
                print(f"--- {name}.log (tail) ---\n{tail}", file=sys.stderr)
        raise SystemExit(f"benchmark failed: {error}")
    finally:
        ring.close()
    elapsed = time.perf_counter() - start

    timed = [e for e in sorted(epochs) if e >= FLAGS.warmup_epochs]
    print()
    print(f"{'config':16s} {'median s/epoch':>14s} {'min':>7s} {'max':>7s} {'cpu s (median)':>15s}")
    medians = {}
    for name in names:
        walls = [epochs[e][name][0] for e in timed]
        cpus = [epochs[e][name][1] for e in timed]
        s = _timing.summarize(walls)
        medians[name] = s["median"]
        print(
            f"{name:16s} {s['median']:14.3f} {s['min']:7.3f} {s['max']:7.3f} "
            f"{statistics.median(cpus):15.3f}"
        )
    for wrapped, _, _ in PAIRS:
        if wrapped in done:
            print(f"{wrapped} final kernel sparsity: {done[wrapped]['sparsity']:.3f}")
    print(f"total benchmark time: {elapsed:.0f} s")
    print()

    ratios = {}
    for wrapped, plain, label in PAIRS:
        if wrapped in medians and plain in medians:
            ratios[wrapped] = medians[wrapped] / medians[plain]
            paired = statistics.median(epochs[e][wrapped][0] / epochs[e][plain][0] for e in timed)
            print(
                f"{label + ' overhead:':33s} {wrapped} / {plain} = {ratios[wrapped]:.3f}x "
                f"(median of per-epoch paired ratios {paired:.3f}x)"
            )
    missing = [f"{w}+{p}" for w, p, _ in PAIRS if w not in medians or p not in medians]
    if missing:
        print(f"No verdict for {', '.join(missing)} (run both configurations of a pair).")
    for wrapped, _, label in PAIRS[:3]:
        ours = ratios.get(wrapped)
        if ours is not None:
            verdict = "PASS" if ours <= FLAGS.target_ratio else "FAIL"
            print(f"target {label} <= {FLAGS.target_ratio:.2f}x: {verdict} ({ours:.3f}x)")
    ours, theirs = ratios.get("keras3_tfprune"), ratios.get("tfkeras_tfmot")
    if ours is not None and theirs is not None:
        verdict = "PASS" if ours < theirs else "FAIL"
        print(f"target tfprune below tfmot: {verdict} ({ours:.3f}x vs {theirs:.3f}x)")
    if FLAGS.profile:
        for name in names:
            path = os.path.join(log_dir, f"{name}.prof")
            if os.path.exists(path):
                print(f"\nprofile of {name} ({path}):")
                print_profile(path, FLAGS.profile_top)


if __name__ == "__main__":
    app.run(main)

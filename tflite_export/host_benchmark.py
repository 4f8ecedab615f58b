"""Host latency benchmark of a `.tflite` file with the LiteRT interpreter."""

import time

import numpy as np
from absl import logging

from tflite_export import litert
from tflite_export.stats import LatencyStats


def _ms_since(start_ns):
    return (time.perf_counter_ns() - start_ns) / 1e6


def benchmark(model_path, num_threads=1, runs=50, warmup=5, use_xnnpack=True, seed=0,
              verbose=0):
    """Times a `.tflite` model with `ai_edge_litert` on this machine.

    The model is loaded and its tensors allocated (`init_ms`), run once
    (`first_run_ms`, where XNNPACK packs weights), run `warmup` more times
    untimed, then `runs` timed times on fixed random inputs.

    Args:
      model_path: Path of the `.tflite` file.
      num_threads: Interpreter threads (>= 1).
      runs: Timed runs (>= 1).
      warmup: Untimed runs after the first one (>= 0).
      use_xnnpack: Use LiteRT's default XNNPACK delegate (on by default, as in
        the Android runtime).
      seed: Seed of the random inputs.
      verbose: 1 shows a `keras.utils.Progbar` over the timed runs.

    Returns:
      A `LatencyStats` with times in milliseconds.

    Raises:
      ValueError: If an argument is out of range or the file does not exist
        or is not a valid TFLite model.
    """
    for name, value, low in (("num_threads", num_threads, 1), ("runs", runs, 1),
                             ("warmup", warmup, 0)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}.")

    start = time.perf_counter_ns()
    try:
        interpreter = litert.make_interpreter(model_path, num_threads=int(num_threads),
                                              use_xnnpack=use_xnnpack)
        interpreter.allocate_tensors()
    except ValueError as e:
        # make_interpreter's own ValueError already names the argument.
        if "model_path" in str(e):
            raise
        raise ValueError(f"model_path={model_path!r} is not a loadable TFLite model: {e}") from e
    except RuntimeError as e:
        raise ValueError(f"model_path={model_path!r} could not be loaded by LiteRT: {e}") from e
    init_ms = _ms_since(start)

    rng = np.random.default_rng(seed)
    for detail in interpreter.get_input_details():
        interpreter.set_tensor(detail["index"], litert.random_input(detail, rng))

    start = time.perf_counter_ns()
    interpreter.invoke()
    first_run_ms = _ms_since(start)

    warmup_ms = []
    for _ in range(int(warmup)):
        start = time.perf_counter_ns()
        interpreter.invoke()
        warmup_ms.append(_ms_since(start))

    progbar = None
    if verbose:
        import keras

        progbar = keras.utils.Progbar(int(runs), unit_name="run")
    samples = []
    for i in range(int(runs)):
        start = time.perf_counter_ns()
        interpreter.invoke()
        samples.append(_ms_since(start))
        if progbar is not None:
            progbar.update(i + 1)

    stats = LatencyStats.from_samples(
        samples,
        num_threads=num_threads,
        warmup=warmup,
        init_ms=init_ms,
        first_run_ms=first_run_ms,
        warmup_mean_ms=float(np.mean(warmup_ms)) if warmup_ms else None,
        backend="host",
        use_xnnpack=bool(use_xnnpack),
    )
    logging.info("Benchmarked %s: %s", model_path, stats.summary())
    return stats

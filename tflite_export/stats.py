"""Latency statistics shared by the host and the Android benchmarks."""

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class LatencyStats:
    """Timing statistics of one benchmark run, in milliseconds.

    Fields that a backend cannot measure are `None` (for example the Android
    `benchmark_model` binary reports no p90/p99, and the host benchmark does
    not measure memory).

    Attributes:
      num_threads: Interpreter threads.
      runs: Number of timed runs.
      warmup: Number of untimed warm-up runs (after the first run).
      init_ms: Time to load the model and allocate tensors.
      first_run_ms: Time of the very first inference.
      min_ms, median_ms, mean_ms, p90_ms, p99_ms, max_ms, std_ms: Statistics
        over the timed runs.
      warmup_mean_ms: Mean of the warm-up runs, when measured.
      memory_init_mb: Memory increase after initialisation (Android only).
      memory_overall_mb: Memory increase at the end (Android only).
      peak_memory_mb: Peak memory footprint, when the tool reports it.
      backend: `"host"` or `"android:<serial>"`.
      use_xnnpack: Whether the XNNPACK delegate was enabled.
      use_gpu: Whether the GPU delegate was enabled.
    """

    num_threads: int
    runs: int
    warmup: int
    init_ms: float
    first_run_ms: float
    min_ms: float
    median_ms: float | None
    mean_ms: float
    p90_ms: float | None
    p99_ms: float | None
    max_ms: float
    std_ms: float
    warmup_mean_ms: float | None = None
    memory_init_mb: float | None = None
    memory_overall_mb: float | None = None
    peak_memory_mb: float | None = None
    backend: str = "host"
    use_xnnpack: bool = True
    use_gpu: bool = False

    @classmethod
    def from_samples(cls, samples_ms, *, num_threads, warmup, init_ms, first_run_ms,
                     warmup_mean_ms=None, **extra):
        """Summarises per-run timings.

        Args:
          samples_ms: Timed runs in milliseconds (at least one).
          num_threads: Interpreter threads.
          warmup: Number of warm-up runs.
          init_ms: Initialisation time.
          first_run_ms: First inference time.
          warmup_mean_ms: Mean warm-up time, if measured.
          **extra: Other fields (backend, use_xnnpack, ...).

        Returns:
          A `LatencyStats`.

        Raises:
          ValueError: If `samples_ms` is empty.
        """
        samples = np.asarray(samples_ms, dtype=np.float64)
        if samples.size == 0:
            raise ValueError("samples_ms is empty: run the benchmark with runs >= 1.")
        return cls(
            num_threads=int(num_threads),
            runs=int(samples.size),
            warmup=int(warmup),
            init_ms=float(init_ms),
            first_run_ms=float(first_run_ms),
            min_ms=float(samples.min()),
            median_ms=float(np.median(samples)),
            mean_ms=float(samples.mean()),
            p90_ms=float(np.percentile(samples, 90)),
            p99_ms=float(np.percentile(samples, 99)),
            max_ms=float(samples.max()),
            std_ms=float(samples.std()),
            warmup_mean_ms=None if warmup_mean_ms is None else float(warmup_mean_ms),
            **extra,
        )

    def to_dict(self):
        """Returns the statistics as a JSON-serialisable dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data):
        """Builds `LatencyStats` from `to_dict()` output (unknown keys ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    # Keras-style aliases so the object round-trips like other configs.
    get_config = to_dict
    from_config = from_dict

    def summary(self):
        """Returns a one-line human-readable summary."""
        median = "n/a" if self.median_ms is None else f"{self.median_ms:.3f}"
        return (
            f"{self.backend} threads={self.num_threads}: init {self.init_ms:.1f} ms, "
            f"first {self.first_run_ms:.3f} ms, median {median} ms, "
            f"mean {self.mean_ms:.3f} ms, min {self.min_ms:.3f} ms, "
            f"std {self.std_ms:.3f} ms over {self.runs} runs"
        )

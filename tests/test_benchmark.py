"""Host benchmark with the LiteRT interpreter."""

import numpy as np
import pytest

import tflite_export
from tflite_export import LatencyStats


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(8, 3),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(4)])
    path = tmp_path_factory.mktemp("bench") / "m.tflite"
    rep = np.random.default_rng(0).random((8, 16, 16, 3)).astype(np.float32)
    tflite_export.export(model, path, representative_data=rep, num_threads=None)
    return str(path)


@pytest.mark.parametrize("threads", [1, 2])
def test_stats(model_file, threads):
    stats = tflite_export.benchmark(model_file, num_threads=threads, runs=20, warmup=2)
    assert isinstance(stats, LatencyStats)
    assert stats.runs == 20 and stats.warmup == 2 and stats.num_threads == threads
    assert stats.backend == "host" and stats.use_xnnpack
    assert 0 < stats.min_ms <= stats.median_ms <= stats.p90_ms <= stats.p99_ms <= stats.max_ms
    assert stats.min_ms <= stats.mean_ms <= stats.max_ms
    assert stats.std_ms >= 0 and stats.init_ms > 0 and stats.first_run_ms > 0
    assert stats.warmup_mean_ms > 0
    assert LatencyStats.from_dict(stats.to_dict()) == stats
    assert LatencyStats.from_config(stats.get_config()) == stats


def test_without_xnnpack(model_file):
    stats = tflite_export.benchmark(model_file, runs=3, warmup=0, use_xnnpack=False)
    assert not stats.use_xnnpack and stats.warmup_mean_ms is None and stats.runs == 3


@pytest.mark.parametrize("kwargs, message", [
    ({"num_threads": 0}, "num_threads"),
    ({"runs": 0}, "runs"),
    ({"warmup": -1}, "warmup"),
    ({"runs": 2.5}, "runs"),
])
def test_bad_arguments(model_file, kwargs, message):
    with pytest.raises(ValueError, match=message):
        tflite_export.benchmark(model_file, **kwargs)


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ValueError, match="model_path=.*does not exist"):
        tflite_export.benchmark(str(tmp_path / "nope.tflite"))
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"not a flatbuffer")
    with pytest.raises(ValueError, match="model_path"):
        tflite_export.benchmark(str(junk))


def test_function_and_module_names_coexist(model_file):
    """`tflite_export.benchmark` stays callable even after the CLI module is imported."""
    import importlib

    module = importlib.import_module("tflite_export.benchmark")
    assert callable(module)
    assert tflite_export.benchmark(model_file, runs=2, warmup=0).runs == 2
    assert module(model_file, runs=2, warmup=0).runs == 2


def test_from_samples_rejects_empty():
    with pytest.raises(ValueError, match="empty"):
        LatencyStats.from_samples([], num_threads=1, warmup=0, init_ms=1, first_run_ms=1)

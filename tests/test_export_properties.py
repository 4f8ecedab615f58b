"""Property: `export` either writes three consistent files or raises a ValueError first.

Hypothesis draws export arguments (quantization, tensor types, thread counts,
sparse format, input shape, limits, overwrite), data of many shapes and
dtypes, the output name and what already lies at the output. Whatever it
draws, a call either writes the `.tflite` and its two reports, which agree
(the reports record the `.tflite`'s SHA-256) and nothing else, or raises a
`ValueError` (or subclass) and leaves the folder exactly as it was.
"""

import hashlib
import os
import shutil
import tempfile

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import tflite_export  # noqa: E402


@pytest.fixture(scope="module")
def tiny():
    import keras

    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3),
                             keras.layers.Flatten(), keras.layers.Dense(3)])


@pytest.fixture(scope="module")
def earlier_export(tiny, tmp_path_factory):
    """An earlier export's three files, copied into a folder to stand at the output."""
    folder = tmp_path_factory.mktemp("earlier")
    tflite_export.export(tiny, folder / "m.tflite", quantize="float32", num_threads=None)
    return folder


def _mostly(valid, *invalid):
    """Valid values four times as often as each invalid one, so most calls export."""
    return st.sampled_from(list(valid) * 4 + list(invalid))


@st.composite
def arrays(draw, labels=False):
    """Examples for the (8, 8, 1) float32 model input; some of the wrong shape or dtype."""
    n = draw(_mostly([1, 3, 5], 0))
    shape = draw(_mostly([(8, 8, 1)], (8, 8), (9, 8, 1), (8, 8, 3), (1,)))
    dtype = draw(_mostly(["float32"], "float64", "float16", "uint8", "int32"))
    x = np.random.default_rng(n).random((n, *shape)).astype(dtype)
    if n and np.issubdtype(x.dtype, np.floating) and draw(_mostly([False], True)):
        x.flat[0] = draw(st.sampled_from([np.nan, np.inf]))
    if not labels or not draw(st.booleans()):
        return x
    return x, np.zeros(draw(_mostly([n], n + 1)), np.int64)


@st.composite
def export_arguments(draw):
    quantize = draw(_mostly(["int8", "dynamic", "float16", "float32"], "int4"))
    io_types = [None, "int8", "uint8", "float32"] if quantize == "int8" else [None, None, None]
    return {
        "quantize": quantize,
        "representative_data": draw(st.one_of(arrays(), _mostly([None], None)
                                              if quantize != "int8" else st.none())),
        "eval_data": draw(st.one_of(st.none(), arrays(labels=True))),
        "num_threads": draw(_mostly([None, (), 1, (1, 2)], 0, "2", True)),
        "inference_input_type": draw(_mostly(io_types, "int16", "int8")),
        "inference_output_type": draw(_mostly(io_types, "float64")),
        "allow_float_fallback": draw(st.booleans()),
        "sparse_format": draw(_mostly(["auto", "never", "always"], "maybe")),
        "input_shape": draw(_mostly([None, (8, 8, 1)], (9, 9, 1), (8, 8))),
        "max_calibration_samples": draw(st.sampled_from([1, 3, 200])),
        "max_eval_samples": draw(st.sampled_from([None, 1, 3])),
        "benchmark_runs": draw(_mostly([1, 2], 0)),
        "benchmark_warmup": draw(st.sampled_from([0, 1])),
        "overwrite": draw(st.booleans()),
    }


def _snapshot(folder):
    return {name: (open(os.path.join(folder, name), "rb").read()
                   if os.path.isfile(os.path.join(folder, name)) else None)
            for name in os.listdir(folder)}


@settings(max_examples=20, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(kwargs=export_arguments(),
       name=st.sampled_from(["m.tflite", "m", "model.bin", "a b.tflite", "ü.tflite"]),
       existing=_mostly(["nothing"], "earlier export", "foreign file"))
def test_export_writes_a_consistent_unit_or_raises_value_error_first(tiny, earlier_export,
                                                                    kwargs, name, existing):
    with tempfile.TemporaryDirectory() as folder:
        if existing == "earlier export":
            name = "m.tflite"
            for file in os.listdir(earlier_export):
                shutil.copy(earlier_export / file, folder)
        elif existing == "foreign file":
            with open(os.path.join(folder, name), "wb") as f:
                f.write(b"a file export did not write")
        output = os.path.join(folder, name)
        targets = [output, *tflite_export.report_paths(output)]
        before = _snapshot(folder)
        try:
            report = tflite_export.export(tiny, output, **kwargs)
        except ValueError as e:
            event(f"ValueError: {str(e)[:40]}")
            assert _snapshot(folder) == before
            return
        event("written")
        # Success: exactly the three files (and whatever else was there), which agree.
        assert sorted(os.listdir(folder)) == sorted(set(before) | {os.path.basename(t)
                                                                    for t in targets})
        if existing == "foreign file":
            assert kwargs["overwrite"]
        loaded = tflite_export.load_report(targets[1])  # Checks the SHA-256 too.
        content = open(output, "rb").read()
        assert loaded.tflite_sha256 == hashlib.sha256(content).hexdigest() == \
            report.tflite_sha256
        assert loaded.size_bytes == len(content) and loaded.quantize == kwargs["quantize"]
        assert report.tflite_sha256 in open(targets[2], encoding="utf-8").read()

"""The closed loop of `plan_for_budget`: rounds, stopping, budgets of every kind, tables, export.

Latency comes from fake runners (no timing noise in tests): one that never meets the budget
(the loop must stop at max_rounds and say so), one that is off by a constant factor (the loop
must correct it). Size, MACs and parameter budgets use the real converter and counts.
"""

import json

import numpy as np
import pytest

import tflite_export
from tflite_export import latency_table as lt
from tflite_export import planner

from test_latency_table import FakeRunner, _cnn


def _model():
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(64, 3, activation="relu", name="c1")(inputs)
    x = keras.layers.Conv2D(64, 3, activation="relu", name="c2")(x)
    x = keras.layers.Conv2D(96, 3, activation="relu", name="c3")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="head")(x), name="planner_cnn")


SIZES = {"c1[out]": 64, "c2[out]": 64, "c3[out]": 96}


def spread(key, kept):
    """A convex loss: cuts spread over the groups (fine steps for the loop to work with)."""
    return (1.0 - kept / SIZES[key]) ** 2


@pytest.fixture(scope="module")
def model():
    return _model()


def _widths(content):
    """Output channels of the three convolutions of a converted model."""
    from tflite_export import litert

    interpreter = litert.make_interpreter(content)
    widths = {}
    for detail in interpreter.get_tensor_details():
        # Kernels are (out, 3, 3, in), named after their layer ("<model>/c2_1/convolution").
        if len(detail["shape"]) == 4 and tuple(detail["shape"][1:3]) == (3, 3):
            layer = detail["name"].split("/")[1].rsplit("_", 1)[0]
            widths[f"{layer}[out]"] = int(detail["shape"][0])
    return {k: widths[k] for k in SIZES}


class SlowRunner(FakeRunner):
    """Whole models take `factor` x what the table predicts for their widths, or `constant` ms."""

    def __init__(self, table, factor=1.0, constant=None):
        super().__init__()
        self.table, self.factor, self.constant = table, factor, constant
        self.seen = []

    def time(self, contents, names=None, whole=None, progress=None):
        self.calls += 1
        out = []
        for content in contents:
            widths = _widths(content)
            self.seen.append(widths)
            out.append(self.constant if self.constant is not None
                       else self.factor * self.table(widths))
        return out


@pytest.fixture(scope="module")
def table(model):
    return lt.measure(model, "float32", round_to=8, levels=2, runner=FakeRunner(),
                      progress=lambda *a: None)


def test_the_loop_stops_at_max_rounds_and_says_it_missed(model, table):
    budget = 0.6 * table.dense_ms
    runner = SlowRunner(table, constant=2 * budget)  # Never meets the budget.
    messages = []
    result = planner.plan_for_budget(
        model, latency_ms=budget, precision="float32", table=table, runner=runner,
        sensitivity=spread, max_rounds=3, progress=lambda d, n, m: messages.append((d, n, m)))
    assert len(result.rounds) == 3 and [m[0] for m in messages] == [1, 2, 3]
    assert result.stopped == "max_rounds" and runner.calls == 3
    assert not result.met and not result.within_tolerance
    assert "Budget MISSED after 3 rounds" in result.status()
    assert "max_rounds reached" in result.status()
    budgets = [r["allocator_budget"]["latency_ms"] for r in result.rounds]
    assert budgets[0] > budgets[1] > budgets[2]  # Tightened after every miss.
    assert result.plan.info["met"] is False and result.plan.info["rounds"] == 3
    assert "MISSED" in result.summary()


def test_the_loop_stops_at_the_thinnest_plan(model, table):
    runner = SlowRunner(table, factor=100.0)
    result = planner.plan_for_budget(model, latency_ms=0.6 * table.dense_ms,
                                     precision="float32", table=table, runner=runner,
                                     sensitivity=spread, max_rounds=10)
    assert result.stopped == "thinnest" and len(result.rounds) < 10 and not result.met
    assert result.rounds[-1]["counts"] == {"c1[out]": 16, "c2[out]": 16, "c3[out]": 24}
    assert "thinnest plan" in result.status()


def test_the_loop_corrects_a_biased_prediction(model, table):
    # The device is 30% slower than the table says: round 1 misses, the next is within
    # [0.9, 1.0] x the budget.
    runner = SlowRunner(table, factor=1.3)
    budget = 0.5 * table.dense_ms
    result = planner.plan_for_budget(model, latency_ms=budget, precision="float32",
                                     table=table, runner=runner, sensitivity=spread,
                                     max_rounds=4)
    assert not result.rounds[0]["met"]
    assert result.within_tolerance and result.met and 1 < len(result.rounds) <= 4
    assert 0.9 * budget <= result.measured["latency_ms"] <= budget
    assert result.rounds[-1]["allocator_budget"]["latency_ms"] < 0.9 * budget
    assert f"in {len(result.rounds)} rounds" in result.status()
    # The model is the plan, pruned one-shot and shrunk.
    assert runner.seen[-1] == result.plan.targets
    assert all(v % 8 == 0 for v in result.plan.targets.values())


def test_dense_model_that_already_meets_the_budget(model, table):
    runner = SlowRunner(table)
    result = planner.plan_for_budget(model, latency_ms=10 * table.dense_ms,
                                     precision="float32", table=table, runner=runner)
    assert len(result.rounds) == 1 and result.within_tolerance
    assert "already meets the budget" in result.status()
    assert result.plan.targets == result.groups


def test_size_budget_is_measured_on_the_tflite_file(model):
    import keras

    dense_kb = len(lt.to_tflite(model, "int8", samples=8)) / 1024
    budget = 0.5 * dense_kb
    result = planner.plan_for_budget(model, size_kb=budget, precision="int8", max_rounds=4,
                                     sensitivity=spread)
    assert result.met and result.measured["size_kb"] <= budget
    assert result.rounds[-1]["size_bytes"] / 1024 == pytest.approx(result.measured["size_kb"])
    assert result.dense["size_kb"] == pytest.approx(dense_kb)
    assert result.within_tolerance, result.summary()
    assert isinstance(result.model, keras.Model)


def test_macs_and_params_budgets_are_exact(model):
    import tfprune

    dense_macs = tfprune.count_macs(model)
    result = planner.plan_for_budget(model, macs=0.4 * dense_macs, round_to=4,
                                     sensitivity=spread)
    assert len(result.rounds) == 1 and result.within_tolerance
    assert tfprune.count_macs(result.model) == result.measured["macs"] <= 0.4 * dense_macs
    assert result.predicted["macs"] == result.measured["macs"]
    both = planner.plan_for_budget(model, macs=0.5 * dense_macs,
                                   params=0.3 * model.count_params(), round_to=4)
    # The default sensitivity (importance scores) and two budgets at once.
    assert both.met
    assert both.measured["params"] == both.model.count_params() <= 0.3 * model.count_params()
    assert both.measured["macs"] <= 0.5 * dense_macs


def test_knapsack_and_measured_sensitivity(model):
    import tfprune

    rng = np.random.default_rng(0)
    x = rng.random((64, 16, 16, 3), dtype=np.float32)
    y = rng.integers(0, 4, 64)
    budget = 0.5 * tfprune.count_macs(model)
    for method in ("greedy", "knapsack"):
        result = planner.plan_for_budget(model, macs=budget, sensitivity=(x, y),
                                         method=method, round_to=8)
        assert result.met and result.plan.info["method"] == method
        # With validation data the round measured the candidate of least validation loss.
        considered = result.rounds[result.chosen]["candidates"]
        assert len(considered) >= 2
        best = min(considered, key=lambda c: c["validation_loss"])
        assert result.rounds[result.chosen]["chosen_by"] == best["name"]
        assert result.plan.targets == best["counts"]
        assert all(c["predicted_cost"] <= budget for c in considered)
        assert result.plan.info["chosen_by"] == best["name"]
        assert "validation loss after re-estimating BatchNorm" in result.summary()


def test_table_path_is_measured_saved_then_reused(model, tmp_path):
    path = tmp_path / "table.json"
    runner = FakeRunner()
    first = planner.plan_for_budget(model, latency_ms=1e6, precision="float32", table=path,
                                    runner=runner, round_to=8, levels=2)
    assert path.exists() and first.table is not None
    calls = runner.calls
    planner.plan_for_budget(model, latency_ms=1e6, precision="float32", table=path,
                            runner=runner, round_to=8, levels=2)
    assert runner.calls == calls + 1  # Only the round's whole model: the table was reused.
    # A table for another model at that path: measured again and replaced.
    other = _cnn()
    planner.plan_for_budget(other, latency_ms=1e6, precision="float32", table=path,
                            runner=runner, round_to=8, levels=2)
    assert json.loads(path.read_text())["key"]["model_name"] == "small_cnn"
    # Another precision of the given table object: refused.
    table = lt.LatencyTable.load(path)
    with pytest.raises(ValueError, match="precision='float32', not the wanted precision='int8'"):
        planner.plan_for_budget(other, latency_ms=1.0, precision="int8", table=table,
                                runner=runner)
    (tmp_path / "notes.json").write_text("{}")
    with pytest.raises(ValueError, match="exists and is not a latency table"):
        planner.plan_for_budget(model, latency_ms=1.0, table=tmp_path / "notes.json",
                                runner=runner)


def test_errors(model):
    with pytest.raises(ValueError, match="Give a budget"):
        planner.plan_for_budget(model)
    with pytest.raises(ValueError, match="latency_ms=-1 must be a positive number"):
        planner.plan_for_budget(model, latency_ms=-1)
    with pytest.raises(ValueError, match="tolerance=.*0 < low < high"):
        planner.plan_for_budget(model, macs=1e6, tolerance=(1.0, 0.9))
    with pytest.raises(ValueError, match="max_rounds=0"):
        planner.plan_for_budget(model, macs=1e6, max_rounds=0)
    with pytest.raises(ValueError, match="precision='int4'"):
        planner.plan_for_budget(model, macs=1e6, precision="int4")
    with pytest.raises(ValueError, match=r"out of reach by the cost model.*min_keep=0.25"):
        planner.plan_for_budget(model, macs=1000)
    with pytest.raises(ValueError, match="sensitivity="):
        planner.plan_for_budget(model, macs=1e6, sensitivity=42)


def test_export_reports_the_budget(model, table, tmp_path):
    runner = SlowRunner(table)
    result = planner.plan_for_budget(model, latency_ms=0.5 * table.dense_ms,
                                     precision="float32", table=table, runner=runner)
    budget = result.export_budget()
    assert budget["rounds"] == len(result.rounds) and budget["num_threads"] == 1
    assert budget["predicted_ms"] == pytest.approx(result.predicted["latency_ms"])
    # A generous latency (the host is not the fake device) and a size budget that is missed.
    budget = dict(budget, latency_ms=1000.0, size_kb=0.001)
    report = tflite_export.export(result.model, tmp_path / "planned.tflite", quantize="float32",
                                  num_threads=1, benchmark_runs=5, budget=budget)
    checks = {c["kind"]: c for c in report.budget["checks"]}
    assert checks["latency_ms"]["met"] is True and checks["size_kb"]["met"] is False
    assert report.budget["met"] is False and report.budget["rounds"] == len(result.rounds)
    markdown = (tmp_path / "planned.report.md").read_text()
    assert "latency budget 1000.00 ms at 1 thread(s): met (median" in markdown
    assert "size budget 0.0 KiB: missed" in markdown
    saved = json.loads((tmp_path / "planned.report.json").read_text())
    assert saved["budget"]["checks"] == report.budget["checks"]
    assert tflite_export.load_report(tmp_path / "planned.report.json").budget == report.budget
    # Not benchmarked at the budget's thread count: "not measured", met unknown.
    other = tflite_export.export(result.model, tmp_path / "other.tflite", quantize="float32",
                                 num_threads=None, budget={"latency_ms": 1.0, "num_threads": 4})
    assert other.budget["met"] is None and "not measured" in other.to_markdown()
    with pytest.raises(ValueError, match="budget=.*must be a dict"):
        tflite_export.export(result.model, tmp_path / "bad.tflite", quantize="float32",
                             budget={"speed": 1})


def test_validation_data_for_a_two_input_model_and_mismatched_labels():
    import keras

    import tfprune

    keras.utils.set_random_seed(0)
    a, b = keras.Input((8, 8, 3), name="a"), keras.Input((4,), name="b")
    x = keras.layers.Conv2D(32, 3, activation="relu", name="conv")(a)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Concatenate()([x, keras.layers.Dense(16, name="side")(b)])
    model = keras.Model([a, b], keras.layers.Dense(3, name="head")(x), name="two_inputs")
    rng = np.random.default_rng(0)
    xs = [rng.random((40, 8, 8, 3), dtype=np.float32), rng.random((40, 4), dtype=np.float32)]
    y = rng.integers(0, 3, 40)
    budget = 0.6 * tfprune.count_macs(model)
    result = planner.plan_for_budget(model, macs=budget, sensitivity=(xs, y), round_to=8)
    assert result.met and result.measured["macs"] <= budget
    with pytest.raises(ValueError, match="40 examples and 39 labels"):
        planner.plan_for_budget(model, macs=budget, sensitivity=(xs, y[:39]), round_to=8)

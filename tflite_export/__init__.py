"""tflite_export: from a (pruned) Keras model to a `.tflite` file with its numbers.

Public API:

* `export(model, output_path, quantize="int8", ...)` -> `ExportReport`
* `benchmark(model_path, num_threads=1, runs=50, warmup=5)` -> `LatencyStats`
* `compare_reports(reports)` (Markdown) and `plot_reports(reports, path)` (PNG)
* `count_macs(keras_model)`, `count_tflite_macs(path)`
* `plan_for_budget(model, latency_ms=4.0, ...)` -> `PlanResult`: per-group channel
  counts that meet a measured latency, MACs, parameter or size budget
* `measure_latency_table(model, precision="int8", num_threads=1)` -> `LatencyTable`
* `load_report(path)`, `ExportReport`, `SCHEMA_VERSION`, `LatencyStats`
* `UnsupportedOpsError`, `OutputBusyError`
* `tflite_export.android.benchmark(...)` for a device or emulator.

CLIs: `python -m tflite_export MODEL --output=...`,
`python -m tflite_export.benchmark model.tflite --num_threads=1,4` and
`python -m tflite_export.plan MODEL.keras --latency_ms=4 --output=planned.keras`.
"""

from tflite_export._io import OutputBusyError
from tflite_export.comparison import compare_reports, plot_reports
from tflite_export.conversion import QUANTIZE_MODES, UnsupportedOpsError
from tflite_export.exporter import export
from tflite_export.host_benchmark import benchmark
from tflite_export.latency_table import LatencyTable
from tflite_export.latency_table import measure as measure_latency_table
from tflite_export.macs import MacCountError, count_macs, count_tflite_macs
from tflite_export.planner import PlanResult, plan_for_budget
from tflite_export.report import SCHEMA_VERSION, ExportReport, load_report, report_paths
from tflite_export.stats import LatencyStats

__all__ = [
    "QUANTIZE_MODES",
    "SCHEMA_VERSION",
    "ExportReport",
    "LatencyStats",
    "LatencyTable",
    "MacCountError",
    "OutputBusyError",
    "PlanResult",
    "UnsupportedOpsError",
    "benchmark",
    "compare_reports",
    "count_macs",
    "count_tflite_macs",
    "export",
    "load_report",
    "measure_latency_table",
    "plan_for_budget",
    "plot_reports",
    "report_paths",
]

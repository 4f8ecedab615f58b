"""The export report: a JSON document with a stable, versioned schema.

`export("model.tflite", ...)` writes `model.report.json` and
`model.report.md` beside the model. The JSON object has these keys
(schema version 1; new optional keys may be added without a version bump,
renames or removals bump `SCHEMA_VERSION`):

=====================  ======================================================
key                    meaning
=====================  ======================================================
schema_version         int, `SCHEMA_VERSION`
created_utc            str, ISO-8601 time of the export
model_name             str, name of the source model
source                 {"kind": "keras" | "keras_file" | "saved_model" |
                       "tf_keras", "path": str | null, "stripped": bool,
                       "shrunk": bool}
tflite_path            str, absolute path of the `.tflite` file
quantize               "int8" | "dynamic" | "float16" | "float32"
sparse_format          bool, weights stored in TFLite's sparse format
size_bytes             int, size of the `.tflite` file
gzip_size_bytes        int, size after gzip -9 (what an app download costs)
dense_size_bytes       int, size of the dense conversion (== size_bytes
                       unless the sparse format was kept)
params                 int, parameters of the exported model (after
                       strip/shrink)
nonzero_params         int, parameters that are not zero
sparsity               float, 1 - nonzero_params / params
macs                   int | null, multiply-accumulates per example
macs_source            "keras" | "tflite": counted on layers or on the graph
input_dtypes           [str], dtype per input tensor of the `.tflite`
output_dtypes          [str], dtype per output tensor
inputs, outputs        [{"name", "shape", "dtype", "scale", "zero_point"}]
weight_dtypes          {dtype: count} of constant tensors of rank >= 2
op_counts              {op name: count}
float_ops              [str], ops left in float in an int8 model (only with
                       allow_float_fallback=True)
latency_ms             {"<num_threads>": LatencyStats dict}: init_ms,
                       first_run_ms, min_ms, median_ms, mean_ms, p90_ms,
                       p99_ms, max_ms, std_ms, runs, warmup, ... (ms)
fidelity               null | {"num_samples", "top1_agreement",
                       "max_abs_error", "mean_abs_error"} of the `.tflite`
                       against the source model on eval_data
accuracy               null | {"reference", "tflite"}: top-1 accuracy on the
                       eval_data labels
timings_s              {stage: seconds} spent by the export
tflite_sha256          str | null, SHA-256 (hex) of the `.tflite` file; with
                       size_bytes it ties the report to its model:
                       `load_report` refuses a report whose `.tflite` differs
budget                 null | the `budget=` given to `export` (e.g.
                       {"latency_ms", "num_threads", "rounds",
                       "predicted_ms"} from `PlanResult.export_budget()`)
                       plus "checks": [{"kind", "budget", "measured",
                       "met"}] against this export's numbers (latency: the
                       median at the budget's thread count) and "met":
                       true | false | null (not measured)
=====================  ======================================================
"""

import dataclasses
import datetime
import json
import os

from tflite_export import _io
from tflite_export.stats import LatencyStats

SCHEMA_VERSION = 1
"""Version of the report's JSON schema (the module docstring lists its keys)."""


def report_paths(tflite_path):
    """Returns `(json_path, markdown_path)` beside a `.tflite` path.

    `model.tflite` -> `model.report.json`, `model.report.md`.
    """
    base, ext = os.path.splitext(os.fspath(tflite_path))
    if ext != ".tflite":
        base = os.fspath(tflite_path)
    return base + ".report.json", base + ".report.md"


@dataclasses.dataclass
class ExportReport:
    """Everything measured about one export. See the module docstring."""

    model_name: str
    tflite_path: str
    quantize: str
    size_bytes: int
    gzip_size_bytes: int
    params: int
    nonzero_params: int
    macs: int | None = None
    macs_source: str | None = None
    source: dict = dataclasses.field(default_factory=dict)
    sparse_format: bool = False
    dense_size_bytes: int | None = None
    input_dtypes: list = dataclasses.field(default_factory=list)
    output_dtypes: list = dataclasses.field(default_factory=list)
    inputs: list = dataclasses.field(default_factory=list)
    outputs: list = dataclasses.field(default_factory=list)
    weight_dtypes: dict = dataclasses.field(default_factory=dict)
    op_counts: dict = dataclasses.field(default_factory=dict)
    float_ops: list = dataclasses.field(default_factory=list)
    latency_ms: dict = dataclasses.field(default_factory=dict)
    fidelity: dict | None = None
    accuracy: dict | None = None
    timings_s: dict = dataclasses.field(default_factory=dict)
    tflite_sha256: str | None = None
    budget: dict | None = None
    created_utc: str = dataclasses.field(
        default_factory=lambda: datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"))
    schema_version: int = SCHEMA_VERSION

    @property
    def sparsity(self):
        """Fraction of zero parameters."""
        return 1.0 - self.nonzero_params / self.params if self.params else 0.0

    def latency(self, num_threads):
        """Returns the `LatencyStats` measured with `num_threads` threads."""
        return LatencyStats.from_dict(self.latency_ms[str(num_threads)])

    def to_dict(self):
        """Returns the JSON-serialisable report (see the module docstring)."""
        data = dataclasses.asdict(self)
        data["sparsity"] = self.sparsity
        return data

    @classmethod
    def from_dict(cls, data):
        """Rebuilds a report from `to_dict()` output.

        Raises:
          ValueError: If the schema version is newer than this library.
        """
        version = data.get("schema_version", SCHEMA_VERSION)
        if version > SCHEMA_VERSION:
            raise ValueError(f"Report schema_version {version} is newer than this "
                             f"tflite_export ({SCHEMA_VERSION}); upgrade tflite_export.")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    get_config = to_dict
    from_config = from_dict

    def to_json(self):
        """Returns the report as indented JSON text."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    def save(self, json_path=None, markdown_path=None):
        """Writes the JSON and Markdown reports atomically.

        Args:
          json_path: Defaults to `<model>.report.json` beside the model.
          markdown_path: Defaults to `<model>.report.md`.

        Returns:
          `(json_path, markdown_path)`.
        """
        default_json, default_md = report_paths(self.tflite_path)
        json_path = json_path or default_json
        markdown_path = markdown_path or default_md
        _io.atomic_write_text(json_path, self.to_json())
        _io.atomic_write_text(markdown_path, self.to_markdown())
        return json_path, markdown_path

    def to_markdown(self):
        """Returns a human-readable Markdown summary."""
        lines = [f"# TFLite export: {self.model_name}", ""]
        rows = [
            ("File", f"`{os.path.basename(self.tflite_path)}`"),
            ("Quantization", self.quantize + (" (sparse format)" if self.sparse_format else "")),
            ("Size", f"{self.size_bytes / 1024:.1f} KiB ({self.gzip_size_bytes / 1024:.1f} "
                     "KiB gzipped)"),
            ("Parameters", f"{self.params:,} ({self.nonzero_params:,} non-zero, "
                           f"{100 * self.sparsity:.1f}% sparse)"),
            ("MACs", "n/a" if self.macs is None else f"{self.macs:,} ({self.macs_source})"),
            ("Input dtypes", ", ".join(self.input_dtypes)),
            ("Output dtypes", ", ".join(self.output_dtypes)),
            ("Weight dtypes", ", ".join(f"{k}: {v}" for k, v in self.weight_dtypes.items())
             or "n/a"),
            ("Source", f"{self.source.get('kind')}"
                       + (", pruning stripped" if self.source.get("stripped") else "")
                       + (", channels shrunk" if self.source.get("shrunk") else "")),
        ]
        if self.tflite_sha256:
            rows.append(("SHA-256", f"`{self.tflite_sha256}`"))
        if self.float_ops:
            rows.append(("Float ops", ", ".join(self.float_ops)))
        if self.fidelity:
            agreement = self.fidelity.get("top1_agreement")
            rows.append(("Fidelity", (f"top-1 agreement {100 * agreement:.2f}%, "
                                      if agreement is not None else "")
                         + f"max abs error {self.fidelity['max_abs_error']:.4g} on "
                           f"{self.fidelity['num_samples']} examples"))
        if self.accuracy:
            rows.append(("Accuracy", f"{100 * self.accuracy['tflite']:.2f}% (source model "
                                     f"{100 * self.accuracy['reference']:.2f}%)"))
        if self.budget:
            rows.append(("Budget", budget_text(self.budget)))
        lines += ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]
        if self.latency_ms:
            lines += ["", "## Latency (ms)", "",
                      "| threads | init | first | min | median | mean | p90 | p99 | std |",
                      "|---|---|---|---|---|---|---|---|---|"]
            for threads, stats in self.latency_ms.items():
                cells = [stats.get(k) for k in ("init_ms", "first_run_ms", "min_ms",
                                                 "median_ms", "mean_ms", "p90_ms", "p99_ms",
                                                 "std_ms")]
                lines.append(f"| {threads} | " + " | ".join(
                    "n/a" if c is None else f"{c:.3f}" for c in cells) + " |")
        return "\n".join(lines) + "\n"


_BUDGET_UNITS = {"latency_ms": ("latency", "{:.2f} ms"), "size_kb": ("size", "{:.1f} KiB"),
                 "macs": ("MACs", "{:,.0f}"), "params": ("parameters", "{:,.0f}")}


def check_budget(budget, latency_ms, size_bytes, macs, params):
    """Compares a budget with an export's numbers.

    Args:
      budget: `{"latency_ms"|"size_kb"|"macs"|"params": value, "num_threads":
        n, ...}`; other keys (rounds, predicted values) are kept as they are.
      latency_ms: The report's `latency_ms` (`{"<threads>": stats dict}`).
      size_bytes, macs, params: The export's size, MACs and parameters.

    Returns:
      The budget dict with `checks` (`[{"kind", "budget", "measured", "met"}]`)
      and `met` (True, False, or None when a budgeted value was not measured,
      e.g. latency without a benchmark at the budget's thread count).

    Raises:
      ValueError: If `budget` is not a dict with at least one known budget.
    """
    if not isinstance(budget, dict) or not any(k in budget for k in _BUDGET_UNITS):
        raise ValueError(f"budget={budget!r} must be a dict with at least one of "
                         f"{', '.join(_BUDGET_UNITS)} (e.g. {{'latency_ms': 4.0, "
                         "'num_threads': 1}, or PlanResult.export_budget()).")
    out = {k: v for k, v in budget.items() if k not in ("checks", "met")}
    threads = str(int(out.get("num_threads", 1)))
    stats = (latency_ms or {}).get(threads)
    measured = {"latency_ms": stats.get("median_ms") if stats else None,
                "size_kb": size_bytes / 1024 if size_bytes is not None else None,
                "macs": macs, "params": params}
    checks = []
    for kind in _BUDGET_UNITS:
        if kind in out:
            value = measured[kind]
            checks.append({"kind": kind, "budget": float(out[kind]),
                           "measured": None if value is None else float(value),
                           "met": None if value is None else bool(value <= out[kind])})
    out["checks"] = checks
    results = [c["met"] for c in checks]
    out["met"] = None if None in results else all(results)
    return out


def budget_text(budget):
    """One line for the Markdown report: `latency budget 4.00 ms at 1 thread: met (...)`."""
    parts = []
    for check in budget.get("checks", []):
        name, fmt = _BUDGET_UNITS[check["kind"]]
        text = f"{name} budget {fmt.format(check['budget'])}"
        if check["kind"] == "latency_ms":
            text += f" at {budget.get('num_threads', 1)} thread(s)"
        if check["met"] is None:
            text += ": not measured"
        else:
            text += (f": {'met' if check['met'] else 'missed'} ("
                     + ("median " if check["kind"] == "latency_ms" else "")
                     + fmt.format(check["measured"]) + ")")
        parts.append(text)
    extra = []
    if budget.get("predicted_ms") is not None:
        extra.append(f"planner predicted {budget['predicted_ms']:.2f} ms")
    if budget.get("rounds") is not None:
        extra.append(f"{budget['rounds']} planning round(s)")
    return "; ".join(parts) + (f" [{', '.join(extra)}]" if extra else "")


def tflite_beside(json_path, report):
    """The `.tflite` a report describes: the file of its name beside the report."""
    folder = os.path.dirname(os.path.abspath(os.fspath(json_path)))
    return os.path.join(folder, os.path.basename(report.tflite_path))


def check_matches(report, tflite_path, json_path):
    """Raises ValueError unless the file at `tflite_path` is the one `report` records.

    Reports without `tflite_sha256` (written before it existed) are not
    checked.
    """
    if not report.tflite_sha256:
        return
    size = os.path.getsize(tflite_path)
    digest = _io.file_sha256(tflite_path)
    if size != report.size_bytes or digest != report.tflite_sha256:
        raise ValueError(
            f"Report {os.fspath(json_path)!r} does not describe {os.fspath(tflite_path)!r}: "
            f"it records SHA-256 {report.tflite_sha256[:16]}... ({report.size_bytes} bytes) "
            f"but the file has {digest[:16]}... ({size} bytes), so they come from different "
            "exports (an interrupted or concurrent export, or an edited file). Export again "
            "to write both, or pass verify=False to read the report anyway."
        )


def load_report(path, verify=True):
    """Loads an `ExportReport` from a `.report.json` file (or its `.tflite`).

    Args:
      path: The `.report.json` file, or the `.tflite` file beside it.
      verify: Check that the `.tflite` beside the report (if it exists) is
        the file the report describes (its SHA-256 and size).

    Raises:
      ValueError: If the file does not exist or is not a report, or the
        `.tflite` beside it is not the one it describes.
    """
    path = os.fspath(path)
    tflite_path = None
    if path.endswith(".tflite"):
        tflite_path = path
        path = report_paths(path)[0]
    if not os.path.isfile(path):
        raise ValueError(f"Report {path!r} does not exist.")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        report = ExportReport.from_dict(data)
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError, AttributeError) as e:
        raise ValueError(f"{path!r} is not an export report: {e}") from e
    if verify:
        tflite_path = tflite_path or tflite_beside(path, report)
        if os.path.isfile(tflite_path):
            check_matches(report, tflite_path, path)
    return report

"""Side-by-side comparison of several exports (e.g. dense, pruned, INT8)."""

import os

import numpy as np

from tflite_export import _io
from tflite_export.report import ExportReport, load_report


def _as_reports(reports):
    out = []
    for r in reports:
        out.append(r if isinstance(r, ExportReport) else load_report(r))
    if not out:
        raise ValueError("reports is empty: pass at least one ExportReport or report path.")
    return out


def _labels(reports, labels):
    if labels is None:
        return [os.path.basename(r.tflite_path) for r in reports]
    labels = list(labels)
    if len(labels) != len(reports):
        raise ValueError(f"labels has {len(labels)} entries for {len(reports)} reports.")
    return labels


def _median(report, num_threads):
    if not report.latency_ms:
        return None
    key = str(num_threads) if num_threads is not None else sorted(report.latency_ms, key=int)[0]
    stats = report.latency_ms.get(key)
    return None if stats is None else stats.get("median_ms") or stats.get("mean_ms")


def _accuracy(report):
    return report.accuracy["tflite"] if report.accuracy else None


def compare_reports(reports, labels=None, num_threads=None):
    """Formats several reports as a Markdown table.

    Args:
      reports: `ExportReport`s or paths of `.report.json` files.
      labels: Row names; defaults to the `.tflite` file names.
      num_threads: Thread count whose median latency is shown; defaults to
        the smallest measured.

    Returns:
      Markdown text. Ratios are relative to the first report.

    Raises:
      ValueError: If `reports` is empty or `labels` has the wrong length.
    """
    reports = _as_reports(reports)
    labels = _labels(reports, labels)
    base = reports[0]
    threads = "" if num_threads is None else f" @{num_threads} threads"
    lines = [
        f"| model | quantize | size KiB | size ratio | gzip KiB | non-zero params | MACs | "
        f"MACs ratio | median ms{threads} | accuracy | top-1 agreement |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def fmt(value, spec, scale=None):
        if value is None:
            return "n/a"
        return format(value if scale is None else value * scale, spec)

    for label, r in zip(labels, reports):
        size_ratio = r.size_bytes / base.size_bytes if base.size_bytes else None
        macs_ratio = r.macs / base.macs if r.macs is not None and base.macs else None
        agreement = r.fidelity.get("top1_agreement") if r.fidelity else None
        lines.append(
            f"| {label} | {r.quantize}{' sparse' if r.sparse_format else ''} | "
            f"{r.size_bytes / 1024:.1f} | {fmt(size_ratio, '.3f')} | "
            f"{r.gzip_size_bytes / 1024:.1f} | {r.nonzero_params:,} | "
            f"{fmt(r.macs, ',')} | {fmt(macs_ratio, '.3f')} | "
            f"{fmt(_median(r, num_threads), '.3f')} | {fmt(_accuracy(r), '.2f', 100)} | "
            f"{fmt(agreement, '.2f', 100)} |"
        )
    return "\n".join(lines) + "\n"


def plot_reports(reports, output_path, labels=None, num_threads=None):
    """Draws size, latency and accuracy of several exports into a PNG.

    matplotlib is an optional extra (`pip install tfprune[plot]`).

    Args:
      reports: `ExportReport`s or paths of `.report.json` files.
      output_path: PNG file to write (atomically); its folder must exist.
      labels: Bar names; defaults to the `.tflite` file names.
      num_threads: Thread count whose median latency is plotted.

    Returns:
      `output_path`.

    Raises:
      ImportError: If matplotlib is not installed.
      ValueError: If the inputs are invalid or the folder does not exist.
    """
    output_path = _io.check_output_folder(output_path, "output_path")
    reports = _as_reports(reports)
    labels = _labels(reports, labels)
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        from matplotlib import pyplot as plt
    except ImportError as e:
        raise ImportError(
            "plot_reports needs matplotlib: pip install matplotlib (or tfprune[plot])."
        ) from e

    # Size gets two bars per file: unstructured sparsity leaves the raw
    # flatbuffer as large as the dense one and only shows after compression.
    panels = [
        ("Size (KiB)", {"raw": [r.size_bytes / 1024 for r in reports],
                        "gzip": [r.gzip_size_bytes / 1024 for r in reports]}),
        ("Median latency (ms)", {None: [_median(r, num_threads) for r in reports]}),
        ("Top-1 accuracy (%)", {None: [None if _accuracy(r) is None else 100 * _accuracy(r)
                                       for r in reports]}),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.8))
    positions = np.arange(len(reports), dtype=float)
    for ax, (title, series) in zip(axes, panels):
        width = 0.8 / len(series)
        for i, (name, values) in enumerate(series.items()):
            shown = [0.0 if v is None else v for v in values]
            offset = (i - (len(series) - 1) / 2) * width
            bars = ax.bar(positions + offset, shown, width=width, label=name,
                          color=("tab:blue", "tab:orange")[i % 2])
            for bar, v in zip(bars, values):
                ax.annotate("n/a" if v is None else (f"{v:.0f}" if v >= 100 else f"{v:.3g}"),
                            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                            ha="center", va="bottom", fontsize=7)
        if len(series) > 1:
            ax.legend(fontsize=8)
        ax.set_title(title)
        ax.set_xticks(positions)
        ax.set_xticklabels(labels, rotation=20, ha="right", fontsize=8)
        if title.startswith("Top-1"):
            known = [v for v in series[None] if v is not None]
            if known:
                ax.set_ylim(max(0.0, min(known) - 5), min(100.0, max(known) + 2))
    fig.tight_layout()
    tmp = _io.temp_path_beside(output_path)
    try:
        fig.savefig(tmp, format="png", dpi=120)
        os.replace(tmp, output_path)
    except BaseException:
        _io.remove_quietly(tmp)
        raise
    finally:
        plt.close(fig)
    return output_path

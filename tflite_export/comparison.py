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


def _times(base, value, smaller, larger):
    """`"3.2x smaller"`-style text for `value` against `base` (both > 0)."""
    if not base or not value:
        return ""
    ratio = base / value
    if abs(ratio - 1) < 0.05:
        return "same"
    return f"{ratio:.1f}x {smaller}" if ratio > 1 else f"{1 / ratio:.1f}x {larger}"


def plot_reports(reports, output_path, labels=None, num_threads=None):
    """Draws size, latency and accuracy of several exports into a PNG.

    One row per export, three panels: gzipped size (with the raw file size
    behind it), median latency and top-1 accuracy. Each bar is labelled with
    its value and its ratio against the first report (e.g. "3.2x smaller",
    "2.1x faster", "-0.4 pts"); the first report (e.g. the dense float32
    model) is drawn in grey as the reference.

    matplotlib is an optional extra (`pip install tfprune[plot]`).

    Args:
      reports: `ExportReport`s or paths of `.report.json` files.
      output_path: PNG file to write (atomically); its folder must exist.
      labels: Bar names; defaults to the `.tflite` file names.
      num_threads: Thread count whose median latency is plotted; defaults
        to the smallest measured.

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

    base = reports[0]
    raw = [r.size_bytes / 1024 for r in reports]
    gzipped = [r.gzip_size_bytes / 1024 for r in reports]
    latency = [_median(r, num_threads) for r in reports]
    accuracy = [None if _accuracy(r) is None else 100 * _accuracy(r) for r in reports]
    if num_threads is None:
        measured = [int(k) for r in reports for k in (r.latency_ms or {})]
        num_threads = min(measured) if measured else None

    def ratio_text(values, unit, better, worse):
        def text(i):
            if values[i] is None:
                return "n/a"
            shown = f"{values[i]:.0f} {unit}" if values[i] >= 100 else f"{values[i]:.3g} {unit}"
            if i == 0:
                return shown + " (reference)"
            return shown + "  " + _times(values[0], values[i], better, worse)
        return text

    size_text = ratio_text(gzipped, "KiB gz", "smaller", "larger")
    latency_text = ratio_text(latency, "ms", "faster", "slower")

    def accuracy_text(i):
        if accuracy[i] is None:
            return "n/a"
        if i == 0 or accuracy[0] is None:
            return f"{accuracy[i]:.2f}%" + (" (reference)" if i == 0 else "")
        return f"{accuracy[i]:.2f}%  {accuracy[i] - accuracy[0]:+.2f} pts"

    thread_text = "" if num_threads is None else f" @{num_threads} thread{'s' * (num_threads > 1)}"
    panels = [
        ("Size: gzipped KiB (pale: raw file)", gzipped, size_text, "tab:blue"),
        (f"Median latency, ms{thread_text}", latency, latency_text, "tab:orange"),
        ("Top-1 accuracy, %", accuracy, accuracy_text, "tab:green"),
    ]
    rows = np.arange(len(reports), dtype=float)
    height = 0.9 + 0.55 * len(reports)
    fig, axes = plt.subplots(1, len(panels), figsize=(15, height + 0.9), sharey=True)
    for p, (ax, (title, values, text, color)) in enumerate(zip(axes, panels)):
        shown = np.array([0.0 if v is None else v for v in values])
        colors = ["0.6"] + [color] * (len(reports) - 1)
        if p == 0:
            ax.barh(rows, raw, height=0.7, color=[c if i else "0.6" for i, c in
                                                  enumerate([color] * len(reports))],
                    alpha=0.25)
        ax.barh(rows, shown, height=0.7, color=colors)
        top = max([v for v in (raw if p == 0 else shown)] + [1e-9])
        low = 0.0
        if p == 2:
            known = [v for v in values if v is not None]
            if known:  # Differences of tenths of a point: zoom in on them.
                low = max(0.0, min(known) - max(2.0, 0.6 * (max(known) - min(known))))
        span = top - low
        for i in rows.astype(int):
            end = max(shown[i], raw[i]) if p == 0 else max(shown[i], low)
            ax.text(end + 0.02 * span, i, text(i), va="center", fontsize=9,
                    fontweight="bold" if i else "normal")
        ax.set_xlim(low, top + 0.75 * span)
        if p == 2:  # The room for the labels runs past 100%: no ticks there.
            ax.set_xticks([t for t in ax.get_xticks() if low <= t <= 100])
        ax.set_title(title, fontsize=11)
        ax.grid(axis="x", alpha=0.3)
        ax.set_axisbelow(True)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    axes[0].set_yticks(rows)
    axes[0].set_yticklabels(labels, fontsize=10)
    axes[0].invert_yaxis()
    fig.suptitle(f"Each model against {labels[0]} (grey): size, speed, accuracy",
                 fontsize=12)
    fig.tight_layout()
    tmp = _io.temp_path_beside(output_path)
    try:
        fig.savefig(tmp, format="png", dpi=110)
        os.replace(tmp, output_path)
    except BaseException:
        _io.remove_quietly(tmp)
        raise
    finally:
        plt.close(fig)
    return output_path

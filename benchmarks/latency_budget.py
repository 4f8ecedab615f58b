"""One run: pruning to a latency budget, measured, against uniform pruning.

MobileNetV2 224 (random weights), INT8, 1 thread, on this machine:
  - the latency table (one-layer models timed in LiteRT, calibrated on whole models), and the
    dense model's measured latency;
  - budgets of 0.7, 0.5 and 0.35 x that latency: for each, the planned model's measured latency
    (target: between 0.9 and 1.0 x the budget), its MACs, the planning rounds, and the measured
    latency of uniform pruning (`prune_channels(ConstantSparsity(s))`, s chosen to give the same
    MACs);
  - the planning time of the first budget, table included (target: under 10 minutes on 2 cores).

Fashion-MNIST CNN from examples/quickstart.py (trained here), INT8, 1 thread:
  - budgets of 0.6 and 0.4 x the dense model's measured latency; the plan
    (`plan_for_budget(sensitivity=(x, y))` with 500 held-out training images: sensitivity
    measured per group, importance scores as tie-breaker, and the candidate plans compared by
    validation loss after re-estimating BatchNorm statistics) against uniform pruning that
    meets the same budget as measured (the least-pruned ratio in 1% steps that does), both
    fine-tuned the same way (`prune_channels` on a schedule, with the plan or the uniform ratio,
    `--finetune_epochs` epochs, then `shrink`), over 3 seeds (target: the plan at least as
    accurate on average at 0.4 x).

Writes the plot (latency against accuracy, planned and uniform) to --plot, and `latency_budget.json`
and `latency_budget.md` to --output_dir. About 20 minutes on 2 shared cores; --quick runs a small
version (MobileNetV2 0.35 at 96x96, one budget each, one seed, 1,000 images) to try the script.

    python benchmarks/latency_budget.py
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))
from tflite_export import _quiet  # noqa: E402

_quiet.setup()  # before TensorFlow: no CUDA/oneDNN start-up lines

import datetime  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags, logging  # noqa: E402

import quickstart  # noqa: E402  examples/quickstart.py: the Fashion-MNIST CNN and its training
import tfprune  # noqa: E402
from tflite_export import latency_table as table_lib  # noqa: E402
from tflite_export import planner  # noqa: E402
from tfprune import planning  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# --output_dir, --epochs, --finetune_epochs, --batch_size, --train_images, --seed come from
# quickstart.
FLAGS = flags.FLAGS
FLAGS.set_default("output_dir", "out/latency_budget")
FLAGS.set_default("train_images", 12000)
flags.DEFINE_bool("quick", False, "A small run to try the script: MobileNetV2 0.35 at 96x96 "
                  "(budget 0.8x, 2 grid levels), the CNN at one budget (0.5x), one seed, 1,000 "
                  "training images, 1 epoch each.")
flags.DEFINE_list("budgets", ["0.7", "0.5", "0.35"], "MobileNetV2 budgets, x dense latency.")
flags.DEFINE_list("cnn_budgets", ["0.6", "0.4"], "Fashion-MNIST CNN budgets, x dense latency.")
flags.DEFINE_integer("seeds", 3, "Fine-tuning seeds per CNN model.")
flags.DEFINE_integer("round_to", 8, "Kept channels are multiples of this.")
flags.DEFINE_integer("levels", 3, "Grid points per group in the latency tables.")
flags.DEFINE_integer("sensitivity_images", 500, "Held-out images measuring the CNN's sensitivity.")
flags.DEFINE_string("plot", os.path.join(ROOT, "docs", "images", "latency_budget.png"),
                    "Where to write the latency/accuracy plot ('' for none).")
flags.DEFINE_bool("mobilenet", True, "Run the MobileNetV2 part.")
flags.DEFINE_bool("cnn", True, "Run the Fashion-MNIST part.")


def say(message):
    print(message, flush=True)


def progress_printer(prefix):
    """Progress lines for long stages: every 25th step and the last."""

    def show(done, total, message):
        if done <= 1 or done == total or done % 25 == 0 or message.startswith("round"):
            say(f"  {prefix}[{done}/{total}] {message}")

    return show


def measure_model(runner, model, precision="int8"):
    """Measured latency (ms) of a whole Keras model, converted like the planner does."""
    return runner.time([table_lib.to_tflite(model, precision)], whole=[True])[0]


def uniform_same_macs(model, graph, macs_target, round_to):
    """The uniform sparsity whose MACs are closest to `macs_target` (exact MAC cost model)."""
    macs = planning.count_site_costs(graph, "macs", round_to=round_to)
    base = tfprune.count_macs(model) - macs.sites_sum(
        {planning.group_key(g): g.size for g in graph.prunable_groups})
    best = None
    for s in np.arange(0.0, 0.951, 0.005):
        value = base + macs.sites_sum(table_lib.uniform_counts(graph, s, round_to))
        if best is None or abs(value - macs_target) < abs(best[1] - macs_target):
            best = (float(s), value)
    return best[0]


def uniform_model(model, sparsity, round_to):
    return tfprune.shrink(tfprune.prune_channels(model, tfprune.ConstantSparsity(sparsity, 0),
                                                 round_to=round_to))


# --- MobileNetV2 -------------------------------------------------------------------------------


def mobilenet_part(results):
    keras.utils.set_random_seed(0)
    if FLAGS.quick:
        model = keras.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3), alpha=0.35)
    else:
        model = keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3))
    graph = tfprune.DependencyGraph(model)
    runner = table_lib.HostRunner(num_threads=1)
    say(f"\n## {model.name}: INT8, 1 thread, {len(graph.prunable_groups)} prunable groups\n")
    say("Measuring the latency table (one-layer models, then whole models to calibrate):")
    started = time.perf_counter()
    table = table_lib.measure(model, "int8", num_threads=1, round_to=FLAGS.round_to,
                              levels=2 if FLAGS.quick else FLAGS.levels, runner=runner,
                              progress=progress_printer("table "))
    table_s = time.perf_counter() - started
    say(table.summary())
    say(f"Table: {table_s:.0f} s ({table.timings_s})")
    dense_ms = table.dense_ms
    dense_macs = tfprune.count_macs(model)
    rows = []
    budgets = [0.8] if FLAGS.quick else [float(b) for b in FLAGS.budgets]
    for i, factor in enumerate(budgets):
        budget = factor * dense_ms
        say(f"\nBudget {factor:g} x {dense_ms:.3f} ms = {budget:.3f} ms:")
        started = time.perf_counter()
        result = planner.plan_for_budget(model, latency_ms=budget, table=table, runner=runner,
                                         round_to=FLAGS.round_to,
                                         progress=progress_printer(""))
        loop_s = time.perf_counter() - started
        planned = result.rounds[result.chosen]
        sparsity = uniform_same_macs(model, graph, planned["macs"], FLAGS.round_to)
        uniform = uniform_model(model, sparsity, FLAGS.round_to)
        uniform_ms = measure_model(runner, uniform)
        row = {"factor": factor, "budget_ms": budget, "measured_ms": planned["latency_ms"],
               "ratio": planned["latency_ms"] / budget, "predicted_ms":
               planned["predicted"]["latency_ms"], "macs": planned["macs"],
               "params": planned["params"], "rounds": len(result.rounds),
               "within_tolerance": result.within_tolerance, "met": result.met,
               "uniform_sparsity": sparsity, "uniform_macs": tfprune.count_macs(uniform),
               "uniform_ms": uniform_ms, "loop_s": loop_s,
               "planning_s": loop_s + (table_s if i == 0 else 0.0),
               "plan": result.plan.targets}
        rows.append(row)
        say(f"  {result.status()}")
        say(f"  uniform {sparsity:.1%} of channels: {row['uniform_macs']:,} MACs, "
            f"{uniform_ms:.3f} ms measured")
    lines = [f"### {model.name}, INT8, 1 thread: dense {dense_ms:.3f} ms measured, "
             f"{dense_macs:,} MACs", "",
             "| budget | planned ms (x budget) | predicted ms | MACs | rounds | uniform at same "
             "MACs: ms | uniform MACs | planned vs uniform |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['factor']:g} x = {r['budget_ms']:.3f} ms | {r['measured_ms']:.3f} "
            f"({r['ratio']:.2f}x{'' if r['within_tolerance'] else ', outside [0.9, 1.0]'}) | "
            f"{r['predicted_ms']:.3f} | {r['macs']:,} | {r['rounds']} | {r['uniform_ms']:.3f} | "
            f"{r['uniform_macs']:,} | {r['uniform_ms'] / r['measured_ms']:.2f}x faster |")
    planning_s = rows[0]["planning_s"]
    lines += ["", f"Planning time for the first budget (table {table_s:.0f} s + loop "
                  f"{rows[0]['loop_s']:.0f} s): {planning_s:.0f} s = {planning_s / 60:.1f} min "
                  f"(target < 10 min): {'PASS' if planning_s < 600 else 'FAIL'}. Later budgets "
                  "reuse the table: " + ", ".join(f"{r['loop_s']:.0f} s" for r in rows[1:]) + ".",
              "Within [0.9, 1.0] x budget: " + ", ".join(
                  f"{r['factor']:g}x {'PASS' if r['within_tolerance'] else 'FAIL'}"
                  for r in rows) + "."]
    results["mobilenet"] = {"model": model.name, "dense_ms": dense_ms, "dense_macs": dense_macs,
                            "table_s": table_s, "table_summary": table.summary(),
                            "calibration": table.calibration, "rows": rows}
    return lines


# --- Fashion-MNIST CNN -------------------------------------------------------------------------


def fine_tune_accuracy(start, data, seed, **prune_kwargs):
    """Prunes `start` on a schedule (a plan or a uniform ratio), fine-tunes, shrinks, evaluates."""
    keras.utils.set_random_seed(seed)
    steps = quickstart.steps_per_epoch(data, FLAGS.batch_size) * FLAGS.finetune_epochs
    final = prune_kwargs.pop("sparsity", 0.5)
    schedule = tfprune.PolynomialDecay(0.0, final, begin_step=0, end_step=max(1, steps // 3),
                                       frequency=max(1, steps // 30))
    pruned = tfprune.prune_channels(start, schedule, importance="l2", round_to=FLAGS.round_to,
                                    **prune_kwargs)
    quickstart.compile_model(pruned, 1e-3, steps)
    (x, y), _ = data
    pruned.fit(x, y, batch_size=FLAGS.batch_size, epochs=FLAGS.finetune_epochs, verbose=0,
               callbacks=[tfprune.UpdatePruningStep()])
    small = tfprune.shrink(pruned)
    return small, quickstart.accuracy(small, *data[1])


def matching_uniform(model, graph, table, runner, budget_ms, round_to):
    """Uniform pruning that meets the same budget, measured: the least-pruned ratio that does.

    Ratios in 1% steps give the distinct uniform models (kept counts move in `round_to`
    steps, so exactly the planned latency is rarely reachable). The walk starts at the first
    one the table predicts to meet the budget and moves by measuring: towards less pruning
    while the next one still meets the budget, towards more until one does.
    """
    options, seen = [], set()
    for s in np.arange(0.0, 0.951, 0.01):
        counts = table_lib.uniform_counts(graph, float(s), round_to)
        signature = tuple(sorted(counts.items()))
        if signature not in seen:
            seen.add(signature)
            options.append((round(float(s), 2), counts))
    i = next((i for i, (_, c) in enumerate(options) if table(c) <= budget_ms), len(options) - 1)
    tried = {}

    def measured(i):
        s = options[i][0]
        if s not in tried:
            tried[s] = measure_model(runner, uniform_model(model, s, round_to))
        return tried[s]

    if measured(i) <= budget_ms:
        while i > 0 and measured(i - 1) <= budget_ms:
            i -= 1
    else:
        while i < len(options) - 1 and measured(i) > budget_ms:
            i += 1
    s = options[i][0]
    return s, tried[s] if s in tried else measured(i), dict(sorted(tried.items()))


def cnn_part(results):
    train_images = 1000 if FLAGS.quick else FLAGS.train_images
    epochs = 1 if FLAGS.quick else FLAGS.epochs
    if FLAGS.quick:
        FLAGS.finetune_epochs = 1
    seeds = 1 if FLAGS.quick else FLAGS.seeds
    held = FLAGS.sensitivity_images
    (x_all, y_all), test = quickstart.load_data(train_images + held, 1000 if FLAGS.quick
                                                else 10000)
    data = ((x_all[:train_images], y_all[:train_images]), test)
    x_val, y_val = x_all[train_images:], y_all[train_images:]
    say(f"\n## Fashion-MNIST CNN: train {train_images:,} images x {epochs} epochs, "
        f"{held} held-out images for sensitivity, {len(test[0]):,} test images\n")
    keras.utils.set_random_seed(FLAGS.seed)
    steps = quickstart.steps_per_epoch(data, FLAGS.batch_size) * epochs
    dense = quickstart.compile_model(quickstart.build_cnn(), 2e-3, steps)
    dense.fit(*data[0], batch_size=FLAGS.batch_size, epochs=epochs, verbose=0)
    dense_accuracy = quickstart.accuracy(dense, *test)
    graph = tfprune.DependencyGraph(dense)
    runner = table_lib.HostRunner(num_threads=1)
    table = table_lib.measure(dense, "int8", round_to=FLAGS.round_to,
                              levels=2 if FLAGS.quick else FLAGS.levels, runner=runner,
                              progress=lambda *a: None)
    say(table.summary())
    say(f"Dense: {100 * dense_accuracy:.2f}%, {table.dense_ms:.4f} ms")
    rows = []
    for factor in [0.5] if FLAGS.quick else [float(b) for b in FLAGS.cnn_budgets]:
        budget = factor * table.dense_ms
        result = planner.plan_for_budget(dense, latency_ms=budget, table=table, runner=runner,
                                         sensitivity=(x_val, y_val), round_to=FLAGS.round_to,
                                         progress=lambda *a: None)
        planned_ms = result.measured["latency_ms"]
        sparsity, uniform_ms, tried = matching_uniform(dense, graph, table, runner, budget,
                                                       FLAGS.round_to)
        say(f"\nBudget {factor:g} x = {budget:.4f} ms: {result.status()}")
        say("  plan: " + ", ".join(f"{k} {v}/{result.groups[k]}"
                                   for k, v in result.plan.targets.items()))
        say("  chosen by validation loss (BatchNorm re-estimated) among: " + "; ".join(
            f"{c['name']} {c['validation_loss']:.3f}"
            for c in result.rounds[result.chosen]["candidates"]))
        say(f"  uniform {sparsity:.0%}: {uniform_ms:.4f} ms measured (tried "
            + ", ".join(f"{s:.0%}: {ms:.4f}" for s, ms in tried.items()) + ")")
        planned_acc, uniform_acc = [], []
        for seed in range(seeds):
            small, acc = fine_tune_accuracy(dense, data, seed, plan=result.plan)
            planned_acc.append(acc)
            _, acc = fine_tune_accuracy(dense, data, seed, sparsity=sparsity)
            uniform_acc.append(acc)
            say(f"  seed {seed}: planned {100 * planned_acc[-1]:.2f}%, uniform "
                f"{100 * uniform_acc[-1]:.2f}%")
        finetuned_ms = measure_model(runner, small)
        rows.append({"factor": factor, "budget_ms": budget, "planned_ms": planned_ms,
                     "planned_finetuned_ms": finetuned_ms, "within_tolerance":
                     result.within_tolerance, "rounds": len(result.rounds),
                     "plan": result.plan.targets, "uniform_sparsity": sparsity,
                     "uniform_ms": uniform_ms, "planned_accuracy": planned_acc,
                     "uniform_accuracy": uniform_acc})
    lines = [f"### Fashion-MNIST CNN, INT8, 1 thread: dense {table.dense_ms:.4f} ms, "
             f"{100 * dense_accuracy:.2f}% ({epochs} epochs on {train_images:,} images); "
             f"fine-tuning {FLAGS.finetune_epochs} epoch(s) per model, {seeds} seed(s)", "",
             "| budget | planned ms (x budget) | planned accuracy % | uniform | uniform ms | "
             "uniform accuracy % | plan - uniform (points) |", "|---|---|---|---|---|---|---|"]
    verdicts = []
    for r in rows:
        p, u = 100 * np.mean(r["planned_accuracy"]), 100 * np.mean(r["uniform_accuracy"])
        lines.append(
            f"| {r['factor']:g} x = {r['budget_ms']:.4f} ms | {r['planned_ms']:.4f} "
            f"({r['planned_ms'] / r['budget_ms']:.2f}x) | {p:.2f} ± "
            f"{100 * np.std(r['planned_accuracy']):.2f} | {r['uniform_sparsity']:.0%} | "
            f"{r['uniform_ms']:.4f} | {u:.2f} ± {100 * np.std(r['uniform_accuracy']):.2f} | "
            f"{p - u:+.2f} |")
        verdicts.append(f"{r['factor']:g}x: plan {'at least as' if p >= u else 'LESS'} accurate "
                        f"on average ({p - u:+.2f} points)")
    lines += ["", "Target (0.4x: plan at least as accurate as uniform on average): "
              + "; ".join(verdicts) + "."]
    results["cnn"] = {"dense_ms": table.dense_ms, "dense_accuracy": dense_accuracy,
                      "table_summary": table.summary(), "rows": rows}
    return lines


def plot(results, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        say(f"No plot: matplotlib is not installed ({e}).")
        return None
    cnn = results.get("cnn")
    mobilenet = results.get("mobilenet")
    panels = [p for p in (cnn, mobilenet) if p]
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.2), squeeze=False)
    axes = axes[0]
    index = 0
    if cnn:
        ax = axes[index]
        index += 1
        for key, label, marker, color in (("planned", "planned (measured sensitivity)", "o",
                                           "tab:blue"),
                                          ("uniform", "uniform ratio", "s", "tab:orange")):
            xs = [r[f"{key}_ms"] for r in cnn["rows"]]
            ys = [100 * np.mean(r[f"{key}_accuracy"]) for r in cnn["rows"]]
            es = [100 * np.std(r[f"{key}_accuracy"]) for r in cnn["rows"]]
            ax.errorbar(xs, ys, yerr=es, marker=marker, color=color, label=label, capsize=3,
                        linestyle="-")
            for r in cnn["rows"]:
                ax.scatter([r[f"{key}_ms"]] * len(r[f"{key}_accuracy"]),
                           [100 * a for a in r[f"{key}_accuracy"]], color=color, alpha=0.3, s=12)
        ax.scatter([cnn["dense_ms"]], [100 * cnn["dense_accuracy"]], color="black", marker="*",
                   s=80, label="dense (before fine-tuning)")
        for r in cnn["rows"]:
            ax.axvline(r["budget_ms"], color="gray", linestyle=":", linewidth=1)
        ax.set_xlabel("measured latency, INT8, 1 thread (ms)")
        ax.set_ylabel("test accuracy after fine-tuning (%)")
        ax.set_title("Fashion-MNIST CNN: budget 0.6x and 0.4x dense")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    if mobilenet:
        ax = axes[index]
        rows = mobilenet["rows"]
        ax.plot([r["budget_ms"] for r in rows], [r["measured_ms"] for r in rows], "o-",
                label="planned: measured latency")
        ax.plot([r["budget_ms"] for r in rows], [r["uniform_ms"] for r in rows], "s--",
                label="uniform at the planned MACs")
        lo = min(r["budget_ms"] for r in rows) * 0.8
        hi = max(r["budget_ms"] for r in rows) * 1.1
        ax.plot([lo, hi], [lo, hi], color="gray", linewidth=1, label="= budget")
        ax.fill_between([lo, hi], [0.9 * lo, 0.9 * hi], [lo, hi], color="tab:green", alpha=0.1,
                        label="[0.9, 1.0] x budget")
        ax.set_xlabel("budget (ms)")
        ax.set_ylabel("measured latency (ms)")
        ax.set_title(f"{mobilenet['model']} INT8, 1 thread")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv):
    del argv
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    import logging as python_logging

    # Keras' predict retraces for every new model (notices, not problems).
    python_logging.getLogger("tensorflow").setLevel(python_logging.ERROR)
    started = time.perf_counter()
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    header = (f"Measured {datetime.date.today().isoformat()} on "
              f"{table_lib.host_device()['cpu']} ({os.cpu_count()} cores), TF "
              f"{__import__('tensorflow').__version__}, Keras {keras.__version__}, LiteRT "
              f"{table_lib.host_device()['litert']}" + (" (--quick)" if FLAGS.quick else ""))
    say(header)
    results, sections = {"header": header}, [header, ""]
    if FLAGS.mobilenet:
        sections += mobilenet_part(results) + [""]
    if FLAGS.cnn:
        sections += cnn_part(results) + [""]
    total = time.perf_counter() - started
    sections.append(f"Total time {total:.0f} s.")
    results["total_s"] = total
    if FLAGS.plot:
        path = plot(results, FLAGS.plot)
        if path:
            sections.append(f"Plot: {os.path.relpath(path, ROOT)}")
    text = "\n".join(sections) + "\n"
    say("\n" + text)
    with open(os.path.join(FLAGS.output_dir, "latency_budget.md"), "w", encoding="utf-8") as f:
        f.write(text)
    with open(os.path.join(FLAGS.output_dir, "latency_budget.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1, default=float)


if __name__ == "__main__":
    app.run(main)

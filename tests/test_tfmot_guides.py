"""The four tfmot pruning guides rewritten for tfprune (examples/tfmot_*.py), on tiny slices.

Each script runs as a subprocess with small flags, an output folder, a
working folder and TMPDIR of its own; the tests check the results lines it
prints, that its stderr holds no TensorFlow start-up noise, and that it
leaves nothing behind outside its output folder. The selected scripts start
together (each is mostly single-threaded start-up and conversion), so the
whole file takes about the time of the slowest one.
"""

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")

# Script -> flags of a tiny run. --frequency is small so that masks are
# updated within the few steps these runs take.
RUNS = {
    "tfmot_pruning_with_keras": [
        "--train_images=1000", "--test_images=200", "--epochs=1", "--prune_epochs=1",
        "--frequency=2"],
    "tfmot_comprehensive_guide": [
        "--train_images=1000", "--test_images=200", "--epochs=1", "--frequency=2"],
    "tfmot_sparsity_2_by_4": [
        "--train_images=500", "--test_images=200", "--tflite_test_images=50", "--epochs=1",
        "--frequency=2"],
    "tfmot_pruning_for_on_device_inference": [
        "--train_images=500", "--test_images=200", "--epochs=1", "--prune_epochs=1",
        "--end_epoch=1", "--frequency=1", "--benchmark_runs=5"],
}
# Test function -> the script it reads (the parametrized test names it itself).
SCRIPT_OF = {
    "test_pruning_with_keras": "tfmot_pruning_with_keras",
    "test_comprehensive_guide": "tfmot_comprehensive_guide",
    "test_sparsity_2_by_4": "tfmot_sparsity_2_by_4",
    "test_pruning_for_on_device_inference": "tfmot_pruning_for_on_device_inference",
}
NOISE = ("cuda", "oneDNN", "I0000", "E0000", "W0000", "absl::InitializeLog",
         "XNNPACK delegate")


class Run:
    """One script's subprocess and its folders."""

    def __init__(self, name, base):
        self.name = name
        self.out = base / "out"
        self.cwd = base / "cwd"
        self.tmp = base / "tmp"
        for folder in (self.out, self.cwd, self.tmp):
            folder.mkdir(parents=True)
        env = dict(os.environ, TMPDIR=str(self.tmp), PYTHONDONTWRITEBYTECODE="1")
        env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the scripts must quiet TF themselves
        self.process = subprocess.Popen(
            [sys.executable, os.path.join(EXAMPLES, f"{name}.py"), f"--output_dir={self.out}",
             *RUNS[name]],
            cwd=self.cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        self._result = None

    def result(self):
        """`(stdout, stderr)` once the script has exited 0."""
        if self._result is None:
            try:
                stdout, stderr = self.process.communicate(timeout=300)
            except subprocess.TimeoutExpired:
                self.process.kill()
                stdout, stderr = self.process.communicate()
            assert self.process.returncode == 0, f"{self.name}:\n{stdout[-2000:]}\n{stderr[-4000:]}"
            self._result = stdout, stderr
        return self._result


def _examples_listing():
    return sorted(os.listdir(EXAMPLES))


@pytest.fixture(scope="module")
def runs(request, tmp_path_factory):
    """Starts every selected script at once; yields {name: Run}."""
    selected = set()
    for item in request.session.items:
        if getattr(item, "module", None) is sys.modules[__name__]:
            callspec = getattr(item, "callspec", None)
            selected.add(callspec.params["name"] if callspec else SCRIPT_OF[item.originalname])
    names = [name for name in RUNS if name in selected]
    before = _examples_listing()
    started = {name: Run(name, tmp_path_factory.mktemp(name)) for name in names}
    yield started
    for run in started.values():
        if run.process.poll() is None:
            run.process.kill()
            run.process.communicate()
    assert _examples_listing() == before, "a script left files in examples/"


def results_section(stdout):
    assert "\nResults\n" in stdout, stdout[-2000:]
    return stdout.split("\nResults\n", 1)[1]


@pytest.mark.parametrize("name", list(RUNS))
def test_script_is_quiet_and_leaves_nothing_behind(runs, name):
    run = runs[name]
    stdout, stderr = run.result()
    for noise in NOISE:
        assert noise.lower() not in stderr.lower(), f"{name} stderr:\n{stderr[-3000:]}"
    assert re.search(r"\[1/\d\] ", stdout), stdout[:1000]  # progress lines
    assert not os.listdir(run.cwd), os.listdir(run.cwd)
    assert not os.listdir(run.tmp), os.listdir(run.tmp)
    assert not [f for f in os.listdir(run.out) if ".tmp" in f]


def test_pruning_with_keras(runs):
    results = results_section(runs["tfmot_pruning_with_keras"].result()[0])
    for label in ("Baseline test accuracy", "Pruned test accuracy"):
        assert re.search(rf"^{label}: +[\d.]+%$", results, re.M), label
    for label in ("Gzipped baseline Keras model", "Gzipped pruned Keras model",
                  "Gzipped pruned TFLite model", "Gzipped pruned + INT8 TFLite model"):
        assert re.search(rf"^{re.escape(label)}: +\d+ bytes", results, re.M), label
    # PolynomialDecay reached 80% (with the guide's NumPy end_step) in both layers.
    assert re.search(r"^Kernel sparsity after strip_pruning: +conv2d \d+\.\d%, dense 80\.0%$",
                     results, re.M), results
    assert re.search(r"^Pruned \+ INT8 TFLite test accuracy: +[\d.]+% on 200 images$", results,
                     re.M)
    out = runs["tfmot_pruning_with_keras"].out
    assert {"baseline.keras", "pruned.keras", "pruned.tflite", "pruned_int8.tflite"} <= set(
        os.listdir(out))
    assert os.listdir(out / "logs")  # PruningSummaries wrote its events


def test_comprehensive_guide(runs):
    results = results_section(runs["tfmot_comprehensive_guide"].result()[0])
    for label, value in (("Prune whole model wraps", "hidden, logits"),
                         ("clone_model(clone_function) wraps", "hidden"),
                         ("Custom PrunableLayer prunes", "kernel, bias"),
                         ("block_size [1, 16] wraps", "hidden, logits")):
        assert re.search(rf"^{re.escape(label)}: +{re.escape(value)}$", results, re.M), label
    for label in ("model.fit", "Custom training loop"):
        assert re.search(rf"^{re.escape(label)}: +test accuracy [\d.]+%, kernel sparsity 50\.0%$",
                         results, re.M), label
    # The checkpoint loads with and without prune_scope(), the step and optimizer included.
    loaded = re.findall(r": +same outputs, pruning_step 8, optimizer step 8$", results, re.M)
    assert len(loaded) == 2, results
    assert re.search(r"^Gzipped \.keras: +\d+ bytes without stripping, \d+ bytes with$", results,
                     re.M)
    assert re.search(r"^TFLite float32: .*test accuracy [\d.]+%$", results, re.M)
    out = runs["tfmot_comprehensive_guide"].out
    assert os.listdir(out / "logs_fit") and os.listdir(out / "logs_loop")


def test_sparsity_2_by_4(runs):
    results = results_section(runs["tfmot_sparsity_2_by_4"].result()[0])
    for layer in ("structural_pruning", "structural_pruning_dense"):
        found = re.search(rf"^{layer}: .* sparsity  50\.0%, groups of 4 with >= 2 zeros: "
                          r"(\d+) of (\d+) \(Keras\), (\d+) of (\d+) \(TFLite\)$", results, re.M)
        assert found and len(set(found.groups())) == 1, results  # every group, Keras and TFLite
    assert re.search(r"^unstructured_pruning: .* sparsity  50\.0%, no groups of 4", results, re.M)
    assert re.search(r"^TFLite float32 model: +\d+ bytes, test accuracy [\d.]+% on 50 images$",
                     results, re.M)
    assert "pruned_2_by_4.tflite" in os.listdir(runs["tfmot_sparsity_2_by_4"].out)


def test_pruning_for_on_device_inference(runs):
    results = results_section(runs["tfmot_pruning_for_on_device_inference"].result()[0])
    assert re.search(r"^Layers pruned by the policy: +\w+, \w+ \(the 1x1 Conv2D layers\)$",
                     results, re.M), results
    assert len(re.findall(r"^Sparsity of \w+ \(1, 1, \d+, \d+\): +75\.0%$", results, re.M)) == 2
    for label in ("Dense model test accuracy", "Pruned model test accuracy"):
        assert re.search(rf"^{label}: +[\d.]+%$", results, re.M), label
    assert re.search(r"^Dense TFLite: +\d+ bytes, sparse format no, median [\d.]+ us", results,
                     re.M)
    assert re.search(r"^Pruned TFLite: +\d+ bytes, sparse format yes, median [\d.]+ us", results,
                     re.M)
    assert "not on this x86 host" in results

"""The documentation: docstrings of the public API, the MkDocs site, and the README's commands.

A missing docstring fails here (mkdocstrings would silently leave the object out of the API pages).
With the `docs` extra installed, the site is built with `mkdocs build --strict` and must show every
public object, and a strict build must fail on a broken link or anchor.
"""

import ast
import importlib
import inspect
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The modules that have API reference pages (docs/api/), packages first.
API_MODULES = (
    "tfprune",
    "tfprune.schedules",
    "tfprune.callbacks",
    "tfprune.pruning_policy",
    "tfprune.checkpointing",
    "tfprune.multi_worker",
    "tfprune.step_counter",
    "tfprune.importance",
    "tfprune.dependency",
    "tfprune.handlers",
    "tfprune.datasets",
    "tflite_export",
    "tflite_export.android",
)


def _source_tree(module):
    with open(module.__file__, encoding="utf-8") as f:
        return ast.parse(f.read())


def _assigned_names(tree):
    """Public names assigned at the top level of a module, with whether a docstring follows."""
    found = {}
    for i, node in enumerate(tree.body):
        targets = node.targets if isinstance(node, ast.Assign) else (
            [node.target] if isinstance(node, ast.AnnAssign) else [])
        for target in targets:
            if isinstance(target, ast.Name) and not target.id.startswith("_"):
                after = tree.body[i + 1] if i + 1 < len(tree.body) else None
                found[target.id] = (isinstance(after, ast.Expr)
                                    and isinstance(after.value, ast.Constant)
                                    and isinstance(after.value.value, str)
                                    and bool(after.value.value.strip()))
    return found


def _package_exports(module):
    """{name: (defining module name, object)} of what a package's `__init__` imports or assigns.

    Objects are taken from the module they are imported from, so that a submodule of the same name
    (`tflite_export.benchmark`, the CLI) does not hide the function the package exports.
    """
    public = getattr(module, "__all__", None)
    exports = {}
    tree = _source_tree(module)
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level == 0:
            source = importlib.import_module(node.module)
            for alias in node.names:
                exports[alias.asname or alias.name] = (node.module, getattr(source, alias.name))
    for name in _assigned_names(tree):
        exports[name] = (module.__name__, getattr(module, name))
    return {name: value for name, value in exports.items()
            if not name.startswith("_") and (public is None or name in public)}


def _module_objects(module):
    """{name: (defining module name, object)}: what a plain module defines (not what it imports)."""
    objects = {}
    for name, obj in vars(module).items():
        if name.startswith("_"):
            continue
        if (inspect.isclass(obj) or inspect.isfunction(obj)) and obj.__module__ == module.__name__:
            objects[name] = (module.__name__, obj)
    for name in _assigned_names(_source_tree(module)):
        objects[name] = (module.__name__, getattr(module, name))
    return objects


def public_api():
    """[(module name, name, defining module name, object)] of every object the API pages document."""
    api = []
    for module_name in API_MODULES:
        module = importlib.import_module(module_name)
        is_package = os.path.basename(module.__file__) == "__init__.py"
        members = _package_exports(module) if is_package else _module_objects(module)
        api.extend((module_name, name, source, obj) for name, (source, obj) in members.items())
    return api


def _missing_docstrings():
    missing = []
    for module_name in API_MODULES:
        if not (importlib.import_module(module_name).__doc__ or "").strip():
            missing.append(f"module {module_name}")
    for module_name, name, source, obj in public_api():
        where = f"{module_name}.{name}"
        if inspect.ismodule(obj):
            if not (obj.__doc__ or "").strip():
                missing.append(f"module {where}")
        elif inspect.isclass(obj) or inspect.isfunction(obj):
            if not inspect.getdoc(obj):
                missing.append(where)
            if inspect.isclass(obj):
                for attr, value in vars(obj).items():
                    if attr.startswith("_"):
                        continue
                    if isinstance(value, property):
                        documented = bool(value.__doc__)
                    elif inspect.isfunction(getattr(value, "__func__", value)):
                        # A method that overrides a documented one may keep the base docstring.
                        documented = bool(inspect.getdoc(getattr(obj, attr)))
                    else:
                        continue
                    if not documented:
                        missing.append(f"{where}.{attr}")
        elif not _assigned_names(_source_tree(importlib.import_module(source))).get(name):
            missing.append(f'{where} (a constant: put a """docstring""" on the line after it)')
    return missing


def test_every_public_object_has_a_docstring():
    missing = _missing_docstrings()
    assert not missing, "Public API without a docstring (the API pages need one):\n  " + "\n  ".join(
        missing)


def test_public_api_walk_sees_the_api():
    names = {f"{module}.{name}" for module, name, _, _ in public_api()}
    for expected in ("tfprune.prune_low_magnitude", "tfprune.shrink", "tfprune.datasets",
                     "tfprune.schedules.PolynomialDecay", "tfprune.callbacks.UpdatePruningStep",
                     "tfprune.multi_worker.enable_multi_worker_fit", "tflite_export.export",
                     "tflite_export.benchmark", "tflite_export.SCHEMA_VERSION",
                     "tflite_export.android.benchmark", "tfprune.datasets.DEFAULT_DIR"):
        assert expected in names
    benchmark = {name: obj for module, name, _, obj in public_api() if module == "tflite_export"}
    assert inspect.isfunction(benchmark["benchmark"])


def test_missing_docstring_is_found(monkeypatch):
    import tfprune

    def undocumented():
        pass

    monkeypatch.setattr(tfprune.schedules, "undocumented", undocumented, raising=False)
    undocumented.__module__ = "tfprune.schedules"
    assert "tfprune.schedules.undocumented" in _missing_docstrings()


# --- commands ----------------------------------------------------------------------------------

def _commands(path):
    """The numbered copy-paste commands (`# 1. ...` followed by the command) of a Markdown file."""
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        text = f.read()
    return dict(re.findall(r"^# (\d)\. .*\n(.+)$", text, flags=re.MULTILINE))


def test_readme_test_command_is_what_ci_runs():
    with open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8") as f:
        ci_command = f.read().rstrip("\n").splitlines()[-1]
    readme = _commands("README.md")
    assert set(readme) == {"1", "2"}
    assert readme["2"] == ci_command
    assert "mkdocs build --strict" in ci_command and ".[test,docs,jax,torch]" in ci_command
    assert _commands(os.path.join("docs", "index.md")) == readme


# --- the README's examples ---------------------------------------------------------------------

def _python_blocks(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        return re.findall(r"^```python\n(.*?)^```", f.read(), flags=re.MULTILINE | re.DOTALL)


def test_readme_examples_run(tmp_path, monkeypatch):
    """The README's unstructured, channel and export examples, in order, on a tiny model."""
    import keras

    blocks = _python_blocks("README.md")
    assert len(blocks) == 4
    rng = np.random.default_rng(0)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(8, 3, activation="relu", name="stem")(inputs)
    x = keras.layers.Conv2D(16, 3, activation="relu")(x)
    outputs = keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(x))
    data = rng.random((64, 8, 8, 1), dtype=np.float32)
    labels = rng.integers(0, 10, 64)
    namespace = {"model": keras.Model(inputs, outputs), "x": data, "y": labels,
                 "x_train": data, "x_test": data[:32], "y_test": labels[:32]}
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)
    assert namespace["final"].count_params() == namespace["model"].count_params()
    assert namespace["thin"].count_params() <= namespace["model"].count_params()
    assert namespace["report"].accuracy is not None
    assert sorted(os.listdir(tmp_path)) == ["model.report.json", "model.report.md", "model.tflite"]
    # The custom-layer example: the registered layer's channels were removed.
    from tfprune import handlers

    handlers.unregister_handler(namespace["ChannelScale"])
    scales = [layer for layer in namespace["thin_scaled"].layers
              if type(layer).__name__ == "ChannelScale"]
    assert scales[0].scale.shape == (8,)


# --- the site ----------------------------------------------------------------------------------

def _require_mkdocs():
    for name in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python"):
        pytest.importorskip(name, reason='the docs extra is not installed: pip install -e ".[docs]"')


def _build(config, site_dir):
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config),
         "--site-dir", str(site_dir)],
        capture_output=True, text=True, timeout=300, cwd=ROOT, stdin=subprocess.DEVNULL,
        env=dict(os.environ, NO_MKDOCS_2_WARNING="1"))


def test_site_builds_strict_and_documents_the_public_api(tmp_path):
    _require_mkdocs()
    proc = _build(os.path.join(ROOT, "mkdocs.yml"), tmp_path / "site")
    assert proc.returncode == 0, proc.stderr[-5000:]
    html = ""
    for folder, _, files in os.walk(tmp_path / "site" / "api"):
        for name in files:
            if name.endswith(".html"):
                with open(os.path.join(folder, name), encoding="utf-8") as f:
                    html += f.read()
    anchors = set(re.findall(r'id="([\w.]+)"', html))
    absent = []
    for module_name, name, _, obj in public_api():
        if inspect.ismodule(obj):
            continue  # a module is documented through its own members
        ids = {f"{module_name}.{name}"}
        if inspect.isclass(obj) or inspect.isfunction(obj):
            ids.add(f"{obj.__module__}.{obj.__qualname__}")
        if not ids & anchors:
            absent.append(f"{module_name}.{name}")
    assert not absent, "Not on any API page (add a `::: name` line to docs/api/):\n  " + "\n  ".join(
        absent)


def test_strict_build_fails_on_a_broken_link_or_anchor(tmp_path):
    _require_mkdocs()
    docs = tmp_path / "docs"
    shutil.copytree(os.path.join(ROOT, "docs"), docs)
    with open(docs / "concepts.md", "a", encoding="utf-8") as f:
        f.write("\n[a page](guides/no-such-page.md) and [an anchor](results.md#no-such-anchor)\n")
    with open(os.path.join(ROOT, "mkdocs.yml"), encoding="utf-8") as f:
        config = f.read()
    assert "\ndocs_dir: docs\n" in config and "paths: [.]" in config
    config = config.replace("\ndocs_dir: docs\n", f"\ndocs_dir: {docs}\n").replace(
        "paths: [.]", f"paths: [{ROOT}]")
    (tmp_path / "mkdocs.yml").write_text(config, encoding="utf-8")
    proc = _build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert proc.returncode != 0
    assert "no-such-page.md" in proc.stderr
    assert "no-such-anchor" in proc.stderr

"""Issue #13: export never loses a file and never leaves one half-written.

Real exports of a tiny Keras model. What must run in another process (a
SIGKILL, a live concurrent export, a process that may not write a folder)
runs `tests/_workers/export_worker.py`, bounded by timeouts.
"""

import errno
import hashlib
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import pytest

from export_fixtures import files_in

import tflite_export
from tflite_export import _io, host_benchmark

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "_workers", "export_worker.py")
UNIT = ["m.report.json", "m.report.md", "m.tflite"]
REP = np.random.default_rng(0).random((16, 8, 8, 1)).astype(np.float32)
# Where the worker stops (see export_worker.py); before "rename1" nothing is committed.
BEFORE_COMMIT = ("prepare", "convert", "evaluate", "benchmark", "write")
DURING_COMMIT = ("rename1", "rename2", "rename3", "renamed")


@pytest.fixture(scope="module")
def tiny():
    import keras

    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3),
                             keras.layers.Flatten(), keras.layers.Dense(3)])


def _export(model, path, quantize="float32", **kwargs):
    kwargs.setdefault("num_threads", None)
    if quantize == "int8":
        kwargs.setdefault("representative_data", REP)
    return tflite_export.export(model, path, quantize=quantize, **kwargs)


def _unit(folder, stem="m"):
    """The bytes of an export's three files."""
    names = (f"{stem}.tflite", f"{stem}.report.json", f"{stem}.report.md")
    return {n: (folder / n).read_bytes() for n in names if (folder / n).exists()}


def _assert_consistent(path):
    """The three files of an export agree: the reports record the .tflite's SHA-256."""
    report = tflite_export.load_report(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert report.tflite_sha256 == digest and report.size_bytes == path.stat().st_size
    json_path, md_path = tflite_export.report_paths(path)
    assert digest in open(md_path).read()
    assert os.path.basename(report.tflite_path) == path.name
    return report


def _env(tmp_path, **extra):
    systmp = tmp_path / "systmp"
    systmp.mkdir(exist_ok=True)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="",
               TMPDIR=str(systmp),
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for name in ("EXPORT_KILL_AT", "EXPORT_PAUSE_AT", "EXPORT_PAUSE_FILE"):
        env.pop(name, None)
    env.update(extra)
    return env


def _worker_args(out, quantize="int8", lock_timeout=0.0, prefix=()):
    return [*prefix, sys.executable, WORKER, str(out), quantize, str(lock_timeout)]


def _worker(out, env, quantize="int8", prefix=(), timeout=240):
    """Runs the worker to its end (or its death); the result also has its `pid`."""
    args = _worker_args(out, quantize, prefix=prefix)
    with subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          cwd=ROOT, env=env, stdin=subprocess.DEVNULL) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
    result = subprocess.CompletedProcess(args, proc.returncode, stdout, stderr)
    result.pid = proc.pid
    return result


def _cli(*args, env, prefix=(), timeout=240):
    return subprocess.run([*prefix, sys.executable, "-m", "tflite_export", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env,
                          stdin=subprocess.DEVNULL)


def _result(proc):
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _one_line_error(proc):
    """The CLI failed with exit code 2 and one `error:` line, without a traceback."""
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    return errors[0]


def _wait_for(path, proc, timeout=180):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)


def _system_temp_leftovers(tmp_path):
    return [n for n in os.listdir(tmp_path / "systmp") if n.startswith("tflite_export")]


# --- 1. The output path is the model, or a file that an export did not write -------------


def test_output_that_is_the_model_is_refused_even_with_overwrite(tiny, tmp_path):
    source = tmp_path / "m.keras"
    tiny.save(source)
    before = source.read_bytes()
    (tmp_path / "sub").mkdir()
    os.symlink(source, tmp_path / "link.tflite")
    os.link(source, tmp_path / "hard.tflite")
    listing = files_in(tmp_path)
    outputs = [source, str(source), tmp_path / "sub" / ".." / "m.keras",
               tmp_path / "link.tflite", tmp_path / "hard.tflite"]
    for output in outputs:
        for overwrite in (False, True):
            with pytest.raises(ValueError, match="would replace the model being exported") \
                    as info:
                tflite_export.export(str(source), output, quantize="float32",
                                     num_threads=None, overwrite=overwrite)
            message = str(info.value)
            assert repr(str(source)) in message and "Choose another output path" in message
            assert repr(str(tmp_path / "m.tflite")) in message  # The suggested path.
    assert source.read_bytes() == before and files_in(tmp_path) == listing

    saved = tmp_path / "saved"
    tiny.export(str(saved), format="tf_saved_model", verbose=False)
    pb = (saved / "saved_model.pb").read_bytes()
    with pytest.raises(ValueError, match="would replace the model being exported"):
        tflite_export.export(str(saved), saved / "saved_model.pb", quantize="float32",
                             num_threads=None, overwrite=True)
    assert (saved / "saved_model.pb").read_bytes() == pb

    report = tflite_export.export(source, tmp_path / "m.tflite", quantize="float32",
                                  num_threads=None)
    assert report.source["kind"] == "keras_file" and source.read_bytes() == before
    _assert_consistent(tmp_path / "m.tflite")


def test_existing_files_not_written_by_export_are_refused(tiny, tmp_path):
    out = tmp_path / "m.tflite"
    out.write_bytes(b"my own model")
    with pytest.raises(ValueError, match=r"m\.tflite'.*not a file written by tflite_export"
                                         r".*no report.*overwrite=True \(CLI: --overwrite\)"):
        _export(tiny, out)
    assert out.read_bytes() == b"my own model" and files_in(tmp_path) == ["m.tflite"]

    _export(tiny, out, overwrite=True)
    _assert_consistent(out)
    assert files_in(tmp_path) == UNIT
    # An earlier export's files are replaced without overwrite=True.
    assert _export(tiny, out, quantize="int8").quantize == "int8"
    _assert_consistent(out)

    # Changed after the export: no longer what the report vouches for.
    changed = out.read_bytes() + b"\0"
    out.write_bytes(changed)
    with pytest.raises(ValueError, match=r"SHA-256 is not the one .*m\.report\.json"):
        _export(tiny, out)
    assert out.read_bytes() == changed

    # A report that is someone else's text, with no .tflite beside it.
    (tmp_path / "notes.report.md").write_text("# my notes\n")
    with pytest.raises(ValueError, match=r"notes\.report\.md'.*not a file written"):
        _export(tiny, tmp_path / "notes.tflite")
    assert (tmp_path / "notes.report.md").read_text() == "# my notes\n"

    # A report from before reports recorded the SHA-256.
    legacy = json.loads((tmp_path / "m.report.json").read_text())
    legacy.pop("tflite_sha256")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "m.report.json").write_text(json.dumps(legacy))
    (tmp_path / "old" / "m.tflite").write_bytes(changed)
    with pytest.raises(ValueError, match="records no SHA-256"):
        _export(tiny, tmp_path / "old" / "m.tflite")

    # A symbolic link: with overwrite=True the link is replaced, never its target.
    (tmp_path / "target.bin").write_bytes(b"target")
    os.symlink(tmp_path / "target.bin", tmp_path / "s.tflite")
    with pytest.raises(ValueError, match="symbolic link"):
        _export(tiny, tmp_path / "s.tflite")
    _export(tiny, tmp_path / "s.tflite", overwrite=True)
    assert not os.path.islink(tmp_path / "s.tflite")
    assert (tmp_path / "target.bin").read_bytes() == b"target"
    _assert_consistent(tmp_path / "s.tflite")


def test_cli_refuses_the_model_and_foreign_files_in_one_line(tiny, tmp_path):
    source = tmp_path / "m.keras"
    tiny.save(source)
    before = source.read_bytes()
    env = _env(tmp_path)
    for extra in ((), ("--overwrite",)):
        line = _one_line_error(_cli(source, f"--output={source}", "--quantize=float32",
                                    *extra, env=env))
        assert "would replace the model being exported" in line and str(source) in line
    assert source.read_bytes() == before

    out = tmp_path / "f.tflite"
    out.write_bytes(b"mine")
    line = _one_line_error(_cli(source, f"--output={out}", "--quantize=float32",
                                "--num_threads=", env=env))
    assert "not a file written by tflite_export" in line and "--overwrite" in line
    assert out.read_bytes() == b"mine"
    proc = _cli(source, f"--output={out}", "--quantize=float32", "--num_threads=",
                "--overwrite", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _assert_consistent(out)
    assert source.read_bytes() == before


# --- 2. File modes -------------------------------------------------------------------------


def test_files_get_the_mode_open_would_give(tiny, tmp_path):
    def modes(folder):
        return {n: stat.S_IMODE(os.stat(folder / n).st_mode) for n in files_in(folder)}

    old = os.umask(0o022)
    try:
        _export(tiny, tmp_path / "m.tflite")
        assert modes(tmp_path) == dict.fromkeys(UNIT, 0o644)
        with open(tmp_path / "plain", "w"):
            pass
        assert modes(tmp_path)["plain"] == 0o644
        os.remove(tmp_path / "plain")
        # A replaced file keeps its mode, as open(..., "w") on it would.
        for name in UNIT:
            os.chmod(tmp_path / name, 0o640)
        _export(tiny, tmp_path / "m.tflite", quantize="int8")
        assert modes(tmp_path) == dict.fromkeys(UNIT, 0o640)

        os.umask(0o077)
        (tmp_path / "private").mkdir()
        report = _export(tiny, tmp_path / "private" / "m.tflite")
        assert modes(tmp_path / "private") == dict.fromkeys(UNIT, 0o600)
        os.umask(0o002)
        report.tflite_path = str(tmp_path / "r.tflite")
        report.save()
        assert modes(tmp_path)["r.report.json"] == modes(tmp_path)["r.report.md"] == 0o664
    finally:
        os.umask(old)


# --- 3. Temporaries: beside the output, named with the PID, never left ----------------------


def test_temporaries_live_beside_the_output_and_are_removed(tiny, tmp_path, monkeypatch):
    systmp = tmp_path / "systmp"
    systmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(systmp))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    seen = {}
    real = host_benchmark.benchmark

    def spy(path, **kwargs):
        seen["tflite"] = path
        seen["listing"] = sorted(os.listdir(out_dir))
        return real(path, **kwargs)

    monkeypatch.setattr(host_benchmark, "benchmark", spy)
    _export(tiny, out_dir / "m.tflite", num_threads=(1,), benchmark_runs=2)
    work, lock = seen["listing"]
    assert lock == ".m.tflite_export.lock"
    assert re.fullmatch(rf"\.m\.tflite_export-{os.getpid()}-\w+\.tmp", work)
    assert seen["tflite"] == str(out_dir / work / "m.tflite")
    assert files_in(out_dir) == UNIT and _system_temp_leftovers(tmp_path) == []

    # A run that fails after the conversion leaves the earlier files and no temporary.
    before = _unit(out_dir)

    def broken(path, **kwargs):
        saved_models = [n for n in os.listdir(out_dir / work_now()) if
                        n.startswith("tflite_export_")]
        assert saved_models, "the temporary SavedModel is in the work folder"
        raise RuntimeError("benchmark crashed")

    def work_now():
        return next(n for n in os.listdir(out_dir) if n.endswith(".tmp"))

    monkeypatch.setattr(host_benchmark, "benchmark", broken)
    with pytest.raises(RuntimeError, match="benchmark crashed"):
        _export(tiny, out_dir / "m.tflite", quantize="int8", num_threads=(1,))
    assert files_in(out_dir) == UNIT and _unit(out_dir) == before
    assert _system_temp_leftovers(tmp_path) == []


def test_stale_temporaries_are_removed_only_when_their_process_is_dead(tiny, tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(timeout=60)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        stale_work = tmp_path / f".a.tflite_export-{dead.pid}-abc_123.tmp"
        (stale_work / "tflite_export_x1" / "saved_model").mkdir(parents=True)
        (stale_work / "a.tflite").write_bytes(b"\0" * 4096)
        stale_file = tmp_path / f".b.report.json.tflite_export-{dead.pid}-k9.tmp"
        stale_file.write_bytes(b"{")
        stale_lock = tmp_path / ".c.tflite_export.lock"
        stale_lock.write_text(f"{dead.pid}\n")
        live_work = tmp_path / f".a.tflite_export-{live.pid}-xyz.tmp"
        live_work.mkdir()
        (live_work / "a.tflite").write_bytes(b"\0" * 10)
        (tmp_path / ".notes").write_text("a user's hidden file")

        _export(tiny, tmp_path / "m.tflite")
        assert files_in(tmp_path) == sorted([".notes", live_work.name] + UNIT)
        assert (live_work / "a.tflite").read_bytes() == b"\0" * 10
    finally:
        live.kill()
        live.wait(timeout=60)


# --- 4. One consistent unit: lock per output, SHA-256 in the reports ------------------------


def test_load_report_refuses_a_tflite_from_another_export(tiny, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _export(tiny, tmp_path / "a" / "m.tflite")
    _export(tiny, tmp_path / "b" / "m.tflite", quantize="int8")
    shutil.copytree(tmp_path / "b", tmp_path / "moved")
    assert tflite_export.load_report(tmp_path / "moved" / "m.report.json").quantize == "int8"
    shutil.copy(tmp_path / "b" / "m.tflite", tmp_path / "a" / "m.tflite")
    for path in (tmp_path / "a" / "m.tflite", tmp_path / "a" / "m.report.json"):
        with pytest.raises(ValueError, match=r"does not describe .*m\.tflite'.*different "
                                             r"exports.*Export again"):
            tflite_export.load_report(path)
    assert tflite_export.load_report(tmp_path / "a" / "m.tflite", verify=False).quantize == \
        "float32"
    with pytest.raises(ValueError, match="not an export report"):
        (tmp_path / "x.report.json").write_text("[1, 2]")
        tflite_export.load_report(tmp_path / "x.report.json")


def test_a_second_export_of_the_same_path_fails_fast_or_waits(tiny, tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "m.tflite"
    release = tmp_path / "release"
    env = _env(tmp_path, EXPORT_PAUSE_AT="benchmark", EXPORT_PAUSE_FILE=str(release))
    proc = subprocess.Popen(_worker_args(out), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT, env=env, stdin=subprocess.DEVNULL)
    try:
        _wait_for(f"{release}.paused", proc)
        live = sorted(os.listdir(out_dir))
        assert live[1] == ".m.tflite_export.lock" and f"-{proc.pid}-" in live[0]
        start = time.monotonic()
        with pytest.raises(_io.OutputBusyError, match=rf"another export \(process {proc.pid}\)"
                                                      r" is writing this path.*lock_timeout"):
            _export(tiny, out)
        assert time.monotonic() - start < _io.LOCK_GRACE_S + 5
        assert issubclass(_io.OutputBusyError, ValueError)
        # Another path in the same folder is free, and leaves the live export's files alone.
        _export(tiny, out_dir / "other.tflite")
        assert set(live) <= set(os.listdir(out_dir))

        # With lock_timeout the second export waits for the first and then replaces it.
        threading.Timer(1.0, release.touch).start()
        mine = _export(tiny, out, lock_timeout=120)
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr[-3000:]
        assert json.loads(stdout.strip().splitlines()[-1])["ok"]
        assert _assert_consistent(out).tflite_sha256 == mine.tflite_sha256
        assert files_in(out_dir) == sorted(UNIT + ["other.report.json", "other.report.md",
                                                   "other.tflite"])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=60)


def test_file_system_without_locks_still_exports(tiny, tmp_path, monkeypatch):
    import fcntl

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", no_locks)
    _export(tiny, tmp_path / "m.tflite")
    _assert_consistent(tmp_path / "m.tflite")
    assert files_in(tmp_path) == UNIT


def test_racing_exports_leave_one_consistent_unit(tmp_path):
    """A float32 and an int8 export of the same path at once: both succeed, one after the
    other; the three files are the last one's."""
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "m.tflite"
    env = _env(tmp_path)
    procs = [subprocess.Popen(_worker_args(out, q, lock_timeout=120), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env,
                              stdin=subprocess.DEVNULL) for q in ("float32", "int8")]
    shas = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr[-3000:]
        shas.append(json.loads(stdout.strip().splitlines()[-1])["sha256"])
    report = _assert_consistent(out)
    assert report.tflite_sha256 in shas and shas[0] != shas[1]
    assert report.quantize == ("float32", "int8")[shas.index(report.tflite_sha256)]
    assert files_in(out_dir) == UNIT


# --- 5. Folders that cannot be written, and other path mistakes ------------------------------


def _unprivileged():
    """A command prefix under which a chmod 0555 folder is really not writable."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: cannot drop CAP_DAC_OVERRIDE")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search"]


def test_read_only_folder_fails_before_converting(tiny, tmp_path):
    prefix = _unprivileged()
    source = tmp_path / "m.keras"
    tiny.save(source)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        env = _env(tmp_path)
        proc = _worker(ro / "m.tflite", env, prefix=prefix)
        assert proc.returncode == 2, proc.stderr[-3000:]
        result = _result(proc)
        assert result["type"] == "ValueError"
        assert f"the folder {str(ro)!r} is not writable" in result["message"]
        assert "chmod" in result["message"] and result["reached"] == []
        line = _one_line_error(_cli(source, f"--output={ro / 'm.tflite'}",
                                    "--quantize=float32", env=env, prefix=prefix))
        assert "is not writable" in line and str(ro) in line
        assert os.listdir(ro) == []
    finally:
        ro.chmod(0o755)


@pytest.mark.parametrize("case, message", [
    ("missing folder", "does not exist"),
    ("output is a folder", "is a folder"),
    ("report is a folder", r"m\.report\.json' is a folder"),
    ("trailing separator", "ends with a path separator"),
    ("name too long", "more than the 255 bytes"),
    ("overwrite not a bool", "overwrite='yes'"),
    ("bad lock_timeout", "lock_timeout=-1"),
])
def test_bad_output_paths_fail_before_anything_is_written(tiny, tmp_path, case, message):
    kwargs = {}
    output = tmp_path / "m.tflite"
    if case == "missing folder":
        output = tmp_path / "missing" / "m.tflite"
    elif case == "output is a folder":
        output = tmp_path / "dir.tflite"
        output.mkdir()
    elif case == "report is a folder":
        (tmp_path / "m.report.json").mkdir()
        kwargs["overwrite"] = True
    elif case == "trailing separator":
        output = str(tmp_path / "m.tflite") + os.sep
    elif case == "name too long":
        output = tmp_path / ("x" * 250 + ".tflite")
    elif case == "overwrite not a bool":
        kwargs["overwrite"] = "yes"
    else:
        kwargs["lock_timeout"] = -1
    listing = files_in(tmp_path)
    with pytest.raises(ValueError, match=message):
        _export(tiny, output, **kwargs)
    assert files_in(tmp_path) == listing


@pytest.mark.parametrize("failing", ["m.tflite", "m.report.json", "m.report.md"])
def test_full_disk_leaves_the_earlier_files_and_no_partial_one(tiny, tmp_path, monkeypatch,
                                                               failing):
    out = tmp_path / "m.tflite"
    _export(tiny, out)
    before = _unit(tmp_path)
    real_write = os.write

    def full_disk(fd, data):
        path = os.readlink(f"/proc/self/fd/{fd}")
        if ".tflite_export-" in path and os.path.basename(path) == failing:
            real_write(fd, bytes(data[:max(1, len(data) // 2)]))  # Half fits, then ENOSPC.
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full_disk)
    with pytest.raises(OSError, match=rf"No space left on device while writing .*{failing}.*"
                                      r"Free space in") as info:
        _export(tiny, out, quantize="int8")
    assert info.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert files_in(tmp_path) == UNIT and _unit(tmp_path) == before
    _assert_consistent(out)


# --- Fault injection: SIGKILL at each stage of a real export ---------------------------------


@pytest.mark.parametrize("point", BEFORE_COMMIT + DURING_COMMIT)
def test_sigkill_at_each_stage(tiny, tmp_path, point):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "m.tflite"
    _export(tiny, out)  # The earlier output: float32.
    before = _unit(out_dir)

    proc = _worker(out, _env(tmp_path, EXPORT_KILL_AT=point), quantize="int8")
    assert proc.returncode == -signal.SIGKILL, (proc.stdout, proc.stderr[-3000:])
    # What the killed export left is hidden and names its PID; nothing is in the system temp.
    left = [n for n in files_in(out_dir) if n not in UNIT]
    assert left, "a killed export leaves its lock or work folder"
    for name in left:
        assert re.fullmatch(rf"\.m\.tflite_export(-{proc.pid}-\w+\.tmp|\.lock)", name), name
    assert _system_temp_leftovers(tmp_path) == []
    work = [n for n in left if n.endswith(".tmp")]
    assert len(work) == 1
    inside = os.listdir(out_dir / work[0])
    # The temporary SavedModel and the .tflite being measured are in the work folder too.
    assert any(n.startswith("tflite_export_") for n in inside), inside
    assert ("m.tflite" in inside) == (point in ("evaluate", "benchmark", "write", "rename1"))
    assert ("commit.json" in inside) == (point in DURING_COMMIT)
    after = _unit(out_dir)
    assert set(after) == set(UNIT)
    if point in BEFORE_COMMIT + ("rename1",):
        assert after == before  # The earlier output is intact.
        _assert_consistent(out)
    else:  # Each file is complete: the earlier one or the killed export's.
        assert json.loads(after["m.report.json"])["quantize"] in ("float32", "int8")
        tflite_export.litert.make_interpreter(after["m.tflite"]).allocate_tensors()
    if point in ("rename2", "rename3"):  # Half renamed: load_report says so.
        with pytest.raises(ValueError, match="does not describe"):
            tflite_export.load_report(out)

    if point in ("convert", "benchmark", "rename2", "renamed"):
        # The next export of the same path: it finishes or removes what the killed one left
        # (a half-renamed unit counts as an export's once its renames are finished).
        _export(tiny, out, quantize="float16")
        assert _assert_consistent(out).quantize == "float16"
        assert files_in(out_dir) == UNIT
        return
    # The next export of another path in the folder does it too.
    _export(tiny, out_dir / "other.tflite")
    others = ["other.report.json", "other.report.md", "other.tflite"]
    assert files_in(out_dir) == sorted(UNIT + others)
    report = _assert_consistent(out)
    if point in BEFORE_COMMIT:
        assert _unit(out_dir) == before
    else:  # Once the journal is written the export is committed: the next one finishes it.
        assert report.quantize == "int8"
    # And the next export of the same path replaces it (it is an export's).
    _export(tiny, out, quantize="float16")
    assert _assert_consistent(out).quantize == "float16"
    assert files_in(out_dir) == sorted(UNIT + others)

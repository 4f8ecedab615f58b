"""Android benchmark: output parser, device selection, ABI checks, adb paths.

The happy path runs against a fake `adb` script (no device here); the
no-device path runs against the real adb server of this machine.
"""

import os
import shutil
import stat
import subprocess
import sys
import textwrap

import pytest

from tflite_export import android
from tflite_export.android import AndroidError, parse_benchmark_output

# Output of TFLite's benchmark_model (BenchmarkLoggingListener / Stat::OutputToStream).
SAMPLE_OUTPUT = textwrap.dedent("""\
    INFO: STARTING!
    INFO: Log parameter values verbosely: [0]
    INFO: Num threads: [4]
    INFO: Graph: [/data/local/tmp/model.tflite]
    INFO: Use xnnpack: [1]
    INFO: Loaded model /data/local/tmp/model.tflite
    INFO: Created TensorFlow Lite XNNPACK delegate for CPU.
    INFO: The input model file size (MB): 3.94131
    INFO: Initialized session in 119.515ms.
    INFO: Running benchmark for at least 5 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
    INFO: count=9 first=87112 curr=51629 min=51629 max=87112 avg=58147.4 std=11478

    INFO: Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
    INFO: count=50 first=52162 curr=49785 min=49088 max=68628 avg=51743.2 std=3716

    INFO: Inference timings in us: Init: 119515, First inference: 87112, Warmup (avg): 58147.4, Inference (avg): 51743.2
    INFO: Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
    INFO: Memory footprint delta from the start of the tool (MB): init=55.4961 overall=57.25
    """)

# Newer builds: percentiles on the count= lines and a periodic peak-memory line.
NEWER_OUTPUT = textwrap.dedent("""\
    INFO: Initialized session in 3.5ms.
    INFO: count=200 first=2100 curr=1500 min=1400 max=2100 avg=1550.5 std=80 p5=1420 median=1500 p95=1800
    INFO: count=1000 first=1500 curr=1490 min=1380 max=4000 avg=1510.25 std=60 p5=1400 median=1495 p95=1700
    INFO: Inference timings in us: Init: 3500, First inference: 2100, Warmup (avg): 1550.5, Inference (avg): 1510.25
    INFO: Peak memory footprint (MB): init=4.2 overall=9.75
    INFO: Overall peak memory footprint (MB) via periodic monitoring: 10.5
    """)

# Older builds log without the INFO: prefix.
OLD_OUTPUT = textwrap.dedent("""\
    Initialized session in 0.896ms
    count=215 first=12231 curr=2106 min=2065 max=12231 avg=2331.42 std=746

    count=459 first=2143 curr=2101 min=2056 max=2656 avg=2177.1 std=124

    Inference timings in us: Init: 896, First inference: 12231, Warmup (avg): 2331.42, Inference (avg): 2177.1
    """)


def test_parse_standard_output():
    stats = parse_benchmark_output(SAMPLE_OUTPUT, num_threads=4, backend="android:emu")
    assert stats.init_ms == pytest.approx(119.515)
    assert stats.first_run_ms == pytest.approx(87.112)
    assert stats.warmup_mean_ms == pytest.approx(58.1474)
    assert stats.mean_ms == pytest.approx(51.7432)
    assert (stats.runs, stats.warmup) == (50, 9)
    assert stats.min_ms == pytest.approx(49.088) and stats.max_ms == pytest.approx(68.628)
    assert stats.std_ms == pytest.approx(3.716)
    assert stats.median_ms is None and stats.p90_ms is None and stats.p99_ms is None
    assert stats.memory_init_mb == pytest.approx(55.4961)
    assert stats.memory_overall_mb == pytest.approx(57.25)
    assert stats.peak_memory_mb is None
    assert stats.backend == "android:emu" and stats.num_threads == 4


def test_parse_newer_output():
    stats = parse_benchmark_output(NEWER_OUTPUT, num_threads=1, use_xnnpack=False)
    assert stats.runs == 1000 and stats.median_ms == pytest.approx(1.495)
    assert stats.mean_ms == pytest.approx(1.51025)
    assert stats.memory_overall_mb == pytest.approx(9.75)
    assert stats.peak_memory_mb == pytest.approx(10.5)
    assert not stats.use_xnnpack


def test_parse_old_output_without_prefix():
    stats = parse_benchmark_output(OLD_OUTPUT, num_threads=1)
    assert stats.runs == 459 and stats.mean_ms == pytest.approx(2.1771)
    assert stats.memory_init_mb is None


def test_parse_failed_run():
    text = "ERROR: Could not open '/data/local/tmp/x.tflite'.\nERROR: Benchmarking failed.\n"
    with pytest.raises(ValueError, match=r"(?s)no .Inference timings.*Benchmarking failed"):
        parse_benchmark_output(text, num_threads=1)


def test_parse_devices_and_select():
    text = ("* daemon not running; starting now at tcp:5037\n* daemon started successfully\n"
            "List of devices attached\nemulator-5554\tdevice\nR58M123\tunauthorized\n"
            "old\toffline\n\n")
    devices = android.parse_devices(text)
    assert devices == [("emulator-5554", "device"), ("R58M123", "unauthorized"),
                       ("old", "offline")]
    assert android.select_device(devices) == "emulator-5554"
    with pytest.raises(AndroidError, match="unauthorized.*Allow USB debugging"):
        android.select_device(devices, "R58M123")
    with pytest.raises(AndroidError, match="No Android device is online.*offline"):
        android.select_device(devices, "old")
    with pytest.raises(AndroidError, match="not connected"):
        android.select_device(devices, "zzz")
    with pytest.raises(AndroidError, match="lists none"):
        android.select_device([])
    with pytest.raises(AndroidError, match="Several devices.*serial"):
        android.select_device([("a", "device"), ("b", "device")])


def _elf(path, machine):
    header = b"\x7fELF\x02\x01\x01" + b"\x00" * 9 + (2).to_bytes(2, "little")
    header += machine.to_bytes(2, "little") + b"\x00" * 44
    path.write_bytes(header)
    return str(path)


def test_elf_abi_check(tmp_path):
    arm64 = _elf(tmp_path / "bm_arm64", 183)
    x86_64 = _elf(tmp_path / "bm_x86_64", 62)
    assert android.elf_machine(arm64) == 183
    android.check_binary_abi(arm64, "arm64-v8a")
    android.check_binary_abi(x86_64, "x86_64")
    with pytest.raises(ValueError, match="built for aarch64.*device ABI is x86_64"):
        android.check_binary_abi(arm64, "x86_64")
    text = tmp_path / "script.sh"
    text.write_text("#!/bin/sh\n")
    with pytest.raises(ValueError, match="not an ELF executable"):
        android.elf_machine(str(text))


def _model(tmp_path):
    path = tmp_path / "model.tflite"
    path.write_bytes(b"TFL3")
    return str(path)


def test_missing_files_and_adb(tmp_path):
    model = _model(tmp_path)
    binary = _elf(tmp_path / "bm", 183)
    with pytest.raises(ValueError, match="benchmark_binary=.*does not exist"):
        android.benchmark(model, str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="model_path=.*does not exist"):
        android.benchmark(str(tmp_path / "none.tflite"), binary)
    with pytest.raises(AndroidError, match="adb not found.*apt-get install adb"):
        android.benchmark(model, binary, adb_path=str(tmp_path / "no-adb"))


@pytest.mark.skipif(shutil.which("adb") is None, reason="adb is not installed")
def test_no_device_with_real_adb(tmp_path):
    out = subprocess.run(["adb", "devices"], capture_output=True, text=True, timeout=60).stdout
    if any(state == "device" for _, state in android.parse_devices(out)):
        pytest.skip("a real device is connected")
    with pytest.raises(AndroidError, match="No Android device"):
        android.benchmark(_model(tmp_path), _elf(tmp_path / "bm", 183))


FAKE_ADB = """#!{python}
import sys
args = sys.argv[1:]
log = open({log!r}, "a")
log.write(" ".join(args) + "\\n")
if args[:1] == ["-s"]:
    args = args[2:]
if args == ["devices"]:
    print("List of devices attached\\nemulator-5554\\tdevice\\n")
elif args[:3] == ["shell", "getprop", "ro.product.cpu.abi"]:
    print({abi!r})
elif args[:1] == ["shell"] and args[1].endswith("benchmark_model"):
    print(open({output!r}).read())
elif args[:1] == ["shell"] and {hang}:
    import time; time.sleep(30)
"""


def _fake_adb(tmp_path, abi="arm64-v8a", hang=False):
    output = tmp_path / "output.txt"
    output.write_text(SAMPLE_OUTPUT)
    log = tmp_path / "adb.log"
    script = tmp_path / "adb"
    script.write_text(FAKE_ADB.format(python=sys.executable, log=str(log), abi=abi,
                                      output=str(output), hang=hang))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script), log


def test_benchmark_with_fake_adb(tmp_path):
    adb, log = _fake_adb(tmp_path)
    stats = android.benchmark(_model(tmp_path), _elf(tmp_path / "bm", 183), num_threads=2,
                              use_gpu=True, adb_path=adb, runs=50)
    assert stats.backend == "android:emulator-5554" and stats.mean_ms == pytest.approx(51.7432)
    assert stats.use_gpu and stats.num_threads == 2
    calls = log.read_text().splitlines()
    assert any(c.endswith("push " + os.path.join(str(tmp_path), "model.tflite")
                          + " /data/local/tmp/model.tflite") for c in calls)
    assert any("chmod 755 /data/local/tmp/benchmark_model" in c for c in calls)
    run = [c for c in calls if "--graph=" in c][0]
    for flag in ("--graph=/data/local/tmp/model.tflite", "--num_threads=2",
                 "--use_xnnpack=true", "--use_gpu=true", "--num_runs=50"):
        assert flag in run


def test_benchmark_wrong_abi_with_fake_adb(tmp_path):
    adb, log = _fake_adb(tmp_path, abi="x86_64")
    with pytest.raises(ValueError, match="device ABI is x86_64"):
        android.benchmark(_model(tmp_path), _elf(tmp_path / "bm", 183), adb_path=adb)
    assert "push" not in log.read_text()


def test_adb_timeout_is_bounded(tmp_path):
    adb, _ = _fake_adb(tmp_path, hang=True)
    with pytest.raises(AndroidError, match="did not finish within 1 s"):
        android.Adb(adb, timeout=1).run(["shell", "sleep"])

"""Benchmark a `.tflite` file on an Android device or emulator.

Uses the real `adb` to find an online device, pushes the model and TFLite's
native `benchmark_model` binary to `/data/local/tmp`, runs it and parses its
log into the same `LatencyStats` as the host benchmark.

`benchmark_model` logs (TFLite's `BenchmarkLoggingListener`) lines such as::

    INFO: Initialized session in 119.515ms.
    INFO: count=9 first=87112 curr=51629 min=51629 max=87112 avg=58147.4 std=11478
    INFO: count=50 first=52162 curr=49785 min=49088 max=68610 avg=51743.2 std=3716
    INFO: Inference timings in us: Init: 119515, First inference: 87112, Warmup (avg): 58147.4, Inference (avg): 51743.2
    INFO: Memory footprint delta from the start of the tool (MB): init=55.4961 overall=55.4961

The first `count=` line summarises the warm-up runs and the last one the timed
runs; all times are microseconds. Newer builds add `p5= median= p95=` to the
`count=` lines and may log `Peak memory footprint (MB): init=... overall=...`
or `Overall peak memory footprint (MB) via periodic monitoring: ...`.
"""

import os
import re
import shutil
import subprocess

from absl import logging

from tflite_export.stats import LatencyStats

DEVICE_DIR = "/data/local/tmp"
"""Where the model and `benchmark_model` are pushed on the device."""

# ELF e_machine values of the ABIs Android ships (see the ELF specification).
_ABI_MACHINES = {
    "arm64-v8a": 183,  # EM_AARCH64
    "armeabi-v7a": 40,  # EM_ARM
    "armeabi": 40,
    "x86": 3,  # EM_386
    "x86_64": 62,  # EM_X86_64
    "riscv64": 243,  # EM_RISCV
}
_MACHINE_NAMES = {183: "aarch64 (arm64-v8a)", 40: "arm (armeabi-v7a)", 3: "x86", 62: "x86_64",
                  243: "riscv64"}


class AndroidError(RuntimeError):
    """adb or the device is not in a state that allows benchmarking."""


class Adb:
    """Runs `adb` commands with bounded timeouts.

    Args:
      adb_path: Path of the `adb` executable; found on `PATH` when None.
      timeout: Default timeout in seconds of one adb command.

    Raises:
      AndroidError: If `adb` cannot be found.
    """

    def __init__(self, adb_path=None, timeout=60.0):
        found = shutil.which(adb_path or "adb")
        if found is None:
            where = f"{adb_path!r}" if adb_path else "'adb' on PATH"
            raise AndroidError(
                f"adb not found ({where}). Install it (Debian/Ubuntu: `apt-get install adb`; "
                "or the Android SDK platform-tools) or pass adb_path=/path/to/adb."
            )
        self.path = found
        self.timeout = timeout

    def run(self, args, serial=None, timeout=None, check=True):
        """Runs `adb [-s serial] args...` and returns the completed process.

        Args:
          args: Arguments after `adb` (and `-s serial`).
          serial: Device serial, or None for adb's default device.
          timeout: Seconds before the command is killed; defaults to the
            instance timeout.
          check: Raise `AndroidError` on a non-zero exit code.

        Returns:
          `subprocess.CompletedProcess` with text stdout and stderr.

        Raises:
          AndroidError: On timeout, or a non-zero exit when `check` is set.
        """
        cmd = [self.path] + (["-s", serial] if serial else []) + list(args)
        timeout = self.timeout if timeout is None else timeout
        logging.info("Running %s", " ".join(cmd))
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL, check=False)
        except subprocess.TimeoutExpired as e:
            raise AndroidError(f"`{' '.join(cmd)}` did not finish within {timeout:g} s.") from e
        if check and proc.returncode != 0:
            raise AndroidError(
                f"`{' '.join(cmd)}` failed with exit code {proc.returncode}:\n"
                f"{(proc.stdout + proc.stderr).strip()[-2000:]}"
            )
        return proc

    def devices(self):
        """Lists the devices adb knows as `[(serial, state), ...]`.

        States are adb's: `device` (online), `offline`, `unauthorized`, ...
        """
        out = self.run(["devices"]).stdout
        return parse_devices(out)


def parse_devices(text):
    """Parses `adb devices` output into `[(serial, state), ...]`."""
    devices = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("*") or line.startswith("List of devices"):
            continue
        parts = line.split()
        if len(parts) >= 2:
            devices.append((parts[0], parts[1]))
    return devices


def select_device(devices, serial=None):
    """Picks the online device to use.

    Args:
      devices: `[(serial, state), ...]` from `Adb.devices()`.
      serial: The wanted serial, or None for the only online device.

    Returns:
      The serial of an online device.

    Raises:
      AndroidError: If no device is online, the device is unauthorized or
        offline, or several are online and `serial` is None.
    """
    if serial is not None:
        states = dict(devices)
        if serial not in states:
            known = ", ".join(f"{s} ({st})" for s, st in devices) or "none"
            raise AndroidError(f"serial={serial!r} is not connected; adb lists: {known}.")
        devices = [(serial, states[serial])]
    online = [s for s, state in devices if state == "device"]
    if online:
        if len(online) > 1:
            raise AndroidError(
                f"Several devices are online ({', '.join(online)}); pick one with serial=... "
                "(CLI: --serial)."
            )
        return online[0]
    unauthorized = [s for s, state in devices if state == "unauthorized"]
    if unauthorized:
        raise AndroidError(
            f"Device {', '.join(unauthorized)} is unauthorized: unlock it and accept the "
            "'Allow USB debugging?' prompt (then run `adb devices` again)."
        )
    if devices:
        listed = ", ".join(f"{s} ({st})" for s, st in devices)
        raise AndroidError(f"No Android device is online (adb lists: {listed}). "
                           "Reconnect the device or restart the emulator.")
    raise AndroidError(
        "No Android device or emulator is online (`adb devices` lists none). Connect a "
        "device with USB debugging enabled, or start an emulator "
        "(`emulator -avd <name> -no-window &`), then check with `adb devices`."
    )


def elf_machine(path):
    """Returns the ELF `e_machine` of an executable.

    Raises:
      ValueError: If the file is not an ELF executable.
    """
    with open(path, "rb") as f:
        header = f.read(20)
    if len(header) < 20 or header[:4] != b"\x7fELF":
        raise ValueError(
            f"benchmark_binary={path!r} is not an ELF executable; download TFLite's "
            "`benchmark_model` for Android (e.g. android_aarch64_benchmark_model)."
        )
    byteorder = "little" if header[5] == 1 else "big"
    return int.from_bytes(header[18:20], byteorder)


def check_binary_abi(path, abi):
    """Checks that the `benchmark_model` binary runs on a device ABI.

    Args:
      path: Local path of the binary.
      abi: The device's `ro.product.cpu.abi` (e.g. `arm64-v8a`).

    Raises:
      ValueError: If the binary's machine does not match the ABI.
    """
    machine = elf_machine(path)
    expected = _ABI_MACHINES.get(abi)
    if expected is None:
        logging.warning("Unknown device ABI %r; not checking %s.", abi, path)
        return
    if machine != expected:
        got = _MACHINE_NAMES.get(machine, f"e_machine={machine}")
        raise ValueError(
            f"benchmark_binary={path!r} is built for {got} but the device ABI is {abi}. "
            f"Use the benchmark_model build for {abi}."
        )


_NUMBER = r"([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"
_TIMINGS_RE = re.compile(
    r"Inference timings in us:\s*Init:\s*" + _NUMBER + r",\s*First inference:\s*" + _NUMBER
    + r",\s*Warmup \(avg\):\s*" + _NUMBER + r",\s*Inference \(avg\):\s*" + _NUMBER
)
_COUNT_RE = re.compile(r"^(?:[A-Z]+:\s*)?count=(\d+)((?:\s+\w+=" + _NUMBER + r")+)\s*$")
_MEMORY_RE = re.compile(
    r"(Memory footprint delta from the start of the tool|Peak memory footprint) \(MB\):\s*"
    r"init=" + _NUMBER + r"\s+overall=" + _NUMBER
)
_PEAK_RE = re.compile(r"Overall peak memory footprint \(MB\)[^:]*:\s*" + _NUMBER)


def parse_benchmark_output(text, num_threads, use_xnnpack=True, use_gpu=False,
                           backend="android"):
    """Parses `benchmark_model` output into `LatencyStats` (milliseconds).

    Args:
      text: stdout/stderr of `benchmark_model`.
      num_threads: Threads it ran with (the log does not repeat it reliably).
      use_xnnpack: Whether XNNPACK was requested.
      use_gpu: Whether the GPU delegate was requested.
      backend: Value of `LatencyStats.backend`.

    Returns:
      `LatencyStats`; `p90_ms`/`p99_ms` are None (the tool does not report
      them) and `median_ms` is set only by builds that log `median=`.

    Raises:
      ValueError: If the output lacks the final timings line (the run failed).
    """
    timings = _TIMINGS_RE.search(text)
    if timings is None:
        tail = "\n".join(text.strip().splitlines()[-15:])
        raise ValueError(
            "benchmark_model output has no 'Inference timings in us:' line, so the run "
            f"failed. Last lines:\n{tail}"
        )
    init_us, first_us, warmup_avg_us, inference_avg_us = (float(g) for g in timings.groups())

    count_lines = []
    for line in text.splitlines():
        match = _COUNT_RE.match(line.strip())
        if match:
            fields = dict(re.findall(r"(\w+)=" + _NUMBER, match.group(2)))
            fields = {k: float(v) for k, v in fields.items()}
            count_lines.append((int(match.group(1)), fields))
    # The first count= line is the warm-up, the last one the timed runs.
    warmup_count = count_lines[0][0] if len(count_lines) >= 2 else 0
    runs, fields = count_lines[-1] if count_lines else (0, {})

    memory_init = memory_overall = peak = None
    for match in _MEMORY_RE.finditer(text):
        memory_init, memory_overall = float(match.group(2)), float(match.group(3))
        if match.group(1).startswith("Peak"):
            peak = memory_overall
    peak_match = _PEAK_RE.search(text)
    if peak_match:
        peak = float(peak_match.group(1))

    def ms(key, default=None):
        value = fields.get(key)
        return default if value is None else value / 1000.0

    return LatencyStats(
        num_threads=int(num_threads),
        runs=runs,
        warmup=warmup_count,
        init_ms=init_us / 1000.0,
        first_run_ms=first_us / 1000.0,
        min_ms=ms("min", inference_avg_us / 1000.0),
        median_ms=ms("median"),
        mean_ms=ms("avg", inference_avg_us / 1000.0),
        p90_ms=None,
        p99_ms=None,
        max_ms=ms("max", inference_avg_us / 1000.0),
        std_ms=ms("std", 0.0),
        warmup_mean_ms=warmup_avg_us / 1000.0,
        memory_init_mb=memory_init,
        memory_overall_mb=memory_overall,
        peak_memory_mb=peak,
        backend=backend,
        use_xnnpack=bool(use_xnnpack),
        use_gpu=bool(use_gpu),
    )


def _flag(value):
    return "true" if value else "false"


def benchmark(model_path, benchmark_binary, serial=None, num_threads=4, use_xnnpack=True,
              use_gpu=False, runs=50, warmup=5, adb_path=None, timeout=600.0):
    """Benchmarks a `.tflite` file on an Android device with `benchmark_model`.

    Args:
      model_path: Local `.tflite` file.
      benchmark_binary: Local path of TFLite's native `benchmark_model` built
        for the device ABI (e.g. `android_aarch64_benchmark_model`).
      serial: adb serial of the device; None uses the only online device.
      num_threads: `--num_threads` of the run.
      use_xnnpack: `--use_xnnpack`.
      use_gpu: `--use_gpu`.
      runs: `--num_runs` (timed runs).
      warmup: `--warmup_runs`.
      adb_path: Path of `adb`; found on PATH when None.
      timeout: Seconds allowed for the benchmark run itself.

    Returns:
      `LatencyStats` with `backend="android:<serial>"` and memory fields.

    Raises:
      ValueError: If `model_path` or `benchmark_binary` does not exist, or the
        binary's ABI does not match the device, or the run's output cannot be
        parsed.
      AndroidError: If adb is missing, no device is online, the device is
        unauthorized, or an adb command fails or times out.
    """
    model_path = os.fspath(model_path)
    if not os.path.isfile(model_path):
        raise ValueError(f"model_path={model_path!r} does not exist.")
    if benchmark_binary is None or not os.path.isfile(os.fspath(benchmark_binary)):
        raise ValueError(
            f"benchmark_binary={benchmark_binary!r} does not exist. Download TFLite's "
            "`benchmark_model` for the device ABI (see the README, 'Android') and pass its path."
        )
    benchmark_binary = os.fspath(benchmark_binary)
    elf_machine(benchmark_binary)  # Fails early on a non-ELF file.

    adb = Adb(adb_path)
    serial = select_device(adb.devices(), serial)
    abi = adb.run(["shell", "getprop", "ro.product.cpu.abi"], serial=serial).stdout.strip()
    check_binary_abi(benchmark_binary, abi)

    remote_model = f"{DEVICE_DIR}/{os.path.basename(model_path)}"
    remote_binary = f"{DEVICE_DIR}/benchmark_model"
    logging.info("Pushing %s and %s to %s on %s (%s)", model_path, benchmark_binary,
                 DEVICE_DIR, serial, abi)
    adb.run(["push", model_path, remote_model], serial=serial, timeout=300)
    adb.run(["push", benchmark_binary, remote_binary], serial=serial, timeout=300)
    adb.run(["shell", "chmod", "755", remote_binary], serial=serial)
    args = [
        "shell", remote_binary,
        f"--graph={remote_model}",
        f"--num_threads={int(num_threads)}",
        f"--use_xnnpack={_flag(use_xnnpack)}",
        f"--use_gpu={_flag(use_gpu)}",
        f"--num_runs={int(runs)}",
        f"--warmup_runs={int(warmup)}",
    ]
    proc = adb.run(args, serial=serial, timeout=timeout, check=False)
    output = proc.stdout + "\n" + proc.stderr
    stats = parse_benchmark_output(output, num_threads, use_xnnpack=use_xnnpack,
                                   use_gpu=use_gpu, backend=f"android:{serial}")
    logging.info("Android benchmark: %s", stats.summary())
    return stats

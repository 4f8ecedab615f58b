#!/usr/bin/env bash
# Installs the Debian packages tfprune's examples and tests use:
#   dataset-fashion-mnist  the real data set (idx files under /usr/share/datasets/fashion-mnist)
#   adb                    Android Debug Bridge, for on-device benchmarks (tests use it to check the no-device path)
# Uses sudo when not root. Skips apt entirely when both are already present.
set -euo pipefail
need=()
[ -e /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz ] || need+=(dataset-fashion-mnist)
command -v adb >/dev/null 2>&1 || need+=(adb)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq "${need[@]}"

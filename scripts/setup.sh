#!/usr/bin/env bash
# Installs what dapt needs on Debian 12 (Open MPI, ZeroMQ, OpenBLAS) and
# builds `dapt` in release mode. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(libopenmpi-dev openmpi-bin libzmq3-dev libopenblas-dev pkg-config)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "setup: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

echo "setup: building dapt (release)"
swift build -c release --product dapt
echo "setup: done: $(swift build -c release --show-bin-path)/dapt"

#!/usr/bin/env bash
# A Vulkan driver for the GPU compute layer's native tests: the machine's own GPU driver when it has
# one, else Debian's Mesa drivers (lavapipe: a CPU Vulkan device, correct and slow).
set -euo pipefail
if compgen -G "/usr/share/vulkan/icd.d/*.json" >/dev/null || compgen -G "/etc/vulkan/icd.d/*.json" >/dev/null; then
  exit 0
fi
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q mesa-vulkan-drivers

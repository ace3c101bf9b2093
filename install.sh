#!/usr/bin/env bash
# Set up rkd-edge on a fresh machine: Debian packages (when root with apt), then the Python package.
#   ./install.sh          the toolkit
#   ./install.sh --dev    the toolkit, the extras the tests need, and the test data
set -euo pipefail
cd "$(dirname "$0")"
extras=""
if [[ "${1:-}" == "--dev" ]]; then extras="[dev]"; fi
if command -v apt-get >/dev/null 2>&1 && [[ "$(id -u)" == "0" ]]; then
  need=()
  dpkg -s dataset-fashion-mnist >/dev/null 2>&1 || need+=(dataset-fashion-mnist)
  # the remote-bench tests start a real sshd on loopback
  if [[ -n "$extras" ]]; then dpkg -s openssh-server >/dev/null 2>&1 || need+=(openssh-server); fi
  if (( ${#need[@]} )); then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
fi
python -m pip install -q -e ".${extras}"

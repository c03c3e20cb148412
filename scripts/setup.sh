#!/usr/bin/env bash
# Installs what a fresh Debian 12 machine lacks to build, test and demo cnikit. Idempotent and
# quick when everything is present: Debian packages (scripts/apt-packages.txt), Python packages
# (scripts/pip-requirements.txt), rustfmt/clippy for stable, and the eBPF toolchain (rust-src
# for nightly, bpf-linker) through `cargo xtask ebpf-toolchain`.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
require_root

packages=$(sed -e 's/#.*//' scripts/apt-packages.txt | tr -s ' \t' '\n' | sed '/^$/d')
missing=()
for p in $packages; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup: Debian packages present"
fi

if grep -qv '^\s*\(#\|$\)' scripts/pip-requirements.txt; then
  python3 -m pip install --quiet --disable-pip-version-check -r scripts/pip-requirements.txt
  echo "setup: Python packages present"
fi

command -v cargo >/dev/null || { echo "setup: cargo not found; install Rust with rustup" >&2; exit 1; }
for c in rustfmt clippy; do
  rustup component list --installed --toolchain stable | grep -q "^$c" \
    || rustup component add "$c" --toolchain stable
done

cargo xtask ebpf-toolchain
echo "setup: done"

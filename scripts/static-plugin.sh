#!/usr/bin/env bash
# Builds the `cnikit` CNI plugin statically linked, the way nodes should run it, and copies it to
# OUT (default: <target dir>/cni/cnikit). The runtime execs the plugin for every ADD and DEL: a
# static binary skips the dynamic loader's work at each start (~0.3 ms; libgcc_s's constructor
# alone probes the CPU, a trap in a VM) and runs on any host's C library.
#   scripts/static-plugin.sh [--release] [OUT]   (--release for nodes; the dev profile for tests)
# Static linking is set for the final link only (`cargo rustc -- -C target-feature=+crt-static`):
# set through RUSTFLAGS it would also apply to the workspace's proc macros, which cannot be
# static. Needs glibc's static library (libc6-dev).
set -euo pipefail
cd "$(dirname "$0")/.."
profile=dev dir=debug
if [ "${1:-}" = "--release" ]; then
  profile=release dir=release
  shift
fi
target=${CARGO_TARGET_DIR:-target}
out=${1:-$target/cni/cnikit}
cargo rustc --locked --profile "$profile" -p cnikit-examples --bin cnikit \
  -- -C target-feature=+crt-static
built=$target/$dir/cnikit
if LC_ALL=C readelf -lW "$built" | grep -q "program interpreter"; then
  echo "$0: $built is dynamically linked" >&2
  exit 1
fi
mkdir -p "$(dirname "$out")"
cp "$built" "$out"
echo "static plugin: $out"

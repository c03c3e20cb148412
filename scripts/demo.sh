#!/usr/bin/env bash
# The end-to-end demo on a fresh machine: installs what is missing, builds, runs `cnikit-demo`
# as root. It creates and removes its own network namespaces; the root namespace is untouched.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
require_root
scripts/setup.sh
# The demo runs the `cnikit` plugin and `cnikit-agent` binaries built beside it.
cargo build --release --locked -p cnikit-examples --bins
# The plugin statically linked, as nodes run it (replaces the dynamic build beside the demo).
scripts/static-plugin.sh --release >/dev/null
exec "${CARGO_TARGET_DIR:-target}/release/cnikit-demo" "$@"

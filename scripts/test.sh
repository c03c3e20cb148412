#!/usr/bin/env bash
# The whole cnikit test suite, as CI runs it: setup, formatting, the eBPF object's freshness,
# clippy, docs, every test (privileged ones included: run as root), the CNI tests again with the
# statically linked plugin, the tests that need other kernels (qemu VMs booting Debian 6.1 and
# 6.12), bench smoke runs, packaging.
# Prints each stage's duration. Run as root on Debian 12: `sudo ./scripts/test.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
require_root

export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
# Privileged tests record that they really ran; the log is printed after the test stage.
export CNIKIT_PRIVILEGED_LOG="$PWD/target/privileged-tests.log"
mkdir -p target && : > "$CNIKIT_PRIVILEGED_LOG"

stage setup      scripts/setup.sh
stage fmt        bash -c 'cargo fmt --all --check && rustfmt --edition 2024 --check ebpf-dataplane/ebpf/src/*.rs'
stage ebpf       cargo xtask build-ebpf --check
stage clippy     cargo clippy --workspace --all-targets --locked -- -D warnings
stage doc        env RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked --all-features
stage test       cargo test --workspace --locked
echo "::: privileged tests that ran as root:"
sort "$CNIKIT_PRIVILEGED_LOG" | sed 's/^/    /'
if [ "${CI:-}" = "true" ] && [ ! -s "$CNIKIT_PRIVILEGED_LOG" ]; then
  echo "::: no privileged test ran under CI=true" >&2; exit 1
fi
# The plugin as nodes run it (statically linked, scripts/static-plugin.sh) through the CNI
# conformance test: every command in every version, against the agent.
static_plugin=$(realpath -m "${CARGO_TARGET_DIR:-target}/cni/cnikit")
stage static     bash -c "scripts/static-plugin.sh '$static_plugin' &&
  CNIKIT_PLUGIN='$static_plugin' cargo test --locked -p cnikit-examples --test cni_exec"
stage vmtest     cargo xtask vmtest all
stage benches    cargo test --workspace --benches --locked
# Package every publishable crate together (unpublished ones: test-support, examples, benches,
# xtask). Verification builds each package from its .crate on stable, so the shipped eBPF object
# is proven to build without nightly or bpf-linker.
packages=$(cargo metadata --format-version 1 --no-deps --locked | python3 -c '
import json, sys
for p in json.load(sys.stdin)["packages"]:
    print(p["name"], "unpublished" if p.get("publish") == [] else "published")')
unpublished=$(awk '$2 == "unpublished" { printf "--exclude %s ", $1 }' <<<"$packages")
published=$(awk '$2 == "published" { printf "-p %s ", $1 }' <<<"$packages")
# Cargo treats registry packages as immutable: a .crate, an unpacked copy or a compiled artifact of
# one of our packages left by an earlier run (same name and version) would be reused as is, and a
# changed crate verified against its stale self. Start packaging from none of them.
rm -rf "${CARGO_HOME:-$HOME/.cargo}"/registry/src/-*/cnikit-* "${CARGO_TARGET_DIR:-target}/package"
# shellcheck disable=SC2086
cargo clean --quiet $published
# shellcheck disable=SC2086
stage package    cargo package --workspace --locked $unpublished
stage_summary

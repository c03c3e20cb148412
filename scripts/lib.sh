# Shared helpers for the scripts in this folder (sourced, not executed).

# Prints a line and exits when not root.
require_root() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "$0: run as root (sudo $0): tests and the demo create network namespaces and load eBPF" >&2
    exit 2
  fi
}

# Runs "$@" as a named stage, printing its duration; records it for stage_summary.
STAGE_LINES=()
stage() {
  local name=$1; shift
  local start end secs
  start=$(date +%s.%N)
  echo "::: stage ${name}: $*"
  if "$@"; then
    end=$(date +%s.%N)
    secs=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
    echo "::: stage ${name} passed in ${secs}s"
    STAGE_LINES+=("$(printf '%-12s %8ss  ok' "$name" "$secs")")
  else
    local rc=$?
    end=$(date +%s.%N)
    secs=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
    echo "::: stage ${name} FAILED (exit ${rc}) after ${secs}s"
    STAGE_LINES+=("$(printf '%-12s %8ss  FAILED' "$name" "$secs")")
    stage_summary
    exit "$rc"
  fi
}

stage_summary() {
  echo "::: stage timings"
  printf '%s\n' "${STAGE_LINES[@]}"
}

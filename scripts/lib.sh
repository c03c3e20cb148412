# Shared helpers for the scripts in this folder (sourced, not executed).

# Prints a line and exits when not root.
require_root() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "$0: run as root (sudo $0): tests and the demo create network namespaces and load eBPF" >&2
    exit 2
  fi
}

# Runs "$@" as a named stage, printing its duration; records it for stage_summary.
# Each stage is bounded by STAGE_TIMEOUT (default 45m) so a hung test fails CI with a clear
# message instead of eating the whole 90-minute budget.
STAGE_LINES=()
stage() {
  local name=$1; shift
  local start end secs
  start=$(date +%s.%N)
  echo "::: stage ${name}: $*"
  if timeout --kill-after=30s "${STAGE_TIMEOUT:-45m}" "$@"; then
    end=$(date +%s.%N)
    secs=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
    echo "::: stage ${name} passed in ${secs}s"
    STAGE_LINES+=("$(printf '%-12s %8ss  ok' "$name" "$secs")")
  else
    local rc=$?
    end=$(date +%s.%N)
    secs=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
    [ "$rc" -eq 124 ] && echo "::: stage ${name} timed out after ${STAGE_TIMEOUT:-45m}"
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

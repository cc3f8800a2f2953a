#!/usr/bin/env bash
# Overhead before/after, measured fairly: warm runs of the same suite alternating between
# an earlier commit and this working tree, each with its own export cache, so machine
# load hits both sides alike. Prints per run: wall, the harness overhead ratio, pytest's
# last line, and a digest of every case's verdict (identical digests: identical verdicts).
#
#   tools/interleave_overhead.sh 870d331            # 3 pairs after one cold pair
#   PAIRS=5 PYTHON=.tox/parity/bin/python tools/interleave_overhead.sh 870d331 --model pose-rtmo
#
# Extra arguments go to both pytest runs. Needs git and a Python with the harness's
# dependencies (PYTHON, default python3). Work files under ${WORK:-/tmp/interleave-overhead}.
set -euo pipefail

if [ $# -lt 1 ]; then
  echo "usage: $0 REV [pytest args...]  (REV: the commit to compare this working tree with)" >&2
  exit 2
fi
rev=$1
shift
here=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
pairs=${PAIRS:-3}
work=${WORK:-/tmp/interleave-overhead}
before=$work/before

git -C "$here" rev-parse --verify --quiet "$rev^{commit}" >/dev/null || {
  echo "$0: '$rev' is not a commit of $here" >&2
  exit 2
}
mkdir -p "$work"
if [ ! -d "$before" ] || [ "$(git -C "$before" rev-parse HEAD 2>/dev/null)" != "$(git -C "$here" rev-parse "$rev^{commit}")" ]; then
  git -C "$here" worktree remove --force "$before" 2>/dev/null || rm -rf "$before"
  git -C "$here" worktree add --detach --force "$before" "$rev" >/dev/null
fi

run() {  # tree label
  local tree=$1 label=$2 start end out
  shift 2
  start=$(date +%s.%N)
  out=$(cd "$tree" && PYTHONPATH="$tree" "$python" -m pytest suites --hypothesis-profile ci --history-db off -q \
        -p no:cacheprovider --parity-cache-dir "$work/cache-$label" --reports-dir "$work/reports-$label" "$@" 2>&1) || true
  end=$(date +%s.%N)
  digest=$("$python" - "$work/reports-$label/results.jsonl" <<'EOF'
import hashlib, json, sys
try:
    records = [json.loads(line) for line in open(sys.argv[1])]
except OSError as error:
    print(f"no records ({error.strerror})")
    raise SystemExit(0)
key = sorted((r["check"], r["model"], r["backend"], r["height"], r["width"], r["batch"], tuple(r["dtypes"]),
              r["seed"], r["verdict"]) for r in records)
print(len(records), "cases, verdicts", hashlib.sha256(repr(key).encode()).hexdigest()[:12])
EOF
)
  printf '%-7s wall %6.2f s  %-32s  %s  [%s]\n' "$label" "$(echo "$end - $start" | bc)" \
    "$(echo "$out" | grep -o 'harness overhead ratio [0-9.]*' | tail -1)" "$digest" "$(echo "$out" | tail -1)"
}

echo "cold pair (fills each side's export cache; not a measurement):"
run "$before" before "$@"
run "$here" now "$@"
echo "$pairs warm pairs, $rev (before) and this tree (now):"
for _ in $(seq 1 "$pairs"); do
  run "$before" before "$@"
  run "$here" now "$@"
done

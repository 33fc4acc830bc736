#!/usr/bin/env bash
# Cold build of a project whose base image is only in the local registry: an
# empty store, `FROM 127.0.0.1:5000/kiln-bench/node:20-bookworm-slim`, one RUN.
# Compares unpacking the base's layers while they download (the default) with
# downloading first and extracting on first use (KILN_PULL_UNPACK=0, as before),
# interleaved, RUNS times each; prints wall time, the FROM's pull phase, the
# first RUN step and kiln's own peak RSS (VmHWM, sampled) per run, then the medians.
#
# Needs root, the registry of scripts/setup-test-env on 127.0.0.1:5000, and a
# store with node:20-bookworm-slim (scripts/make-base-images --only node).
#   KILN=target/release/kiln BASE_ROOT=/var/lib/kiln RUNS=3 bench/pull-unpack.sh
set -euo pipefail
kiln=${KILN:-target/release/kiln}
base_root=${BASE_ROOT:-/var/lib/kiln}
runs=${RUNS:-3}
registry=${REGISTRY:-127.0.0.1:5000}
image=$registry/kiln-bench/node:20-bookworm-slim
work=$(mktemp -d /tmp/kiln-pull-unpack.XXXXXX)
trap 'rm -rf "$work"' EXIT

"$kiln" --root "$base_root" push -q node:20-bookworm-slim "$image" >/dev/null
mkdir -p "$work/ctx"
printf 'FROM %s\nRUN node -e "console.log(process.version)" > /version\n' "$image" > "$work/ctx/Dockerfile"

declare -A walls rss
one() { # mode run
  local mode=$1 root=$work/root-$1-$2 unpack=1
  [ "$mode" = before ] && unpack=0
  rm -rf "$root"
  sync
  local start end
  start=$(date +%s.%N)
  KILN_PULL_UNPACK=$unpack "$kiln" --root "$root" build --progress=rawjson "$work/ctx" \
    2> "$work/events" >/dev/null &
  local pid=$!
  # kiln's own peak RSS (VmHWM), not the RUN's node process's.
  while hwm=$(awk '/^VmHWM/ { print $2 }' "/proc/$pid/status" 2>/dev/null) && [ -n "$hwm" ]; do
    echo "$hwm"
    sleep 0.1
  done > "$work/rss"
  wait "$pid"
  end=$(date +%s.%N)
  local wall pull step
  wall=$(echo "$end - $start" | bc)
  pull=$(jq -r 'select(.event=="phase" and (.name|startswith("[internal] load metadata")) and .duration_ms!=null) | .duration_ms' "$work/events" | head -1)
  step=$(jq -r 'select(.event=="step_finished") | .duration_ms' "$work/events" | tail -1)
  local kb; kb=$(tail -1 "$work/rss"); kb=${kb:-0}
  printf '%-6s run %d: wall %.3f s, pull %s ms, RUN step %s ms, peak RSS %d MiB\n' \
    "$mode" "$2" "$wall" "$pull" "$step" $((kb / 1024))
  walls[$mode]+="$wall "
  rss[$mode]+="$((kb / 1024)) "
  # The stores are removed at the end, not here: ext4 skips recently freed
  # inodes when it allocates new ones (recently_deleted), so extracting right
  # after deleting the last run's store was slower for whichever mode extracts
  # sooner (perf: ~40 % of the streamed pull in ext4 inode allocation).
}
for i in $(seq 1 "$runs"); do
  one before "$i"
  one after "$i"
done
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
for m in before after; do
  echo "$m: median wall $(echo "${walls[$m]}" | median) s, median peak RSS $(echo "${rss[$m]}" | median) MiB"
done

#!/usr/bin/env bash
# One build step writing a large layer (50 000 small text files, ~130 MB, plus
# 70 MB of random data) with one or more kiln binaries, interleaved: the cold
# build (base image present and unpacked, no build cache), the step's own
# duration (rawjson), then `kiln save` of the result (where the layer is
# compressed now that builds no longer do), each with kiln's peak RSS
# (/usr/bin/time -v). Medians of RUNS (default 3).
#
#   KILNS="/tmp/kiln-before target/release/kiln" bench/step-layer.sh
#
# Needs root (RUN steps) and busybox-static (scripts/make-base-images --only busybox).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
runs=${RUNS:-3}
kilns=${KILNS:-$repo/target/release/kiln}
work=${WORK:-/tmp/kiln-step-layer-bench}
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
rm -rf "$work"; mkdir -p "$work/ctx" "$work/warm"
cat > "$work/ctx/Dockerfile" <<'DF'
FROM busybox:test
RUN mkdir /d && cd /d && s=$(seq 1 700 | tr '\n' ' ') && i=0 && \
    while [ $i -lt 50000 ]; do echo "$i $s" > f$i; i=$((i+1)); done && \
    dd if=/dev/urandom of=/random bs=1048576 count=70 2>/dev/null
DF
printf 'FROM busybox:test\nRUN true\n' > "$work/warm/Dockerfile"
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# seconds and max RSS (KiB) of one command, from /usr/bin/time -v
timed() {
  local out=$1; shift
  /usr/bin/time -v -o "$out.time" "$@" > "$out.stdout" 2> "$out.stderr"
  awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,t,":"); s=0; for(i=1;i<=n;i++) s=s*60+t[i]; w=s}
              /Maximum resident set size/ {r=$2} END {printf "%.2f %d\n", w, r}' "$out.time"
}
for r in $(seq 1 "$runs"); do
  for k in $kilns; do
    name=$(echo "$k" | tr '/' '_')
    root=$work/store-$name-$r
    KILN=$k "$repo/scripts/make-base-images" --root "$root" --only busybox > /dev/null
    "$k" --root "$root" build -q "$work/warm" > /dev/null   # unpack the base
    sync
    b=$(timed "$work/b-$name-$r" env SOURCE_DATE_EPOCH=1700000000 "$k" --root "$root" build --progress=rawjson -t big:1 "$work/ctx")
    step=$(grep "\"event\":\"step_finished\"" "$work/b-$name-$r.stderr" | grep -o '"duration_ms":[0-9]*' | cut -d: -f2 | sort -n | tail -1)
    s=$(timed "$work/s-$name-$r" "$k" --root "$root" save -o "$work/save-$name-$r.tar" big:1)
    s2=$(timed "$work/s2-$name-$r" "$k" --root "$root" save -o "$work/save2-$name-$r.tar" big:1)
    echo "$k run $r: build $b  step ${step}ms  save $s  save-again $s2  (wall s, max RSS KiB)"
    echo "$b" >> "$work/build-$name"; echo "$step" >> "$work/step-$name"; echo "$s" >> "$work/save-$name"; echo "$s2" >> "$work/save2-$name"
    sha256sum "$work/save-$name-$r.tar" | cut -c1-16 >> "$work/digest-$name"
    rm -rf "$root" "$work"/save*-"$name"-"$r".tar
  done
done
echo
printf '%-40s %10s %10s %14s %8s %14s %14s\n' kiln build_s step_ms build_rss_MiB save_s save_rss_MiB save_again_s
for k in $kilns; do
  name=$(echo "$k" | tr '/' '_')
  printf '%-40s %10s %10s %14s %8s %14s %14s\n' "$k" \
    "$(cut -d' ' -f1 "$work/build-$name" | median)" "$(median < "$work/step-$name")" "$(( $(cut -d' ' -f2 "$work/build-$name" | median) / 1024 ))" \
    "$(cut -d' ' -f1 "$work/save-$name" | median)" "$(( $(cut -d' ' -f2 "$work/save-$name" | median) / 1024 ))" \
    "$(cut -d' ' -f1 "$work/save2-$name" | median)"
  echo "  saved archive sha256 prefixes: $(sort -u "$work/digest-$name" | tr '\n' ' ')"
done

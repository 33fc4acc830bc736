#!/usr/bin/env bash
# Builds the example project (examples/api) with kiln, `docker build` (BuildKit) and
# `buildah bud --layers`, side by side in one run: a cold build, no-op rebuilds and
# rebuilds after a one-line change to a source file under src/, then prints the times,
# the ratios, and the build overhead of the source-change rebuild (wall time minus the
# time of the RUN steps as each tool reports it).
#
# Needs, as root: a release build of kiln (cargo build --release -p kiln; $KILN
# overrides the binary), the base image of the project's Dockerfile in a kiln store
# (scripts/make-base-images; $KILN_BASE_ROOT, else $KILN_ROOT, else /var/lib/kiln),
# dockerd running (dockerd --bridge=none --iptables=false --ip-masq=false) with the
# docker 20.10 client that has BuildKit built in ($DOCKER, default /usr/bin/docker),
# and buildah. Every build uses the host network (npm install reaches the registry).
#
#   bench/build.sh                        # RUNS=3 TOOLS="kiln docker buildah"
#
# State before each tool's cold build: the base image present and unpacked, no build
# cache — kiln: a fresh --root with the base image loaded and unpacked by a one-step
# build of another context; docker: `docker builder prune -af` and the result image
# removed, base image loaded; buildah: fresh storage (--root/--runroot) with the base
# image pulled from the same docker archive.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
runs=${RUNS:-3}
tools=${TOOLS:-"kiln docker buildah"}
kiln=${KILN:-${CARGO_TARGET_DIR:-$repo/target}/release/kiln}
docker=${DOCKER:-/usr/bin/docker}
buildah=${BUILDAH:-buildah}
base_root=${KILN_BASE_ROOT:-${KILN_ROOT:-/var/lib/kiln}}
project=${PROJECT:-$repo/examples/api}
tag=kiln-bench-api:latest

die() { echo "bench/build.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (docker and buildah need it)"
[ -x "$kiln" ] || die "no kiln binary at $kiln (cargo build --release -p kiln)"
[ -f "$project/Dockerfile" ] || die "no Dockerfile in $project"
command -v jq > /dev/null || die "needs jq"
for t in $tools; do
  case $t in
    kiln) ;;
    docker) "$docker" version > /dev/null 2>&1 ||
      die "docker daemon not reachable with $docker (start: dockerd --bridge=none --iptables=false --ip-masq=false &)" ;;
    buildah) command -v "$buildah" > /dev/null || die "no buildah (apt-get install buildah)" ;;
    *) die "unknown tool $t (kiln, docker, buildah)" ;;
  esac
done

base=$(awk 'toupper($1) == "FROM" { print $2; exit }' "$project/Dockerfile")
[ -n "$base" ] || die "no FROM in $project/Dockerfile"
work=$(mktemp -d /var/tmp/kiln-bench-build.XXXXXX)
logs=$work/logs
mkdir -p "$logs"
cleanup() {
  if [ "${KEEP:-0}" = 1 ] || [ -e "$work/keep" ]; then echo "kept $work" >&2; return; fi
  # buildah leaves its overlay mounts under its root; unmount before removing.
  if [ -d "$work/buildah-root" ]; then
    "$buildah" --root "$work/buildah-root" --runroot "$work/buildah-run" rm -a > /dev/null 2>&1 || true
    "$buildah" --root "$work/buildah-root" --runroot "$work/buildah-run" rmi -af > /dev/null 2>&1 || true
    grep -o " $work/[^ ]*" /proc/self/mounts | sort -r | xargs -r -n1 umount -l 2> /dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# The same base image for all three tools, from kiln's store.
"$kiln" --root "$base_root" save -o "$work/base.tar" "$base" ||
  die "base image $base is not in the kiln store $base_root (scripts/make-base-images, or set KILN_BASE_ROOT)"

# Proxy settings, if the host has any, go to every tool the same way.
build_args=()
for v in HTTP_PROXY HTTPS_PROXY NO_PROXY http_proxy https_proxy no_proxy; do
  if [ -n "${!v:-}" ]; then build_args+=(--build-arg "$v=${!v}"); fi
done

now() { date +%s.%N; }
sub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a - b }'; }

# One project copy per tool, so one tool's edits never touch another's context.
fresh_context() {
  rm -rf "$work/ctx-$1"
  cp -a "$project" "$work/ctx-$1"
  rm -rf "$work/ctx-$1/node_modules" "$work/ctx-$1/dist"
}

# The one-line change: the /health response text of src/index.ts, different each time.
edit_source() {
  local file=$work/ctx-$1/src/index.ts
  grep -q 'res.end("ok' "$file" || die "edit target line (res.end(\"ok…) not found in $file"
  sed -i "s|res.end(\"ok[^\"]*\");|res.end(\"ok (edit $2)\\\\n\");|" "$file"
}

buildah_() { "$buildah" --root "$work/buildah-root" --runroot "$work/buildah-run" --storage-driver overlay "$@"; }

prepare_cold() {
  case $1 in
    kiln)
      rm -rf "$work/kiln-root"
      "$kiln" --root "$work/kiln-root" load -q -i "$work/base.tar"
      mkdir -p "$work/prime"
      printf 'FROM %s\nRUN true\n' "$base" > "$work/prime/Dockerfile"
      "$kiln" --root "$work/kiln-root" build --network host --progress plain "$work/prime" \
        > "$logs/kiln-prime.log" 2>&1 || { tail -20 "$logs/kiln-prime.log"; die "kiln could not build FROM $base"; } ;;
    docker)
      "$docker" rmi -f "$tag" > /dev/null 2>&1 || true
      "$docker" builder prune -af > /dev/null
      "$docker" load -q -i "$work/base.tar" > /dev/null ;;
    buildah)
      if [ -d "$work/buildah-root" ]; then buildah_ rm -a > /dev/null 2>&1 || true; buildah_ rmi -af > /dev/null 2>&1 || true; fi
      rm -rf "$work/buildah-root" "$work/buildah-run"
      buildah_ pull -q "docker-archive:$work/base.tar" > /dev/null ;;
  esac
  sync
}

# build TOOL LOG: runs one build of the tool's context; prints its wall time in seconds.
build() {
  local t0 t1 ctx=$work/ctx-$1 rc=0
  t0=$(now)
  case $1 in
    kiln) "$kiln" --root "$work/kiln-root" build --network host --progress rawjson \
      "${build_args[@]}" -t "$tag" "$ctx" > "$2" 2>&1 || rc=$? ;;
    docker) DOCKER_BUILDKIT=1 "$docker" build --network=host --progress=plain \
      "${build_args[@]}" -t "$tag" "$ctx" > "$2" 2>&1 || rc=$? ;;
    buildah) buildah_ bud --layers --pull=never --network=host \
      "${build_args[@]}" -t "$tag" "$ctx" > "$2" 2>&1 || rc=$? ;;
  esac
  t1=$(now)
  if [ "$rc" != 0 ]; then
    echo "--- $1 build failed (exit $rc), last lines of $2:" >&2
    tail -25 "$2" >&2
    touch "$work/keep"
    exit 1
  fi
  sub "$t1" "$t0"
}

# run_steps TOOL LOG: "<RUN steps executed> <their total seconds>" as the tool reports them
# (kiln: rawjson step_started/step_finished; BuildKit: "#N [..] RUN" and "#N DONE 1.2s";
# buildah: RUN steps not answered by "Using cache", no per-step time).
run_steps() {
  case $1 in
    kiln) jq -rs '[.[] | select(.event == "step_started" and (.name | test("\\] RUN ")))
                   | .step] as $runs
                  | [.[] | select(.event == "step_finished" and (.step as $s | $runs | index($s)))]
                  | "\(length) \((map(.duration_ms) | add // 0) / 1000)"' "$2" ;;
    docker) awk '
      /^#[0-9]+ \[[^]]*\] RUN / { run[$1] = 1 }
      /^#[0-9]+ DONE [0-9.]+s$/ && ($1 in run) && !($1 in done) { done[$1] = 1; n++; s += substr($3, 1, length($3) - 1) }
      END { printf "%d %.3f\n", n, s }' "$2" ;;
    buildah) awk '
      match($0, /STEP [0-9]+\/[0-9]+: [A-Z]+/) {
        if (pending) n++
        split(substr($0, RSTART, RLENGTH), w, " "); pending = (w[3] == "RUN")
      }
      /Using cache/ { pending = 0 }
      END { if (pending) n++; printf "%d -\n", n }' "$2" ;;
  esac
}

median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

declare -A cold noop edit edit_over edit_runs noop_runs cold_runs
echo "kiln-bench: $project (FROM $base), $runs runs each; logs under $logs"
echo "machine: $(nproc) cores, $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo), kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
for t in $tools; do
  fresh_context "$t"
  prepare_cold "$t"
  cold[$t]=$(build "$t" "$logs/$t-cold.log")
  read -r n s < <(run_steps "$t" "$logs/$t-cold.log")
  cold_runs[$t]=$n
  echo "$t cold: ${cold[$t]}s (RUN steps run: $n, their time: ${s}s)"
  times=() runs_seen=()
  for r in $(seq 1 "$runs"); do
    times+=("$(build "$t" "$logs/$t-noop-$r.log")")
    read -r n s < <(run_steps "$t" "$logs/$t-noop-$r.log")
    runs_seen+=("$n")
  done
  noop[$t]=$(median "${times[@]}")
  noop_runs[$t]=$(printf '%s\n' "${runs_seen[@]}" | sort -u | paste -sd/)
  echo "$t no-op: ${times[*]} s (median ${noop[$t]}s; RUN steps run: ${noop_runs[$t]})"
  times=() overs=() runs_seen=()
  for r in $(seq 1 "$runs"); do
    edit_source "$t" "$r"
    w=$(build "$t" "$logs/$t-edit-$r.log")
    times+=("$w")
    read -r n s < <(run_steps "$t" "$logs/$t-edit-$r.log")
    runs_seen+=("$n")
    if [ "$s" != - ]; then overs+=("$(sub "$w" "$s")"); fi
    echo "$t one-line change $r: ${w}s (RUN steps run: $n, their time: ${s}s)"
  done
  edit[$t]=$(median "${times[@]}")
  edit_runs[$t]=$(printf '%s\n' "${runs_seen[@]}" | sort -u | paste -sd/)
  if [ "${#overs[@]}" -gt 0 ]; then edit_over[$t]=$(median "${overs[@]}"); fi
done
echo "load at the end: $(cut -d' ' -f1-3 /proc/loadavg)"

label() { case $1 in kiln) echo kiln ;; docker) echo BuildKit ;; buildah) echo Buildah ;; esac; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
echo
printf '%-32s' "wall time, s"
for t in $tools; do printf '%12s' "$(label "$t")"; done
for t in $tools; do [ "$t" = kiln ] || printf '%16s' "$(label "$t")/kiln"; done
echo
row() {
  local name=$1; local -n m=$2
  printf '%-32s' "$name"
  for t in $tools; do printf '%12s' "${m[$t]}"; done
  for t in $tools; do [ "$t" = kiln ] || printf '%16s' "$(ratio "${m[$t]}" "${m[kiln]:-0}")"; done
  echo
}
row "cold build" cold
row "no-op rebuild (median)" noop
row "one-line change (median)" edit
printf '%-32s' "RUN steps run: cold/no-op/edit"
for t in $tools; do printf '%12s' "${cold_runs[$t]}/${noop_runs[$t]}/${edit_runs[$t]}"; done
echo
if [ -n "${edit_over[kiln]:-}" ] && [ -n "${edit_over[docker]:-}" ]; then
  echo
  echo "overhead of the one-line-change rebuild (wall time minus RUN steps' time, median):"
  echo "  kiln ${edit_over[kiln]}s, BuildKit ${edit_over[docker]}s:" \
    "kiln's is $(awk -v a="${edit_over[kiln]}" -v b="${edit_over[docker]}" 'BEGIN { printf "%.1f", 100 * a / b }')% of BuildKit's (target < 10%)"
fi
if [ -n "${noop[kiln]:-}" ] && [ -n "${noop[docker]:-}" ]; then
  echo "no-op rebuild: kiln ${noop[kiln]}s vs BuildKit ${noop[docker]}s" \
    "($(awk -v a="${noop[kiln]}" -v b="${noop[docker]}" 'BEGIN { print (a < b) ? "faster: target met" : "not faster: target missed" }'))"
fi

#!/usr/bin/env bash
# A build cache in a registry, fresh CI runners: kiln (--cache-to/--cache-from
# type=registry, mode=max) against BuildKit (buildctl --export-cache/--import-cache
# type=registry, mode=max), each runner starting from an empty store (kiln) or an
# empty buildkitd state directory (BuildKit). Per project:
#
#   export    cold build on a fresh runner + cache export + push of the image;
#             the export phase's own time too ("exporting cache …" DONE)
#   no change a fresh runner rebuilds the same source from the cache, pushes the image
#   one line  a fresh runner rebuilds with one line added to a file under src/
#
# Both tools build the same Dockerfile with FROM rewritten to the node base
# (scripts/make-base-images) pushed to the local registry — or, for a project
# with a bench.env naming BASES (bench/projects/react-vite), the bases given as
# the build args BASE and FINAL — with --secret id=ca,src=$CA_BUNDLE (default
# /etc/ssl/certs/ca-certificates.crt), and push the image to the same registry
# as the cache (what a CI runner does). Wall-clock times. Each BuildKit runner
# holds an flock on $BENCH_LOCK (default /work/buildkit-run/bench.lock when it
# exists) while its buildkitd runs.
#
# Usage: bench/registry-cache.sh [PROJECT...]   (default: examples/api, and
#        bench/projects/react-vite when it exists)
# Env:   KILN (default target/release/kiln), REGISTRY (default 127.0.0.1:5000),
#        RUNS (default 1), BUILDKIT_RUN (default /work/buildkit-run: its bin/ has
#        buildkitd and buildctl; the BuildKit half runs only when its READY exists,
#        else it is reported as TO RUN), ONLY=kiln|buildkit, KEEP=1 (keep the
#        work directory: each runner's --progress=plain log and store),
#        NICE (default 0: the priority both tools run at, see below).
# Runs as root (the node base, kiln's sandbox, buildkitd). Network: the local
# registry and the npm registry the projects' `npm install` reaches.
set -euo pipefail
cd "$(dirname "$0")/.."
repo_root=$PWD
registry=${REGISTRY:-127.0.0.1:5000}
kiln=$(realpath "${KILN:-${CARGO_TARGET_DIR:-target}/release/kiln}")
runs=${RUNS:-1}
bk=${BUILDKIT_RUN:-/work/buildkit-run}
only=${ONLY:-}
# BENCH_LOCK: a file to flock around each BuildKit runner (default: the shared
# machine's /work/buildkit-run/bench.lock when it exists; BENCH_LOCK= for none).
bench_lock=${BENCH_LOCK-$( [ -e /work/buildkit-run/bench.lock ] && echo /work/buildkit-run/bench.lock )}
# Both tools run at one priority, set here (absolute, whatever this script
# was started with): kiln, buildkitd and their RUN steps are all children of
# this shell. A kiln niced to 19 against a buildkitd at 0 once made kiln's RUN
# steps look slower on a loaded machine.
renice -n "${NICE:-0}" -p $$ > /dev/null
echo "priority: nice $(nice) for kiln and BuildKit alike; load average at start: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
[ -x "$kiln" ] || { echo "no kiln binary at $kiln (cargo build --release -p kiln)" >&2; exit 1; }
curl -sf -o /dev/null "http://$registry/v2/" || { echo "no registry on $registry: run scripts/setup-test-env" >&2; exit 1; }

projects=("$@")
if [ "${#projects[@]}" = 0 ]; then
  projects=(examples/api)
  [ -d bench/projects/react-vite ] && projects+=(bench/projects/react-vite)
fi

work=$(mktemp -d /var/tmp/kiln-bench-regcache.XXXXXX)
bkd_pid=
cleanup() {
  if [ -n "$bkd_pid" ]; then kill "$bkd_pid" 2>/dev/null || true; wait "$bkd_pid" 2>/dev/null || true; fi
  if [ -n "${KEEP:-}" ]; then echo "logs and stores kept in $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
now() { date +%s.%N; }
secs() { printf %.2f "$(echo "$2 - $1" | bc)"; }
tag=$$-$(date +%s)

# The bases (scripts/make-base-images), once, pushed where both tools pull them
# from: node, and busybox:test for a project whose final stage is FROM it.
base="$registry/kiln-bench/node:20-bookworm-slim"
final="$registry/kiln-bench/busybox:test"
for b in node busybox; do
  KILN=$kiln scripts/make-base-images --only "$b" --root "$work/seed" > /dev/null
done
"$kiln" --root "$work/seed" push -q node:20-bookworm-slim "$base" > /dev/null
"$kiln" --root "$work/seed" push -q busybox:test "$final" > /dev/null
# npm reaches its registry through a TLS proxy whose CA only this bundle has
# (react-vite's Dockerfile reads it as the secret "ca").
ca_bundle=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}

# A project's bench.env (bench/projects/*): BASES (its Dockerfile takes the
# bases as the build args BASE and FINAL), EDIT_FILE and EDIT_COMMENT (the
# one-line change appends a comment line to that file).
project_env() {
  EDIT_FILE= EDIT_COMMENT= BASES=
  if [ -f "$1/bench.env" ]; then
    # shellcheck disable=SC1091
    . "$1/bench.env"
  fi
}

# A copy of PROJECT with FROM node:… pointing at the pushed base; with a third
# argument, the one-line change: EDIT_FILE gets a comment line, else that line
# is appended to the first source file under src/.
context() {
  local project=$1 dest=$2 line=${3:-}
  cp -r "$project" "$dest"
  rm -rf "$dest/node_modules" "$dest/dist"
  sed -i "s|^FROM node:20-bookworm-slim|FROM $base|I" "$dest/Dockerfile"
  if [ -n "$line" ]; then
    if [ -n "$EDIT_FILE" ]; then
      printf '%s bench: one-line change\n' "$EDIT_COMMENT" >> "$dest/$EDIT_FILE"
    else
      local f
      f=$(find "$dest/src" -type f \( -name '*.ts' -o -name '*.tsx' -o -name '*.js' -o -name '*.jsx' \) | sort | head -1)
      printf '%s\n' "$line" >> "$f"
    fi
  fi
}

# Build args and the secret every build of the project gets (kiln's spelling;
# bk_args turns them into buildctl's).
build_args=()
set_build_args() {
  build_args=(--secret "id=ca,src=$ca_bundle")
  if [ -n "$BASES" ]; then
    build_args+=(--build-arg "BASE=$base" --build-arg "FINAL=$final")
  fi
}
bk_args() {
  local a next=
  for a in "${build_args[@]}"; do
    case $next in
      arg) echo "--opt"; echo "build-arg:$a"; next=; continue ;;
      secret) echo "--secret"; echo "$a"; next=; continue ;;
    esac
    case $a in
      --build-arg) next=arg ;;
      --secret) next=secret ;;
    esac
  done
}

# The seconds of the plain-progress vertex whose title matches $2 in log $1.
phase_secs() {
  local n
  n=$(grep -E "^#[0-9]+ .*$2" "$1" | head -1 | sed -E 's/^#([0-9]+) .*/\1/')
  [ -n "$n" ] || { echo "?"; return; }
  grep -E "^#$n DONE " "$1" | tail -1 | sed -E 's/^#[0-9]+ DONE ([0-9.]+)s.*/\1/'
}

results=()
report() { results+=("$(printf '| %s | %s | %s | %s |' "$@")"); echo "  $*"; }

kiln_runner() { # NAME CONTEXT ARGS... → wall seconds; log in $work/NAME.log
  local name=$1 ctx=$2; shift 2
  local t0 t1
  t0=$(now)
  "$kiln" --root "$work/kiln-$name" build --progress=plain "${build_args[@]}" "$@" "$ctx" > "$work/$name.log" 2>&1 \
    || { cat "$work/$name.log" >&2; exit 1; }
  t1=$(now)
  secs "$t0" "$t1"
}

bench_kiln() {
  local p=$1 one=$2 two=$3 r=$4
  local cache="$registry/kiln-bench/kiln-cache-$p-$tag-$r:main"
  local image="$registry/kiln-bench/kiln-$p-$tag-$r"
  local t
  t=$(kiln_runner "$p-export-$r" "$one" -t "$image:one" --push \
      --cache-to "type=registry,ref=$cache,mode=max")
  report "$p" kiln "export (cold build + cache export + push)" "$t s (cache export $(phase_secs "$work/$p-export-$r.log" 'exporting cache')s)"
  t=$(kiln_runner "$p-same-$r" "$one" -t "$image:same" --push --cache-from "type=registry,ref=$cache")
  report "$p" kiln "fresh runner, no change" "$t s ($(grep -o '[0-9]* steps run' "$work/$p-same-$r.log" | tail -1))"
  t=$(kiln_runner "$p-line-$r" "$two" -t "$image:line" --push --cache-from "type=registry,ref=$cache")
  report "$p" kiln "fresh runner, one-line change" "$t s ($(grep -o '[0-9]* steps run' "$work/$p-line-$r.log" | tail -1))"
}

# ---- BuildKit ----
# A fresh buildkitd (empty state directory) per runner, on its own socket,
# with the local registry over plain HTTP.
start_buildkitd() {
  local state=$1
  mkdir -p "$state"
  cat > "$state/buildkitd.toml" <<EOF
[registry."$registry"]
  http = true
  insecure = true
[worker.oci]
  enabled = true
  binary = "runc"
  snapshotter = "overlayfs"
  gc = false
[worker.containerd]
  enabled = false
EOF
  # As $bk/start runs it (see $bk/READY), but on a state directory and a
  # socket of this run's own, so a shared buildkitd is left alone.
  "$bk/bin/buildkitd" --config "$state/buildkitd.toml" --root "$state/root" \
    --addr "unix://$state/buildkitd.sock" --oci-worker-net=host > "$state/buildkitd.log" 2>&1 &
  bkd_pid=$!
  for _ in $(seq 1 100); do
    "$bk/bin/buildctl" --addr "unix://$state/buildkitd.sock" debug workers > /dev/null 2>&1 && return 0
    sleep 0.1
  done
  cat "$state/buildkitd.log" >&2
  echo "buildkitd did not start" >&2
  exit 1
}
stop_buildkitd() {
  kill "$bkd_pid" 2>/dev/null || true
  wait "$bkd_pid" 2>/dev/null || true
  bkd_pid=
}

bk_runner() { # NAME CONTEXT ARGS... → wall seconds (buildkitd start not counted)
  local name=$1 ctx=$2; shift 2
  local state="$work/bk-$name" t0 t1 extra
  mapfile -t extra < <(bk_args)
  # Machines where buildkitd and benchmarks are shared: one user at a time,
  # held for this runner only (released when the subshell's fd 9 closes).
  if [ -n "$bench_lock" ]; then exec 9> "$bench_lock"; flock 9; fi
  start_buildkitd "$state"
  t0=$(now)
  "$bk/bin/buildctl" --addr "unix://$state/buildkitd.sock" build --progress=plain \
    --frontend dockerfile.v0 --local context="$ctx" --local dockerfile="$ctx" \
    "${extra[@]}" "$@" > "$work/$name.log" 2>&1 || { cat "$work/$name.log" >&2; stop_buildkitd; exit 1; }
  t1=$(now)
  stop_buildkitd
  if [ -n "$bench_lock" ]; then exec 9>&-; fi
  # Deleted at the end with the rest of $work, not now: on a filesystem without
  # a journal, files created right after a large deletion are slow to create
  # (ext4's recently_deleted(); see bench/build.sh's discard), which would
  # charge this runner's state to the next runner, kiln's or BuildKit's.
  mv "$state" "$work/trash-$name"
  secs "$t0" "$t1"
}

bench_buildkit() {
  local p=$1 one=$2 two=$3 r=$4
  local cache="$registry/kiln-bench/bk-cache-$p-$tag-$r:main"
  local image="$registry/kiln-bench/bk-$p-$tag-$r"
  local t
  t=$(bk_runner "bk-$p-export-$r" "$one" \
      --output "type=image,name=$image:one,push=true,registry.insecure=true" \
      --export-cache "type=registry,ref=$cache,mode=max,registry.insecure=true")
  report "$p" buildkit "export (cold build + cache export + push)" "$t s (cache export $(phase_secs "$work/bk-$p-export-$r.log" 'exporting cache')s)"
  t=$(bk_runner "bk-$p-same-$r" "$one" \
      --output "type=image,name=$image:same,push=true,registry.insecure=true" \
      --import-cache "type=registry,ref=$cache,registry.insecure=true")
  report "$p" buildkit "fresh runner, no change" "$t s"
  t=$(bk_runner "bk-$p-line-$r" "$two" \
      --output "type=image,name=$image:line,push=true,registry.insecure=true" \
      --import-cache "type=registry,ref=$cache,registry.insecure=true")
  report "$p" buildkit "fresh runner, one-line change" "$t s"
}

for project in "${projects[@]}"; do
  p=$(basename "$project")
  project_env "$project"
  set_build_args
  context "$project" "$work/$p-one"
  context "$project" "$work/$p-two" "export const benchBranch = \"two\";"
  for r in $(seq 1 "$runs"); do
    echo "$p, run $r:"
    if [ "$only" != buildkit ]; then bench_kiln "$p" "$work/$p-one" "$work/$p-two" "$r"; fi
    if [ "$only" != kiln ]; then
      if [ -f "$bk/READY" ] && [ -x "$bk/bin/buildkitd" ]; then
        bench_buildkit "$p" "$work/$p-one" "$work/$p-two" "$r"
      else
        report "$p" buildkit "TO RUN" "no $bk/READY: BuildKit's half was not run"
      fi
    fi
  done
done

echo
echo "nice $(nice); load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "| project | tool | run | wall |"
echo "|---|---|---|---|"
printf '%s\n' "${results[@]}"

#!/usr/bin/env bash
# Builds the example project (examples/api) with kiln, `docker build` (BuildKit) and
# `buildah bud --layers`, side by side in one run: a cold build, no-op rebuilds and
# rebuilds after a one-line change to a source file under src/ (tools interleaved,
# so load changes on the machine hit all three alike), then prints the times, the
# ratios, and each tool's overhead in the source-change rebuild: wall time minus the
# time its RUN steps' containers ran.
#
# The RUN containers' time is measured the same way for all three tools, with BSD
# process accounting (accton, 10 ms resolution): the lifetime of the process that
# runs each RUN — kiln's sandbox helper (a child of kiln), BuildKit's `runc run`
# (a child of dockerd), buildah's run helper (the child of buildah that starts
# runc). The tools' own step times are printed too (kiln: rawjson step durations,
# which include writing the layer, and the sandbox's debug line; BuildKit: `#N DONE
# 1.2s`, rounded to 0.1 s).
#
# Needs, as root: a release build of kiln (cargo build --release -p kiln; $KILN
# overrides the binary), the base image of the project's Dockerfile in a kiln store
# (scripts/make-base-images; $KILN_BASE_ROOT, else $KILN_ROOT, else /var/lib/kiln),
# dockerd running (dockerd --bridge=none --iptables=false --ip-masq=false) with the
# docker 20.10 client that has BuildKit built in ($DOCKER, default /usr/bin/docker),
# buildah, jq and Debian's acct (accton, dump-acct). Every build uses the host
# network (npm install reaches the registry).
#
#   bench/build.sh                        # RUNS=3 TOOLS="kiln docker buildah"
#   PROJECT=bench/projects/react-vite TOOLS="kiln docker buildctl buildah" PHASES="cold no-op edit ci" bench/build.sh
#
# A project with a bench.env (bench/projects/*) says which file the one-line change
# edits (EDIT_FILE: a comment line is appended), its base images (BASES, in kiln's
# store; pushed to the local registry $REGISTRY, default 127.0.0.1:5000, and given
# to every tool as the build args BASE and FINAL), and a script making data kept
# out of git (GENERATE). Every build gets --secret id=ca,src=$CA_BUNDLE (default
# /etc/ssl/certs/ca-certificates.crt: npm and apt reach their registries through a
# TLS proxy whose CA only that bundle has). Tools: kiln, docker (BuildKit in
# dockerd 20.10), buildctl (the newest BuildKit: /work/buildkit-run, see its
# READY), buildah. Phase "ci": an empty store/state, bases only in the registry,
# build and push the result to the registry (kiln build --push; buildctl
# --output type=image,push=true; buildah bud + buildah push; docker is skipped).
# kiln's peak RSS (/usr/bin/time's maximum resident set size) is printed per build.
#
# Each phase runs RUNS times (medians are reported). State before each cold build: the
# base image present and unpacked, no build cache — kiln: a fresh --root with the base
# image loaded and unpacked by a one-step build of another context; docker: `docker
# builder prune -af` and the result image removed, base image loaded; buildah: fresh
# storage (--root/--runroot) with the base image pulled from the same docker archive.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
runs=${RUNS:-3}
tools=${TOOLS:-"kiln docker buildah"}
kiln=${KILN:-${CARGO_TARGET_DIR:-$repo/target}/release/kiln}
docker=${DOCKER:-/usr/bin/docker}
buildah=${BUILDAH:-buildah}
base_root=${KILN_BASE_ROOT:-${KILN_ROOT:-/var/lib/kiln}}
project=$(cd "${PROJECT:-$repo/examples/api}" && pwd)
tag=kiln-bench-$(basename "$project"):latest
phases=${PHASES:-"cold no-op edit"}
registry=${REGISTRY:-127.0.0.1:5000}
ca_bundle=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
bk=${BUILDKIT_RUN:-/work/buildkit-run}
buildctl_() { "$bk/bin/buildctl" --addr "unix://$bk/buildkitd.sock" "$@"; }
EDIT_FILE= EDIT_COMMENT= BASES= GENERATE=
# shellcheck disable=SC1091
if [ -f "$project/bench.env" ]; then . "$project/bench.env"; fi

die() { echo "bench/build.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (docker and buildah need it)"
[ -x "$kiln" ] || die "no kiln binary at $kiln (cargo build --release -p kiln)"
[ -f "$project/Dockerfile" ] || die "no Dockerfile in $project"
command -v jq > /dev/null || die "needs jq"
command -v accton > /dev/null && command -v dump-acct > /dev/null || die "needs accton and dump-acct (apt-get install acct)"
[ -e /proc/sys/kernel/acct ] || die "the kernel has no BSD process accounting (CONFIG_BSD_PROCESS_ACCT)"
for t in $tools; do
  case $t in
    kiln) ;;
    docker) "$docker" version > /dev/null 2>&1 ||
      die "docker daemon not reachable with $docker (start: dockerd --bridge=none --iptables=false --ip-masq=false &)" ;;
    buildah) command -v "$buildah" > /dev/null || die "no buildah (apt-get install buildah)" ;;
    buildctl) buildctl_ debug workers > /dev/null 2>&1 || die "buildkitd not running ($bk/start)" ;;
    *) die "unknown tool $t (kiln, docker, buildctl, buildah)" ;;
  esac
done

if [ -n "$GENERATE" ]; then (cd "$project" && $GENERATE); fi
if [ -n "$BASES" ]; then
  base=${BASES%% *}
else
  base=$(awk 'toupper($1) == "FROM" { print $2; exit }' "$project/Dockerfile")
fi
[ -n "$base" ] || die "no FROM in $project/Dockerfile"
work=$(mktemp -d /var/tmp/kiln-bench-build.XXXXXX)
logs=$work/logs
mkdir -p "$logs"
docker_had_base=
cleanup() {
  accton off > /dev/null 2>&1 || true
  rm -rf "$work/trash"
  if [ "${KEEP:-0}" = 1 ] || [ -e "$work/keep" ]; then echo "kept $work" >&2; return; fi
  if [[ " $tools " == *" docker "* ]]; then
    "$docker" rmi -f "$tag" > /dev/null 2>&1 || true
    if [ -z "$docker_had_base" ]; then "$docker" rmi -f "$base" > /dev/null 2>&1 || true; fi
    "$docker" builder prune -af > /dev/null 2>&1 || true
    # The images each rebuild's tag left untagged.
    "$docker" image prune -f > /dev/null 2>&1 || true
  fi
  # buildah leaves its overlay mounts under its root; unmount before removing.
  if [ -d "$work/buildah-root" ]; then
    "$buildah" --root "$work/buildah-root" --runroot "$work/buildah-run" rm -a > /dev/null 2>&1 || true
    "$buildah" --root "$work/buildah-root" --runroot "$work/buildah-run" rmi -af > /dev/null 2>&1 || true
    grep -o " $work/[^ ]*" /proc/self/mounts | sort -r | xargs -r -n1 umount -l 2> /dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

if [[ " $tools " == *" docker "* ]] && "$docker" image inspect "$base" > /dev/null 2>&1; then docker_had_base=1; fi
avail=$(df -Pk "$work" | awk 'NR == 2 { print int($4 / 1024) }')
if [ "$avail" -lt 3000 ]; then echo "bench/build.sh: warning: only $avail MiB free under $work; the three stores need about 3 GiB" >&2; fi

# The same base image for all tools, from kiln's store: as an archive for the
# examples/api mode, through the local registry for the projects with bench.env
# (their Dockerfiles take the bases as the build args BASE and FINAL).
reg_bases=() build_base_args=()
if [ -n "$BASES" ]; then
  names=(BASE FINAL)
  i=0
  for b in $BASES; do
    r=$registry/kiln-bench/$b
    "$kiln" --root "$base_root" push -q "$b" "$r" > /dev/null ||
      die "base image $b is not in the kiln store $base_root (scripts/make-base-images, or set KILN_BASE_ROOT)"
    reg_bases+=("$r")
    build_base_args+=(--build-arg "${names[$i]}=$r")
    i=$((i + 1))
  done
else
  "$kiln" --root "$base_root" save -o "$work/base.tar" "$base" ||
    die "base image $base is not in the kiln store $base_root (scripts/make-base-images, or set KILN_BASE_ROOT)"
fi

# Proxy settings, if the host has any, go to every tool the same way.
build_args=("${build_base_args[@]}")
for v in HTTP_PROXY HTTPS_PROXY NO_PROXY http_proxy https_proxy no_proxy; do
  if [ -n "${!v:-}" ]; then build_args+=(--build-arg "$v=${!v}"); fi
done

now() { date +%s.%N; }

# discard DIR: moves a tool's previous state out of the way; it is deleted when
# the script ends. Deleting it just before the next measured build made that
# build slower: on a filesystem without a journal (this machine's ext4), ext4
# checks every candidate inode for a recent deletion while it allocates, and
# `perf` put 57 % of the file-creating process's time in `recently_deleted`
# after a large `rm -rf` (creating 100 000 files: 11-16 s of kernel time
# instead of 2.5-3 s). kiln's and buildctl's states were deleted right before
# their cold builds: cra's `npm ci` then spent 13.9-22.3 s in the kernel in
# kiln, against 6.7-7.3 s run alone (docker's prune, which deletes its own
# cache, left its `npm ci` at 6.5-7.4 s). The deletion at the end charges the
# next script started right after this one (its first build), so when measuring
# several projects back to back, give each a pause or read its first round so.
discard() {
  [ -e "$1" ] || return 0
  mkdir -p "$work/trash"
  if [ "$(stat -c %d "$1")" = "$(stat -c %d "$work/trash")" ]; then
    mv "$1" "$work/trash/$(date +%s%N)"
  else
    rm -rf "$1"
  fi
}
sub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a - b }'; }

# One project copy per tool, so one tool's edits never touch another's context.
fresh_context() {
  rm -rf "$work/ctx-$1"
  cp -a "$project" "$work/ctx-$1"
  rm -rf "$work/ctx-$1/node_modules" "$work/ctx-$1/dist"
}

# The one-line change: the /health response text of src/index.ts, different each
# time; for a project with bench.env, a comment line appended to its EDIT_FILE.
edit_source() {
  if [ -n "$EDIT_FILE" ]; then
    echo "$EDIT_COMMENT edit $2" >> "$work/ctx-$1/$EDIT_FILE"
    return
  fi
  local file=$work/ctx-$1/src/index.ts
  grep -q 'res.end("ok' "$file" || die "edit target line (res.end(\"ok…) not found in $file"
  sed -i "s|res.end(\"ok[^\"]*\");|res.end(\"ok (edit $2)\\\\n\");|" "$file"
}

buildah_() { "$buildah" --root "$work/buildah-root" --runroot "$work/buildah-run" --storage-driver overlay "$@"; }

# prime TOOL: pulls and unpacks the registry bases with a one-step build each.
prime() {
  local b
  for b in "${reg_bases[@]}"; do
    mkdir -p "$work/prime"
    printf 'FROM %s\nRUN true\n' "$b" > "$work/prime/Dockerfile"
    case $1 in
      kiln) "$kiln" --root "$work/kiln-root" build --network host --progress plain "$work/prime" ;;
      docker) "$docker" pull -q "$b" ;;
      buildctl) buildctl_ build --frontend dockerfile.v0 --local context="$work/prime" --local dockerfile="$work/prime" ;;
      buildah) buildah_ pull -q --tls-verify=false "$b" ;;
    esac > "$logs/$1-prime.log" 2>&1 || { tail -20 "$logs/$1-prime.log"; die "$1 could not pull $b"; }
  done
}

# prepare_ci TOOL: empty state (bases only in the registry).
prepare_ci() {
  case $1 in
    kiln) discard "$work/kiln-root" ;;
    # The restarted daemon must not inherit fds: this script usually runs under
    # `flock bench.lock` (fd 3+), and a buildkitd holding that fd keeps the lock
    # held for everyone after the script ends.
    buildctl) "$bk/stop" > /dev/null; discard "$bk/state"
      "$bk/start" > /dev/null 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&- ;;
    buildah)
      if [ -d "$work/buildah-root" ]; then buildah_ rm -a > /dev/null 2>&1 || true; buildah_ rmi -af > /dev/null 2>&1 || true; fi
      rm -rf "$work/buildah-root" "$work/buildah-run" ;;
  esac
  sync
}

prepare_cold() {
  if [ -n "$BASES" ]; then
    case $1 in
      docker) "$docker" rmi -f "$tag" > /dev/null 2>&1 || true; "$docker" builder prune -af > /dev/null ;;
      *) prepare_ci "$1" ;;
    esac
    prime "$1"
    sync
    return
  fi
  case $1 in
    buildctl) die "buildctl needs a project with bench.env (bases from the registry)" ;;
    kiln)
      discard "$work/kiln-root"
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

# build TOOL LOG: runs one build of the tool's context under process accounting
# (LOG.pacct, the tool's pid in LOG.pid); prints its wall time in seconds.
build() {
  local t0 t1 ctx=$work/ctx-$1 rc=0 pid push=${3:-}
  local secret=(--secret "id=ca,src=$ca_bundle") out=$registry/kiln-bench/out-$1:latest
  : > "${2%.log}.pacct"
  accton "${2%.log}.pacct" > /dev/null
  t0=$(now)
  case $1 in
    kiln) KILN_LOG=warn,kiln_sandbox=debug "$kiln" --root "$work/kiln-root" build --network host \
      --progress rawjson "${build_args[@]}" "${secret[@]}" \
      $([ -n "$push" ] && echo "--push -t $out" || echo "-t $tag") "$ctx" > "$2" 2>&1 & ;;
    docker) DOCKER_BUILDKIT=1 "$docker" build --network=host --progress=plain \
      "${build_args[@]}" "${secret[@]}" -t "$tag" "$ctx" > "$2" 2>&1 & ;;
    buildctl) buildctl_ build --progress=plain --frontend dockerfile.v0 \
      --local context="$ctx" --local dockerfile="$ctx" "${secret[@]}" \
      $(for a in "${build_args[@]}"; do [ "$a" = --build-arg ] || echo "--opt build-arg:$a"; done) \
      --output "type=image,name=$([ -n "$push" ] && echo "$out,push=true" || echo "$tag")" > "$2" 2>&1 & ;;
    buildah) { "$buildah" --root "$work/buildah-root" --runroot "$work/buildah-run" --storage-driver overlay \
      bud --layers --pull=$([ -n "$push" ] && echo true || echo never) --tls-verify=false --network=host \
      "${build_args[@]}" "${secret[@]}" -t "$tag" "$ctx" &&
      if [ -n "$push" ]; then buildah_ push --tls-verify=false "$tag" "docker://$out"; fi; } > "$2" 2>&1 & ;;
  esac
  pid=$!
  # kiln's own peak RSS: VmHWM of its process, sampled until it exits
  # (/usr/bin/time's maximum would be the largest RUN process's, e.g. webpack's).
  if [ "$1" = kiln ]; then
    ( while hwm=$(awk '/^VmHWM/ { print $2 }' "/proc/$pid/status" 2> /dev/null) && [ -n "$hwm" ]; do
        echo "$hwm"
        sleep 0.2
      done > "${2%.log}.rss" ) &
  fi
  wait "$pid" || rc=$?
  t1=$(now)
  wait # the RSS sampler (it sleeps 0.2 s between samples: not part of the build's time)
  accton off > /dev/null
  echo "$pid" > "${2%.log}.pid"
  if [ "$rc" != 0 ]; then
    echo "--- $1 build failed (exit $rc), last lines of $2:" >&2
    tail -25 "$2" >&2
    touch "$work/keep"
    exit 1
  fi
  sub "$t1" "$t0"
}

# containers TOOL LOG: seconds the RUN steps' containers ran, from the build's
# process accounting file (elapsed time of each exited process, in 1/100 s).
containers() {
  local pid dockerd_pid
  pid=$(cat "${2%.log}.pid")
  if [ "$1" = buildctl ]; then
    dockerd_pid=$(cat "$bk/buildkitd.pid" 2>/dev/null || true)
  else
    dockerd_pid=$(pgrep -x dockerd | head -1 || true)
  fi
  dump-acct "${2%.log}.pacct" | awk -F'|' -v tool="$1" -v pid="$pid" -v dockerd="${dockerd_pid:-0}" '
    { comm = $1; sub(/ +$/, "", comm); p = $10 + 0; pp = $11 + 0
      n++; cpid[n] = p; cppid[n] = pp; ccomm[n] = comm; cet[n] = $5 + 0
      if (comm == "runc") runc_parent[pp] = 1 }
    END {
      for (i = 1; i <= n; i++) {
        if (cppid[i] == pid) child[cpid[i]] = 1   # kiln: its sandbox helpers; buildah: buildah itself
        if (ccomm[i] != "exe") ran[cppid[i]] = 1  # the parent of a command (not of another helper)
      }
      for (i = 1; i <= n; i++) {
        # kiln: its sandbox helpers (re-executed kiln, "exe"), which set up the namespaces
        # and mounts, run the command and clean up, as runc does for the others (not the
        # command alone: that left the set-up out of kiln only; "bash" is the fork that
        # expanded the arguments before exec).
        # Only helpers that ran a command: kiln starts other short helpers too (one
        # whose only child is another "exe", 0.2 s in big-context, for its COPY), not RUNs.
        if (tool == "kiln" && cppid[i] == pid && ccomm[i] != "bash" && (cpid[i] in ran)) s += cet[i]
        if ((tool == "docker" || tool == "buildctl") && ccomm[i] == "runc" && cppid[i] == dockerd) s += cet[i]
        # buildah runs in a { bud && push; } group (pid is that subshell): its run
        # helper, the parent of runc, is a child of buildah, a grandchild of pid.
        if (tool == "buildah" && (cppid[i] == pid || (cppid[i] in child)) && (cpid[i] in runc_parent)) s += cet[i]
      }
      printf "%.2f\n", s / 100
    }'
}

# measure TOOL LOG: "<RUN steps run> <their time, s> <sandbox time, s> <containers, s>": the
# first three as the tool reports them, the last from process accounting.
#   kiln: rawjson step_started/step_finished of RUN steps (a step's time includes writing
#         its layer), and the sandbox's own debug line per RUN (helper start, namespaces,
#         mounts, the process, clean-up — no layer writing);
#   BuildKit: "#N [..] RUN …" and "#N DONE 1.2s" (the container run and the snapshot
#         commit; layers are diffed at export, outside). BuildKit rounds to 0.1 s;
#   buildah: RUN steps not answered by "Using cache"; it prints no per-step time.
measure() {
  case $1 in
    kiln)
      grep '^{' "$2" | jq -rs '[.[] | select(.event == "step_started" and (.name | test("\\] RUN ")))
                   | .step] as $runs
                  | [.[] | select(.event == "step_finished" and (.step as $s | $runs | index($s)))]
                  | "\(length) \((map(.duration_ms) | add // 0) / 1000)"' | tr '\n' ' '
      sed 's/\x1b\[[0-9;]*m//g' "$2" | awk '/sandbox run finished/ {
          for (i = 1; i <= NF; i++) if ($i ~ /^sandbox_run_ms=/) { split($i, kv, "="); s += kv[2] } }
        END { printf "%.3f\n", s / 1000 }' | tr '\n' ' ' ;;
    docker|buildctl) awk '
      /^#[0-9]+ \[[^]]*\] RUN / { run[$1] = 1 }
      /^#[0-9]+ DONE [0-9.]+s$/ && ($1 in run) && !($1 in done) { done[$1] = 1; n++; s += substr($3, 1, length($3) - 1) }
      END { printf "%d %.3f - ", n, s }' "$2" ;;
    buildah) awk '
      match($0, /STEP [0-9]+\/[0-9]+: [A-Z]+/) {
        if (pending) n++
        split(substr($0, RSTART, RLENGTH), w, " "); pending = (w[3] == "RUN")
      }
      /Using cache/ { pending = 0 }
      END { if (pending) n++; printf "%d - - ", n }' "$2" ;;
  esac
  containers "$1" "$2"
}

# Where kiln's time outside the sandbox went in one build (from its rawjson and debug lines):
# process start and exit, non-RUN steps, layer writing of RUN steps, export, and the rest
# (planning, context hashing, cache look-ups, waits between steps, the wait for the
# last layer hashes). The "layer diff of" phases (a step's layer hashed while the next
# steps run) are shown apart: they overlap the other times.
kiln_breakdown() {
  local wall=$1 log=$2
  sed 's/\x1b\[[0-9;]*m//g' "$log" | awk -v wall="$wall" '
    /sandbox run finished/ { for (i = 1; i <= NF; i++) if ($i ~ /^sandbox_run_ms=/) { split($i, kv, "="); sandbox += kv[2] } }
    /^\{/ {
      if (match($0, /"event":"[a-z_]+"/)) ev = substr($0, RSTART + 9, RLENGTH - 10); else next
      step = ""; if (match($0, /"step":[0-9]+/)) step = substr($0, RSTART + 7, RLENGTH - 7)
      if (ev == "step_started") isrun[step] = ($0 ~ /\] RUN /)
      if (ev == "step_finished") { match($0, /"duration_ms":[0-9]+/); d = substr($0, RSTART + 14, RLENGTH - 14)
        if (isrun[step]) runsteps += d; else other += d }
      if (ev == "phase" && $0 ~ /"duration_ms":[0-9]/) { match($0, /"duration_ms":[0-9]+/); d = substr($0, RSTART + 14, RLENGTH - 14)
        if ($0 ~ /"name":"layer diff of /) diffs += d; else export += d }
      if (ev == "build_finished") { match($0, /"duration_ms":[0-9]+/); total = substr($0, RSTART + 14, RLENGTH - 14) }
    }
    END {
      printf "    process start and exit (wall - build duration) %6.0f ms\n", wall * 1000 - total
      printf "    non-RUN steps (COPY, WORKDIR, FROM)            %6.0f ms\n", other
      printf "    RUN steps outside the sandbox (layer writing)  %6.0f ms\n", runsteps - sandbox
      printf "    export phases                                  %6.0f ms\n", export
      printf "    layer diffs hashed beside the steps            %6.0f ms (not added: they overlap the rest)\n", diffs
      printf "    rest (plan, context, cache look-ups, waits)    %6.0f ms\n", total - other - runsteps - export
    }'
}

median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

results=$work/results   # tool phase run wall run_steps run_s sandbox_s containers_s
: > "$results"
record() {   # record TOOL PHASE RUN LOG WALL
  local m; m=$(measure "$1" "$4")
  echo "$1 $2 $3 $5 $m" >> "$results"
  set -- "$1" "$2" "$3" "$4" "$5" $m
  printf '%-8s %-18s %7ss   RUN steps run: %s, their containers: %ss' "$1" "$2 $3" "$5" "$6" "$9"
  if [ "$7" != - ]; then printf ', reported step time: %ss' "$7"; fi
  if [ "$8" != - ]; then printf ', in the sandbox: %ss' "$8"; fi
  if [ -f "${4%.log}.rss" ]; then printf ', peak RSS %s MiB' "$(( $(tail -1 "${4%.log}.rss") / 1024 ))"; fi
  echo ", load $(cut -d' ' -f1-3 /proc/loadavg)"
}

bench_one() {   # bench_one TOOL PHASE RUN LOG [push]
  local w
  w=$(build "$1" "$4" "${5:-}") || exit 1
  record "$1" "$2" "$3" "$4" "$w"
}

echo "kiln-bench: $project (FROM $base), $runs runs each; logs under $logs"
echo "machine: $(nproc) cores, $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo), $(free -g | awk '/^Mem/ { print $2 }') GiB, kernel $(uname -r)"
echo "kiln $("$kiln" --version | awk '{ print $2 }') ($kiln); $("$docker" version -f 'dockerd {{.Server.Version}}' 2>/dev/null || echo 'docker: -'); $("$buildah" --version 2>/dev/null || echo 'buildah: -')"
echo "load at the start: $(cut -d' ' -f1-3 /proc/loadavg)"
has_phase() { [[ " $phases " == *" $1 "* ]]; }
for r in $(seq 1 "$runs"); do
  for t in $tools; do
    fresh_context "$t"
    prepare_cold "$t"
    bench_one "$t" cold "$r" "$logs/$t-cold-$r.log"
  done
done
rm -f "$work/base.tar"
if has_phase no-op; then
  for r in $(seq 1 "$runs"); do
    for t in $tools; do bench_one "$t" no-op "$r" "$logs/$t-noop-$r.log"; done
  done
fi
if has_phase edit; then
  for r in $(seq 1 "$runs"); do
    for t in $tools; do
      edit_source "$t" "$r"
      bench_one "$t" one-line-change "$r" "$logs/$t-edit-$r.log"
    done
  done
fi
if has_phase ci; then
  for r in $(seq 1 "$runs"); do
    for t in $tools; do
      [ "$t" = docker ] && continue
      fresh_context "$t"
      prepare_ci "$t"
      bench_one "$t" ci-cold "$r" "$logs/$t-ci-$r.log" push
    done
  done
fi
echo "load at the end: $(cut -d' ' -f1-3 /proc/loadavg)"

# stat TOOL PHASE FIELD: median over the runs of a field of $results (4 wall, 5 RUN steps
# run, 6 reported RUN step time, 7 sandbox time, 8 RUN containers' time); "o8", "o6",
# "o7": wall minus that field, run by run.
stat() {
  local vals
  vals=$(awk -v t="$1" -v p="$2" -v f="$3" '$1 == t && $2 == p {
    if (f ~ /^o/) { g = substr(f, 2) + 0; print ($g == "-") ? "-" : $4 - $g } else print $f }' "$results")
  if [ -z "$vals" ] || grep -q -- '^-$' <<< "$vals"; then echo -; return; fi
  if [ "$3" = 5 ]; then sort -u <<< "$vals" | paste -sd/; return; fi
  # shellcheck disable=SC2086
  printf '%.3f' "$(median $vals)"
}
label() { case $1 in kiln) echo kiln ;; docker) echo BuildKit ;; buildctl) echo buildctl ;; buildah) echo Buildah ;; esac; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a != "-" && b != "-" && b > 0) printf "%.2f", a / b; else print "-" }'; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN { if (a != "-" && b != "-" && b > 0) printf "%.0f%%", 100 * a / b; else print "-" }'; }
has() { [[ " $tools " == *" $1 "* ]]; }
row() {   # row LABEL PHASE FIELD [ratios]
  printf '%-44s' "$1"
  for t in $tools; do printf '%10s' "$(stat "$t" "$2" "$3")"; done
  if [ -n "${4:-}" ] && has kiln; then
    for t in $tools; do [ "$t" = kiln ] || printf '%15s' "$(ratio "$(stat "$t" "$2" "$3")" "$(stat kiln "$2" "$3")")"; done
  fi
  echo
}

echo
printf '%-44s' "seconds, median over $runs run(s)"
for t in $tools; do printf '%10s' "$(label "$t")"; done
if has kiln; then for t in $tools; do [ "$t" = kiln ] || printf '%15s' "$(label "$t")/kiln"; done; fi
echo
row "cold build" cold 4 ratios
row "  its RUN containers (process accounting)" cold 8
row "  overhead = wall - RUN containers" cold o8 ratios
row "no-op rebuild" no-op 4 ratios
row "one-line change rebuild" one-line-change 4 ratios
row "  its RUN containers (process accounting)" one-line-change 8
row "  overhead = wall - RUN containers" one-line-change o8 ratios
if has_phase ci; then
  row "CI cold: empty state, build + push" ci-cold 4 ratios
  row "  overhead = wall - RUN containers" ci-cold o8 ratios
fi
if has kiln; then
  printf '%-44s%10s\n' "kiln peak RSS, MiB (max over all builds)" \
    "$(cat "$logs"/kiln-*.rss 2>/dev/null | sort -n | tail -1 | awk '{ print int($1 / 1024) }')"
fi
printf '%-44s' "RUN steps run: cold, no-op, change"
for t in $tools; do printf '%10s' "$(stat "$t" cold 5),$(stat "$t" no-op 5),$(stat "$t" one-line-change 5)"; done
echo

if has kiln; then
  ko=$(stat kiln one-line-change o8)
  echo
  echo "kiln's overhead in the one-line change rebuild (wall minus RUN containers, median):"
  for t in $tools; do
    [ "$t" = kiln ] || echo "  $(pct "$ko" "$(stat "$t" one-line-change o8)") of $(label "$t")'s$([ "$t" = docker ] && echo " (target: under 10%)")"
  done
  if has docker; then
    echo "  cross-check with the tools' own step times: kiln wall - sandbox time $(stat kiln one-line-change o7) s," \
      "kiln wall - RUN step durations (incl. layer writing) $(stat kiln one-line-change o6) s," \
      "BuildKit wall - RUN DONE times (0.1 s rounding) $(stat docker one-line-change o6) s"
  fi
  for p in one-line-change cold; do
    # The run whose wall minus sandbox time is the median.
    mid=$(awk -v p="$p" '$1 == "kiln" && $2 == p { print $4 - $7, $3, $4 }' "$results" | sort -g |
      awk '{ l[NR] = $2 " " $3 } END { print l[int((NR + 1) / 2)] }')
    [ -n "${mid% }" ] || continue   # the phase was not run (PHASES)
    log=$logs/kiln-$([ "$p" = cold ] && echo cold || echo edit)-${mid%% *}.log
    echo "  where kiln's time outside the sandbox went, $p build, its median run (${mid%% *}):"
    kiln_breakdown "${mid#* }" "$log"
  done
  if has docker; then
    kn=$(stat kiln no-op 4) bn=$(stat docker no-op 4)
    echo "no-op rebuild: kiln ${kn} s, BuildKit ${bn} s —" \
      "$(awk -v a="$kn" -v b="$bn" 'BEGIN { print (a < b) ? "kiln faster (target met)" : "kiln not faster (target missed)" }')"
  fi
fi

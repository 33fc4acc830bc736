#!/usr/bin/env bash
# Builds the example project (examples/api) inside an unprivileged container, the
# way a CI job (a Kubernetes pod, GitLab's Kubernetes executor) builds: kiln vs
# Buildah `--isolation chroot`, in the same container image, with the same
# security profile, from the same local registry. Kaniko (the tool this setting
# was made for, archived in 2025) is not compared: its images are on Docker Hub
# (gcr.io / ghcr.io mirrors too), which this machine cannot reach.
#
# Set-up (all under a temporary directory, removed at the end):
# - a private dockerd (`--bridge=none --iptables=false --ip-masq=false`, data
#   and socket in the temp dir; containers run with --network=host);
# - the job image: the Debian bookworm + Node 20 base of scripts/make-base-images
#   (node:20-bookworm-slim), handed to dockerd with `kiln load-into docker`;
# - the base of the build, the same image, pushed to the local registry
#   ($KILN_TEST_REGISTRY, scripts/setup-test-env's, default 127.0.0.1:5000);
#   the project's FROM line is pointed at it;
# - kiln: a release binary mounted read-only at /usr/local/bin/kiln
#   ($KILN, default the static one of scripts/make-kiln-image, else
#   target/release/kiln);
# - Buildah: the host's Debian package, mounted read-only — /usr/bin/buildah,
#   the shared libraries it needs that the Debian base lacks (gpgme, assuan,
#   gpg-error, devmapper, udev, seccomp: the files `ldd` names) and
#   /etc/containers (policy.json, registries.conf). Storage driver vfs (no
#   overlay mounts in an unprivileged container), --tls-verify=false for the
#   registry on 127.0.0.1.
#
# Each build is cold: a new container (so an empty store on the container's
# overlay root, the base pulled from the registry, npm install from the npm
# registry). The time is bash's `time` of the build command inside the
# container (no container start). Tools interleaved, RUNS rounds; medians.
# Profiles (PROFILES, default "default unconfined"):
#   default     root, Docker's default seccomp profile and capabilities
#   unconfined  root, --security-opt seccomp=unconfined (Buildah needs it: as
#               root without CAP_SYS_ADMIN it re-executes itself in a user
#               namespace, which the default profile refuses:
#               "Error during unshare(CLONE_NEWUSER): Operation not permitted")
# A tool that fails in a profile is reported with its last error line.
#
#   bench/in-container.sh            # as root; RUNS=3 PROFILES="default unconfined"
#   LOGS=/tmp/logs bench/in-container.sh   # and keep each build's output
#   KILN_BEFORE=/tmp/kiln-old bench/in-container.sh   # and an older kiln, interleaved
#   TOOLS="kiln" KILN_LOG=kiln_builder=debug ...       # only these tools; kiln's log
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
runs=${RUNS:-3}
profiles=${PROFILES:-"default unconfined"}
if [ -n "${KILN:-}" ]; then
  kiln=$KILN
elif [ -x "$repo/target/static/x86_64-unknown-linux-gnu/release/kiln" ]; then
  kiln=$repo/target/static/x86_64-unknown-linux-gnu/release/kiln
else
  kiln=$repo/target/release/kiln
fi
kiln=$(realpath "$kiln")
# KILN_BEFORE=FILE: a second kiln (e.g. the build before a change), run as the
# tool "kiln-before" in the same rounds, interleaved with the others.
before=${KILN_BEFORE:+$(realpath "$KILN_BEFORE")}
tools=${TOOLS:-"kiln${before:+ kiln-before} buildah"}
[ "$(id -u)" = 0 ] || { echo "in-container.sh: run as root (dockerd)" >&2; exit 1; }
regenv=${KILN_TEST_REGISTRY_DIR:-/tmp/kiln-test-registries}/registries.env
registry=${KILN_TEST_REGISTRY:-$( [ -f "$regenv" ] && sed -n 's/^KILN_TEST_REGISTRY=//p' "$regenv" )}
registry=${registry:-127.0.0.1:5000}

work=$(mktemp -d /tmp/kiln-bench-container.XXXXXX)
dpid=
cleanup() {
  if [ -n "$dpid" ]; then
    kill "$dpid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$dpid" 2>/dev/null || break; sleep 0.2; done
  fi
  grep " $work" /proc/self/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "== base image, pushed to $registry"
store=$work/store
KILN=$kiln "$repo/scripts/make-base-images" --only node --root "$store" >/dev/null
base=$registry/kiln-bench/node:20-$$
"$kiln" --root "$store" push -q node:20-bookworm-slim "$base" >/dev/null
ctx=$work/api
cp -r "$repo/examples/api" "$ctx"
sed -i "1s|^FROM node:20-bookworm-slim|FROM $base|" "$ctx/Dockerfile"
chmod -R a+rX "$ctx"

echo "== private dockerd"
mkdir -p "$work/docker"
dockerd --bridge=none --iptables=false --ip-masq=false --data-root "$work/docker/data" \
  --exec-root "$work/docker/exec" --pidfile "$work/docker/pid" \
  --host "unix://$work/docker/sock" >"$work/docker/log" 2>&1 &
dpid=$!
export DOCKER_HOST=unix://$work/docker/sock
for _ in $(seq 1 300); do docker version >/dev/null 2>&1 && break; sleep 0.2; done
docker version --format 'dockerd {{.Server.Version}}'
DOCKER_HOST=$DOCKER_HOST "$kiln" --root "$store" load-into docker node:20-bookworm-slim >/dev/null
image=node:20-bookworm-slim

# Buildah from the host, mounted: the binary, the libraries the base lacks, its config.
mounts=(-v "$kiln:/usr/local/bin/kiln:ro" -v "$ctx:/ctx:ro"
  -v /usr/bin/buildah:/usr/bin/buildah:ro -v /etc/containers:/etc/containers:ro)
base_rootfs=$(ls -d /var/cache/kiln/bases/node20-bookworm-* 2>/dev/null | head -n 1)
for lib in $(ldd /usr/bin/buildah | awk '$3 ~ /^\// {print $3}'); do
  if [ -z "$base_rootfs" ] || [ ! -e "$base_rootfs$lib" ]; then
    mounts+=(-v "$(realpath "$lib"):$lib:ro")
  fi
done
if [ -n "$before" ]; then
  mounts+=(-v "$before:/usr/local/bin/kiln-before:ro")
  echo "kiln-before: $("$before" --version)  ($before)"
fi
echo "kiln:    $("$kiln" --version)  ($kiln)"
echo "buildah: $(buildah --version)"

# LOGS=DIR keeps each build's output there (kiln's --progress=plain has
# each step's time).
logs=()
if [ -n "${LOGS:-}" ]; then
  mkdir -p "$LOGS"
  logs=(-v "$(realpath "$LOGS"):/logs")
fi

declare -A times
run_one() { # tool profile
  local tool=$1 profile=$2 cmd sec=() out
  case $profile in
    default) ;;
    unconfined) sec=(--security-opt seccomp=unconfined) ;;
  esac
  case $tool in
    kiln) cmd='kiln build --progress=plain -t api:bench /ctx' ;;
    kiln-before) cmd='kiln-before build --progress=plain -t api:bench /ctx' ;;
    buildah) cmd='buildah --storage-driver vfs build --isolation chroot --tls-verify=false -t api:bench /ctx' ;;
  esac
  local log=/tmp/log
  if [ -n "${LOGS:-}" ]; then
    log=/logs/$tool-$profile-$(date +%H%M%S).log
  fi
  if out=$(docker run --rm --network=host "${sec[@]}" "${mounts[@]}" "${logs[@]}" \
      ${KILN_LOG:+-e KILN_LOG="$KILN_LOG"} "$image" \
      bash -c "TIMEFORMAT=%R; { time $cmd >$log 2>&1 || { tail -n 3 $log; exit 1; }; } 2>&1" 2>&1); then
    times[$tool/$profile]+="$(echo "$out" | tail -n 1) "
    echo "$tool ($profile): $(echo "$out" | tail -n 1) s"
  else
    times[$tool/$profile]+="failed "
    echo "$tool ($profile): failed: $(echo "$out" | tail -n 2 | tr '\n' ' ')"
  fi
}

for profile in $profiles; do
  for round in $(seq 1 "$runs"); do
    echo "== round $round, profile $profile (load $(cut -d' ' -f1-3 /proc/loadavg))"
    for tool in $tools; do
      run_one "$tool" "$profile"
    done
  done
done

median() { tr ' ' '\n' | { grep -E '^[0-9.]+$' || true; } | sort -n | awk '{a[NR]=$1} END {if (NR) print a[int((NR+1)/2)]; else print "-"}'; }
echo
header="| profile |"
rule="|---|"
for tool in $tools; do
  case $tool in buildah) header+=" buildah --isolation chroot (s) |" ;; *) header+=" $tool (s) |" ;; esac
  rule+="---|"
done
echo "$header"
echo "$rule"
for profile in $profiles; do
  row="| $profile |"
  for tool in $tools; do
    row+=" $(echo "${times[$tool/$profile]:-}" | median) (${times[$tool/$profile]:-}) |"
  done
  echo "$row"
done

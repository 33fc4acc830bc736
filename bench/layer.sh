#!/usr/bin/env bash
# Layer benchmark: kiln's single-pass tar+gzip+sha256 (and zstd) against
# `tar -c | gzip -6 | sha256sum`. Usage: bench/layer.sh [DATA_DIR]  (see bench/README.md)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-/tmp/kiln-layer-bench}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p kiln-oci --example layer_bench
BIN=$CARGO_TARGET_DIR/release/examples/layer_bench
[ -d "$DATA" ] || "$BIN" gen "$DATA"
echo "data: $(du -sm "$DATA" | cut -f1) MB in $(find "$DATA" -type f | wc -l) files; load: $(cut -d' ' -f1-3 /proc/loadavg)"
tar -C "$DATA" -cf - . >/dev/null   # warm the page cache

best() { # best of 3 wall-clock seconds of "$@"
  local best=999999 t
  for _ in 1 2 3; do
    t=$( { /usr/bin/time -f %e "$@" >/dev/null; } 2>&1 | tail -1 )
    best=$(awk -v a="$t" -v b="$best" 'BEGIN{print (a<b)?a:b}')
  done
  echo "$best"
}
printf '%-40s %s s\n' "kiln gzip -6 (single pass)" "$(best "$BIN" write "$DATA" gzip)"
printf '%-40s %s s\n' "tar -c | gzip -6 | sha256sum" "$(best bash -c "tar -C '$DATA' -cf - . | gzip -6 | sha256sum")"
printf '%-40s %s s\n' "kiln zstd -3 (multithreaded)" "$(best "$BIN" write "$DATA" zstd)"
if command -v pigz >/dev/null; then
  printf '%-40s %s s\n' "tar -c | pigz -6 | sha256sum" "$(best bash -c "tar -C '$DATA' -cf - . | pigz -6 | sha256sum")"
fi
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"

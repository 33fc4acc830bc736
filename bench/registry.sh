#!/usr/bin/env bash
# Pull of a 200 MB+ multi-layer image from the local registry: kiln pull into an
# empty store vs `skopeo copy docker://… oci:DIR`. Needs the local registry of
# scripts/setup-test-env (127.0.0.1:5000, or $KILN_TEST_REGISTRY) and a release build
# of kiln (cargo build --release -p kiln; $KILN overrides the binary).
set -euo pipefail
cd "$(dirname "$0")/.."
registry=${KILN_TEST_REGISTRY:-127.0.0.1:5000}
kiln=${KILN:-${CARGO_TARGET_DIR:-target}/release/kiln}
layers=${LAYERS:-5}
layer_mb=${LAYER_MB:-48}
runs=${RUNS:-3}
[ -x "$kiln" ] || { echo "no kiln binary at $kiln (cargo build --release -p kiln)" >&2; exit 1; }
curl -sf -o /dev/null "http://$registry/v2/" || { echo "no registry on $registry: run scripts/setup-test-env" >&2; exit 1; }

work=$(mktemp -d /var/tmp/kiln-bench-registry.XXXXXX)
trap 'rm -rf "$work"' EXIT
layout=$work/layout
mkdir -p "$layout/blobs/sha256"
echo '{"imageLayoutVersion":"1.0.0"}' > "$layout/oci-layout"

# Layers of incompressible data (gzip -1), so transfer size = image size.
layer_json=() diff_ids=()
for i in $(seq 1 "$layers"); do
  mkdir -p "$work/l$i"
  head -c $((layer_mb << 20)) /dev/urandom > "$work/l$i/data$i"
  tar -C "$work/l$i" -cf "$work/l$i.tar" .
  diff_ids+=("\"sha256:$(sha256sum < "$work/l$i.tar" | cut -d' ' -f1)\"")
  gzip -1 -c "$work/l$i.tar" > "$work/l$i.tgz"
  d=$(sha256sum < "$work/l$i.tgz" | cut -d' ' -f1)
  mv "$work/l$i.tgz" "$layout/blobs/sha256/$d"
  rm -rf "$work/l$i" "$work/l$i.tar"
  layer_json+=("{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"sha256:$d\",\"size\":$(stat -c %s "$layout/blobs/sha256/$d")}")
done
join() { local IFS=,; echo "$*"; }
config="{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[$(join "${diff_ids[@]}")]}}"
cd_=$(printf %s "$config" | sha256sum | cut -d' ' -f1)
printf %s "$config" > "$layout/blobs/sha256/$cd_"
manifest="{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"sha256:$cd_\",\"size\":${#config}},\"layers\":[$(join "${layer_json[@]}")]}"
md=$(printf %s "$manifest" | sha256sum | cut -d' ' -f1)
printf %s "$manifest" > "$layout/blobs/sha256/$md"
echo "{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"sha256:$md\",\"size\":${#manifest},\"annotations\":{\"org.opencontainers.image.ref.name\":\"big\"}}]}" > "$layout/index.json"

repo="$registry/kiln-bench/big-$$"
skopeo copy -q --dest-tls-verify=false "oci:$layout:big" "docker://$repo:1"
total=$(du -cb "$layout"/blobs/sha256/* | tail -1 | cut -f1)
echo "image: $layers layers, $((total >> 20)) MiB compressed, pushed to $repo:1"

now() { date +%s.%N; }
best_kiln= best_skopeo=
for r in $(seq 1 "$runs"); do
  rm -rf "$work/root" "$work/oci"
  t0=$(now); "$kiln" --root "$work/root" pull -q "$repo:1" > /dev/null; t1=$(now)
  k=$(printf %.3f "$(echo "$t1 - $t0" | bc)")
  t0=$(now); skopeo copy -q --src-tls-verify=false "docker://$repo:1" "oci:$work/oci:big"; t1=$(now)
  s=$(printf %.3f "$(echo "$t1 - $t0" | bc)")
  echo "run $r: kiln ${k}s  skopeo ${s}s"
  if [ -z "$best_kiln" ] || [ "$(echo "$k < $best_kiln" | bc)" = 1 ]; then best_kiln=$k; fi
  if [ -z "$best_skopeo" ] || [ "$(echo "$s < $best_skopeo" | bc)" = 1 ]; then best_skopeo=$s; fi
done
echo "best of $runs: kiln ${best_kiln}s, skopeo ${best_skopeo}s"
echo "ratio skopeo/kiln: $(echo "scale=2; $best_skopeo / $best_kiln" | bc) (above 1 means kiln is faster)"

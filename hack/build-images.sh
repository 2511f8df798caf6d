#!/usr/bin/env bash
# Builds the CPU variants of the project's images where no image registry can be reached:
# a Debian bookworm base made with debootstrap, imported into Docker, then the Dockerfiles.
#
#   hack/build-images.sh [trainer] [server] [operator]
#
# Needs a running Docker engine (on Debian: apt-get install docker.io debootstrap; dockerd &).
# Behind a TLS-intercepting proxy the host's CA bundle is handed to pip as a build secret (never
# stored in a layer).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
docker=${DOCKER:-/usr/bin/docker}
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/pyproject.toml")
base=twlegal/base:bookworm
ca=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}

if ! "$docker" image inspect "$base" >/dev/null 2>&1; then
  rootfs=$(mktemp -d)
  debootstrap --variant=minbase bookworm "$rootfs" >&2
  tar -C "$rootfs" -c . | "$docker" import - "$base" >/dev/null
  rm -rf "$rootfs"
fi
for image in "${@:-trainer}"; do
  dockerfile=$root/${image}_image/Dockerfile
  [ "$image" = operator ] && dockerfile=$root/operator/Dockerfile
  DOCKER_BUILDKIT=1 "$docker" build --secret "id=ca,src=$ca" -f "$dockerfile" \
    --build-arg "BASE_IMAGE=$base" --build-arg VARIANT=cpu -t "twlegal/$image:cpu-$version" "$root" >&2
  echo "twlegal/$image:cpu-$version"
done
# Earlier builds of these tags are dangling now; their layers would fill the disk over time.
"$docker" image prune -f >/dev/null
"$docker" builder prune -f --keep-storage "${BUILD_CACHE_KEEP:-20GB}" >/dev/null

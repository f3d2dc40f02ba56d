#!/usr/bin/env bash
# Builds the base image of deploy/Dockerfile without pulling anything from a registry:
# debootstrap --variant=minbase bookworm (Debian's packages: nats-server, ca-certificates, libstdc++6 and
# EXTRA_PACKAGES), plus this machine's Node 20 binary (Debian bookworm ships Node 18), imported with
# `docker import`. The rootfs tarball is cached (RA_MESH_BASE_CACHE) so a second build takes seconds.
# usage: deploy/base-image.sh [tag]      (default ra-mesh-base:bookworm; honours DOCKER_HOST)
# env:   DOCKER (docker CLI, default /usr/bin/docker), MIRROR (default http://deb.debian.org/debian),
#        EXTRA_PACKAGES (comma-separated, e.g. lego for an ACME client image), NODE_BIN (default: node on PATH)
set -euo pipefail
tag=${1:-ra-mesh-base:bookworm}
docker=${DOCKER:-/usr/bin/docker}
mirror=${MIRROR:-http://deb.debian.org/debian}
node_bin=$(readlink -f "${NODE_BIN:-$(command -v node)}")
packages="ca-certificates,nats-server,libstdc++6${EXTRA_PACKAGES:+,$EXTRA_PACKAGES}"
cache=${RA_MESH_BASE_CACHE:-/var/cache/ra-mesh}
[ "$(id -u)" = 0 ] || { echo "base-image.sh: debootstrap needs root" >&2; exit 1; }
"$node_bin" --version | grep -Eq '^v(2[0-9]|[3-9][0-9])\.' || { echo "base-image.sh: $node_bin is not Node >= 20" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "base-image.sh: apt-get install debootstrap" >&2; exit 1; }

key=$(printf '%s\n' "$packages" "$mirror" "$("$node_bin" --version)" | sha256sum | cut -c1-12)
tarball=$cache/base-bookworm-$key.tar
if [ ! -s "$tarball" ]; then
  mkdir -p "$cache"
  root=$(mktemp -d "${TMPDIR:-/tmp}/ra-mesh-rootfs.XXXXXX")
  trap 'rm -rf "$root"' EXIT
  echo "debootstrap bookworm ($packages) into $root"
  debootstrap --variant=minbase --include="$packages" bookworm "$root" "$mirror" >"$root.log" 2>&1 \
    || { tail -30 "$root.log" >&2; rm -f "$root.log"; exit 1; }
  rm -f "$root.log"
  install -m 0755 "$node_bin" "$root/usr/local/bin/node"
  chroot "$root" /usr/local/bin/node --version >/dev/null
  # Smaller image: no apt lists, caches, docs.
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* "$root"/usr/share/man/*
  tar -C "$root" --numeric-owner -cf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
fi
"$docker" import \
  -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  -c 'ENV LANG=C.UTF-8' \
  -m "ra-mesh base: debootstrap bookworm ($packages) + node $("$node_bin" --version)" \
  "$tarball" "$tag" >/dev/null
echo "built $tag from $tarball"

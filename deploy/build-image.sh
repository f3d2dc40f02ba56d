#!/usr/bin/env bash
# Builds the ra-mesh image (deploy/Dockerfile) from this checkout: stages a build context with production
# dependencies only (npm prune --omit=dev on a copy of node_modules, nothing is downloaded) and the
# compiled dist/ (tsc -p tsconfig.build.json), then runs docker build. Honours DOCKER_HOST.
# usage: deploy/build-image.sh [tag] [base]     (defaults ra-mesh:latest, ra-mesh-base:bookworm)
set -euo pipefail
cd "$(dirname "$0")/.."
tag=${1:-ra-mesh:latest}
base=${2:-ra-mesh-base:bookworm}
docker=${DOCKER:-/usr/bin/docker}
[ -d node_modules ] || { echo "build-image.sh: run npm ci first" >&2; exit 1; }
stage=$(mktemp -d "${TMPDIR:-/tmp}/ra-mesh-image.XXXXXX")
trap 'rm -rf "$stage"' EXIT
cp -a package.json package-lock.json tsconfig.json tsconfig.build.json bin "$stage"/
mkdir -p "$stage/deploy"
cp -a deploy/Dockerfile deploy/docker-entrypoint.sh deploy/healthcheck.mjs "$stage/deploy/"
npx tsc -p tsconfig.build.json --outDir "$stage/dist" --sourceMap false
cp -a node_modules "$stage/"
(cd "$stage" && npm prune --omit=dev --no-audit --no-fund --loglevel=error >/dev/null)
"$docker" build -q -f "$stage/deploy/Dockerfile" --build-arg "BASE=$base" -t "$tag" "$stage" >/dev/null
echo "built $tag (base $base)"

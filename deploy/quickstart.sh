#!/usr/bin/env bash
# Brings up the example mesh (deploy/topology.example.yaml: builtin CA, local nats-servers) and issues a
# certificate with lego through edge-iot-a -> relay-west -> gw-root, then verifies it against the mesh root.
# Installs what it needs on a fresh Debian machine with Node 20. Pass --keep to leave the mesh running.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v nats-server >/dev/null 2>&1 || need+=(nats-server)
command -v lego >/dev/null 2>&1 || need+=(lego)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v curl >/dev/null 2>&1 || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${need[@]}"
fi
[ -d node_modules ] || npm ci --no-audit --no-fund --loglevel=error

state=.ra-mesh/example
mkdir -p "$state"
log="$state/up.log"
node bin/ra-mesh.js up deploy/topology.example.yaml >"$log" 2>&1 &
mesh=$!
cleanup() { if [ "${KEEP:-0}" != 1 ]; then kill -INT "$mesh" 2>/dev/null || true; wait "$mesh" 2>/dev/null || true; fi; }
trap cleanup EXIT
[ "${1:-}" = --keep ] && KEEP=1

for _ in $(seq 1 150); do
  grep -q "is up" "$log" && break
  kill -0 "$mesh" 2>/dev/null || { cat "$log"; echo "ra-mesh up failed" >&2; exit 1; }
  sleep 0.2
done
grep -q "is up" "$log" || { cat "$log"; echo "mesh did not come up in 30 s" >&2; exit 1; }
grep -A20 "is up" "$log" | grep -v '^{' || true

name=sensor-17.iot-a.corp.example
rm -rf "$state/lego"
LEGO_CA_CERTIFICATES="$state/nodes/edge-iot-a/tls-cert.pem" lego \
  --server https://127.0.0.1:8443/acme/directory --email ops@corp.example --accept-tos \
  --path "$state/lego" --domains "$name" --http --http.port 127.0.0.1:5002 run

curl -fsS http://127.0.0.1:8080/roots.pem >"$state/roots.pem"
crt="$state/lego/certificates/$name.crt"
awk 'BEGIN{n=0} /BEGIN CERT/{n++} n==1' "$crt" >"$state/leaf.pem"
awk 'BEGIN{n=0} /BEGIN CERT/{n++} n>=2' "$crt" >"$state/chain.pem"
openssl verify -CAfile "$state/roots.pem" -untrusted "$state/chain.pem" "$state/leaf.pem"
openssl x509 -in "$state/leaf.pem" -noout -subject -issuer -dates -ext subjectAltName
echo "certificate for $name issued through edge-iot-a -> relay-west -> gw-root: $crt"

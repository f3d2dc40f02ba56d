#!/usr/bin/env bash
# npm run test:compose — the real docker-compose deployment, end to end (not part of the default test run:
# it builds images and takes minutes). As root, on this machine only:
#   1. a network namespace of its own with a Docker engine inside it (dockerd via nsenter: bridges, NAT and
#      iptables rules exist only in that namespace; the host's sysctls and iptables are never touched);
#   2. a base image from debootstrap (no image can be pulled) and the ra-mesh image (deploy/Dockerfile);
#   3. the committed docker-compose.yml (checked in step with deploy/topology.example.yaml), its secrets,
#      `docker-compose up`, every service healthy;
#   4. lego in a container on the isolated IoT network gets a certificate for sensor-17.iot-a.corp.example
#      from edge-iot-a (http-01, validated inside the segment), checked with openssl against the mesh root;
#   5. from that network neither the gateway nor the relay can be reached.
# Everything is removed at the end (also on failure): containers, volumes, the engine, the namespace.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$(pwd)
t0=$(date +%s)
say() { printf '[%4ss] %s\n' "$(( $(date +%s) - t0 ))" "$*"; }

[ "$(id -u)" = 0 ] || { echo "test:compose: must run as root (network namespace, dockerd, debootstrap)" >&2; exit 1; }
need=()
for t in dockerd:docker.io containerd:containerd runc:runc docker-compose:docker-compose debootstrap:debootstrap iptables:iptables openssl:openssl; do
  command -v "${t%%:*}" >/dev/null 2>&1 || need+=("${t#*:}")
done
[ -x /usr/bin/docker ] || need+=(docker.io)
if [ ${#need[@]} -gt 0 ]; then
  say "installing from apt: ${need[*]}"
  apt-get update -q >/dev/null
  # policy-rc.d (when present) keeps the package from starting a dockerd in the host's namespace.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
fi
[ -d node_modules ] || npm ci --no-audit --no-fund --loglevel=error

id=$$
ns=ramesh-dk-$id
work=$(mktemp -d /tmp/rmdk.XXXXXX)   # short: dockerd's sockets live below it
export DOCKER_HOST=unix://$work/docker.sock
export DOCKER=/usr/bin/docker       # another docker CLI may come first on PATH
project=ramesh$id
compose() { docker-compose -p "$project" -f "$repo/docker-compose.yml" "$@"; }
dockerd_pid=

cleanup() {
  status=$?
  set +e
  if [ -n "$dockerd_pid" ] && kill -0 "$dockerd_pid" 2>/dev/null; then
    if [ $status -ne 0 ]; then
      say "failed: service states and logs follow"
      compose ps
      compose logs --no-color --tail=40
    fi
    compose down -v --remove-orphans -t 5 >/dev/null 2>&1
    kill -TERM "$dockerd_pid"
    for _ in $(seq 1 40); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$dockerd_pid" 2>/dev/null && kill -KILL "$dockerd_pid"
  fi
  # Whatever dockerd left mounted below its folders (overlay layers, netns files).
  grep -o " $work[^ ]*" /proc/self/mounts | sort -r | while read -r m; do umount -l "$m"; done
  ip netns del "$ns" 2>/dev/null
  rm -rf "$work"
  say "cleaned up (exit $status)"
  exit $status
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "network namespace $ns, dockerd inside it"
ip netns add "$ns"
ip netns exec "$ns" ip link set lo up
# Addresses below exist only inside the namespace.
nsenter --net=/run/netns/"$ns" dockerd \
  --data-root "$work/data" --exec-root "$work/exec" --pidfile "$work/docker.pid" \
  -H "$DOCKER_HOST" --storage-driver=overlay2 \
  --bip 10.231.0.1/24 --default-address-pool base=10.232.0.0/16,size=24 \
  >"$work/dockerd.log" 2>&1 &
dockerd_pid=$!
for i in $(seq 1 120); do
  $DOCKER info >/dev/null 2>&1 && break
  kill -0 "$dockerd_pid" 2>/dev/null || { tail -30 "$work/dockerd.log" >&2; echo "dockerd exited" >&2; exit 1; }
  [ "$i" = 120 ] && { tail -30 "$work/dockerd.log" >&2; echo "dockerd not ready after 60 s" >&2; exit 1; }
  sleep 0.5
done
say "dockerd $($DOCKER version --format '{{.Server.Version}}') is up"

say "base image (debootstrap bookworm + node $(node --version) + nats-server + lego)"
EXTRA_PACKAGES=lego bash deploy/base-image.sh ra-mesh-base:bookworm
say "ra-mesh image"
bash deploy/build-image.sh ra-mesh:latest ra-mesh-base:bookworm

say "compose file in step with the topology; secrets"
node bin/ra-mesh.js compose deploy/topology.example.yaml --out docker-compose.yml --check
node bin/ra-mesh.js compose deploy/topology.example.yaml --out docker-compose.yml --secrets >/dev/null
compose config -q

say "docker-compose up"
t_up=$(date +%s)
compose up -d --no-build >"$work/up.log" 2>&1 || { cat "$work/up.log" >&2; exit 1; }
services=$(compose config --services)
for i in $(seq 1 180); do
  bad=""
  for s in $services; do
    c=$(compose ps -q "$s")
    h=$($DOCKER inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' "$c" 2>/dev/null || echo missing)
    [ "$h" = healthy ] || bad="$bad $s=$h"
  done
  [ -z "$bad" ] && break
  [ "$i" = 180 ] && { echo "not healthy after 180 s:$bad" >&2; exit 1; }
  sleep 1
done
say "every service healthy ($(( $(date +%s) - t_up )) s after up): $(echo $services)"

net=${project}_seg-iot-a
mkdir -p "$work/client"
compose exec -T edge-iot-a cat /var/lib/ra-mesh/nodes/edge-iot-a/tls-cert.pem >"$work/client/edge-ca.pem"
client() { $DOCKER run --rm --network "$net" -v "$work/client:/work" "$@"; }

say "segmentation: from the IoT network, the gateway and the relay are out of reach"
gw_ip=$($DOCKER inspect -f "{{(index .NetworkSettings.Networks \"${project}_core\").IPAddress}}" "$(compose ps -q gw-root)")
relay_ip=$($DOCKER inspect -f "{{(index .NetworkSettings.Networks \"${project}_dc-west\").IPAddress}}" "$(compose ps -q relay-west)")
probe='const [h,p]=process.argv.slice(1);const s=require("net").connect({host:h,port:+p,timeout:3000});s.on("connect",()=>{console.log("open");process.exit(0)});s.on("timeout",()=>{console.log("timeout");process.exit(3)});s.on("error",e=>{console.log(e.code);process.exit(3)})'
for target in "gw-root $gw_ip 8080" "relay-west $relay_ip 9464"; do
  set -- $target
  if client --entrypoint node ra-mesh:latest -e "$probe" "$2" "$3" >"$work/probe" 2>&1; then
    echo "FAIL: $1 ($2:$3) is reachable from the IoT segment" >&2; exit 1
  fi
  say "  $1 at $2:$3 from seg-iot-a: $(tr -d '\n' <"$work/probe")"
done
# The leaf NATS of the segment is reachable (the edge's one way out).
client --entrypoint node ra-mesh:latest -e "$probe" nats-dc-west 4222 >/dev/null || { echo "FAIL: nats-dc-west not reachable from seg-iot-a" >&2; exit 1; }
say "  nats-dc-west:4222 from seg-iot-a: open"

say "lego on the IoT network: certificate for sensor-17.iot-a.corp.example from edge-iot-a"
t_cert=$(date +%s)
client --network-alias sensor-17.iot-a.corp.example -e LEGO_CA_CERTIFICATES=/work/edge-ca.pem \
  --entrypoint lego ra-mesh:latest \
  --server https://edge-iot-a:8443/acme/directory --email ops@corp.example --accept-tos --path /work/lego \
  --domains sensor-17.iot-a.corp.example --http --http.port :5002 run >"$work/lego.log" 2>&1 \
  || { cat "$work/lego.log" >&2; exit 1; }
cert_s=$(( $(date +%s) - t_cert ))
crt=$work/client/lego/certificates/sensor-17.iot-a.corp.example.crt
ip netns exec "$ns" node -e 'fetch("http://127.0.0.1:8080/roots.pem").then(r=>r.text()).then(t=>process.stdout.write(t))' >"$work/root.pem"
awk 'BEGIN{n=0} /BEGIN CERT/{n++} {print > (n==1 ? "'"$work"'/leaf.pem" : "'"$work"'/chain.pem")}' "$crt"
openssl verify -CAfile "$work/root.pem" -untrusted "$work/chain.pem" "$work/leaf.pem"
openssl x509 -in "$work/leaf.pem" -noout -subject -issuer -ext subjectAltName
say "certificate issued in ${cert_s} s (lego run), $(( $(date +%s) - t0 )) s in all"
echo "1 passed, 0 failed"

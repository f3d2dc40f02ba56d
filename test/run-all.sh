#!/usr/bin/env bash
# The project's test command (README): installs what it needs on a fresh Debian machine with Node 20
# (nats-server, lego, certbot, openssl, Go and step-ca's source from apt when missing; npm dependencies),
# type-checks, and runs unit, integration (real nats-server, step-ca) and e2e (real ACME clients) tests
# with node's test runner.
set -euo pipefail
cd "$(dirname "$0")/.."

# Each tool the tests run, as "command:Debian package"; missing ones are installed from apt.
tools=(
  nats-server:nats-server lego:lego certbot:certbot openssl:openssl
  pebble-challtestsrv:pebble caddy:caddy dehydrated:dehydrated uacme:uacme unshare:util-linux
  go:golang-go chromium:chromium script:bsdutils scepclient:scep
  docker-compose:docker-compose ip:iproute2
)
need=()
for t in "${tools[@]}"; do command -v "${t%%:*}" >/dev/null 2>&1 || need+=("${t#*:}"); done
# python3-acme is a library (python3-acme revocation and key-rollover tests run Debian's /usr/bin/python3).
/usr/bin/python3 -c 'import acme' >/dev/null 2>&1 || need+=(python3-acme)
# smallstep's step-ca is Go source (test/harness/step-ca.ts builds it offline once and caches the binary).
[ -d /usr/share/gocode/src/github.com/smallstep/certificates/commands ] || need+=(golang-github-smallstep-certificates-dev)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing from apt: ${need[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${need[@]}"
fi

npm ci --no-audit --no-fund --loglevel=error
npm run --silent typecheck

export RA_MESH_LOG_LEVEL="${RA_MESH_LOG_LEVEL:-error}"
suites=("$@")
[ ${#suites[@]} -gt 0 ] || suites=(unit integration e2e)
files=()
for s in "${suites[@]}"; do files+=(test/"$s"/*.test.ts); done
mkdir -p test-artifacts
set +e
node --import tsx --test --test-concurrency=1 \
  --test-reporter=spec --test-reporter-destination=stdout \
  --test-reporter=tap --test-reporter-destination=test-artifacts/results.tap \
  "${files[@]}"
status=$?
set -e
pass=$(sed -n 's/^# pass \([0-9]*\)$/\1/p' test-artifacts/results.tap | tail -1)
fail=$(sed -n 's/^# fail \([0-9]*\)$/\1/p' test-artifacts/results.tap | tail -1)
echo "tests: ${pass:-0} passed, ${fail:-0} failed"
exit $status

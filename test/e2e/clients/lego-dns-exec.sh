#!/bin/sh
# lego `--dns exec` hook (EXEC_MODE default): publishes the dns-01 TXT record in pebble-challtestsrv,
# the segment's DNS server in the e2e test, through its management API.
#   $1 = present | cleanup, $2 = FQDN ("_acme-challenge.<domain>."), $3 = record value
# CHALLTESTSRV = base URL of challtestsrv's management interface.
set -eu
: "${CHALLTESTSRV:?set CHALLTESTSRV to pebble-challtestsrv's management URL}"
case "$1" in
  present) curl -fsS --max-time 10 -d "{\"host\":\"$2\",\"value\":\"$3\"}" "$CHALLTESTSRV/set-txt" ;;
  cleanup) curl -fsS --max-time 10 -d "{\"host\":\"$2\"}" "$CHALLTESTSRV/clear-txt" ;;
  *) echo "lego-dns-exec.sh: unknown action $1" >&2; exit 2 ;;
esac

#!/bin/sh
# ra-mesh container entrypoint (deploy/Dockerfile). One process per container:
#   node <id>    one node of the mesh: ra-mesh up /etc/ra-mesh/topology.yaml --only <id> --no-nats
#   nats <name>  a nats-server with the config ra-mesh compose --secrets wrote (hub or a data center's leaf)
#   anything else is run as given (e.g. lego for a client container)
# Secrets (compose): /run/secrets/<id>.key.jwk (the node's private key; the read-only keysDir
# /etc/ra-mesh/keys links to it next to every node's public keys), /run/secrets/<id>.nk (its NATS nkey),
# /run/secrets/nats.conf (a nats-server's config).
set -eu
topology=${RA_MESH_TOPOLOGY:-/etc/ra-mesh/topology.yaml}
secrets=/run/secrets
creds=/run/ra-mesh/nats

case "${1:-}" in
  node)
    id=${2:?usage: node <id>}
    for f in "$secrets/$id.key.jwk" "$secrets/$id.nk"; do
      if [ ! -r "$f" ]; then
        echo "ra-mesh: $f is missing: write the secrets with 'ra-mesh compose <topology.yaml> --secrets'" >&2
        exit 1
      fi
    done
    # The topology's credentialsDir is writable (tmpfs): the node's own nkey is linked in from its secret.
    mkdir -p "$creds"
    chmod 700 "$creds"
    ln -sf "$secrets/$id.nk" "$creds/$id.nk"
    exec node /opt/ra-mesh/bin/ra-mesh.js up "$topology" --only "$id" --no-nats
    ;;
  nats)
    name=${2:?usage: nats <hub|dc>}
    conf=$secrets/nats.conf
    if [ ! -r "$conf" ]; then
      echo "ra-mesh: $conf is missing: write the secrets with 'ra-mesh compose <topology.yaml> --secrets'" >&2
      exit 1
    fi
    echo "ra-mesh: nats-server \"$name\" with $conf" >&2
    exec nats-server -c "$conf"
    ;;
  "")
    echo "usage: node <id> | nats <hub|dc> | <command...>" >&2
    exit 2
    ;;
  *)
    exec "$@"
    ;;
esac

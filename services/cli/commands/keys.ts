import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { calculateJwkThumbprint, type JWK } from 'jose';
import { loadTopology } from '../../../shared/config/index.js';
import { ensureBusCredentials } from '../../../shared/bus/auth.js';
import {
  nodeKeyAlg,
  KEY_STAGES,
  isEnvelopeAlg,
  loadOrCreateNodeKey,
  rotatePromote,
  rotateRetire,
  rotateStart,
  stagedPublicKeyFile,
} from '../../../shared/envelope/index.js';

const USAGE = `usage:
  ra-mesh keys init <topology.yaml> [--node <id>]... [--alg ES256|EdDSA]
                    create missing node signing keys (ES256 unless --alg or envelope.algs says otherwise) (and NATS credentials); print their thumbprints
  ra-mesh keys list <topology.yaml>            every node's accepted keys (current, next, prev)
  ra-mesh keys rotate <topology.yaml> --node <id> [--alg ES256|EdDSA]
                    make the node's next key (of its current key's alg unless --alg): from now on its current and next keys are accepted
  ra-mesh keys promote <topology.yaml> --node <id>
                    the next key becomes current (restart the node); the old one stays accepted as prev
  ra-mesh keys retire <topology.yaml> --node <id>
                    stop accepting the node's previous key
`;

export async function keysCommand(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  const { positionals, values } = parseArgs({
    args: rest,
    allowPositionals: true,
    options: { node: { type: 'string', multiple: true }, alg: { type: 'string' } },
  });
  if (!sub || positionals.length !== 1) {
    process.stderr.write(USAGE);
    return 2;
  }
  const topology = loadTopology(positionals[0]!);
  const dir = topology.keysDir();
  const alg = values.alg ?? nodeKeyAlg(topology);
  if (!isEnvelopeAlg(alg)) {
    process.stderr.write(`ra-mesh keys: --alg must be EdDSA or ES256\n`);
    return 2;
  }
  const nodes = values.node ?? [];
  for (const n of nodes) topology.node(n); // unknown ids fail here, naming the id
  const one = (): string | undefined => {
    if (nodes.length === 1) return nodes[0];
    process.stderr.write(`ra-mesh keys ${sub}: name exactly one --node\n`);
    return undefined;
  };
  switch (sub) {
    case 'init': {
      const ids = nodes.length ? nodes : topology.nodes.map((n) => n.id);
      for (const id of ids) {
        // Without --alg an existing key keeps its alg and a new one gets the topology's (nodeKeyAlg).
        const key = await loadOrCreateNodeKey(dir, id, values.alg ? alg : undefined, alg);
        process.stdout.write(`${id}  ${key.alg}  ${await calculateJwkThumbprint(key.publicJwk)}\n`);
      }
      await ensureBusCredentials(topology);
      process.stdout.write(`keys in ${dir}; give each node its own <id>.key.jwk and every node all *.pub.jwk\n`);
      return 0;
    }
    case 'list': {
      for (const n of topology.nodes) {
        for (const stage of KEY_STAGES) {
          const file = stagedPublicKeyFile(dir, n.id, stage);
          const text = await readFile(file, 'utf8').catch(() => undefined);
          if (!text) continue;
          const jwk = JSON.parse(text) as JWK;
          const tp = await calculateJwkThumbprint(jwk);
          const pinned = n.publicKeys ? (n.publicKeys.includes(tp) ? ' pinned' : ' NOT PINNED') : '';
          process.stdout.write(`${n.id}  ${stage}  ${jwk.alg}  ${tp}${pinned}\n`);
        }
      }
      return 0;
    }
    case 'rotate': {
      const id = one();
      if (!id) return 2;
      const tp = await rotateStart(dir, id, values.alg ? alg : undefined);
      process.stdout.write(`${id}: next key ${tp}; distribute ${stagedPublicKeyFile(dir, id, 'next')} to every node (and pin it), then promote\n`);
      return 0;
    }
    case 'promote': {
      const id = one();
      if (!id) return 2;
      const tp = await rotatePromote(dir, id);
      process.stdout.write(`${id}: current key is now ${tp}; restart ${id}, then retire the previous key\n`);
      return 0;
    }
    case 'retire': {
      const id = one();
      if (!id) return 2;
      await rotateRetire(dir, id);
      process.stdout.write(`${id}: previous key no longer accepted\n`);
      return 0;
    }
    default:
      process.stderr.write(USAGE);
      return 2;
  }
}

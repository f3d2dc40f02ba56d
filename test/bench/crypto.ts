// Benchmark 0 (in-process, a few seconds): what one hop's signatures cost on this machine.
// - EdDSA (Ed25519) against ES256 (P-256): one sign, one verify, and verifying a whole nested
//   envelope of 1, 4 and 8 relay layers as the gateway does (signatures, shapes, topology path);
// - the JWS implementation: jose's Web Crypto calls (async, each one a hop to the libuv thread pool
//   and back: what shared/envelope/jws.ts used before) against node:crypto's one-shot sign/verify
//   (synchronous: what it uses now), timed one after the other with the same keys and payload.
// - a relay's own path per request in bundles of 1, 4, 12 and 64 (verifyMessage and its policy layer, as
//   relay-service.ts runs them), verified at r5 on r6's bundle of r7's bundle of r8's bundle of edge
//   envelopes: the nesting d4-r1 sees in the mesh under load. Its floor is what a relay cannot go below
//   per request while every node checks every request's edge signature (DESIGN.md).
// Timings are wall time per operation, one at a time, and CPU time of this process per operation.

import { sign, verify } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { compactVerify, CompactSign } from 'jose';
import { stringify } from 'yaml';
import { parseTopology } from '../../shared/config/index.js';
import {
  bundleEnvelopes,
  KeyRing,
  generateNodeKeyPair,
  newEdgePayload,
  ReplayGuard,
  signEdgeEnvelope,
  verifyEnvelope,
  verifyMessage,
  wrapEnvelope,
  type EnvelopeAlg,
  type NodeKey,
} from '../../shared/envelope/index.js';
import { enforceValidationMethods } from '../../shared/envelope/validation-methods.js';
import { enforceHop, PolicyLayer } from '../../shared/policy/index.js';
import { loadOrCreateNodeKey } from '../../shared/envelope/index.js';
import { makeCsr } from '../harness/acme-client.js';
import { round, table } from './lib/stats.js';

async function timeOp(n: number, f: () => unknown): Promise<{ wallUs: number; cpuUs: number }> {
  for (let i = 0; i < Math.min(50, n); i++) await f();
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  for (let i = 0; i < n; i++) await f();
  const wall = performance.now() - t0;
  const c = process.cpuUsage(c0);
  return { wallUs: round((wall * 1000) / n, 1), cpuUs: round((c.user + c.system) / n, 1) };
}

/** A chain gw <- r1 <- ... <- r8 <- e whose every node signs with `alg`. */
async function chain(dir: string, alg: EnvelopeAlg) {
  const nodes: Array<Record<string, unknown>> = [{ id: 'gw', role: 'gateway', dc: 'core' }];
  for (let k = 1; k <= 8; k++) nodes.push({ id: `r${k}`, role: 'relay', dc: 'a', parent: k === 1 ? 'gw' : `r${k - 1}` });
  nodes.push({ id: 'e', role: 'edge', dc: 'a', parent: 'r8' });
  const yaml = stringify({ mesh: 'bench', stateDir: join(dir, 'state'), nats: { hub: 'nats://127.0.0.1:4222', leafnodeListen: '127.0.0.1:7422', dcs: { a: 'nats://127.0.0.1:4223' }, auth: 'none' }, nodes });
  const topology = parseTopology(yaml, join(dir, 'topology.yaml'), dir);
  const keys: Record<string, NodeKey> = {};
  for (const n of nodes) {
    const id = n.id as string;
    // Written with the wanted alg first, then loaded like a node loads its key.
    const { privateJwk, publicJwk } = await generateNodeKeyPair(id, alg);
    const { writeFile, mkdir } = await import('node:fs/promises');
    await mkdir(topology.keysDir(), { recursive: true, mode: 0o700 });
    await writeFile(join(topology.keysDir(), `${id}.key.jwk`), JSON.stringify(privateJwk), { mode: 0o600 });
    await writeFile(join(topology.keysDir(), `${id}.pub.jwk`), JSON.stringify(publicJwk));
    keys[id] = await loadOrCreateNodeKey(topology.keysDir(), id, alg);
  }
  const ring = await KeyRing.fromDir(topology.keysDir(), nodes.map((n) => n.id as string));
  return { topology, keys, ring };
}

const BUNDLE_SIZES = [1, 4, 12, 64];

export async function cryptoBench(o: { ops: number }) {
  const started = Date.now();
  const dir = await mkdtemp(join(tmpdir(), 'ra-mesh-bench-crypto-'));
  const csr = await makeCsr(['x.bench.test']);
  const rows: Array<Record<string, unknown>> = [];
  const pathRows: Array<{ alg: string; perBundle: number; perRequestUs: { wallUs: number; cpuUs: number }; messageBytes: number }> = [];
  try {
    for (const alg of ['EdDSA', 'ES256'] as const) {
      const { topology, keys, ring } = await chain(join(dir, alg), alg);
      const payload = () =>
        newEdgePayload({
          origin: { node: 'e', dc: 'a' },
          csr,
          identifiers: [{ type: 'dns', value: 'x.bench.test', validation: { method: 'http-01', at: new Date().toISOString() } }],
          account: { id: 'acct', eab: null, jwkThumbprint: 'tp' },
          requested: { notBefore: null, notAfter: null },
          renewalOf: null,
          ttlMs: 300_000,
        });
      const edgeJws = await signEdgeEnvelope(payload(), keys.e!);
      const layers: string[] = [edgeJws];
      for (let k = 8; k >= 1; k--) {
        layers.push(await wrapEnvelope(layers[layers.length - 1]!, { node: `r${k}`, recvAt: Date.now(), policy: 'p', decision: 'allow' }, keys[`r${k}`]!, { ttlMs: 300_000 }));
      }
      // Raw signature primitives with node:crypto and with jose (Web Crypto), same key and input.
      const { KeyObject } = await import('node:crypto');
      const priv = KeyObject.from(keys.e!.privateKey as never);
      const pub = await ring.candidates('e', alg).then((k) => KeyObject.from(k[0] as never));
      const input = Buffer.from(edgeJws.slice(0, edgeJws.lastIndexOf('.')));
      const nodeOpts = alg === 'EdDSA' ? null : 'sha256';
      const sigOpts = (k: typeof priv) => (alg === 'EdDSA' ? k : { key: k, dsaEncoding: 'ieee-p1363' as const });
      const sig = sign(nodeOpts, input, sigOpts(priv));
      const pubCrypto = (await ring.candidates('e', alg))[0]!;
      const r = {
        alg,
        nodeSignUs: await timeOp(o.ops, () => sign(nodeOpts, input, sigOpts(priv))),
        nodeVerifyUs: await timeOp(o.ops, () => verify(nodeOpts, input, sigOpts(pub), sig)),
        joseSignUs: await timeOp(o.ops, () => new CompactSign(input).setProtectedHeader({ alg }).sign(keys.e!.privateKey)),
        joseVerifyUs: await timeOp(o.ops, () => compactVerify(edgeJws, pubCrypto)),
        signEdgeEnvelopeUs: await timeOp(o.ops, () => signEdgeEnvelope(payload(), keys.e!)),
        wrapUs: await timeOp(o.ops, () => wrapEnvelope(edgeJws, { node: 'r8', recvAt: Date.now(), policy: 'p', decision: 'allow' }, keys.r8!, { ttlMs: 300_000 })),
        verify1LayerUs: await timeOp(o.ops, () => verifyEnvelope(edgeJws, { topology, verifier: 'r8', keys: ring })),
        verify4LayersUs: await timeOp(Math.ceil(o.ops / 2), () => verifyEnvelope(layers[4]!, { topology, verifier: 'r4', keys: ring })),
        verify9LayersUs: await timeOp(Math.ceil(o.ops / 4), () => verifyEnvelope(layers[8]!, { topology, verifier: 'gw', keys: ring })),
        envelopeBytes: { edge: edgeJws.length, depth4: layers[4]!.length, depth8: layers[8]!.length },
      };
      rows.push(r);
      // A relay's path per request, by bundle size.
      const hop = (node: string) => ({ node, recvAt: Date.now(), policy: 'p', decision: 'allow' as const });
      const bundleOf = async (n: number) => {
        const edges = await Promise.all(Array.from({ length: n }, () => signEdgeEnvelope(payload(), keys.e!)));
        const r8 = await bundleEnvelopes(edges, hop('r8'), keys.r8!, { ttlMs: 300_000 });
        const r7 = await bundleEnvelopes([r8], hop('r7'), keys.r7!, { ttlMs: 300_000 });
        return bundleEnvelopes([r7], hop('r6'), keys.r6!, { ttlMs: 300_000 });
      };
      const layer = new PolicyLayer('r5', topology.node('r5').policy);
      const replay = new ReplayGuard({ ttlMs: 600_000, max: 1_000_000 });
      for (const per of BUNDLE_SIZES) {
        const n = Math.max(10, Math.ceil(o.ops / per));
        const msgs: string[] = [];
        for (let i = 0; i < n + Math.min(50, n); i++) msgs.push(await bundleOf(per));
        let next = 0;
        const t = await timeOp(n, async () => {
          const m = await verifyMessage(msgs[next++]!, { topology, verifier: 'r5', keys: ring, replay });
          if (m.envelopes.length !== per) throw new Error(`bench: ${m.envelopes.length} of ${per} requests verified`);
          for (const env of m.envelopes) {
            if (env.payload.kind !== 'issue') continue;
            await enforceHop(layer, env.payload);
            enforceValidationMethods(topology, env.payload);
          }
        });
        pathRows.push({ alg, perBundle: per, perRequestUs: { wallUs: round(t.wallUs / per, 1), cpuUs: round(t.cpuUs / per, 1) }, messageBytes: msgs[0]!.length });
      }
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  const f = (x: { wallUs: number; cpuUs: number }) => `${x.wallUs} / ${x.cpuUs}`;
  const text = table(
    '0. Signatures per hop (us per operation, wall / cpu; jose = Web Crypto, the envelope code before; node = node:crypto one-shot, now)',
    ['alg', 'node sign', 'node verify', 'jose sign', 'jose verify', 'edge envelope sign', 'relay wrap', 'verify 1 layer', 'verify 4+1', 'verify 8+1'],
    rows.map((r: any) => [r.alg, f(r.nodeSignUs), f(r.nodeVerifyUs), f(r.joseSignUs), f(r.joseVerifyUs), f(r.signEdgeEnvelopeUs), f(r.wrapUs), f(r.verify1LayerUs), f(r.verify4LayersUs), f(r.verify9LayersUs)]),
  );
  const pathText = table(
    "0a. A relay's path per request (verify + policy, us per request, wall / cpu) in a bundle, three bundle layers below (as d4-r1 under load)",
    ['alg', ...BUNDLE_SIZES.map((n) => `bundle of ${n}`), 'message bytes (bundle of 64)'],
    [...new Set(pathRows.map((r) => r.alg))].map((alg) => {
      const of = pathRows.filter((r) => r.alg === alg);
      return [alg, ...BUNDLE_SIZES.map((n) => f(of.find((r) => r.perBundle === n)!.perRequestUs)), of.find((r) => r.perBundle === 64)!.messageBytes];
    }),
  );
  return {
    name: 'crypto',
    result: { what: 'microseconds per operation, one at a time, in this process', rows, relayPath: pathRows, ms: Date.now() - started },
    text: `${text}\n${pathText}`,
  };
}

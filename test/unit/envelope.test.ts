import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { KeyObject, sign as cryptoSign } from 'node:crypto';
import { CompactSign, decodeProtectedHeader, type JWK } from 'jose';
import { parseTopology, type Topology } from '../../shared/config/index.js';
import { RaError } from '../../shared/errors/index.js';
import {
  contentDigest,
  ENVELOPE_TYP,
  KeyRing,
  RESULT_TYP,
  ReplayGuard,
  generateNodeKey,
  newEdgePayload,
  signEdgeEnvelope,
  signResult,
  verifyEnvelope,
  verifyResult,
  wrapEnvelope,
  type EdgePayload,
  type NodeKey,
  type ResultPayload,
  type VerifiedEnvelope,
  type VerifyOptions,
} from '../../shared/envelope/index.js';

// Mesh under test:
//   gw <- relay-2 <- relay-1 <- edge-a, edge-b (ES256)
//   gw <- relay-x (a relay on another branch)
//   gw <- edge-gw (an edge directly under the gateway)
// relay-2 signs with ES256, everyone else with EdDSA unless noted.
const YAML = `mesh: t
nodes:
  - {id: gw, role: gateway, dc: core}
  - {id: relay-2, role: relay, dc: dc-b, parent: gw}
  - {id: relay-1, role: relay, dc: dc-a, parent: relay-2}
  - {id: relay-x, role: relay, dc: dc-x, parent: gw}
  - {id: edge-a, role: edge, dc: dc-a, segment: seg-a, parent: relay-1, acme: {listen: "127.0.0.1:9001"}}
  - {id: edge-b, role: edge, dc: dc-a, parent: relay-1, acme: {listen: "127.0.0.1:9002"}}
  - {id: edge-gw, role: edge, dc: core, parent: gw, acme: {listen: "127.0.0.1:9003"}}
`;
const ES256_NODES = new Set(['relay-2', 'edge-b']);
const TTL = 5 * 60_000;
const NOW = Date.UTC(2030, 0, 1);

let topology: Topology;
let ring: KeyRing;
const k: Record<string, NodeKey> = {};
/** A key the mesh does not know, for forgeries. */
let mallory: NodeKey;

before(async () => {
  topology = parseTopology(YAML);
  for (const n of topology.nodes) k[n.id] = await generateNodeKey(n.id, ES256_NODES.has(n.id) ? 'ES256' : 'EdDSA');
  mallory = await generateNodeKey('mallory', 'EdDSA'); // the alg of edge-gw, so only the key differs
  ring = new KeyRing(Object.values(k).map((key): [string, JWK] => [key.kid, key.publicJwk]));
});

// ---------------------------------------------------------------- helpers

const b64 = (v: unknown) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');

function payloadFor(edge: string, over: Partial<EdgePayload> & { now?: number; ttlMs?: number } = {}): EdgePayload {
  const node = topology.node(edge);
  const { now, ttlMs, ...rest } = over;
  const p = newEdgePayload({
    origin: { node: edge, dc: node.dc, ...(node.segment ? { segment: node.segment } : {}) },
    csr: Buffer.from('a CSR would be here').toString('base64url'),
    identifiers: [{ type: 'dns', value: 'app.corp.test', validation: { method: 'http-01', at: new Date(NOW).toISOString(), from: '10.0.0.7:80' } }],
    account: { id: 'acct-1', eab: null, jwkThumbprint: 'thumbprint' },
    requested: { notBefore: null, notAfter: null },
    renewalOf: null,
    ttlMs: ttlMs ?? TTL,
    now: now ?? NOW,
  });
  return { ...p, ...rest };
}

async function edgeJws(edge: string, over: Parameters<typeof payloadFor>[1] = {}): Promise<string> {
  return signEdgeEnvelope(payloadFor(edge, over), k[edge]!);
}

/** Wraps `inner` by each relay in turn; relay i receives at NOW + 10*(2i+1) ms and sends at NOW + 10*(2i+2). */
async function wrapBy(inner: string, relays: string[], opts: { ttlMs?: number; now?: number } = {}): Promise<string> {
  let jws = inner;
  const base = opts.now ?? NOW;
  for (const [i, r] of relays.entries()) {
    jws = await wrapEnvelope(jws, { node: r, recvAt: base + 10 * (2 * i + 1), policy: `${r}@sha256:abc`, decision: 'allow' }, k[r]!, {
      ttlMs: opts.ttlMs ?? TTL,
      now: base + 10 * (2 * i + 2),
    });
  }
  return jws;
}

/** Signs anything with any header, bypassing the library's own checks (for forgeries). */
async function rawSign(payload: unknown, key: NodeKey, header: Record<string, unknown> = {}): Promise<string> {
  const bytes = new TextEncoder().encode(typeof payload === 'string' ? payload : JSON.stringify(payload));
  return new CompactSign(bytes).setProtectedHeader({ alg: key.alg, kid: key.kid, typ: ENVELOPE_TYP, ...header } as never).sign(key.privateKey);
}

function payloadOf(jws: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(jws.split('.')[1]!, 'base64url').toString('utf8')) as Record<string, unknown>;
}

/** A compact JWS over exactly these header and payload parts (no re-encoding), validly signed by `key`. */
function signParts(headerPart: string, payloadPart: string, key: NodeKey): string {
  const input = Buffer.from(`${headerPart}.${payloadPart}`, 'latin1');
  const ko = KeyObject.from(key.privateKey as never);
  const sig = key.alg === 'EdDSA' ? cryptoSign(null, input, ko) : cryptoSign('sha256', input, { key: ko, dsaEncoding: 'ieee-p1363' });
  return `${headerPart}.${payloadPart}.${sig.toString('base64url')}`;
}

/** An envelope of `edge` whose payload's base64url has pad bits (its length is not a multiple of 4). */
async function envelopeWithPadBits(edge: string): Promise<{ header: string; payload: string }> {
  for (let n = 1; ; n++) {
    const [header, payload] = (await rawSign(payloadFor(edge, { account: { id: 'a'.repeat(n), eab: null, jwkThumbprint: 'tp' } }), k[edge]!)).split('.');
    if (payload!.length % 4 !== 0) return { header: header!, payload: payload! };
  }
}

const B64URL_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';

/** Replaces the payload of a JWS, keeping its header and (now wrong) signature. */
function swapPayload(jws: string, payload: unknown): string {
  const [h, , s] = jws.split('.');
  return `${h}.${b64(payload)}.${s}`;
}

function verify(jws: string, verifier: string, extra: Partial<VerifyOptions> = {}): Promise<VerifiedEnvelope> {
  return verifyEnvelope(jws, { topology, verifier, keys: ring, now: NOW + 100, ...extra });
}

const MALFORMED_TYPE = new Set(['malformed', 'oversize', 'version', 'typ']);

async function rejectsWith(p: Promise<unknown>, reason: string, detail?: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof RaError, `expected RaError, got ${String(e)}`);
    assert.equal(e.reason, reason, `reason (detail: ${e.detail})`);
    assert.equal(e.type, MALFORMED_TYPE.has(reason) ? 'malformed' : 'unauthorized');
    if (detail) assert.match(e.detail, detail);
    return true;
  });
}

// ---------------------------------------------------------------- envelopes: accepted

const okCases: Array<[string, () => Promise<void>]> = [
  [
    'ok/edge-direct-to-gateway',
    async () => {
      const payload = payloadFor('edge-gw');
      const jws = await signEdgeEnvelope(payload, k['edge-gw']!);
      assert.deepEqual(decodeProtectedHeader(jws), { alg: 'EdDSA', kid: 'edge-gw', typ: ENVELOPE_TYP });
      const v = await verify(jws, 'gw');
      assert.deepEqual(v.payload, payload);
      assert.deepEqual(v.path, ['edge-gw']);
      assert.deepEqual(v.hops, []);
      assert.equal(v.digest, contentDigest(payload));
      assert.equal(v.redelivery, false);
    },
  ],
  [
    'ok/two-relays',
    async () => {
      const inner = await edgeJws('edge-a');
      const jws = await wrapBy(inner, ['relay-1', 'relay-2']);
      const v = await verify(jws, 'gw');
      assert.deepEqual(v.path, ['edge-a', 'relay-1', 'relay-2']);
      assert.deepEqual(v.hops.map((h) => h.node), ['relay-1', 'relay-2']);
      assert.deepEqual(v.hops[0], { node: 'relay-1', recvAt: NOW + 10, sentAt: NOW + 20, policy: 'relay-1@sha256:abc', decision: 'allow' });
      assert.deepEqual(v.hops[1], { node: 'relay-2', recvAt: NOW + 30, sentAt: NOW + 40, policy: 'relay-2@sha256:abc', decision: 'allow' });
      for (const h of v.hops) assert.ok(h.sentAt >= h.recvAt);
      assert.ok(v.hops[1]!.recvAt >= v.hops[0]!.sentAt);
      // The digest names the edge's request, not the wrapping.
      assert.equal(v.digest, contentDigest(v.payload));
      assert.equal(v.payload.origin.node, 'edge-a');
    },
  ],
  [
    'ok/relays-verify-their-own-children',
    async () => {
      const inner = await edgeJws('edge-a');
      assert.deepEqual((await verify(inner, 'relay-1')).path, ['edge-a']);
      const v = await verify(await wrapBy(inner, ['relay-1']), 'relay-2');
      assert.deepEqual(v.path, ['edge-a', 'relay-1']);
      assert.deepEqual(v.hops.map((h) => h.node), ['relay-1']);
    },
  ],
  [
    'ok/es256-layer',
    async () => {
      // edge-b and relay-2 sign with ES256, relay-1 with EdDSA: algs mix freely along a path.
      const jws = await wrapBy(await edgeJws('edge-b'), ['relay-1', 'relay-2']);
      assert.equal(decodeProtectedHeader(jws).alg, 'ES256');
      const v = await verify(jws, 'gw');
      assert.deepEqual(v.path, ['edge-b', 'relay-1', 'relay-2']);
    },
  ],
  [
    'ok/redelivery',
    async () => {
      const replay = new ReplayGuard({ ttlMs: TTL, max: 100 });
      const jws = await wrapBy(await edgeJws('edge-a'), ['relay-1', 'relay-2']);
      const first = await verify(jws, 'gw', { replay });
      const second = await verify(jws, 'gw', { replay });
      assert.equal(first.redelivery, false);
      assert.equal(second.redelivery, true);
      assert.equal(second.digest, first.digest);
    },
  ],
  [
    'ok/redelivery-rewrapped',
    async () => {
      // The edge retransmits the same JWS; the relays wrap it again with new layers and times.
      const replay = new ReplayGuard({ ttlMs: TTL, max: 100 });
      const inner = await edgeJws('edge-a');
      const first = await verify(await wrapBy(inner, ['relay-1', 'relay-2']), 'gw', { replay });
      const again = await verify(await wrapBy(inner, ['relay-1', 'relay-2'], { now: NOW + 2000 }), 'gw', { replay, now: NOW + 3000 });
      assert.equal(first.redelivery, false);
      assert.equal(again.redelivery, true);
      assert.equal(again.hops[0]!.sentAt, NOW + 2020);
    },
  ],
  [
    'ok/re-signed-same-content-is-redelivery',
    async () => {
      // An edge re-signs an unanswered request before its envelope expires: same id and content,
      // fresh iat/exp/nonce. That is the same request again, never a second one.
      const replay = new ReplayGuard({ ttlMs: TTL, max: 100 });
      const a = payloadFor('edge-gw');
      const first = await verify(await signEdgeEnvelope(a, k['edge-gw']!), 'gw', { replay });
      const again = await verify(await signEdgeEnvelope({ ...a, iat: a.iat + 200, exp: a.exp + 200, nonce: 'fresh-nonce-value-1234' }, k['edge-gw']!), 'gw', { replay, now: NOW + 200_000 });
      assert.equal(first.redelivery, false);
      assert.equal(again.redelivery, true);
      assert.equal(again.digest, first.digest);
    },
  ],
  [
    'ok/within-clock-skew',
    async () => {
      // exp passed 20 s ago and iat 20 s ahead are both within the 30 s default skew.
      await verify(await edgeJws('edge-gw'), 'gw', { now: NOW + TTL + 20_000 });
      await verify(await edgeJws('edge-gw'), 'gw', { now: NOW - 20_000 });
    },
  ],
];

for (const [name, run] of okCases) test(name, run);

// ---------------------------------------------------------------- envelopes: refused

const failCases: Array<[string, string, () => Promise<unknown>, RegExp?]> = [
  ['fail/expired', 'expired', async () => verify(await edgeJws('edge-gw'), 'gw', { now: NOW + TTL + 31_000 })],
  [
    'fail/expired-relay-layer',
    'expired',
    // The edge layer is still good; relay-2's layer was made with a 1 s lifetime.
    async () => verify(await wrapEnvelope(await wrapBy(await edgeJws('edge-a'), ['relay-1']), { node: 'relay-2', recvAt: NOW, policy: 'p', decision: 'allow' }, k['relay-2']!, { ttlMs: 1000, now: NOW }), 'gw', { now: NOW + 40_000 }),
    /^envelope expired/,
  ],
  ['fail/expired-skew-option', 'expired', async () => verify(await edgeJws('edge-gw'), 'gw', { now: NOW + TTL + 5_000, clockSkewMs: 1000 })],
  ['fail/future-dated', 'future', async () => verify(await edgeJws('edge-gw', { now: NOW + 60_000 }), 'gw')],
  [
    'fail/future-dated-inner',
    'future',
    async () => verify(await wrapBy(await edgeJws('edge-a', { now: NOW + 120_000 }), ['relay-1', 'relay-2']), 'gw'),
    /layer 3/,
  ],
  [
    'fail/replayed',
    'replayed',
    async () => {
      // Same id, other content (another CSR): never a redelivery.
      const replay = new ReplayGuard({ ttlMs: TTL, max: 100 });
      const a = payloadFor('edge-gw');
      await verify(await signEdgeEnvelope(a, k['edge-gw']!), 'gw', { replay });
      const b = payloadFor('edge-gw', { id: a.id, csr: Buffer.from('another CSR').toString('base64url') });
      return verify(await signEdgeEnvelope(b, k['edge-gw']!), 'gw', { replay });
    },
  ],
  [
    'fail/replayed-nonce',
    'replayed',
    async () => {
      const replay = new ReplayGuard({ ttlMs: TTL, max: 100 });
      const a = payloadFor('edge-gw');
      await verify(await signEdgeEnvelope(a, k['edge-gw']!), 'gw', { replay });
      return verify(await edgeJws('edge-gw', { nonce: a.nonce }), 'gw', { replay });
    },
  ],
  [
    'fail/unknown-kid',
    'unknown-kid',
    async () => verify(await rawSign(payloadFor('edge-gw', { origin: { node: 'mallory', dc: 'core' } }), mallory), 'gw'),
  ],
  [
    'fail/unknown-kid-inner',
    'unknown-kid',
    async () => verify(await wrapBy(await rawSign(payloadFor('edge-a'), mallory), ['relay-1', 'relay-2']), 'gw'),
    /layer 3/,
  ],
  ['fail/key-missing-from-ring', 'unknown-kid', async () => verify(await edgeJws('edge-gw'), 'gw', { keys: new KeyRing([['relay-1', k['relay-1']!.publicJwk]]) }), /no public key/],
  ['fail/wrong-parent (edge under relay-1 straight to the gateway)', 'wrong-parent', async () => verify(await edgeJws('edge-a'), 'gw')],
  ['fail/wrong-parent (relay-2 verifying an edge that is not its child)', 'wrong-parent', async () => verify(await edgeJws('edge-a'), 'relay-2')],
  ['fail/wrong-parent (relay-1 layer sent to the gateway)', 'wrong-parent', async () => verify(await wrapBy(await edgeJws('edge-a'), ['relay-1']), 'gw')],
  [
    'fail/path-skip (edge-a wrapped by relay-2, skipping relay-1)',
    'path',
    async () => verify(await wrapBy(await edgeJws('edge-a'), ['relay-2']), 'gw'),
    /"edge-a" is not a child of "relay-2"/,
  ],
  [
    'fail/path-skip (relay-1 layer wrapped by relay-x, not its parent)',
    'path',
    async () => verify(await wrapBy(await edgeJws('edge-a'), ['relay-1', 'relay-x']), 'gw'),
    /"relay-1" is not a child of "relay-x"/,
  ],
  [
    'fail/path (hop record names another node)',
    'path',
    async () => {
      const inner = await edgeJws('edge-a');
      const p = { v: 1, inner, hop: { node: 'relay-x', recvAt: NOW, sentAt: NOW, policy: 'p', decision: 'allow' }, iat: NOW / 1000, exp: NOW / 1000 + 300 };
      return verify(await rawSign(p, k['relay-1']!), 'relay-2');
    },
    /hop record/,
  ],
  [
    'fail/path (innermost signer is a relay)',
    'path',
    async () => verify(await rawSign(payloadFor('edge-a', { origin: { node: 'relay-1', dc: 'dc-a' } }), k['relay-1']!), 'relay-2'),
    /not an edge/,
  ],
  [
    'fail/path (an edge wrapping an envelope)',
    'path',
    async () => {
      const p = { v: 1, inner: await edgeJws('edge-b'), hop: { node: 'edge-a', recvAt: NOW, sentAt: NOW, policy: 'p', decision: 'allow' }, iat: NOW / 1000, exp: NOW / 1000 + 300 };
      return verify(await rawSign(p, k['edge-a']!), 'relay-1');
    },
    /only relays wrap/,
  ],
  [
    'fail/tampered-inner (a byte of the inner JWS changed inside the relay layer)',
    'bad-signature',
    async () => {
      const outer = await wrapBy(await edgeJws('edge-a'), ['relay-1', 'relay-2']);
      const p = payloadOf(outer);
      const inner = p.inner as string;
      const i = inner.indexOf('.') + 5;
      p.inner = inner.slice(0, i) + (inner[i] === 'A' ? 'B' : 'A') + inner.slice(i + 1);
      return verify(swapPayload(outer, p), 'gw');
    },
    /"relay-2"/,
  ],
  [
    'fail/tampered-inner (re-signed by the relay: the edge signature still fails)',
    'bad-signature',
    async () => {
      // A compromised relay-1 changes the edge's identifiers and countersigns with its real key.
      const inner = await edgeJws('edge-a');
      const p = payloadOf(inner);
      p.identifiers = [{ type: 'dns', value: 'evil.corp.test', validation: { method: 'http-01', at: new Date(NOW).toISOString() } }];
      return verify(await wrapBy(swapPayload(inner, p), ['relay-1', 'relay-2']), 'gw');
    },
    /layer 3: signature of "edge-a"/,
  ],
  [
    'fail/tampered-payload',
    'bad-signature',
    async () => {
      const jws = await edgeJws('edge-gw');
      return verify(swapPayload(jws, { ...payloadOf(jws), csr: 'AAAA' }), 'gw');
    },
  ],
  [
    'fail/tampered-signature',
    'bad-signature',
    async () => {
      const jws = await edgeJws('edge-gw');
      const s = jws.split('.')[2]!;
      return verify(jws.slice(0, jws.length - s.length) + (s[0] === 'A' ? 'B' : 'A') + s.slice(1), 'gw');
    },
  ],
  ['fail/signed-by-another-key (kid edge-gw, mallory signs)', 'bad-signature', async () => verify(await rawSign(payloadFor('edge-gw'), mallory, { kid: 'edge-gw' }), 'gw')],
  ['fail/alg-none', 'alg', async () => verify(`${b64({ alg: 'none', kid: 'edge-gw', typ: ENVELOPE_TYP })}.${b64(payloadFor('edge-gw'))}.`, 'gw')],
  ['fail/alg-none (any case)', 'alg', async () => verify(`${b64({ alg: 'NoNe', kid: 'edge-gw', typ: ENVELOPE_TYP })}.${b64(payloadFor('edge-gw'))}.`, 'gw')],
  ['fail/alg-missing', 'alg', async () => verify(`${b64({ kid: 'edge-gw', typ: ENVELOPE_TYP })}.${b64(payloadFor('edge-gw'))}.AAAA`, 'gw')],
  [
    'fail/alg-not-allowed (HS256 with a secret)',
    'alg',
    async () => {
      const jws = await new CompactSign(new TextEncoder().encode(JSON.stringify(payloadFor('edge-gw'))))
        .setProtectedHeader({ alg: 'HS256', kid: 'edge-gw', typ: ENVELOPE_TYP })
        .sign(new TextEncoder().encode('a shared secret of at least 32 bytes!!'));
      return verify(jws, 'gw');
    },
  ],
  [
    'fail/alg-not-allowed (ES256 when the topology allows only EdDSA)',
    'alg',
    async () => {
      const onlyEd = parseTopology(YAML.replace('mesh: t', 'mesh: t\nenvelope: {algs: [EdDSA]}'));
      return verify(await wrapBy(await edgeJws('edge-b'), ['relay-1']), 'relay-2', { topology: onlyEd });
    },
    /layer 2/,
  ],
  [
    'fail/alg-key-mismatch (ES256 header for a node whose key is EdDSA)',
    'alg',
    async () => verify(await rawSign(payloadFor('edge-gw'), await generateNodeKey('edge-gw', 'ES256')), 'gw'),
    /signs with EdDSA/,
  ],
  ['fail/typ', 'typ', async () => verify(await rawSign(payloadFor('edge-gw'), k['edge-gw']!, { typ: 'JWT' }), 'gw')],
  ['fail/typ-missing', 'typ', async () => verify(await rawSign(payloadFor('edge-gw'), k['edge-gw']!, { typ: undefined }), 'gw')],
  ['fail/oversize (checked before parsing)', 'oversize', async () => verify('x'.repeat(65_537), 'gw')],
  ['fail/oversize (multi-byte characters count as bytes)', 'oversize', async () => verify('é'.repeat(40_000), 'gw')],
  ['fail/oversize (a real signed envelope)', 'oversize', async () => verify(await edgeJws('edge-gw', { csr: 'A'.repeat(60_000) }), 'gw')],
  ['fail/malformed (not a JWS)', 'malformed', async () => verify('not a jws', 'gw')],
  ['fail/malformed (two parts)', 'malformed', async () => verify('eyJhbGciOiJFZERTQSJ9.e30', 'gw')],
  ['fail/malformed (header not JSON)', 'malformed', async () => verify(`${b64('hello')}.${b64({})}.AAAA`, 'gw')],
  ['fail/malformed (four parts)', 'malformed', async () => verify(`${await edgeJws('edge-gw')}.AAAA`, 'gw')],
  [
    // RFC 4648 §3.5: the same bytes under other pad bits; node's decoder accepts it, the envelope check does not.
    'fail/malformed (payload with non-zero pad bits, validly signed)',
    'malformed',
    async () => {
      const { header, payload } = await envelopeWithPadBits('edge-gw');
      const last = B64URL_ALPHABET[B64URL_ALPHABET.indexOf(payload.at(-1)!) ^ 1]!;
      const odd = payload.slice(0, -1) + last;
      assert.deepEqual(Buffer.from(odd, 'base64url'), Buffer.from(payload, 'base64url'));
      return verify(signParts(header, odd, k['edge-gw']!), 'gw');
    },
  ],
  [
    'fail/malformed (payload with a space, validly signed)',
    'malformed',
    async () => {
      const { header, payload } = await envelopeWithPadBits('edge-gw');
      return verify(signParts(header, `${payload.slice(0, 20)} ${payload.slice(20)}`, k['edge-gw']!), 'gw');
    },
  ],
  [
    'fail/malformed (relay layer wrapping a payload with pad bits)',
    'malformed',
    async () => {
      const { header, payload } = await envelopeWithPadBits('edge-a');
      const odd = payload.slice(0, -1) + B64URL_ALPHABET[B64URL_ALPHABET.indexOf(payload.at(-1)!) ^ 1]!;
      return verify(await wrapBy(signParts(header, odd, k['edge-a']!), ['relay-1']), 'relay-2');
    },
    /layer 2/,
  ],
  ['fail/malformed (not a string)', 'malformed', async () => verify(42 as unknown as string, 'gw')],
  ['fail/malformed (valid JWS over non-JSON)', 'malformed', async () => verify(await rawSign('hello, world', k['edge-gw']!), 'gw')],
  ['fail/malformed (valid JWS over a JSON array)', 'malformed', async () => verify(await rawSign([1, 2], k['edge-gw']!), 'gw')],
  [
    'fail/malformed (missing fields)',
    'malformed',
    async () => {
      const { csr: _csr, identifiers: _ids, ...p } = payloadFor('edge-gw');
      return verify(await rawSign(p, k['edge-gw']!), 'gw');
    },
    /csr/,
  ],
  ['fail/malformed (unknown payload member)', 'malformed', async () => verify(await rawSign({ ...payloadFor('edge-gw'), extra: true }, k['edge-gw']!), 'gw')],
  ['fail/malformed (empty identifiers)', 'malformed', async () => verify(await rawSign({ ...payloadFor('edge-gw'), identifiers: [] }, k['edge-gw']!), 'gw')],
  ['fail/malformed (exp not after iat)', 'malformed', async () => verify(await rawSign({ ...payloadFor('edge-gw'), exp: NOW / 1000 }, k['edge-gw']!), 'gw')],
  ['fail/malformed (extra header member)', 'malformed', async () => verify(await rawSign(payloadFor('edge-gw'), k['edge-gw']!, { jku: 'https://evil.test/keys' }), 'gw'), /jku/],
  [
    'fail/malformed (relay layer without hop)',
    'malformed',
    async () => verify(await rawSign({ v: 1, inner: await edgeJws('edge-a'), iat: NOW / 1000, exp: NOW / 1000 + 300 }, k['relay-1']!), 'relay-2'),
    /hop/,
  ],
  ['fail/version', 'version', async () => verify(await rawSign({ ...payloadFor('edge-gw'), v: 2 }, k['edge-gw']!), 'gw')],
  ['fail/origin-mismatch', 'path', async () => verify(await rawSign(payloadFor('edge-a', { origin: { node: 'edge-b', dc: 'dc-a' } }), k['edge-a']!), 'relay-1'), /origin\.node "edge-b"/],
  ['fail/result-fed-as-envelope', 'typ', async () => verify(await signResult(resultFor('edge-gw'), k.gw!), 'gw')],
];

for (const [name, reason, run, detail] of failCases) {
  test(name, () => rejectsWith(run(), reason, detail));
}

test('fail/replay guard is asked only after every other check', async () => {
  const replay = new ReplayGuard({ ttlMs: TTL, max: 100 });
  const a = payloadFor('edge-a');
  // A forged chain (path skip) carrying a's id must not poison the guard for the real envelope.
  await rejectsWith(verify(await wrapBy(await signEdgeEnvelope(a, k['edge-a']!), ['relay-2']), 'gw', { replay }), 'path');
  assert.equal(replay.size, 0);
  const ok = await verify(await wrapBy(await signEdgeEnvelope(a, k['edge-a']!), ['relay-1', 'relay-2']), 'gw', { replay });
  assert.equal(ok.redelivery, false);
});

// ---------------------------------------------------------------- signing refuses bad input

test('fail/sign refuses an origin that is not the signer', async () => {
  await assert.rejects(signEdgeEnvelope(payloadFor('edge-a'), k['edge-b']!), (e: unknown) => e instanceof RaError && e.type === 'serverInternal');
});

test('fail/sign refuses an ill-formed payload', async () => {
  await assert.rejects(signEdgeEnvelope({ ...payloadFor('edge-a'), identifiers: [] }, k['edge-a']!), (e: unknown) => e instanceof RaError && /identifiers/.test(e.detail));
});

test('fail/wrap refuses a hop naming another node', async () => {
  await assert.rejects(
    wrapEnvelope(await edgeJws('edge-a'), { node: 'relay-2', recvAt: NOW, policy: 'p', decision: 'allow' }, k['relay-1']!, { ttlMs: TTL }),
    (e: unknown) => e instanceof RaError && e.type === 'serverInternal',
  );
});

test('ok/newEdgePayload fills id, times and nonce', () => {
  const a = payloadFor('edge-a');
  const b = payloadFor('edge-a');
  assert.match(a.id, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  assert.notEqual(a.id, b.id);
  assert.notEqual(a.nonce, b.nonce);
  assert.equal(Buffer.from(a.nonce, 'base64url').length, 16);
  assert.equal(a.iat, NOW / 1000);
  assert.equal(a.exp, (NOW + TTL) / 1000);
  assert.equal(a.v, 1);
  assert.equal(a.kind, 'issue');
  assert.deepEqual(Object.keys(a).sort(), ['account', 'csr', 'exp', 'iat', 'id', 'identifiers', 'kind', 'nonce', 'origin', 'renewalOf', 'requested', 'v']);
});

// ---------------------------------------------------------------- replay guard

test('ok/replay-guard: redelivery, expiry and eviction', () => {
  let now = 1_000_000;
  const g = new ReplayGuard({ ttlMs: 1000, max: 2, now: () => now });
  assert.equal(g.check('id-1', 'n-1', 'd-1'), 'new');
  assert.equal(g.check('id-1', 'n-1', 'd-1'), 'redelivery');
  assert.throws(() => g.check('id-1', 'n-1', 'd-2'), (e: unknown) => e instanceof RaError && e.reason === 'replayed');
  assert.throws(() => g.check('id-2', 'n-1', 'd-3'), (e: unknown) => e instanceof RaError && e.reason === 'replayed');
  // Expiry: after ttl the id is forgotten.
  now += 1001;
  assert.equal(g.check('id-1', 'n-1', 'd-2'), 'new');
  // The envelope's own expiry keeps an entry longer than ttl.
  assert.equal(g.check('id-3', 'n-3', 'd-3', { expiresAt: now + 10_000 }), 'new');
  now += 5000;
  assert.equal(g.check('id-3', 'n-3', 'd-3'), 'redelivery');
  // Bounded: a third live entry evicts the oldest.
  assert.equal(g.check('id-4', 'n-4', 'd-4'), 'new');
  assert.equal(g.check('id-5', 'n-5', 'd-5'), 'new');
  assert.equal(g.size, 2);
  assert.equal(g.check('id-3', 'n-3', 'd-other'), 'new');
});

// ---------------------------------------------------------------- results

function resultFor(edge: string, over: Partial<ResultPayload> = {}): ResultPayload {
  return {
    v: 1,
    id: '8c7a1f7e-2f4b-4b8e-9a51-0d7b7f0a9e11',
    edge,
    status: 'valid',
    certificate: '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n',
    hops: [{ node: 'relay-1', recvAt: NOW + 10, sentAt: NOW + 20, policy: 'relay-1@sha256:abc', decision: 'allow' }],
    gateway: { node: 'gw', recvAt: NOW + 50, sentAt: NOW + 60 },
    iat: NOW / 1000,
    ...over,
  };
}

const refusal = (edge: string, by: string): ResultPayload =>
  resultFor(edge, {
    status: 'invalid',
    certificate: undefined,
    problem: { type: 'urn:ietf:params:acme:error:rejectedIdentifier', detail: `${by}: deny.dns`, status: 400 },
    gateway: { node: by, recvAt: NOW, sentAt: NOW + 1 },
  });

function checkResult(jws: string, edge: string, extra: { now?: number; keys?: KeyRing } = {}): Promise<ResultPayload> {
  return verifyResult(jws, { topology, edge, keys: extra.keys ?? ring, now: extra.now ?? NOW + 100 });
}

/** The certificate member omitted (JSON drops undefined; the object compare must too). */
const json = <T>(v: T): T => JSON.parse(JSON.stringify(v)) as T;

const resultOk: Array<[string, () => Promise<void>]> = [
  [
    'ok/result-from-gateway',
    async () => {
      const jws = await signResult(resultFor('edge-a'), k.gw!);
      assert.equal(decodeProtectedHeader(jws).typ, RESULT_TYP);
      assert.deepEqual(await checkResult(jws, 'edge-a'), resultFor('edge-a'));
    },
  ],
  [
    'ok/result-refusal-signed-by-a-relay-on-the-path',
    async () => {
      const r = refusal('edge-a', 'relay-1');
      assert.deepEqual(await checkResult(await signResult(r, k['relay-1']!), 'edge-a'), json(r));
      const r2 = refusal('edge-a', 'relay-2');
      assert.deepEqual(await checkResult(await signResult(r2, k['relay-2']!), 'edge-a'), json(r2));
    },
  ],
  [
    'ok/result-arriving-hours-later',
    async () => {
      await checkResult(await signResult(resultFor('edge-gw', { hops: [] }), k.gw!), 'edge-gw', { now: NOW + 36 * 3_600_000 });
    },
  ],
];
for (const [name, run] of resultOk) test(name, run);

const resultFail: Array<[string, string, () => Promise<unknown>]> = [
  ['fail/result-signed-by-a-non-gateway-node (an edge)', 'wrong-parent', async () => checkResult(await signResult(resultFor('edge-a', { gateway: { node: 'edge-b', recvAt: 0, sentAt: 0 } }), k['edge-b']!), 'edge-a')],
  ['fail/result-signed-by-a-relay-off-the-path', 'wrong-parent', async () => checkResult(await signResult(refusal('edge-a', 'relay-x'), k['relay-x']!), 'edge-a')],
  ['fail/result-certificate-signed-by-a-relay', 'wrong-parent', async () => checkResult(await signResult(resultFor('edge-a', { gateway: { node: 'relay-1', recvAt: 0, sentAt: 0 } }), k['relay-1']!), 'edge-a')],
  ['fail/result-wrong-edge', 'path', async () => checkResult(await signResult(resultFor('edge-b'), k.gw!), 'edge-a')],
  ['fail/result-gateway-node-is-not-the-signer', 'path', async () => checkResult(await rawSign(resultFor('edge-a', { gateway: { node: 'relay-1', recvAt: 0, sentAt: 0 } }), k.gw!, { typ: RESULT_TYP }), 'edge-a')],
  ['fail/result-future', 'future', async () => checkResult(await signResult(resultFor('edge-a', { iat: NOW / 1000 + 3600 }), k.gw!), 'edge-a')],
  ['fail/result-tampered', 'bad-signature', async () => {
    const jws = await signResult(resultFor('edge-a'), k.gw!);
    return checkResult(swapPayload(jws, { ...payloadOf(jws), certificate: '-----BEGIN CERTIFICATE-----\nEVIL\n-----END CERTIFICATE-----\n' }), 'edge-a');
  }],
  ['fail/result-unknown-kid', 'unknown-kid', async () => checkResult(await signResult(resultFor('edge-a'), k.gw!), 'edge-a', { keys: new KeyRing() })],
  ['fail/result-alg-none', 'alg', async () => checkResult(`${b64({ alg: 'none', kid: 'gw', typ: RESULT_TYP })}.${b64(resultFor('edge-a'))}.`, 'edge-a')],
  ['fail/result-typ (an envelope fed as a result)', 'typ', async () => checkResult(await wrapBy(await edgeJws('edge-a'), ['relay-1']), 'edge-a')],
  ['fail/result-oversize', 'oversize', async () => checkResult('x'.repeat(70_000), 'edge-a')],
  ['fail/result-malformed (valid without certificate)', 'malformed', async () => checkResult(await rawSign({ ...resultFor('edge-a'), certificate: undefined }, k.gw!, { typ: RESULT_TYP }), 'edge-a')],
  ['fail/result-version', 'version', async () => checkResult(await rawSign({ ...resultFor('edge-a'), v: 2 }, k.gw!, { typ: RESULT_TYP }), 'edge-a')],
];
for (const [name, reason, run] of resultFail) test(name, () => rejectsWith(run(), reason));

test('fail/signResult refuses a gateway.node that is not the signer', async () => {
  await assert.rejects(signResult(resultFor('edge-a'), k['relay-1']!), (e: unknown) => e instanceof RaError && e.type === 'serverInternal');
});

// The content digest is stored (the gateway's idempotency records, the replay guard): the same data
// must give the same digest in every version. These vectors were computed before canonicalJson was
// rewritten for speed and pin its output.
const digestPayload = {
  v: 1,
  kind: 'issue',
  id: '6f1c2a9e-8d3b-4c5e-9a7f-0b1d2e3f4a5b',
  iat: 1700000000,
  exp: 1700000300,
  nonce: 'AAAAAAAAAAAAAAAAAAAAAA',
  origin: { node: 'edge-a', dc: 'dc-1', segment: 'iot "β" segment' },
  csr: 'MIIBcsr',
  identifiers: [
    { type: 'dns', value: 'b.example', validation: { method: 'http-01', at: '2026-12-01T00:00:00Z', from: '10.0.0.1:80' } },
    { type: 'ip', value: '192.0.2.7' },
  ],
  account: { id: 'acct-1', eab: null, jwkThumbprint: 'tp', lifetime: { max: '30d', default: undefined } },
  requested: { notBefore: null, notAfter: '2027-01-01T00:00:00Z' },
  renewalOf: null,
} as unknown as EdgePayload;
const digestCases: Array<[string, () => void]> = [
  ['ok/digest-issue-vector', () => assert.equal(contentDigest(digestPayload), '7G37DF5j1d8KYtmAN9m5ETiMoAvVShppFicsoSAHO20')],
  [
    'ok/digest-revoke-vector',
    () => {
      const r = { v: 1, kind: 'revoke', id: '6f1c2a9e-8d3b-4c5e-9a7f-0b1d2e3f4a5b', iat: 1, exp: 2, nonce: 'x', origin: { node: 'edge-a', dc: 'd' }, serial: '0a1b', reason: 4, requester: { method: 'certificate-key', account: null, jwkThumbprint: 't' } };
      assert.equal(contentDigest(r as Parameters<typeof contentDigest>[0]), 'RiBGn3n7VUfK1iF0RFhuL_UoxG__u9RxrAiCE54p32Q');
    },
  ],
  [
    'ok/digest-ignores-key-order-times-and-nonce',
    () => {
      const reordered = Object.fromEntries(Object.entries(digestPayload).reverse()) as unknown as EdgePayload;
      assert.equal(contentDigest({ ...reordered, iat: 1, exp: 2, nonce: 'B'.repeat(22) }), contentDigest(digestPayload));
    },
  ],
  ['fail/digest-changes-with-content', () => assert.notEqual(contentDigest({ ...digestPayload, csr: 'MIIBcsS' }), contentDigest(digestPayload))],
];
for (const [name, run] of digestCases) test(name, run);

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { connect, type NatsConnection } from 'nats';
import { downSubject } from '../../shared/bus/subjects.js';
import { EnvelopeQueue } from '../../shared/bus/queue.js';
import { createLogger } from '../../shared/logging/logger.js';
import { nodeConnectOptions } from '../../shared/bus/auth.js';
import { parseDuration } from '../../shared/config/index.js';
import {
  CRL_TYP,
  KeyRing,
  loadOrCreateNodeKey,
  newEdgePayload,
  newRevokePayload,
  peekTyp,
  signEdgeEnvelope,
  verifyCrlMessage,
  verifyResult,
  type CrlMessage,
  type CrlReason,
  type NodeKey,
  type ResultPayload,
} from '../../shared/envelope/index.js';
import { x509 } from '../../shared/pki/index.js';
import { startTestMesh, type TestMesh } from '../harness/mesh.js';
import { makeCsr } from '../harness/acme-client.js';
import { pemCerts } from '../harness/tools.js';

// Revoke envelopes over a real hub + 2 leaf servers: edge-b (dc-b) -> relay-2 (dc-b) -> relay-1
// (dc-a) -> gateway, edge-a (dc-a) -> relay-1 -> gateway. Relays verify and countersign revocations
// like issue envelopes; the gateway revokes only what it issued for the asking edge, answers down,
// and publishes its CRL to every edge.

const PROBLEM = 'urn:ietf:params:acme:error:';

describe('integration: revocation through two relays over hub + 2 leaf servers', { timeout: 120_000 }, () => {
  let m: TestMesh;
  let ring: KeyRing;
  const keys: Record<string, NodeKey> = {};
  const conns: Record<string, NatsConnection> = {};
  const results = new Map<string, ResultPayload[]>();
  const crls: Record<string, CrlMessage[]> = { 'edge-a': [], 'edge-b': [] };

  before(async () => {
    m = await startTestMesh({
      nats: { queue: { duplicateWindow: '1s' } },
      nodes: [
        { id: 'gw', role: 'gateway', dc: 'core', policy: { allow: { dns: ['*.corp.test'] } } },
        { id: 'relay-1', role: 'relay', dc: 'dc-a', parent: 'gw', policy: { deny: { dns: ['pci.corp.test'] } } },
        { id: 'relay-2', role: 'relay', dc: 'dc-b', parent: 'relay-1' },
        { id: 'edge-b', role: 'edge', dc: 'dc-b', parent: 'relay-2' },
        { id: 'edge-a', role: 'edge', dc: 'dc-a', parent: 'relay-1' },
      ],
    });
    ring = await KeyRing.fromDir(m.topology.keysDir(), m.topology.nodes.map((n) => n.id));
    // Act as each edge on its own leaf server, with its NATS credentials and signing key.
    for (const edge of ['edge-a', 'edge-b']) {
      keys[edge] = await loadOrCreateNodeKey(m.topology.keysDir(), edge);
      const nc = await connect({ servers: m.topology.natsUrl(edge), ...(await nodeConnectOptions(m.topology, edge)) });
      conns[edge] = nc;
      nc.subscribe(downSubject(edge), {
        callback: (_e, msg) => {
          const text = new TextDecoder().decode(msg.data);
          if (peekTyp(text) === CRL_TYP) {
            void verifyCrlMessage(text, { topology: m.topology, keys: ring }).then((c) => crls[edge]!.push(c));
            return;
          }
          void verifyResult(text, { topology: m.topology, edge, keys: ring }).then((r) => results.set(r.id, [...(results.get(r.id) ?? []), r]));
        },
      });
      await nc.flush();
    }
  });

  after(async () => {
    for (const c of Object.values(conns)) await c.close().catch(() => undefined);
    await m?.stop();
  });

  const origin = (edge: string) => ({ node: edge, dc: m.topology.node(edge).dc });

  const queues: Record<string, EnvelopeQueue> = {};
  const sentAt = new Map<string, number>();

  /**
   * Puts the envelope into the edge's outbound stream (as that edge) and waits for `count` more
   * results. A second send of one id waits out the streams' 1s dedupe window first, as a real
   * retransmission would.
   */
  async function exchange(edge: string, id: string, jws: string, count = 1): Promise<ResultPayload[]> {
    const q = (queues[edge] ??= await EnvelopeQueue.open(conns[edge]!, m.topology, edge, { log: createLogger('test', { as: edge }) }));
    const have = results.get(id)?.length ?? 0;
    const last = sentAt.get(id);
    if (last !== undefined) await new Promise((r) => setTimeout(r, Math.max(0, last + 1_500 - Date.now())));
    await q.send(jws, id);
    sentAt.set(id, Date.now());
    for (let i = 0; (results.get(id)?.length ?? 0) < have + count; i++) {
      if (i >= 300) throw new Error(`no result for ${id}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    return results.get(id)!;
  }

  async function issue(edge: string, name: string): Promise<string> {
    const p = newEdgePayload({
      origin: origin(edge),
      csr: await makeCsr([name]),
      identifiers: [{ type: 'dns', value: name, validation: { method: 'http-01', at: new Date().toISOString() } }],
      account: { id: 'acct-1', eab: null, jwkThumbprint: 'thumb' },
      requested: { notBefore: null, notAfter: null },
      renewalOf: null,
      ttlMs: parseDuration('5m'),
    });
    const [r] = await exchange(edge, p.id, await signEdgeEnvelope(p, keys[edge]!));
    assert.equal(r!.status, 'valid', JSON.stringify(r!.problem));
    return new x509.X509Certificate(pemCerts(r!.certificate!)[0]!.rawData).serialNumber;
  }

  async function revokeEnvelope(edge: string, serial: string, reason: CrlReason) {
    const p = newRevokePayload({
      origin: origin(edge),
      serial,
      reason,
      requester: { method: 'issuer-account', account: 'acct-1', jwkThumbprint: 'thumb' },
      ttlMs: parseDuration('5m'),
    });
    return { id: p.id, jws: await signEdgeEnvelope(p, keys[edge]!) };
  }

  async function gatewayCrl(): Promise<x509.X509Crl> {
    const res = await fetch(`${m.mesh.gateway!.httpUrl}/crl`);
    assert.equal(res.headers.get('content-type'), 'application/pkix-crl');
    return new x509.X509Crl(new Uint8Array(await res.arrayBuffer()));
  }

  async function crlMessageListing(edge: string, serial: string): Promise<CrlMessage> {
    for (let i = 0; i < 200; i++) {
      const hit = crls[edge]!.find((c) => new x509.X509Crl(Buffer.from(c.crl, 'base64url')).findRevoked(serial));
      if (hit) return hit;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`no CRL message to ${edge} listing ${serial}`);
  }

  test('ok/revoke travels edge-b -> relay-2 -> relay-1 -> gateway; the answer comes back; every edge gets the CRL', async () => {
    const serial = await issue('edge-b', 'one.corp.test');
    const { id, jws } = await revokeEnvelope('edge-b', serial, 4);
    const [r] = await exchange('edge-b', id, jws);
    assert.equal(r!.kind, 'revoke');
    assert.equal(r!.status, 'valid', JSON.stringify(r!.problem));
    assert.equal(r!.revocation!.serial, serial);
    assert.equal(r!.revocation!.reason, 4);
    assert.deepEqual(r!.hops.map((h) => h.node), ['relay-2', 'relay-1']);
    assert.equal((await gatewayCrl()).findRevoked(serial)?.reason, x509.X509CrlReason.superseded);
    // Published to both edges, signed by the gateway.
    for (const edge of ['edge-a', 'edge-b']) {
      const msg = await crlMessageListing(edge, serial);
      assert.equal(msg.gateway, 'gw');
    }
  });

  test('ok/a redelivered revoke envelope gets the stored answer', async () => {
    const serial = await issue('edge-b', 'two.corp.test');
    const { id, jws } = await revokeEnvelope('edge-b', serial, 1);
    const [first] = await exchange('edge-b', id, jws);
    const both = await exchange('edge-b', id, jws, 1);
    assert.equal(both.length, 2);
    assert.deepEqual(both[1]!.revocation, first!.revocation);
  });

  test('fail/a revoke by edge-a for a serial edge-b requested is refused by the gateway; nothing is revoked', async () => {
    const serial = await issue('edge-b', 'three.corp.test');
    const before = await gatewayCrl();
    const { id, jws } = await revokeEnvelope('edge-a', serial, 1);
    const [r] = await exchange('edge-a', id, jws);
    assert.equal(r!.kind, 'revoke');
    assert.equal(r!.status, 'invalid');
    assert.equal(r!.problem!.type, `${PROBLEM}unauthorized`);
    assert.match(r!.problem!.detail, /not requested through edge "edge-a"/);
    const after = await gatewayCrl();
    assert.equal(after.findRevoked(serial), null);
    assert.deepEqual(Buffer.from(after.rawData), Buffer.from(before.rawData));
    // The rightful edge can still revoke it.
    const own = await revokeEnvelope('edge-b', serial, 0);
    assert.equal((await exchange('edge-b', own.id, own.jws))[0]!.status, 'valid');
  });

  test('fail/a serial the gateway never issued is malformed; a second revocation is alreadyRevoked', async () => {
    const unknown = await revokeEnvelope('edge-b', '7f0000000000000000000000000000aa', 1);
    const [r] = await exchange('edge-b', unknown.id, unknown.jws);
    assert.equal(r!.status, 'invalid');
    assert.equal(r!.problem!.type, `${PROBLEM}malformed`);

    const serial = await issue('edge-b', 'four.corp.test');
    const first = await revokeEnvelope('edge-b', serial, 5);
    assert.equal((await exchange('edge-b', first.id, first.jws))[0]!.status, 'valid');
    const second = await revokeEnvelope('edge-b', serial, 1);
    const [again] = await exchange('edge-b', second.id, second.jws);
    assert.equal(again!.problem!.type, `${PROBLEM}alreadyRevoked`);
    assert.equal((await gatewayCrl()).findRevoked(serial)?.reason, x509.X509CrlReason.cessationOfOperation);
  });
});

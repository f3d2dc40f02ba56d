import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { connect, type NatsConnection } from 'nats';
import { downSubject, upSubject } from '../../shared/bus/subjects.js';
import { EnvelopeQueue } from '../../shared/bus/queue.js';
import { createLogger } from '../../shared/logging/logger.js';
import { nodeConnectOptions } from '../../shared/bus/auth.js';
import { loadOrCreateNodeKey, newEdgePayload, signEdgeEnvelope, verifyResult, wrapEnvelope, type NodeKey, type ResultPayload } from '../../shared/envelope/index.js';
import { parseDuration } from '../../shared/config/index.js';
import { startTestMesh, type TestMesh } from '../harness/mesh.js';
import { AUDIT_FILE, AUDIT_HEAD_FILE, auditDir } from '../../shared/audit/audit-log.js';
import { copyFile, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { httpGet, opensslVerify, pemCerts, run, sanNames } from '../harness/tools.js';

const BIN = fileURLToPath(new URL('../../bin/ra-mesh.js', import.meta.url));
import { makeCsr } from '../harness/acme-client.js';

// A real hub + two leaf nats-servers; an envelope signed by an edge travels relay-2 (dc-b) ->
// relay-1 (dc-a) -> gateway (hub) and the certificate comes back down to the edge's subject.

describe('integration: envelope through two relays over hub + 2 leaf servers', { timeout: 120_000 }, () => {
  let m: TestMesh;
  let nc: NatsConnection;
  let edgeKey: NodeKey;
  let root: string;
  const results = new Map<string, ResultPayload[]>();

  before(async () => {
    m = await startTestMesh({
      nats: { queue: { duplicateWindow: '1s' } },
      nodes: [
        { id: 'gw', role: 'gateway', dc: 'core', policy: { allow: { dns: ['*.corp.test'] }, maxLifetime: '6h' } },
        { id: 'relay-1', role: 'relay', dc: 'dc-a', parent: 'gw', policy: { deny: { dns: ['pci.corp.test'] } } },
        { id: 'relay-2', role: 'relay', dc: 'dc-b', parent: 'relay-1' },
        { id: 'edge-b', role: 'edge', dc: 'dc-b', parent: 'relay-2' },
      ],
    });
    root = await httpGet(m.rootsUrl());
    // Act as edge-b on its own leaf server with edge-b's key.
    edgeKey = await loadOrCreateNodeKey(m.topology.keysDir(), 'edge-b');
    nc = await connectAs('edge-b');
    nc.subscribe(downSubject('edge-b'), {
      callback: async (_e, msg) => {
        const keys = (await import('../../shared/envelope/index.js')).KeyRing;
        const ring = await keys.fromDir(m.topology.keysDir(), m.topology.nodes.map((n) => n.id));
        const r = await verifyResult(new TextDecoder().decode(msg.data), { topology: m.topology, edge: 'edge-b', keys: ring });
        results.set(r.id, [...(results.get(r.id) ?? []), r]);
      },
    });
    await nc.flush();
  });

  const metricsUrl = (node: string) => `http://${m.topology.node(node).metrics}/metrics`;

  /** A bus connection with a node's own NATS credentials, on that node's server. */
  async function connectAs(node: string): Promise<NatsConnection> {
    const c = await connect({ servers: m.topology.natsUrl(node), ...(await nodeConnectOptions(m.topology, node)) });
    extra.push(c);
    return c;
  }
  const extra: NatsConnection[] = [];

  after(async () => {
    for (const c of extra) await c.close().catch(() => undefined);
    await m?.stop();
  });

  async function envelope(names: string[], csrNames = names) {
    const payload = newEdgePayload({
      origin: { node: 'edge-b', dc: 'dc-b', segment: 'seg-b' },
      csr: await makeCsr(csrNames),
      identifiers: names.map((value) => ({ type: 'dns' as const, value, validation: { method: 'http-01' as const, at: new Date().toISOString(), from: '127.0.0.1:80' } })),
      account: { id: 'acct-1', eab: null, jwkThumbprint: 'thumb' },
      requested: { notBefore: null, notAfter: null },
      renewalOf: null,
      ttlMs: parseDuration('5m'),
    });
    return { id: payload.id, jws: await signEdgeEnvelope(payload, edgeKey) };
  }

  async function waitResult(id: string, count = 1, timeoutMs = 15_000): Promise<ResultPayload[]> {
    const until = Date.now() + timeoutMs;
    while ((results.get(id)?.length ?? 0) < count) {
      if (Date.now() > until) throw new Error(`no result for ${id}`);
      // Interest may still be propagating between leaf and hub right after start: retry the publish.
      await new Promise((r) => setTimeout(r, 50));
    }
    return results.get(id)!;
  }

  /** Into a node's outbound stream, as that node (its credentials, its stream). */
  async function sendAs(node: string, data: string, msgId: string) {
    const c = node === 'edge-b' ? nc : await connectAs(node);
    const q = await EnvelopeQueue.open(c, m.topology, node, { log: createLogger('test', { as: node }) });
    await q.send(data, msgId);
  }

  /** As edge-b, with the envelope id as Nats-Msg-Id. */
  async function send(jws: string) {
    await sendAs('edge-b', jws, JSON.parse(Buffer.from(jws.split('.')[1]!, 'base64url').toString()).id as string);
  }

  test('ok/certificate comes back and verifies against the root with the requested SANs', async () => {
    const { id, jws } = await envelope(['app.corp.test', 'api.corp.test']);
    await send(jws);
    const [r] = await waitResult(id);
    assert.equal(r!.status, 'valid');
    const certs = pemCerts(r!.certificate!);
    assert.deepEqual(sanNames(certs[0]!), ['api.corp.test', 'app.corp.test']);
    assert.match(await opensslVerify(m.dir, r!.certificate!, root), /OK/);
    // gateway maxLifetime 6h caps the 24h default
    const hours = (certs[0]!.notAfter.getTime() - certs[0]!.notBefore.getTime()) / 3_600_000;
    assert.ok(hours <= 6.05 && hours > 5.9, `lifetime ${hours}h`);
    assert.deepEqual(r!.hops.map((h) => h.node), ['relay-2', 'relay-1']);
    for (const h of r!.hops) assert.ok(h.sentAt >= h.recvAt);
  });

  test('ok/redelivered envelope gets the stored result and no second certificate', async () => {
    const before = m.mesh.gateway!.issued;
    const { id, jws } = await envelope(['again.corp.test']);
    await send(jws);
    const [first] = await waitResult(id, 1);
    await send(jws); // within the dedupe window: dropped by the streams, no second result
    await new Promise((r) => setTimeout(r, 1_500)); // past every stream's 1s dedupe window
    await send(jws);
    const both = await waitResult(id, 2);
    assert.equal(m.mesh.gateway!.issued, before + 1);
    assert.equal(both[1]!.certificate, first!.certificate);
  });

  test('fail/refusal by relay-1 travels back with the layer and rule', async () => {
    const { id, jws } = await envelope(['pci.corp.test']);
    await send(jws);
    const [r] = await waitResult(id);
    assert.equal(r!.status, 'invalid');
    assert.equal(r!.problem!.type, 'urn:ietf:params:acme:error:rejectedIdentifier');
    assert.match(r!.problem!.subproblems![0]!.detail, /relay-1: deny\.dns "pci\.corp\.test"/);
  });

  test('fail/gateway layer refuses a name outside its allow list', async () => {
    const { id, jws } = await envelope(['www.other.test']);
    await send(jws);
    const [r] = await waitResult(id);
    assert.equal(r!.status, 'invalid');
    assert.match(r!.problem!.subproblems![0]!.detail, /gw: allow\.dns \(no rule matches\)/);
  });

  test('fail/csr naming more than the validated identifiers is badCSR at the gateway', async () => {
    const { id, jws } = await envelope(['one.corp.test'], ['one.corp.test', 'two.corp.test']);
    await send(jws);
    const [r] = await waitResult(id);
    assert.equal(r!.status, 'invalid');
    assert.equal(r!.problem!.type, 'urn:ietf:params:acme:error:badCSR');
  });

  test('fail/malformed and forged envelopes are dropped; the nodes keep working', async () => {
    const before = m.mesh.gateway!.issued;
    const { jws: good } = await envelope(['later.corp.test']);
    const junk = ['', 'not a jws', 'a.b.c', good.slice(0, good.length - 10), good.replace(/\.[^.]+$/, '.AAAA'), 'x'.repeat(200_000)];
    // Each queue gets junk from a connection allowed to publish there (the node's child).
    const asRelay2 = await connectAs('relay-2');
    for (const [i, j] of junk.entries()) for (const node of ['edge-b', 'relay-2', 'relay-1']) await sendAs(node, j, `junk-${i}`);
    // Replayed: a fresh id carrying the nonce of an envelope the relays have seen.
    const seen = await envelope(['seen.corp.test']);
    await send(seen.jws);
    await waitResult(seen.id);
    const seenPayload = JSON.parse(Buffer.from(seen.jws.split('.')[1]!, 'base64url').toString());
    const replayed = await signEdgeEnvelope({ ...seenPayload, id: crypto.randomUUID() }, edgeKey);
    await sendAs('edge-b', replayed, 'replayed');
    // Re-ordered: layers wrapped relay-1 first, then relay-2 (the path is relay-2 then relay-1).
    const r1 = await loadOrCreateNodeKey(m.topology.keysDir(), 'relay-1');
    const r2 = await loadOrCreateNodeKey(m.topology.keysDir(), 'relay-2');
    const { jws: inner } = await envelope(['order.corp.test']);
    const hop = (node: string) => ({ node, recvAt: Date.now(), policy: 'x', decision: 'allow' as const });
    const reordered = await wrapEnvelope(await wrapEnvelope(inner, hop('relay-1'), r1, { ttlMs: 60_000 }), hop('relay-2'), r2, { ttlMs: 60_000 });
    await sendAs('relay-2', reordered, 'reordered');
    // The edge's own envelope handed to the gateway unwrapped (a relay skipped): wrong parent, dropped.
    const { id: skipId, jws: skip } = await envelope(['skip.corp.test']);
    await sendAs('relay-1', skip, skipId);
    // Core NATS on an up subject is refused for a node that is not that child.
    asRelay2.publish(upSubject('gw', 'relay-1'), new TextEncoder().encode(skip));
    await asRelay2.flush();
    const { id, jws } = await envelope(['still.corp.test']);
    await send(jws);
    const [r] = await waitResult(id);
    assert.equal(r!.status, 'valid');
    assert.equal(results.has(skipId), false);
    assert.equal(m.mesh.gateway!.issued, before + 2);
    // Every refusal is counted by reason on the node that refused it (its /metrics, from outside).
    const counts = async (node: string) => {
      const text = await httpGet(metricsUrl(node));
      const out: Record<string, number> = {};
      for (const mm of text.matchAll(/^ramesh_envelopes_rejected_total\{([^}]*)\} (\d+)$/gm)) {
        const reason = /reason="([^"]+)"/.exec(mm[1]!)![1]!;
        assert.match(mm[1]!, new RegExp(`node="${node}"`));
        out[reason] = Number(mm[2]);
      }
      return out;
    };
    const total = (c: Record<string, number>) => Object.values(c).reduce((a, b) => a + b, 0);
    // Bounded wait: the nodes handle messages concurrently, the last junk may still be in hand.
    let relay2 = await counts('relay-2');
    let relay1 = await counts('relay-1');
    let gw = await counts('gw');
    for (let i = 0; i < 50 && (total(relay2) < junk.length + 1 || total(relay1) < junk.length + 1 || total(gw) < junk.length + 1); i++) {
      await new Promise((r) => setTimeout(r, 100));
      [relay2, relay1, gw] = [await counts('relay-2'), await counts('relay-1'), await counts('gw')];
    }
    assert.equal(total(relay2), junk.length + 1, `relay-2: junk and the replay ${JSON.stringify(relay2)}`);
    assert.ok((relay2.replayed ?? 0) >= 1, JSON.stringify(relay2));
    assert.equal(total(relay1), junk.length + 1, `relay-1: junk and the re-ordered layers ${JSON.stringify(relay1)}`);
    assert.equal(total(gw), junk.length + 1, `gw: junk and the skipped relay ${JSON.stringify(gw)}`);
  });

  test('ok/the gateway audit log holds every decision with its path; `ra-mesh audit verify` checks it', async () => {
    const dir = auditDir(m.topology, 'gw');
    const records = (await readFile(join(dir, AUDIT_FILE), 'utf8')).trimEnd().split('\n').map((l) => JSON.parse(l));
    const issued = records.filter((r) => r.event === 'issued');
    const refused = records.filter((r) => r.event === 'refused');
    assert.equal(issued.length, m.mesh.gateway!.issued);
    assert.ok(refused.some((r) => r.problem.type === 'urn:ietf:params:acme:error:badCSR'));
    for (const r of records) assert.deepEqual(r.path, ['edge-b', 'relay-2', 'relay-1', 'gw']);
    const ok = await run(process.execPath, [BIN, 'audit', 'verify', m.topologyFile], { env: { RA_MESH_LOG_LEVEL: 'error' } });
    assert.match(ok.out, new RegExp(`intact, ${records.length} records`));
    // A copy with one record changed: the command names it and exits 1.
    const copy = join(m.dir, 'audit-copy');
    await mkdir(copy);
    const lines = (await readFile(join(dir, AUDIT_FILE), 'utf8')).trimEnd().split('\n');
    lines[1] = lines[1]!.replace('"edge-b"', '"edge-x"');
    await writeFile(join(copy, AUDIT_FILE), lines.join('\n') + '\n');
    await copyFile(join(dir, AUDIT_HEAD_FILE), join(copy, AUDIT_HEAD_FILE));
    await assert.rejects(run(process.execPath, [BIN, 'audit', 'verify', m.topologyFile, '--dir', copy]), (e: Error & { code: number; out: string }) => {
      assert.equal(e.code, 1);
      assert.match(e.out, /BROKEN at record 2: the record does not match its hash/);
      return true;
    });
  });
});

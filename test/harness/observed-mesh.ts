// A mesh for the observability tests (metrics, status page, ra-mesh top): gateway gw (core) <- relay-1
// (dc-a, denies *.pci.corp.test) <- relay-2 (dc-b) <- edge-b (dc-b, segment seg-b), a real ACME client
// against edge-b, and helpers to run a known sequence of issuances, refusals and junk envelopes and to
// read Prometheus text.

import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { connect, type NatsConnection } from 'nats';
import { EnvelopeQueue } from '../../shared/bus/queue.js';
import { nodeConnectOptions } from '../../shared/bus/auth.js';
import { parseDuration } from '../../shared/config/index.js';
import { loadOrCreateNodeKey, newEdgePayload, newRevokePayload, signEdgeEnvelope } from '../../shared/envelope/index.js';
import { createLogger } from '../../shared/logging/logger.js';
import { makeCsr, TestAcmeClient } from './acme-client.js';
import { startTestMesh, type TestMesh } from './mesh.js';
import { freePort } from './ports.js';
import { httpGet } from './tools.js';

export interface ObservedMesh {
  m: TestMesh;
  client: TestAcmeClient;
  /** newOrder, http-01, finalize, poll; downloads the certificate when valid. */
  order(name: string): Promise<'valid' | 'invalid'>;
  /** Puts `k` junk messages (each a different defect) into edge-b's outbound stream, as edge-b. */
  sendJunk(k: number): Promise<void>;
  /**
   * An issue envelope signed with edge-b's key, straight into its outbound stream (no ACME order: the
   * edge itself checks every layer of its path at newOrder, so a relay refuses only what reaches it
   * this way, e.g. from an edge whose copy of the topology is older). Returns the envelope id.
   */
  sendEnvelope(name: string): Promise<string>;
  /** A revocation (RFC 8555 §7.6 as the edge sends it up) of a serial, signed with edge-b's key. Returns the envelope id. */
  sendRevoke(serial: string): Promise<string>;
  /** Certificates (PEM chains) issued by order(), by name. */
  certificates: Map<string, string>;
  /** GET a node's /metrics, parsed. */
  metrics(node: string): Promise<Samples>;
  stop(): Promise<void>;
}

export const DENIED_SUFFIX = 'pci.corp.test';

export async function startObservedMesh(names: string[]): Promise<ObservedMesh> {
  const http01Port = await freePort();
  const hosts = Object.fromEntries(names.map((n) => [n, '127.0.0.1']));
  const m = await startTestMesh({
    nodes: [
      { id: 'gw', role: 'gateway', dc: 'core', policy: { allow: { dns: ['*.corp.test', `*.${DENIED_SUFFIX}`] } } },
      { id: 'relay-1', role: 'relay', dc: 'dc-a', parent: 'gw', policy: { deny: { dns: [`*.${DENIED_SUFFIX}`] } } },
      { id: 'relay-2', role: 'relay', dc: 'dc-b', parent: 'relay-1' },
      { id: 'edge-b', role: 'edge', dc: 'dc-b', segment: 'seg-b', parent: 'relay-2', acme: { http01Port, hosts } },
    ],
  });
  const conns: NatsConnection[] = [];
  try {
    const responder = await TestAcmeClient.http01Responder(http01Port);
    const client = await new TestAcmeClient(m.directory('edge-b'), await readFile(m.edgeTlsCert('edge-b'), 'utf8')).init();
    assert.equal((await client.register()).status, 201);
    const edgeKey = await loadOrCreateNodeKey(m.topology.keysDir(), 'edge-b');
    let q: EnvelopeQueue | undefined;
    const certificates = new Map<string, string>();
    const queue = async () => {
      if (q) return q;
      const nc = await connect({ servers: m.topology.natsUrl('edge-b'), ...(await nodeConnectOptions(m.topology, 'edge-b')) });
      conns.push(nc);
      return (q = await EnvelopeQueue.open(nc, m.topology, 'edge-b', { log: createLogger('test', { as: 'edge-b' }) }));
    };
    const signed = async (name: string) => {
      const payload = newEdgePayload({
        origin: { node: 'edge-b', dc: 'dc-b', segment: 'seg-b' },
        csr: await makeCsr([name]),
        identifiers: [{ type: 'dns', value: name, validation: { method: 'http-01', at: new Date().toISOString(), from: '127.0.0.1:80' } }],
        account: { id: 'acct-test', eab: null, jwkThumbprint: 'thumb' },
        requested: { notBefore: null, notAfter: null },
        renewalOf: null,
        ttlMs: parseDuration('5m'),
      });
      return { id: payload.id, jws: await signEdgeEnvelope(payload, edgeKey) };
    };
    return {
      m,
      client,
      async order(name) {
        const r = await client.readyOrder([name], responder);
        assert.equal(r.order.status, 'ready', JSON.stringify(r.order));
        const f = await client.post(r.order.finalize, { csr: await makeCsr([name]) });
        assert.equal(f.status, 200, f.body);
        const done = await client.poll(r.url, (o) => o.status === 'valid' || o.status === 'invalid', 30_000);
        if (done.status === 'valid') {
          const cert = await client.post(done.certificate, undefined);
          assert.equal(cert.status, 200);
          certificates.set(name, cert.body);
        }
        return done.status;
      },
      async sendJunk(k) {
        const q = await queue();
        const { jws: good } = await signed('junk.corp.test');
        const junk = ['not a jws', good.replace(/\.[^.]+$/, '.AAAA'), 'x'.repeat(200_000), 'a.b.c'];
        for (let i = 0; i < k; i++) await q.send(junk[i % junk.length]!, `junk-${i}`);
      },
      certificates,
      async sendRevoke(serial) {
        const p = newRevokePayload({
          origin: { node: 'edge-b', dc: 'dc-b', segment: 'seg-b' },
          serial,
          reason: 4,
          requester: { method: 'issuer-account', account: 'acct-test', jwkThumbprint: 'thumb' },
          ttlMs: parseDuration('5m'),
        });
        await (await queue()).send(await signEdgeEnvelope(p, edgeKey), p.id);
        return p.id;
      },
      async sendEnvelope(name) {
        const { id, jws } = await signed(name);
        await (await queue()).send(jws, id);
        return id;
      },
      metrics: async (node) => parseMetrics(await httpGet(`http://${m.topology.node(node).metrics}/metrics`)),
      async stop() {
        for (const c of conns) await c.close().catch(() => undefined);
        await responder.close();
        await m.stop();
      },
    };
  } catch (e) {
    await m.stop();
    throw e;
  }
}

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export class Samples {
  constructor(readonly all: Sample[]) {}

  /** Samples of `name` whose labels include `labels`. */
  find(name: string, labels: Record<string, string> = {}): Sample[] {
    return this.all.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  }

  /** The sum over the matching samples (0 when none). */
  sum(name: string, labels: Record<string, string> = {}): number {
    return this.find(name, labels).reduce((t, s) => t + s.value, 0);
  }
}

/** Prometheus text exposition format 0.0.4: `name{label="value",...} value`. */
export function parseMetrics(text: string): Samples {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`not an exposition line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!.replace(/\\(.)/g, (_x, c: string) => (c === 'n' ? '\n' : c));
    out.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return new Samples(out);
}

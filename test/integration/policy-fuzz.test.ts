import assert from 'node:assert/strict';
import { webcrypto } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { after, before, describe, test } from 'node:test';
import { connect, type NatsConnection } from 'nats';
import { downSubject } from '../../shared/bus/subjects.js';
import { EnvelopeQueue } from '../../shared/bus/queue.js';
import { nodeConnectOptions } from '../../shared/bus/auth.js';
import { createLogger } from '../../shared/logging/logger.js';
import { parseDuration } from '../../shared/config/index.js';
import { KeyRing, loadOrCreateNodeKey, newEdgePayload, signEdgeEnvelope, verifyResult, type NodeKey, type ResultPayload } from '../../shared/envelope/index.js';
import { canonicalIp } from '../../shared/pki/index.js';
import { Pkcs10CertificateRequestGenerator, SubjectAlternativeNameExtension, type JsonGeneralName } from '../../shared/pki/x509.js';
import { startTestMesh, type TestMesh } from '../harness/mesh.js';
import { freePort } from '../harness/ports.js';
import { pemCerts } from '../harness/tools.js';
import { TestAcmeClient } from '../harness/acme-client.js';

// Property: no CSR with a denied name is ever issued. A seeded generator makes 200 requests (names
// near every rule: denied suffixes and apexes, one label too deep, case changes, an IDN A-label, IPs in
// and around denied ranges, IPv4-mapped IPv6, wildcards, CSRs that smuggle an extra SAN or a foreign
// CN, too many names) and runs them through a live mesh with the builtin CA: most as envelopes signed
// with the edge's own key straight onto its uplink (so only the relay and the gateway stand between
// them and the CA: never trust the hop below), the rest through the edge's ACME server. Every
// certificate that comes back is checked against an oracle written independently of shared/policy;
// so is the converse (what the oracle allows is issued), so the test cannot pass by refusing all.
// Seed: RA_MESH_FUZZ_SEED, else random; printed as a diagnostic and in every failure message.

const SEED = Number(process.env.RA_MESH_FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 31));
const REQUESTS = 200;
const ACME_SHARE = 0.2;

/** mulberry32: a small seeded PRNG. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// --- the policies of the mesh, and an oracle for them that does not use shared/policy ---
const GW_POLICY = { allow: { dns: ['*.corp.test', 'corp.test', '*.iot.corp.test'], ip: ['10.0.0.0/8', 'fd00::/8'] }, deny: { ip: ['10.66.0.0/16'] }, maxSans: 4 };
const RELAY_POLICY = { deny: { dns: ['*.pci.corp.test', 'pci.corp.test', 'secret.corp.test', 'xn--bcher-kva.corp.test'], ip: ['10.99.0.0/16', 'fd00:99::/32'] } };
const EDGE_POLICY = { deny: { dns: ['*.quarantine.corp.test'] } };

function dnsOk(name: string): boolean {
  const n = name.toLowerCase();
  if (n.endsWith('.') || n.startsWith('*') || n.includes('..')) return false; // absolute names, wildcards (no layer allows them)
  const l = n.split('.');
  const rest = (k: number) => l.slice(k).join('.');
  // relay-1 denies
  if (n === 'pci.corp.test' || n === 'secret.corp.test' || n === 'xn--bcher-kva.corp.test' || (l.length === 4 && rest(1) === 'pci.corp.test')) return false;
  // edge-f denies
  if (l.length === 4 && rest(1) === 'quarantine.corp.test') return false;
  // gw allows
  return n === 'corp.test' || (l.length === 3 && rest(1) === 'corp.test') || (l.length === 4 && rest(1) === 'iot.corp.test');
}

/** IPv4 as a number, or undefined; IPv4-mapped IPv6 counts as its IPv4 address. */
function v4(ip: string): number | undefined {
  const m = /^(?:::ffff:)?(\d+)\.(\d+)\.(\d+)\.(\d+)$/i.exec(ip);
  if (m) return ((+m[1]! << 24) >>> 0) + (+m[2]! << 16) + (+m[3]! << 8) + +m[4]!;
  const hex = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/i.exec(ip);
  if (hex) return parseInt(hex[1]!, 16) * 65536 + parseInt(hex[2]!, 16);
  return undefined;
}

/** The first two 16-bit groups of an IPv6 address (enough for the /8 and /32 rules here). */
function v6Head(ip: string): [number, number] {
  const [head] = ip.toLowerCase().split('::');
  const g = head!.split(':').filter(Boolean).map((x) => parseInt(x, 16));
  const full = ip.includes('::') ? g : ip.split(':').map((x) => parseInt(x, 16));
  return [full[0] ?? 0, full[1] ?? 0];
}

function ipOk(ip: string): boolean {
  const a = v4(ip);
  if (a !== undefined) {
    const b16 = a >>> 16;
    if (b16 === (10 << 8) + 66 || b16 === (10 << 8) + 99) return false;
    return a >>> 24 === 10;
  }
  const [g0, g1] = v6Head(ip);
  if (g0 === 0xfd00 && g1 === 0x99) return false;
  return g0 >> 8 === 0xfd;
}

const nameOk = (n: { type: 'dns' | 'ip'; value: string }) => (n.type === 'dns' ? dnsOk(n.value) : ipOk(n.value));

// --- the generator ---
interface Gen {
  i: number;
  via: 'envelope' | 'acme';
  identifiers: Array<{ type: 'dns' | 'ip'; value: string }>;
  /** SAN entries of the CSR (identifiers, maybe case-changed, maybe plus a smuggled one). */
  san: Array<{ type: 'dns' | 'ip'; value: string }>;
  cn?: string;
  /** Whether the oracle says a certificate may be issued. */
  expectIssued: boolean;
  why: string;
}

function generate(seed: number): Gen[] {
  const r = rng(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
  const labels = ['a', 'b', 'db', 'cam7', 'pci', 'secret', 'x-1', 'iot', 'quarantine', 'xn--bcher-kva'];
  // Weighted towards names that pass, so both outcomes are frequent.
  const suffixes = ['corp.test', 'corp.test', 'corp.test', 'corp.test', 'corp.test', 'iot.corp.test', 'iot.corp.test', 'pci.corp.test', 'quarantine.corp.test', 'other.test', 'corp.test.evil', 'xn--bcher-kva.corp.test'];
  const mangle = (s: string) => (r() < 0.25 ? s.replace(/[a-z]/g, (c) => (r() < 0.5 ? c.toUpperCase() : c)) : s);
  const dnsName = (): string => {
    if (r() < 0.12) return pick(['corp.test', 'pci.corp.test', 'secret.corp.test', 'xn--bcher-kva.corp.test', 'iot.corp.test']);
    const depth = r() < 0.8 ? 1 : 2;
    let n = pick(suffixes);
    for (let k = 0; k < depth; k++) n = `${pick(labels)}.${n}`;
    if (r() < 0.05) n = `*.${n.split('.').slice(1).join('.')}`;
    if (r() < 0.04) n = `${n}.`;
    return n;
  };
  const ipAddr = (): string => {
    const o = () => Math.floor(r() * 256);
    switch (Math.floor(r() * 10)) {
      case 8:
      case 9:
      case 0: return `10.${o()}.${o()}.${o()}`;
      case 1: return `10.66.${o()}.${o()}`;
      case 2: return `10.99.${o()}.${o()}`;
      case 3: return `192.168.${o()}.${o()}`;
      case 4: return `fd00::${(o() + 1).toString(16)}`;
      case 5: return `fd00:99::${(o() + 1).toString(16)}`;
      case 6: return `::ffff:10.${pick([1, 66, 99])}.${o()}.${o()}`;
      default: return `2001:db8::${(o() + 1).toString(16)}`;
    }
  };
  const out: Gen[] = [];
  for (let i = 0; i < REQUESTS; i++) {
    const via = r() < ACME_SHARE ? 'acme' : 'envelope';
    const roll = r();
    const count = roll < 0.55 ? 1 : roll < 0.85 ? 2 : roll < 0.93 ? 3 : 5;
    const seen = new Set<string>();
    const identifiers: Gen['identifiers'] = [];
    while (identifiers.length < count) {
      // The ACME path validates with http-01 through a hosts override: DNS names only, no wildcard.
      const id = via === 'acme' || r() < 0.75 ? { type: 'dns' as const, value: dnsName().toLowerCase() } : { type: 'ip' as const, value: canonicalIp(ipAddr())! };
      if (via === 'acme' && (id.value.startsWith('*') || id.value.endsWith('.') || id.value.split('.').some((l) => l === '' || l.startsWith('-')))) continue;
      if (seen.has(`${id.type}:${id.value}`)) continue;
      seen.add(`${id.type}:${id.value}`);
      identifiers.push(id);
    }
    const san = identifiers.map((id) => (id.type === 'dns' ? { ...id, value: mangle(id.value) } : id));
    const smuggled = r() < 0.1 ? { type: 'dns' as const, value: dnsName().toLowerCase() } : undefined;
    if (smuggled && !seen.has(`dns:${smuggled.value}`)) san.push(smuggled);
    const cnRoll = r();
    const cn = cnRoll < 0.5 ? identifiers[0]!.value : cnRoll < 0.57 ? dnsName().toLowerCase() : undefined;
    const sanSet = new Set(san.map((s) => `${s.type}:${s.value.toLowerCase()}`));
    if (cn !== undefined) sanSet.add(`${/^[\d.]+$|:/.test(cn) ? 'ip' : 'dns'}:${cn.toLowerCase()}`);
    const exact = sanSet.size === seen.size && [...sanSet].every((k) => seen.has(k));
    const denied = identifiers.filter((id) => !nameOk(id)).map((id) => id.value);
    const expectIssued = exact && denied.length === 0 && identifiers.length <= GW_POLICY.maxSans;
    const why = !exact ? 'CSR names differ from the identifiers' : denied.length ? `denied: ${denied.join(', ')}` : identifiers.length > GW_POLICY.maxSans ? 'more than maxSans' : 'allowed';
    out.push({ i, via, identifiers, san, ...(cn !== undefined ? { cn } : {}), expectIssued, why });
  }
  return out;
}

async function csrFor(g: Gen): Promise<string> {
  const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
  const keys = (await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const req = await Pkcs10CertificateRequestGenerator.create({
    ...(g.cn !== undefined ? { name: `CN=${g.cn}` } : {}),
    keys,
    signingAlgorithm: alg,
    extensions: [new SubjectAlternativeNameExtension(g.san.map((s): JsonGeneralName => ({ type: s.type, value: s.value })))],
  });
  return Buffer.from(req.rawData).toString('base64url');
}

describe('integration: policy fuzz — no CSR with a denied name is ever issued', { timeout: 180_000 }, () => {
  const gens = generate(SEED);
  const acmeNames = [...new Set(gens.filter((g) => g.via === 'acme').flatMap((g) => g.identifiers.map((i) => i.value)))];
  let m: TestMesh;
  let nc: NatsConnection;
  let edgeKey: NodeKey;
  let http01Port: number;
  const results = new Map<string, ResultPayload>();

  before(async () => {
    http01Port = await freePort();
    m = await startTestMesh({
      nodes: [
        { id: 'gw', role: 'gateway', dc: 'core', policy: GW_POLICY },
        { id: 'relay-1', role: 'relay', dc: 'dc-a', parent: 'gw', policy: RELAY_POLICY },
        { id: 'edge-f', role: 'edge', dc: 'dc-a', parent: 'relay-1', policy: EDGE_POLICY, acme: { http01Port, hosts: Object.fromEntries(acmeNames.map((n) => [n, '127.0.0.1'])) } },
      ],
    });
    edgeKey = await loadOrCreateNodeKey(m.topology.keysDir(), 'edge-f');
    const ring = await KeyRing.fromDir(m.topology.keysDir(), m.topology.nodes.map((n) => n.id));
    nc = await connect({ servers: m.topology.natsUrl('edge-f'), ...(await nodeConnectOptions(m.topology, 'edge-f')) });
    nc.subscribe(downSubject('edge-f'), {
      callback: (_e, msg) => {
        verifyResult(new TextDecoder().decode(msg.data), { topology: m.topology, edge: 'edge-f', keys: ring }).then(
          (res) => results.set(res.id, res),
          () => undefined, // CRL messages and anything else on the subject
        );
      },
    });
    await nc.flush();
  });

  after(async () => {
    await nc?.close().catch(() => undefined);
    await m?.stop();
  });

  test(`ok/${REQUESTS} generated requests (seed ${SEED}): every issued certificate has only allowed names, and what is allowed is issued`, { timeout: 150_000 }, async (t) => {
    t.diagnostic(`seed ${SEED} (RA_MESH_FUZZ_SEED=${SEED} repeats this run)`);
    const started = Date.now();
    const queue = await EnvelopeQueue.open(nc, m.topology, 'edge-f', { log: createLogger('fuzz', { as: 'edge-f' }) });
    const outcome = new Map<number, { issued: string[] | undefined; problem?: string }>();
    const ctx = (g: Gen) => `seed ${SEED}, request #${g.i} via ${g.via}: identifiers ${JSON.stringify(g.identifiers.map((i) => i.value))}, CSR SANs ${JSON.stringify(g.san.map((s) => s.value))}, CN ${g.cn ?? '-'} (${g.why})`;

    // Envelopes straight onto the edge's uplink, 20 at a time.
    const direct = gens.filter((g) => g.via === 'envelope');
    for (let k = 0; k < direct.length; k += 20) {
      await Promise.all(
        direct.slice(k, k + 20).map(async (g) => {
          const p = newEdgePayload({
            origin: { node: 'edge-f', dc: 'dc-a' },
            csr: await csrFor(g),
            identifiers: g.identifiers.map((id) => ({ ...id, validation: { method: 'http-01' as const, at: new Date().toISOString(), from: '127.0.0.1:80' } })),
            account: { id: 'fuzz-account', eab: null, jwkThumbprint: 'fuzz' },
            requested: { notBefore: null, notAfter: null },
            renewalOf: null,
            ttlMs: parseDuration('5m'),
          });
          await queue.send(await signEdgeEnvelope(p, edgeKey), p.id);
          const until = Date.now() + 30_000;
          while (!results.has(p.id)) {
            if (Date.now() > until) assert.fail(`no result within 30 s for ${ctx(g)}`);
            await new Promise((res) => setTimeout(res, 20));
          }
          const res = results.get(p.id)!;
          outcome.set(g.i, res.status === 'valid' ? { issued: sans(res.certificate!) } : { issued: undefined, problem: `${res.problem?.type}: ${res.problem?.detail}` });
        }),
      );
    }

    // The rest through the edge's ACME server (newOrder, http-01, finalize with the generated CSR).
    const ca = await readFile(m.edgeTlsCert('edge-f'), 'utf8');
    const client = await new TestAcmeClient(m.directory('edge-f'), ca).init();
    await client.register();
    const responder = await TestAcmeClient.http01Responder(http01Port);
    try {
      for (const g of gens.filter((x) => x.via === 'acme')) {
        const r = await client.post(client.dir.newOrder!, { identifiers: g.identifiers });
        if (r.status !== 201) {
          outcome.set(g.i, { issued: undefined, problem: `newOrder ${r.status} ${r.json().type}: ${r.json().detail}` });
          // The edge checks every layer it sees at newOrder: a denied identifier never gets an order.
          continue;
        }
        assert.ok(g.identifiers.every(nameOk), `the edge accepted a denied identifier at newOrder: ${ctx(g)}`);
        const url = r.headers.location as string;
        for (const az of r.json().authorizations as string[]) {
          const authz = (await client.post(az, undefined)).json();
          const ch = authz.challenges.find((c: { type: string }) => c.type === 'http-01');
          responder.set(ch.token, `${ch.token}.${client.thumbprint}`);
          await client.post(ch.url, {});
        }
        const ready = await client.poll(url, (o) => o.status !== 'pending');
        assert.equal(ready.status, 'ready', `validation failed: ${ctx(g)}: ${JSON.stringify(ready)}`);
        const fin = await client.post(ready.finalize, { csr: await csrFor(g) });
        if (fin.status !== 200) {
          outcome.set(g.i, { issued: undefined, problem: `finalize ${fin.status} ${fin.json().type}: ${fin.json().detail}` });
          continue;
        }
        const done = await client.poll(url, (o) => o.status === 'valid' || o.status === 'invalid', 30_000);
        if (done.status === 'valid') outcome.set(g.i, { issued: sans((await client.post(done.certificate, undefined)).body) });
        else outcome.set(g.i, { issued: undefined, problem: `${done.error?.type}: ${done.error?.detail}` });
      }
    } finally {
      await responder.close();
    }

    // The property, and its converse.
    let issued = 0;
    for (const g of gens) {
      const o = outcome.get(g.i);
      assert.ok(o, `no outcome for ${ctx(g)}`);
      if (o.issued) {
        issued += 1;
        for (const n of o.issued) assert.ok(nameOk({ type: /^[\d.]+$|:/.test(n) ? 'ip' : 'dns', value: n }), `ISSUED a denied name ${n}: ${ctx(g)}`);
        assert.ok(g.expectIssued, `issued although the oracle refuses it: ${ctx(g)}`);
        assert.deepEqual([...o.issued].sort(), g.identifiers.map((i) => i.value).sort(), `certificate names differ from the identifiers: ${ctx(g)}`);
      } else {
        assert.ok(!g.expectIssued, `refused although every name is allowed: ${ctx(g)} -> ${o.problem}`);
      }
    }
    const refused = gens.length - issued;
    const reasons = new Map<string, number>();
    for (const g of gens) {
      const k = g.why.startsWith('denied') ? 'with a name some layer refuses' : g.why;
      reasons.set(k, (reasons.get(k) ?? 0) + 1);
    }
    t.diagnostic(`by the oracle: ${[...reasons].map(([k, v]) => `${v} ${k}`).join(', ')}`);
    t.diagnostic(`${gens.length} requests (${direct.length} as envelopes, ${gens.length - direct.length} via ACME): ${issued} issued, ${refused} refused, in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    // The generator is worth something only if both outcomes occur often.
    assert.ok(issued >= 20 && refused >= 40, `seed ${SEED}: ${issued} issued, ${refused} refused`);
  });
});

function sans(chainPem: string): string[] {
  const leaf = pemCerts(chainPem)[0]!;
  const ext = leaf.getExtension('2.5.29.17');
  if (!ext) return [];
  // Re-read through the SubjectAlternativeNameExtension class for typed names.
  const san = new SubjectAlternativeNameExtension(ext.rawData);
  return san.names.items.map((n) => (n.type === 'ip' ? canonicalIp(n.value)! : n.value));
}

import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';
import type { EnvelopeIdentifier, ResultPayload } from '../../shared/envelope/index.js';
import { derToPem, x509 } from '../../shared/pki/index.js';
import { MESSAGE_TYPE } from '../../services/edge/scep/messages.js';
import { TestAcmeClient } from '../harness/acme-client.js';
import { EdgeDriver } from '../harness/edge-driver.js';
import { startTestMesh, type TestMesh, type TestNode } from '../harness/mesh.js';
import { freePort } from '../harness/ports.js';
import { fingerprintOf, runScepClient } from '../harness/scepclient.js';
import { scepGet, TestScepDevice, type DeviceIdentity } from '../harness/scep-device.js';
import { httpGet, opensslVerify, pemCerts, run, sanNames } from '../harness/tools.js';

// SCEP (RFC 8894) at the edge through a real mesh: Debian's scepclient (micromdm) and TestScepDevice
// (ra-mesh's own small client on the same CMS code, for CertPoll and hand-made bad messages) enroll
// and renew at edges whose RA certificate the mesh CA issued; every request travels edge -> relay ->
// gateway like an ACME order. Refusals come back as CertRep FAILURE with a failInfo.

const BIN = new URL('../../bin/ra-mesh.js', import.meta.url).pathname;
const SEGMENT_PASSWORD = 'iot segment secret';

/** `ra-mesh up <file> --only <id> --no-nats` as a process; resolves once it is up (bounded). */
async function spawnUp(file: string, id: string): Promise<ChildProcess> {
  const child = spawn(process.execPath, [BIN, 'up', file, '--only', id, '--no-nats'], { env: { ...process.env, RA_MESH_LOG_LEVEL: 'error' }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  const until = Date.now() + 30_000;
  while (!/is up/.test(out)) {
    if (child.exitCode !== null) throw new Error(`${id} exited:\n${out}`);
    if (Date.now() > until) {
      child.kill('SIGKILL');
      throw new Error(`${id} not up within 30 s:\n${out}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return child;
}

const sleepUntil = async (t: number) => {
  while (Date.now() < t) await new Promise((r) => setTimeout(r, Math.min(200, t - Date.now())));
};

/** Waits (bounded) until the edge's GetCACert answers, i.e. its RA certificate arrived from the mesh CA. */
async function raReady(url: string, timeoutMs = 30_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    if ((await scepGet(url, 'GetCACert')).status === 200) return;
    if (Date.now() > until) throw new Error(`no RA certificate at ${url} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('integration: SCEP enrollment and renewal through the mesh', { timeout: 240_000 }, () => {
  let m: TestMesh;
  let dir: string;
  let roots: string;
  const url: Record<string, string> = {};
  const drivers: Record<string, EdgeDriver> = {};
  let staleEdge: ChildProcess | undefined;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ra-mesh-scep-'));
    const passFile = join(dir, 'iot.pass');
    await writeFile(passFile, `${SEGMENT_PASSWORD}\n`, { mode: 0o600 });
    const http01Port = await freePort();
    const scep = async (id: string, extra: Record<string, unknown> = {}) => {
      const port = await freePort();
      url[id] = `http://127.0.0.1:${port}/scep`;
      return { listen: `127.0.0.1:${port}`, raName: `ra-${id}.iot.example.test`, challengePasswordFile: passFile, ...extra };
    };
    const nodes: Array<TestNode & { scep?: Record<string, unknown> }> = [
      { id: 'gw', role: 'gateway', dc: 'core', policy: { allow: { dns: ['*.iot.example.test', '*.acme.example.test'] } } },
      { id: 'relay-a', role: 'relay', dc: 'dc-a', parent: 'gw' },
      // relay-b refuses a name that edge-b, running with a stale copy of the topology, does not know is denied.
      { id: 'relay-b', role: 'relay', dc: 'dc-a', parent: 'gw', policy: { deny: { dns: ['refused.iot.example.test'] } } },
      // 61 s of lifetime from a notBefore one minute back: these certificates expire a second after issuance.
      {
        id: 'edge-iot',
        role: 'edge',
        dc: 'dc-iot',
        segment: 'iot',
        parent: 'relay-a',
        policy: { deny: { dns: ['blocked.iot.example.test'] }, defaultLifetime: '61s', renewAfterExpiry: '1h' },
        acme: { http01Port, hosts: { 'web.acme.example.test': '127.0.0.1' } },
        scep: await scep('edge-iot', { legacyCrypto: true }),
      },
      { id: 'edge-w', role: 'edge', dc: 'dc-iot', parent: 'relay-a', policy: { defaultLifetime: '61s', renewAfterExpiry: '3s' }, scep: await scep('edge-w') },
      { id: 'edge-b', role: 'edge', dc: 'dc-iot', parent: 'relay-b', policy: { defaultLifetime: '61s' }, scep: await scep('edge-b', { resultWait: '0s' }) },
      // No scep block: the relay and the gateway refuse SCEP validation methods from these.
      { id: 'edge-plain', role: 'edge', dc: 'dc-a', parent: 'relay-a' },
      { id: 'edge-direct', role: 'edge', dc: 'dc-a', parent: 'gw' },
    ];
    m = await startTestMesh({ retransmitMs: 500, nodes, external: ['edge-b'] });
    // edge-b runs as its own process from a copy of the topology in which relay-b denies nothing.
    const stale = parseYaml(await readFile(m.topologyFile, 'utf8')) as { nodes: Array<{ id: string; policy?: unknown }> };
    stale.nodes.find((n) => n.id === 'relay-b')!.policy = {};
    await writeFile(join(dir, 'stale-topology.yaml'), stringifyYaml(stale));
    staleEdge = await spawnUp(join(dir, 'stale-topology.yaml'), 'edge-b');
    await Promise.all(['edge-iot', 'edge-w', 'edge-b'].map((id) => raReady(url[id]!)));
    roots = await httpGet(m.rootsUrl());
  });

  after(async () => {
    for (const d of Object.values(drivers)) await d.close();
    staleEdge?.kill('SIGKILL');
    await m?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  const raFingerprint = (edge: string) => fingerprintOf(m.mesh.edges.get(edge)!.scep!.ra.current!.cert);

  async function device(edge: string): Promise<TestScepDevice> {
    return new TestScepDevice(url[edge]!).init();
  }

  async function enroll(edge: string, cn: string, challenge: string | undefined = SEGMENT_PASSWORD): Promise<{ dev: TestScepDevice; id: DeviceIdentity; reply: Awaited<ReturnType<TestScepDevice['send']>> }> {
    const dev = await device(edge);
    const id = await TestScepDevice.newIdentity(cn);
    const reply = await dev.send(MESSAGE_TYPE.PKCSReq, await TestScepDevice.csr(id, { cn, ...(challenge !== undefined ? { challenge } : {}) }), id);
    return { dev, id, reply };
  }

  test('ok/GetCACaps names what the edge does (RFC 8894 §3.5.2); SHA-1 only with legacyCrypto', async () => {
    const caps = (await scepGet(url['edge-iot']!, 'GetCACaps')).body.toString().trim().split('\n');
    for (const c of ['AES', 'POSTPKIOperation', 'Renewal', 'SHA-256', 'SCEPStandard', 'SHA-1']) assert.ok(caps.includes(c), `${c} in ${caps}`);
    const strict = (await scepGet(url['edge-w']!, 'GetCACaps')).body.toString().trim().split('\n');
    assert.ok(!strict.includes('SHA-1'));
    const bad = await scepGet(url['edge-iot']!, 'NoSuchOperation');
    assert.equal(bad.status, 400);
  });

  test('ok/GetCACert: the RA certificate issued by the mesh CA through the envelope path, with its chain', async () => {
    const res = await scepGet(url['edge-iot']!, 'GetCACert');
    assert.equal(res.status, 200);
    assert.equal(res.type, 'application/x-x509-ca-ra-cert');
    const dev = await device('edge-iot');
    const ra = new x509.X509Certificate(dev.ra!);
    assert.deepEqual(sanNames(ra), ['ra-edge-iot.iot.example.test']);
    const ku = ra.getExtension(x509.KeyUsagesExtension)!;
    assert.ok(ku.usages & x509.KeyUsageFlags.keyEncipherment && ku.usages & x509.KeyUsageFlags.digitalSignature);
    // Not self-made: it chains to the mesh root (openssl verify), like every certificate the CA signs.
    const chainPem = dev.caCerts.map((c) => derToPem(c, 'CERTIFICATE')).join('');
    assert.match(await opensslVerify(dir, chainPem, roots), /OK/);
    // The gateway issued it to edge-iot's RA account (the audit of the envelope path).
    const audit = await readFile(join(m.topology.storeDir('gw'), 'audit', 'audit.log'), 'utf8');
    assert.match(audit, /"account":"scep-ra:edge-iot"/);
  });

  test('ok/Debian scepclient enrolls with the segment challenge password; the certificate comes from the mesh CA', async () => {
    const d = join(dir, 'sc-1');
    const r = await runScepClient({ dir: d, url: url['edge-iot']!, cn: 'sensor-1.iot.example.test', challenge: SEGMENT_PASSWORD, raFingerprint: raFingerprint('edge-iot'), timeoutMs: 60_000 });
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /pkiStatus=SUCCESS/);
    const cert = pemCerts(await readFile(join(d, 'client.pem'), 'utf8'))[0]!;
    assert.deepEqual(sanNames(cert), ['sensor-1.iot.example.test']);
    // The edge's defaultLifetime (61 s, from a notBefore one minute back).
    assert.equal((cert.notAfter.getTime() - cert.notBefore.getTime()) / 1000, 61);
    // The signature only: the 61 s certificate may have expired by now.
    const inter = new x509.X509Certificate(m.mesh.edges.get('edge-iot')!.scep!.ra.current!.chain[1]!);
    assert.ok(await cert.verify({ publicKey: await inter.publicKey.export(), signatureOnly: true }), 'signed by the mesh intermediate');
  });

  test('ok/PKIOperation by GET with the base64 message (RFC 8894 §4.3)', async () => {
    const dev = await device('edge-w');
    const id = await TestScepDevice.newIdentity('get.iot.example.test');
    const r = await dev.send(MESSAGE_TYPE.PKCSReq, await TestScepDevice.csr(id, { cn: 'get.iot.example.test', dns: ['get.iot.example.test'], challenge: SEGMENT_PASSWORD }), id, { get: true });
    assert.equal(r.status, 'SUCCESS', r.failText);
    assert.deepEqual(sanNames(new x509.X509Certificate(r.certificates![0]!)), ['get.iot.example.test']);
  });

  test('fail/scepclient against an edge without legacyCrypto: its single-DES envelope is refused (badAlg)', async () => {
    const r = await runScepClient({ dir: join(dir, 'sc-des'), url: url['edge-w']!, cn: 'des.iot.example.test', challenge: SEGMENT_PASSWORD, raFingerprint: raFingerprint('edge-w'), timeoutMs: 60_000 });
    assert.notEqual(r.code, 0);
    assert.match(r.out, /failInfo: badAlg/);
  });

  test('ok/a one-time password from `ra-mesh scep otp add` (running edge, admin socket) enrolls one device only', async () => {
    const add = await run(process.execPath, [BIN, 'scep', 'otp', 'add', m.topologyFile, '--edge', 'edge-iot', '--count', '2', '--label', 'batch 7', '--json'], { timeoutMs: 30_000 });
    const otps = JSON.parse(add.out) as Array<{ id: string; password: string }>;
    assert.equal(otps.length, 2);
    const first = await enroll('edge-iot', 'otp-1.iot.example.test', otps[0]!.password);
    assert.equal(first.reply.status, 'SUCCESS', first.reply.failText);
    const second = await enroll('edge-iot', 'otp-2.iot.example.test', otps[0]!.password);
    assert.equal(second.reply.status, 'FAILURE');
    assert.equal(second.reply.failInfo, 'badRequest');
    assert.match(second.reply.failText!, /challenge password is wrong|one-time password/);
    const list = await run(process.execPath, [BIN, 'scep', 'otp', 'list', m.topologyFile, '--edge', 'edge-iot'], { timeoutMs: 30_000 });
    assert.match(list.out, new RegExp(`${otps[0]!.id}\\tused .* by transaction`));
    assert.match(list.out, new RegExp(`${otps[1]!.id}\\tunused`));
    const revoke = await run(process.execPath, [BIN, 'scep', 'otp', 'revoke', m.topologyFile, '--edge', 'edge-iot', '--id', otps[1]!.id], { timeoutMs: 30_000 });
    assert.equal(revoke.code, 0);
    const third = await enroll('edge-iot', 'otp-3.iot.example.test', otps[1]!.password);
    assert.equal(third.reply.status, 'FAILURE', 'a revoked one-time password');
  });

  test('fail/refused at the edge with a CertRep FAILURE and failInfo (nothing travels)', async () => {
    const gwIssued = m.mesh.gateway!.issued;
    const dev = await device('edge-iot');
    const id = await TestScepDevice.newIdentity('x');
    const other = await TestScepDevice.newIdentity('y');
    const cases: Array<[string, () => Promise<Awaited<ReturnType<TestScepDevice['send']>>>, string, RegExp]> = [
      ['fail/wrong challenge password', async () => dev.send(MESSAGE_TYPE.PKCSReq, await TestScepDevice.csr(id, { cn: 'a.iot.example.test', challenge: 'guess' }), id, { transactionId: 't-wrong' }), 'badRequest', /challenge password is wrong/],
      ['fail/no challenge password', async () => dev.send(MESSAGE_TYPE.PKCSReq, await TestScepDevice.csr(id, { cn: 'a.iot.example.test' }), id, { transactionId: 't-none' }), 'badRequest', /no challengePassword/],
      ['fail/a name the edge layer denies', async () => dev.send(MESSAGE_TYPE.PKCSReq, await TestScepDevice.csr(id, { cn: 'blocked.iot.example.test', challenge: SEGMENT_PASSWORD }), id, { transactionId: 't-deny' }), 'badRequest', /policy layer edge-iot refused blocked\.iot\.example\.test/],
      ['fail/a name the gateway layer does not allow', async () => dev.send(MESSAGE_TYPE.PKCSReq, await TestScepDevice.csr(id, { cn: 'x.other.test', challenge: SEGMENT_PASSWORD }), id, { transactionId: 't-gw' }), 'badRequest', /policy layer gw refused x\.other\.test/],
      ['fail/signed with another key than the request\'s', async () => dev.send(MESSAGE_TYPE.PKCSReq, await TestScepDevice.csr(id, { cn: 'a.iot.example.test', challenge: SEGMENT_PASSWORD }), other, { transactionId: 't-pop' }), 'badMessageCheck', /signed with the key of the certificate request/],
      ['fail/encrypted for another certificate than the RA\'s', async () => dev.send(MESSAGE_TYPE.PKCSReq, await TestScepDevice.csr(id, { cn: 'a.iot.example.test', challenge: SEGMENT_PASSWORD }), id, { transactionId: 't-rcpt', recipient: other.cert }), 'badMessageCheck', /not encrypted for this RA/],
      ['fail/CertPoll of an unknown transaction', async () => dev.certPoll(id, 't-unknown', 'a.iot.example.test'), 'badCertId', /no certificate request with this transactionID/],
      ['fail/GetCRL is not served by PKIOperation', async () => dev.send(MESSAGE_TYPE.GetCRL, new Uint8Array([0x30, 0x00]), id, { transactionId: 't-crl' }), 'badRequest', /GetCRL is not supported/],
      ['fail/RenewalReq signed by a certificate the edge never issued', async () => dev.send(MESSAGE_TYPE.RenewalReq, await TestScepDevice.csr(id, { cn: 'a.iot.example.test' }), id, { transactionId: 't-renew-self' }), 'badCertId', /not issued by SCEP at this edge/],
    ];
    for (const [name, send, failInfo, text] of cases) {
      const r = await send();
      assert.equal(r.status, 'FAILURE', name);
      assert.equal(r.failInfo, failInfo, name);
      assert.match(r.failText ?? '', text, name);
    }
    assert.equal(m.mesh.gateway!.issued, gwIssued, 'no CA call');
  });

  test('fail/a pkiMessage whose signature does not verify gets HTTP 400 (its transactionID cannot be trusted)', async () => {
    const dev = await device('edge-iot');
    const id = await TestScepDevice.newIdentity('t');
    const r = await dev.send(MESSAGE_TYPE.PKCSReq, await TestScepDevice.csr(id, { cn: 't.iot.example.test', challenge: SEGMENT_PASSWORD }), id, {
      tamper: (der) => {
        const copy = der.slice();
        copy[copy.length - 5]! ^= 0xff; // inside the signature
        return copy;
      },
    });
    assert.equal(r.http, 400);
    assert.match(r.failText!, /signature does not verify/);
  });

  test('ok/the same transaction again is a poll (RFC 8894 §3.3.3); fail/its transactionID with another request', async () => {
    const { dev, id, reply } = await enroll('edge-iot', 'again.iot.example.test');
    assert.equal(reply.status, 'SUCCESS', reply.failText);
    const issued = m.mesh.gateway!.issued;
    const again = await dev.send(MESSAGE_TYPE.PKCSReq, await TestScepDevice.csr(id, { cn: 'again.iot.example.test', challenge: SEGMENT_PASSWORD }), id);
    assert.equal(again.status, 'SUCCESS');
    assert.ok(Buffer.from(again.certificates![0]!).equals(Buffer.from(reply.certificates![0]!)), 'the same certificate, not a second one');
    const poll = await dev.certPoll(id, reply.transactionId, 'again.iot.example.test');
    assert.ok(Buffer.from(poll.certificates![0]!).equals(Buffer.from(reply.certificates![0]!)));
    assert.equal(m.mesh.gateway!.issued, issued, 'no second CA call');
    const other = await dev.send(MESSAGE_TYPE.PKCSReq, await TestScepDevice.csr(id, { cn: 'other.iot.example.test', challenge: SEGMENT_PASSWORD }), id);
    assert.equal(other.status, 'FAILURE');
    assert.match(other.failText!, /already used by another certificate request/);
  });

  test('ok/refused upstream: PENDING while it travels, then FAILURE with the layer\'s reason by CertPoll', async () => {
    const { dev, id, reply } = await enroll('edge-b', 'refused.iot.example.test');
    // resultWait 0s: the device is answered before the mesh does.
    assert.equal(reply.status, 'PENDING');
    let r = reply;
    for (let i = 0; i < 100 && r.status === 'PENDING'; i++) {
      await new Promise((res) => setTimeout(res, 100));
      r = await dev.certPoll(id, reply.transactionId, 'refused.iot.example.test');
    }
    assert.equal(r.status, 'FAILURE');
    assert.equal(r.failInfo, 'badRequest');
    assert.match(r.failText!, /refused by relay-b: policy layer relay-b refused refused\.iot\.example\.test/);
  });

  test('ok/RenewalReq after expiry within renewAfterExpiry: signed by the old certificate, same key, through every hop', async () => {
    const { dev, id, reply } = await enroll('edge-iot', 'renew.iot.example.test');
    assert.equal(reply.status, 'SUCCESS', reply.failText);
    const old = new x509.X509Certificate(reply.certificates![0]!);
    await sleepUntil(old.notAfter.getTime() + 1000);
    const signer: DeviceIdentity = { ...id, cert: reply.certificates![0]! };
    const csr = await TestScepDevice.csr(id, { cn: 'renew.iot.example.test' });
    const renewed = await dev.send(MESSAGE_TYPE.RenewalReq, csr, signer, { transactionId: 'renew-1' });
    assert.equal(renewed.status, 'SUCCESS', renewed.failText);
    const cert = new x509.X509Certificate(renewed.certificates![0]!);
    assert.notEqual(cert.serialNumber, old.serialNumber);
    assert.ok(cert.notAfter > old.notAfter);
    assert.ok(Buffer.from(cert.publicKey.rawData).equals(Buffer.from(old.publicKey.rawData)), 'same key');
    // fail/the same old certificate for another renewal transaction.
    const twice = await dev.send(MESSAGE_TYPE.RenewalReq, csr, signer, { transactionId: 'renew-2' });
    assert.equal(twice.status, 'FAILURE');
    assert.match(twice.failText!, /already renewed/);
    // fail/a renewal with a new key.
    const fresh = await TestScepDevice.newIdentity('renew.iot.example.test');
    const newKey = await dev.send(MESSAGE_TYPE.RenewalReq, await TestScepDevice.csr(fresh, { cn: 'renew.iot.example.test' }), { ...signer }, { transactionId: 'renew-3' });
    assert.equal(newKey.status, 'FAILURE');
    assert.match(newKey.failText!, /already renewed|keeps the key/);
  });

  test('ok/Debian scepclient renews an expired certificate with RenewalReq (client.pem present)', async () => {
    const d = join(dir, 'sc-renew');
    const opts = { dir: d, url: url['edge-iot']!, cn: 'sensor-9.iot.example.test', raFingerprint: raFingerprint('edge-iot'), timeoutMs: 60_000 };
    const first = await runScepClient({ ...opts, challenge: SEGMENT_PASSWORD });
    assert.equal(first.code, 0, first.out);
    const old = pemCerts(await readFile(join(d, 'client.pem'), 'utf8'))[0]!;
    await sleepUntil(old.notAfter.getTime() + 1000);
    const second = await runScepClient(opts);
    assert.equal(second.code, 0, second.out);
    const cert = pemCerts(await readFile(join(d, 'client.pem'), 'utf8'))[0]!;
    assert.notEqual(cert.serialNumber, old.serialNumber);
    assert.ok(Buffer.from(cert.publicKey.rawData).equals(Buffer.from(old.publicKey.rawData)));
  });

  test('fail/RenewalReq outside the edge window (renewAfterExpiry 3s) is refused: enroll again', async () => {
    const { dev, id, reply } = await enroll('edge-w', 'late.iot.example.test');
    assert.equal(reply.status, 'SUCCESS', reply.failText);
    const old = new x509.X509Certificate(reply.certificates![0]!);
    await sleepUntil(old.notAfter.getTime() + 4500);
    const r = await dev.send(MESSAGE_TYPE.RenewalReq, await TestScepDevice.csr(id, { cn: 'late.iot.example.test' }), { ...id, cert: reply.certificates![0]! }, { transactionId: 'late-1' });
    assert.equal(r.status, 'FAILURE');
    assert.equal(r.failInfo, 'badRequest');
    assert.match(r.failText!, /policy layer edge-w: .*renewAfterExpiry 3s/);
  });

  test('fail/RenewalReq signed by a certificate issued through ACME at the same edge (another account)', async () => {
    const http01Port = (m.topology.node('edge-iot').acme as { http01Port: number }).http01Port;
    const client = await new TestAcmeClient(m.directory('edge-iot'), await readFile(m.edgeTlsCert('edge-iot'), 'utf8')).init();
    await client.register();
    const responder = await TestAcmeClient.http01Responder(http01Port);
    let chain: string;
    const id = await TestScepDevice.newIdentity('web.acme.example.test');
    try {
      const { url: orderUrl, order } = await client.readyOrder(['web.acme.example.test'], responder);
      const csr = await x509.Pkcs10CertificateRequestGenerator.create({
        name: 'CN=web.acme.example.test',
        keys: id.cryptoKeys,
        signingAlgorithm: { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' },
        extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'dns', value: 'web.acme.example.test' }])],
      });
      await client.post(order.finalize, { csr: Buffer.from(csr.rawData).toString('base64url') });
      const done = await client.poll(orderUrl, (o) => o.status === 'valid' || o.status === 'invalid');
      assert.equal(done.status, 'valid');
      chain = (await client.post(done.certificate, undefined)).body;
    } finally {
      await responder.close();
    }
    const dev = await device('edge-iot');
    const r = await dev.send(MESSAGE_TYPE.RenewalReq, await TestScepDevice.csr(id, { cn: 'web.acme.example.test', dns: ['web.acme.example.test'] }), { ...id, cert: new Uint8Array(pemCerts(chain)[0]!.rawData) }, { transactionId: 'acme-cert' });
    assert.equal(r.status, 'FAILURE');
    assert.equal(r.failInfo, 'badCertId');
  });

  /** Acts as `edge` on the bus (its credentials and key): a hand-made envelope with the given names; returns the answer. */
  async function forged(edge: string, identifiers: EnvelopeIdentifier[], accountId: string): Promise<ResultPayload> {
    const d = (drivers[edge] ??= await EdgeDriver.open(m, edge));
    const { id, jws } = await d.issueEnvelope(identifiers.map((i) => i.value), { identifiers, accountId });
    return d.exchange(id, jws, 15_000);
  }

  test('fail/SCEP validation methods from edges without a scep block, or a scep-ra for another name, are refused upstream', async () => {
    const at = new Date().toISOString();
    const scepChallenge = (value: string): EnvelopeIdentifier => ({ type: 'dns', value, validation: { method: 'scep-challenge', at, from: 'segment' } });
    const cases: Array<[string, string, EnvelopeIdentifier[], string, string, RegExp]> = [
      ['fail/scep-challenge from an edge without scep, at the relay', 'edge-plain', [scepChallenge('f1.iot.example.test')], 'scep:edge-plain', 'relay-a', /does not serve SCEP/],
      ['fail/scep-challenge from an edge without scep, at the gateway', 'edge-direct', [scepChallenge('f2.iot.example.test')], 'scep:edge-direct', 'gw', /does not serve SCEP/],
      ['fail/scep-ra for a name that is not scep.raName', 'edge-iot', [{ type: 'dns', value: 'www.iot.example.test', validation: { method: 'scep-ra', at, from: 'node:edge-iot' } }], 'scep-ra:edge-iot', 'relay-a', /may name only its scep\.raName/],
      ['fail/scep-challenge under another account', 'edge-iot', [scepChallenge('f3.iot.example.test')], 'acct-1', 'relay-a', /must come from account scep:edge-iot/],
    ];
    for (const [name, edge, ids, account, by, detail] of cases) {
      const r = await forged(edge, ids, account);
      assert.equal(r.status, 'invalid', name);
      assert.equal(r.gateway.node, by, name);
      assert.equal(r.problem!.type, 'urn:ietf:params:acme:error:unauthorized', name);
      assert.match(r.problem!.detail, detail, name);
    }
  });
});

describe('integration: a pending SCEP request survives kill -9 of the edge', { timeout: 120_000 }, () => {
  let m: TestMesh;
  let scepUrl: string;
  let shortUrl: string;

  before(async () => {
    const port = await freePort();
    scepUrl = `http://127.0.0.1:${port}/scep`;
    const shortPort = await freePort();
    shortUrl = `http://127.0.0.1:${shortPort}/scep`;
    const dir = await mkdtemp(join(tmpdir(), 'ra-mesh-scep-k-'));
    await writeFile(join(dir, 'pass'), SEGMENT_PASSWORD);
    const nodes: Array<TestNode & { scep?: Record<string, unknown> }> = [
      { id: 'gw', role: 'gateway', dc: 'core', policy: { allow: { dns: ['*.iot.example.test'] } } },
      { id: 'edge-k', role: 'edge', dc: 'dc-k', parent: 'gw', scep: { listen: `127.0.0.1:${port}`, raName: 'ra-k.iot.example.test', challengePasswordFile: join(dir, 'pass'), resultWait: '0s' } },
      // Requests give up after 6 s here.
      {
        id: 'edge-x',
        role: 'edge',
        dc: 'dc-k',
        parent: 'gw',
        scep: { listen: `127.0.0.1:${shortPort}`, raName: 'ra-x.iot.example.test', challengePasswordFile: join(dir, 'pass'), resultWait: '0s', pendingLifetime: '6s' },
      },
    ];
    m = await startTestMesh({ nodes, external: ['edge-k', 'edge-x'], retransmitMs: 500, envelope: { clockSkew: '1s' } });
  });

  after(async () => {
    await m?.stop();
  });

  /**
   * `edgeId` runs as its own process; the hub goes down; a device enrolls `cn` and is told PENDING; the
   * edge is killed (-9) and started again, and the request is still PENDING there.
   */
  async function pendingAcrossRestart(edgeId: string, url: string, cn: string) {
    let edge = await m.spawnNode(edgeId);
    await raReady(url);
    const issuedBefore = m.mesh.gateway!.issued;
    const hub = m.bus.server('hub');
    await hub.stop();
    const dev = await new TestScepDevice(url).init();
    const id = await TestScepDevice.newIdentity(cn);
    const first = await dev.send(MESSAGE_TYPE.PKCSReq, await TestScepDevice.csr(id, { cn, challenge: SEGMENT_PASSWORD }), id);
    assert.equal(first.status, 'PENDING');
    const pendingAt = Date.now();
    // The edge restarts while the request waits: the sweep learns of it from the store again.
    await edge.kill('SIGKILL');
    edge = await m.spawnNode(edgeId);
    assert.equal((await dev.certPoll(id, first.transactionId, cn)).status, 'PENDING', 'still known after the restart');
    /** Polls (at most `tries` times, 100 ms apart) until the answer is no longer PENDING. */
    const settled = async (tries: number) => {
      let r = first;
      for (let i = 0; i < tries && r.status === 'PENDING'; i++) {
        await new Promise((res) => setTimeout(res, 100));
        r = await dev.certPoll(id, first.transactionId, cn);
      }
      return r;
    };
    return { edge, hub, dev, id, first, issuedBefore, pendingAt, settled };
  }

  test('ok/PENDING while the hub is down; the edge is killed and restarted; the poll gets SUCCESS once the hub returns, one certificate', async () => {
    const { edge, hub, issuedBefore, settled } = await pendingAcrossRestart('edge-k', scepUrl, 'k1.iot.example.test');
    await hub.restart();
    const r = await settled(300);
    assert.equal(r.status, 'SUCCESS', r.failText);
    assert.deepEqual(sanNames(new x509.X509Certificate(r.certificates![0]!)), ['k1.iot.example.test']);
    assert.equal(m.mesh.gateway!.issued - issuedBefore, 1, 'one CA call');
    await edge.kill('SIGTERM');
  });

  test('fail/a request the mesh never answers ends FAILURE after scep.pendingLifetime, also across a restart; nothing is issued for it later', async () => {
    const { edge, hub, dev, id, first, issuedBefore, pendingAt, settled } = await pendingAcrossRestart('edge-x', shortUrl, 'x1.iot.example.test');
    // pendingLifetime is 6 s from the request (answered PENDING just before pendingAt).
    await sleepUntil(pendingAt + 6_000 + 1_000);
    const r = await settled(100);
    assert.equal(r.status, 'FAILURE');
    assert.match(r.failText ?? '', /scep\.pendingLifetime/);
    // The envelope still in the edge's stream reaches the gateway when the hub returns, expired.
    await hub.restart();
    await new Promise((res) => setTimeout(res, 3_000));
    assert.equal(m.mesh.gateway!.issued - issuedBefore, 0, 'nothing issued for a request the device was told failed');
    assert.equal((await dev.certPoll(id, first.transactionId, 'x1.iot.example.test')).status, 'FAILURE');
    await edge.kill('SIGTERM');
  });
});

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { spawn } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { pino } from 'pino';
import { parse, stringify } from 'yaml';
import { exportPKCS8, generateKeyPair } from 'jose';
import { parseDuration, parseTopology } from '../../shared/config/index.js';
import type { CrlReason, ResultPayload } from '../../shared/envelope/index.js';
import { GatewayService } from '../../services/gateway/gateway-service.js';
import { EdgeDriver } from '../harness/edge-driver.js';
import { startTestMesh, type TestMesh } from '../harness/mesh.js';
import { startStepCa, stepCaBinary, type StepCa } from '../harness/step-ca.js';
import { httpGet, opensslVerify, pemCerts, sanNames } from '../harness/tools.js';

// The gateway's stepca CA service with a REAL step-ca (smallstep/certificates 0.19 built from
// Debian's source package by test/harness/step-ca.ts) and a real mesh: envelopes signed with edge-a's
// key travel edge-a (dc-a) -> relay-1 (dc-a) -> gateway over a hub + leaf nats-server, the gateway
// signs a one-time token and calls step-ca's /1.0/sign and /1.0/revoke. The gateway runs in this
// process, once per `cas` configuration under test (the rest of the mesh stays up); what step-ca
// signed and revoked is read from step-ca's own request log.

const PROBLEM = 'urn:ietf:params:acme:error:';
const BIN = fileURLToPath(new URL('../../bin/ra-mesh.js', import.meta.url));
const EDGE_LIFETIME = '45m';
const STEP_MAX = '2h';

const built = await stepCaBinary();
const skip = 'missing' in built ? built.missing : false;

describe('integration: stepca CA service with a real step-ca through edge -> relay -> gateway', { skip, timeout: 240_000 }, () => {
  let ca: StepCa;
  let m: TestMesh;
  let edge: EdgeDriver;
  let baseYaml: string;

  before(async () => {
    ca = await startStepCa({ claims: { minTLSCertDuration: '10s', maxTLSCertDuration: STEP_MAX, defaultTLSCertDuration: '30m' } });
    m = await startTestMesh({
      external: ['gw'],
      nodes: [
        { id: 'gw', role: 'gateway', dc: 'core', policy: { allow: { dns: ['*.corp.test'] } }, cas: jwkKeyFileCas() },
        { id: 'relay-1', role: 'relay', dc: 'dc-a', parent: 'gw' },
        { id: 'edge-a', role: 'edge', dc: 'dc-a', parent: 'relay-1', policy: { defaultLifetime: EDGE_LIFETIME } },
      ],
    });
    baseYaml = await readFile(m.topologyFile, 'utf8');
    edge = await EdgeDriver.open(m, 'edge-a');
  });

  after(async () => {
    await edge?.close();
    await m?.stop();
    await ca?.close();
  });

  function jwkKeyFileCas(): Record<string, unknown> {
    return { type: 'stepca', url: ca.url, rootFingerprint: ca.rootFingerprint, timeout: '5s', provisioner: { type: 'jwk', name: ca.jwk.name, keyFile: ca.jwk.keyFile } };
  }

  /** The mesh's topology YAML with another `cas` block for the gateway (validated by the real schema). */
  function topologyYaml(cas: Record<string, unknown>): string {
    const doc = parse(baseYaml) as { nodes: Array<Record<string, unknown>> };
    doc.nodes.find((n) => n.id === 'gw')!.cas = cas;
    return stringify(doc);
  }

  /** Runs the gateway with `cas` for the duration of fn; its log lines are collected. */
  async function withGateway<T>(cas: Record<string, unknown>, fn: (logs: string[]) => Promise<T>): Promise<T> {
    const logs: string[] = [];
    const log = pino({ level: 'info', base: { service: 'gateway', node: 'gw' } }, { write: (s: string) => void logs.push(s) });
    const topology = parseTopology(topologyYaml(cas), join(m.dir, 'topology-gw.yaml'), m.dir);
    const gw = await GatewayService.create({ topology, nodeId: 'gw', log });
    try {
      await gw.start();
    } catch (e) {
      await gw.stop().catch(() => undefined);
      throw e;
    }
    try {
      return await fn(logs);
    } finally {
      await gw.stop();
    }
  }

  async function waitFor<T>(what: string, get: () => T | undefined, timeoutMs = 30_000): Promise<T> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const v = get();
      if (v !== undefined) return v;
      if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 25));
    }
  }

  const send = (id: string, jws: string, timeoutMs = 30_000): Promise<ResultPayload> => edge.exchange(id, jws, timeoutMs);
  const issueEnvelope = (names: string[], requestedNotAfter: string | null = null) => edge.issueEnvelope(names, { requested: { notBefore: null, notAfter: requestedNotAfter } });
  const revokeEnvelope = (serial: string, reason: CrlReason) => edge.revokeEnvelope(serial, reason);

  const decimal = (hexSerial: string) => BigInt(`0x${hexSerial}`).toString(10);
  const leafOf = (r: ResultPayload) => pemCerts(r.certificate!)[0]!;
  /** Certificates step-ca signed for `name` (its request log: subject = CN). */
  const signedFor = (name: string) => ca.requests().filter((r) => r.path === '/1.0/sign' && r.status === 201 && r.subject === name);
  const signCalls = () => ca.requests().filter((r) => r.path === '/1.0/sign').length;

  test('ok/a certificate is issued through the mesh by step-ca: chains to the step-ca root, SANs and lifetime from the edge policy', async (t) => {
    await withGateway(jwkKeyFileCas(), async () => {
      const names = ['www.corp.test', 'api.corp.test'];
      const { id, jws } = await issueEnvelope(names);
      const sentAt = Math.floor(Date.now() / 1000) * 1000;
      const r = await send(id, jws);
      const gotAt = Date.now();
      assert.equal(r.status, 'valid', JSON.stringify(r.problem));
      assert.deepEqual(r.hops.map((h) => h.node), ['relay-1']);
      const leaf = leafOf(r);
      assert.match(await opensslVerify(m.dir, r.certificate!, ca.rootPem), /: OK/);
      assert.deepEqual(sanNames(leaf), [...names].sort());
      // 45m from the edge policy, counted from step-ca's clock at signing (second precision).
      const life = parseDuration(EDGE_LIFETIME);
      assert.ok(leaf.notAfter.getTime() >= sentAt + life && leaf.notAfter.getTime() <= gotAt + life + 1000, `notAfter ${leaf.notAfter.toISOString()}`);
      // step-ca signed exactly this certificate, once.
      assert.deepEqual(signedFor('www.corp.test').map((x) => x.serial), [decimal(leaf.serialNumber)]);
      // The gateway hands out the step-ca root as the trust anchor.
      const roots = await httpGet(`http://${m.topology.node('gw').http}/roots.pem`);
      assert.equal(pemCerts(roots)[0]!.toString('pem'), pemCerts(ca.rootPem)[0]!.toString('pem'));

      // Latency through the mesh and step-ca (measured, reported, not asserted).
      const ms: number[] = [];
      for (let i = 0; i < 10; i++) {
        const e = await issueEnvelope([`lat${i}.corp.test`]);
        const t0 = performance.now();
        const x = await send(e.id, e.jws);
        ms.push(performance.now() - t0);
        assert.equal(x.status, 'valid');
      }
      ms.sort((a, b) => a - b);
      t.diagnostic(`step-ca binary: ${'missing' in built ? '-' : built.buildMs > 0 ? `built in ${(built.buildMs / 1000).toFixed(1)} s` : 'cached'}`);
      t.diagnostic(`per-issuance latency edge -> relay -> gateway -> step-ca -> edge: p50 ${ms[4]!.toFixed(1)} ms, max ${ms[9]!.toFixed(1)} ms (10 sequential)`);
    });
  });

  test('ok/revoke through the mesh is executed by step-ca; a second revoke is refused by step-ca -> alreadyRevoked', async () => {
    await withGateway(jwkKeyFileCas(), async () => {
      const e = await issueEnvelope(['rv.corp.test']);
      const issued = await send(e.id, e.jws);
      assert.equal(issued.status, 'valid', JSON.stringify(issued.problem));
      const serial = leafOf(issued).serialNumber.replace(/^(00)+/, '').toLowerCase();
      // step-ca logs the serial of a revocation it made, and names it in the error of one it refused.
      const revokes = () => ca.requests().filter((r) => r.path === '/1.0/revoke' && (r.serial === decimal(serial) || (r.error ?? '').includes(`'${decimal(serial)}'`)));

      const first = await revokeEnvelope(serial, 1);
      const r1 = await send(first.id, first.jws);
      assert.equal(r1.kind, 'revoke');
      assert.equal(r1.status, 'valid', JSON.stringify(r1.problem));
      assert.equal(r1.revocation!.serial, serial);
      assert.equal(r1.revocation!.reason, 1);
      // step-ca recorded the revocation (200 for the decimal serial).
      assert.deepEqual(revokes().map((r) => r.status), [200]);

      const second = await revokeEnvelope(serial, 4);
      const r2 = await send(second.id, second.jws);
      assert.equal(r2.status, 'invalid');
      assert.equal(r2.problem!.type, `${PROBLEM}alreadyRevoked`);
      // step-ca's own state: it refused the second revocation of that serial.
      const log = revokes();
      assert.deepEqual(log.map((r) => r.status), [200, 400]);
      assert.match(log[1]!.error ?? '', /already revoked/);
    });
  });

  test('ok/x5c provisioner; the certificate file replaced on disk is picked up on the next request', async () => {
    const cas = { ...jwkKeyFileCas(), provisioner: { type: 'x5c', name: ca.x5c.name, certFile: ca.x5c.certFile, keyFile: ca.x5c.keyFile } };
    await withGateway(cas, async () => {
      const e1 = await issueEnvelope(['x5c-1.corp.test']);
      const r1 = await send(e1.id, e1.jws);
      assert.equal(r1.status, 'valid', JSON.stringify(r1.problem));
      assert.equal(signedFor('x5c-1.corp.test')[0]!.provisioner, ca.x5c.name);
      // The 24 h credential does not limit a 45 m certificate.
      assert.ok(leafOf(r1).notAfter.getTime() > Date.now() + parseDuration('40m'));

      // New key + certificate valid 20 minutes, written over the files the gateway reads.
      const rotated = await ca.x5c.rotate(parseDuration('20m'));
      const e2 = await issueEnvelope(['x5c-2.corp.test']);
      const r2 = await send(e2.id, e2.jws);
      assert.equal(r2.status, 'valid', JSON.stringify(r2.problem));
      // Only the new credential caps the lifetime at its own notAfter: it signed this token.
      assert.equal(leafOf(r2).notAfter.getTime(), rotated.notAfter.getTime());
    });
  });

  test('ok/jwk key decrypted from /provisioners with passwordFile', async () => {
    const cas = { ...jwkKeyFileCas(), provisioner: { type: 'jwk', name: ca.jwk.name, passwordFile: ca.jwk.passwordFile } };
    const listed = ca.requests().filter((r) => r.path.startsWith('/provisioners')).length;
    await withGateway(cas, async () => {
      const e = await issueEnvelope(['pw.corp.test']);
      const r = await send(e.id, e.jws);
      assert.equal(r.status, 'valid', JSON.stringify(r.problem));
      assert.match(signedFor('pw.corp.test')[0]!.provisioner ?? '', new RegExp(`^${ca.jwk.name} \\(${ca.jwk.kid}\\)$`));
    });
    assert.ok(ca.requests().filter((r) => r.path.startsWith('/provisioners')).length > listed, 'the gateway fetched /provisioners');
  });

  test("fail/lifetime above the provisioner's maxTLSCertDuration: the client's problem names step-ca's refusal", async () => {
    await withGateway(jwkKeyFileCas(), async () => {
      const calls = signCalls();
      const e = await issueEnvelope(['long.corp.test'], new Date(Date.now() + parseDuration('5h')).toISOString());
      const r = await send(e.id, e.jws);
      assert.equal(r.status, 'invalid');
      assert.equal(r.problem!.type, `${PROBLEM}unauthorized`);
      assert.match(r.problem!.detail, /step-ca.*requested duration of 5h.* is more than the authorized maximum certificate duration of 2h/);
      assert.equal(signCalls(), calls + 1);
      assert.deepEqual(signedFor('long.corp.test'), []);
    });
  });

  test('fail/bad provisioner key: a cas-credentials problem reaches the client, nothing issued', async () => {
    const other = await generateKeyPair('ES256', { extractable: true });
    const bad = join(m.dir, 'not-the-provisioner.key');
    await writeFile(bad, await exportPKCS8(other.privateKey));
    const cas = { ...jwkKeyFileCas(), provisioner: { type: 'jwk', name: ca.jwk.name, kid: ca.jwk.kid, keyFile: bad } };
    await withGateway(cas, async () => {
      const e = await issueEnvelope(['badkey.corp.test']);
      const r = await send(e.id, e.jws);
      assert.equal(r.status, 'invalid');
      assert.equal(r.problem!.type, `${PROBLEM}serverInternal`);
      assert.match(r.problem!.detail, /step-ca.*refused the gateway's credentials/);
      assert.equal(ca.requests().filter((x) => x.path === '/1.0/sign').at(-1)!.status, 401);
      assert.deepEqual(signedFor('badkey.corp.test'), []);
    });
  });

  test('fail/wrong rootFingerprint: the gateway refuses to talk to step-ca (does not start, clear serverInternal), nothing issued', async () => {
    const wrong = [...ca.rootFingerprint].reverse().join('');
    const before = ca.requests().length;
    // The gateway as its own `ra-mesh up --only gw` process, with the wrong pin in its topology.
    const file = join(m.dir, 'topology-wrong-pin.yaml');
    await writeFile(file, topologyYaml({ ...jwkKeyFileCas(), rootFingerprint: wrong }));
    const child = spawn(process.execPath, [BIN, 'up', file, '--only', 'gw', '--no-nats'], { env: { ...process.env, RA_MESH_LOG_LEVEL: 'error' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    try {
      await waitFor('the gateway to refuse', () => (/rootFingerprint/.test(out) || child.exitCode !== null ? true : undefined));
      assert.doesNotMatch(out, /is up/);
      assert.match(out, new RegExp(`step-ca at ${ca.url} has no root with the configured rootFingerprint ${wrong}`));
    } finally {
      if (child.exitCode === null) {
        const gone = new Promise((r) => child.once('exit', r));
        child.kill('SIGKILL');
        await gone;
      }
    }
    // step-ca saw only the bootstrap look-up, and answered it 404.
    assert.deepEqual(ca.requests().slice(before).map((r) => `${r.path} ${r.status}`), [`/root/${wrong} 404`]);
  });

  test('fail/step-ca stopped: the request stays queued (transient) and is issued once step-ca is back, exactly one certificate', async () => {
    await withGateway(jwkKeyFileCas(), async (logs) => {
      await ca.stop();
      let restarted = false;
      try {
        const e = await issueEnvelope(['outage.corp.test']);
        await edge.send(e.id, e.jws);
        // The gateway tried, found step-ca unavailable and left the envelope queued.
        await waitFor('a retried delivery', () => logs.find((l) => l.includes(e.id) && l.includes('will be retried')));
        assert.match(logs.find((l) => l.includes(e.id) && l.includes('will be retried'))!, /unavailable/);
        assert.equal(edge.results.get(e.id)?.[0], undefined);
        await ca.start();
        restarted = true;
        const r = await waitFor(`the result of ${e.id}`, () => edge.results.get(e.id)?.[0], 60_000);
        assert.equal(r.status, 'valid', JSON.stringify(r.problem));
        const signed = signedFor('outage.corp.test');
        assert.equal(signed.length, 1);
        assert.equal(signed[0]!.serial, decimal(leafOf(r).serialNumber));
      } finally {
        if (!restarted) await ca.start();
      }
    });
  });
});

import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startNatsServer, waitForLeafLinks, type RunningNatsServer } from '../../shared/bus/nats-server.js';
import type { BuiltinCas } from '../../services/gateway/cas/builtin-cas.js';
import type { EdgeScep } from '../../services/edge/scep/scep-service.js';
import { startTestMesh, type TestMesh, type TestNode } from '../harness/mesh.js';
import { freePort } from '../harness/ports.js';
import { fingerprintOf, runScepClient, startScepClient, type ScepClientRun } from '../harness/scepclient.js';
import { pemCerts, pool, sanNames } from '../harness/tools.js';

// The IoT story end to end, with Debian's scepclient (micromdm) as the devices: an IoT segment's edge
// sits on its data center's leaf nats-server; that data center's leaf-to-hub link is cut (a TCP relay
// on the link, the servers keep running); 50 devices enroll by SCEP meanwhile and wait PENDING (the
// edge accepted them into its durable outbox and JetStream stream); the link returns and all 50 get
// their certificates, each issued once (counted at the gateway and at the CA). Then devices that slept
// past their certificates' expiry (61 s lifetimes) renew with RenewalReq signed by the old certificate
// within the edge's renewAfterExpiry window, and one that slept too long is refused.

const DEVICES = 50;
const CONCURRENCY = 10;
const WINDOW_S = 60;
const PASSWORD = 'iot-a segment secret';

const sleepUntil = async (t: number) => {
  while (Date.now() < t) await new Promise((r) => setTimeout(r, Math.min(500, t - Date.now())));
};

async function until(what: string, cond: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe(`e2e: IoT segment with its uplink cut, ${DEVICES} SCEP devices, renewal after expiry`, { timeout: 300_000 }, () => {
  let m: TestMesh;
  let dir: string;
  let iotLeaf: RunningNatsServer;
  let scep: EdgeScep;
  let url: string;
  const clients: ScepClientRun[] = [];
  const names = Array.from({ length: DEVICES }, (_, i) => `meter-${i}.iot-a.example.test`);
  const deviceDir = (i: number) => join(dir, `device-${i}`);

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ra-mesh-iot-'));
    await writeFile(join(dir, 'iot-a.pass'), `${PASSWORD}\n`, { mode: 0o600 });
    const port = await freePort();
    url = `http://127.0.0.1:${port}/scep`;
    const nodes: Array<TestNode & { scep?: Record<string, unknown> }> = [
      { id: 'gw-root', role: 'gateway', dc: 'dc-core', policy: { allow: { dns: ['*.iot-a.example.test'] } } },
      { id: 'relay-west', role: 'relay', dc: 'dc-west', parent: 'gw-root' },
      {
        id: 'edge-iot-a',
        role: 'edge',
        dc: 'dc-iot',
        segment: 'iot-a',
        parent: 'relay-west',
        // Short lifetimes for the IoT segment: 61 s from a notBefore one minute back (they expire a second after issuance).
        policy: { defaultLifetime: '61s', renewAfterExpiry: `${WINDOW_S}s` },
        scep: { listen: `127.0.0.1:${port}`, raName: 'scep-ra.iot-a.example.test', challengePasswordFile: join(dir, 'iot-a.pass'), legacyCrypto: true },
      },
    ];
    m = await startTestMesh({ nodes, retransmitMs: 1000 });
    scep = m.mesh.edges.get('edge-iot-a')!.scep!;
    await until('the RA certificate from the mesh CA', async () => scep.ready, 30_000);
  });

  after(async () => {
    await Promise.all(clients.map((c) => c.kill()));
    await m?.stop();
    await iotLeaf?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  const cert = async (i: number) => pemCerts(await readFile(join(deviceDir(i), 'client.pem'), 'utf8'))[0]!;

  test(`ok/the uplink is cut: ${DEVICES} devices enroll and wait PENDING; the link returns; all ${DEVICES} get certificates, none twice`, async (t) => {
    const gw = m.mesh.gateway!;
    const issuedBefore = gw.issued;
    const hub = m.bus.server('hub');
    // Cut dc-iot's leaf-to-hub link: its leaf server runs on (same JetStream store, same client port, the
    // edge reconnects) with its remote pointed at a closed port. (A relay on the link cannot cut it: the
    // hub advertises its leafnode URL and the leaf would dial that directly.)
    const leaf = m.bus.server('dc-iot');
    await leaf.stop();
    iotLeaf = await startNatsServer({ ...leaf.spec, hubLeafUrl: `nats-leaf://127.0.0.1:${await freePort()}` }, { waitForLeafLink: false });
    await until('the hub lost the dc-iot link', async () => (await hub.leafLinks()) === 1, 15_000);

    const started = Date.now();
    await pool(names, CONCURRENCY, async (cn, i) => {
      const c = await startScepClient({ dir: deviceDir(i), url, cn, challenge: PASSWORD, raFingerprint: fingerprintOf(scep.ra.current!.cert), timeoutMs: 200_000 });
      clients[i] = c;
      // Each device is told PENDING (after scep.resultWait) before the next one starts.
      const first = await Promise.race([c.pending.then(() => 'pending'), c.exited.then(() => 'exited')]);
      assert.equal(first, 'pending', `${cn}: ${c.output()}`);
    });
    const enrolledMs = Date.now() - started;
    const pending = (await scep.store.transactions.values()).filter((t) => t.status === 'pending');
    assert.equal(pending.length, DEVICES, 'every request accepted and waiting at the edge');
    assert.equal(gw.issued, issuedBefore, 'nothing reached the CA while the link was cut');

    const restored = Date.now();
    // The link returns: the leaf server with its real remote (a restart, like a router coming back).
    await iotLeaf.stop();
    iotLeaf = await startNatsServer(leaf.spec);
    await waitForLeafLinks(hub, 2);
    const codes = await Promise.all(clients.map((c) => c.exited));
    const deliveredMs = Date.now() - restored;
    codes.forEach((code, i) => assert.equal(code, 0, `${names[i]}: ${clients[i]!.output()}`));

    const certs = await Promise.all(names.map((_, i) => cert(i)));
    certs.forEach((c, i) => assert.deepEqual(sanNames(c), [names[i]]));
    const serials = new Set(certs.map((c) => c.serialNumber.toLowerCase()));
    assert.equal(serials.size, DEVICES, 'every device has its own certificate');
    assert.equal(gw.issued - issuedBefore, DEVICES, 'one CA call per device');
    const atCa = new Set<string>();
    for await (const r of (gw.cas as BuiltinCas).issuedCertificates()) atCa.add(r.serial.toLowerCase());
    for (const s of serials) assert.ok(atCa.has(s), `serial ${s} recorded by the CA`);
    assert.equal(atCa.size, DEVICES + 1, 'the devices and the RA certificate, nothing else');
    t.diagnostic(`${DEVICES} devices PENDING within ${enrolledMs} ms; all certificates delivered ${deliveredMs} ms after the link returned (scepclient polls every 30 s)`);
  });

  test(`ok/devices that slept past expiry renew with the old key within ${WINDOW_S}s (RenewalReq); fail/one that slept longer is refused`, async () => {
    const gw = m.mesh.gateway!;
    const issuedBefore = gw.issued;
    const order = (await Promise.all(names.map(async (_, i) => ({ i, notAfter: (await cert(i)).notAfter.getTime() })))).sort((a, b) => b.notAfter - a.notAfter);
    // The three that expired last renew now; the one that expired first sleeps past the window.
    const renewing = order.slice(0, 3);
    const sleeper = order.at(-1)!;
    await sleepUntil(Math.max(...renewing.map((r) => r.notAfter)) + 1000);
    for (const { i } of renewing) {
      const old = await cert(i);
      assert.ok(old.notAfter.getTime() < Date.now(), 'expired');
      const r = await runScepClient({ dir: deviceDir(i), url, cn: names[i]!, raFingerprint: fingerprintOf(scep.ra.current!.cert), timeoutMs: 60_000 });
      assert.equal(r.code, 0, r.out);
      const renewed = await cert(i);
      assert.notEqual(renewed.serialNumber, old.serialNumber);
      assert.ok(renewed.notAfter > old.notAfter);
      assert.ok(Buffer.from(renewed.publicKey.rawData).equals(Buffer.from(old.publicKey.rawData)), 'renewed with the old key');
    }
    assert.equal(gw.issued - issuedBefore, renewing.length);

    const old = await cert(sleeper.i);
    await sleepUntil(sleeper.notAfter + WINDOW_S * 1000 + 1500);
    const late = await runScepClient({ dir: deviceDir(sleeper.i), url, cn: names[sleeper.i]!, raFingerprint: fingerprintOf(scep.ra.current!.cert), timeoutMs: 60_000 });
    assert.notEqual(late.code, 0);
    assert.match(late.out, /RenewalReq \(17\) request failed, failInfo: badRequest/);
    assert.equal((await cert(sleeper.i)).serialNumber, old.serialNumber, 'the device keeps its expired certificate');
    const refused = (await scep.store.transactions.values()).filter((t) => t.kind === 'renew' && t.status === 'failed');
    assert.equal(refused.length, 0, 'refused before a transaction was made');
    assert.equal(gw.issued - issuedBefore, renewing.length, 'no CA call for the late one');
  });
});

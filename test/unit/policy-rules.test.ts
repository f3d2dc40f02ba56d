import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { webcrypto } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, test } from 'node:test';
import { policySchema } from '../../shared/config/index.js';
import { RaError } from '../../shared/errors/index.js';
import { Extension, KeyUsageFlags, KeyUsagesExtension, Pkcs10CertificateRequestGenerator, SubjectAlternativeNameExtension, type JsonGeneralName } from '../../shared/pki/x509.js';
import { derToPem, parseCsr, type CsrInfo } from '../../shared/pki/index.js';
import { NodeStore } from '../../shared/store/index.js';
import { EabStore } from '../../services/edge/eab/eab-store.js';
import {
  admitAll,
  checkCsrLayers,
  checkOrderLayers,
  enforceHop,
  LayerRateLimits,
  PolicyLayer,
  rateLimitOf,
  RateLimitError,
  refusalOf,
  resolveValidity,
  TokenBuckets,
  type LayerPolicy,
} from '../../shared/policy/index.js';

// The rules of a layer besides names: CSR keys, signature algorithms, extensions, maxSans, lifetime
// (RFC 8555 §7.4 notBefore/notAfter), rate limits; the shape of refusals; `ra-mesh policy explain`.

const BIN = fileURLToPath(new URL('../../bin/ra-mesh.js', import.meta.url));
const layer = (policy: Record<string, unknown>, name = 'layer-x') => new PolicyLayer(name, policySchema.parse(policy));

type KeyKind = 'ec-p256' | 'ec-p384' | 'rsa-2048' | 'rsa-3072' | 'rsa-pss-2048' | 'ed25519';
const GEN: Record<KeyKind, { gen: Record<string, unknown>; sign: Record<string, unknown> }> = {
  'ec-p256': { gen: { name: 'ECDSA', namedCurve: 'P-256' }, sign: { name: 'ECDSA', hash: 'SHA-256' } },
  'ec-p384': { gen: { name: 'ECDSA', namedCurve: 'P-384' }, sign: { name: 'ECDSA', hash: 'SHA-384' } },
  'rsa-2048': { gen: rsa('RSASSA-PKCS1-v1_5', 2048), sign: { name: 'RSASSA-PKCS1-v1_5' } },
  'rsa-3072': { gen: rsa('RSASSA-PKCS1-v1_5', 3072), sign: { name: 'RSASSA-PKCS1-v1_5' } },
  'rsa-pss-2048': { gen: rsa('RSA-PSS', 2048), sign: { name: 'RSA-PSS', saltLength: 32 } },
  ed25519: { gen: { name: 'Ed25519' }, sign: { name: 'Ed25519' } },
};
function rsa(name: string, modulusLength: number): Record<string, unknown> {
  return { name, modulusLength, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' };
}

async function csr(kind: KeyKind, opts: { cn?: string; san?: JsonGeneralName[]; extra?: Extension[] } = {}): Promise<CsrInfo> {
  const g = GEN[kind];
  const keys = (await webcrypto.subtle.generateKey(g.gen as never, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const san = opts.san ?? [{ type: 'dns', value: 'a.corp.test' }];
  const req = await Pkcs10CertificateRequestGenerator.create(
    {
      ...(opts.cn ? { name: `CN=${opts.cn}` } : {}),
      keys,
      signingAlgorithm: g.sign as never,
      extensions: [new SubjectAlternativeNameExtension(san), ...(opts.extra ?? [])],
    },
    webcrypto,
  );
  return parseCsr(new Uint8Array(req.rawData), { otherNames: true });
}

const MUST_STAPLE = new Extension('1.3.6.1.5.5.7.1.24', false, new Uint8Array([0x30, 0x03, 0x02, 0x01, 0x05]));

describe('unit: CSR rules of a layer', () => {
  // The last member: the rule that decided (undefined: no check is made, e.g. a forbidden extension that is absent).
  const cases: Array<[string, Record<string, unknown>, () => Promise<CsrInfo>, boolean, RegExp | undefined]> = [
    ['ok/key type allowed', { keys: { types: ['EC'] } }, () => csr('ec-p256'), true, /keys\.types \[EC\]/],
    ['fail/key type not allowed', { keys: { types: ['EC'] } }, () => csr('ed25519'), false, /keys\.types \[EC\]/],
    ['ok/RSA-PSS key counts as RSA', { keys: { types: ['RSA'] } }, () => csr('rsa-pss-2048'), true, /keys\.types/],
    ['ok/curve allowed', { keys: { curves: ['P-256', 'P-384'] } }, () => csr('ec-p384'), true, /keys\.curves/],
    ['fail/curve not allowed', { keys: { curves: ['P-256'] } }, () => csr('ec-p384'), false, /keys\.curves \[P-256\]/],
    ['fail/RSA below rsaMinBits', { keys: { rsaMinBits: 3072 } }, () => csr('rsa-2048'), false, /keys\.rsaMinBits 3072/],
    ['ok/RSA at rsaMinBits', { keys: { rsaMinBits: 3072 } }, () => csr('rsa-3072'), true, /keys\.rsaMinBits 3072/],
    ['fail/RSA above rsaMaxBits', { keys: { rsaMaxBits: 2048 } }, () => csr('rsa-3072'), false, /keys\.rsaMaxBits 2048/],
    ['ok/signature algorithm allowed', { signatureAlgorithms: ['ECDSA-SHA256'] }, () => csr('ec-p256'), true, /signatureAlgorithms/],
    ['fail/signature algorithm not allowed', { signatureAlgorithms: ['ECDSA-SHA256', 'Ed25519'] }, () => csr('ec-p384'), false, /signatureAlgorithms \[ECDSA-SHA256, Ed25519\]/],
    ['fail/RSA-PSS signature not in a PKCS#1 v1.5 list', { signatureAlgorithms: ['SHA256-RSA'] }, () => csr('rsa-pss-2048'), false, /signatureAlgorithms/],
    ['fail/forbidden extension (must-staple)', { extensions: { forbidden: ['tlsFeature'] } }, () => csr('ec-p256', { extra: [MUST_STAPLE] }), false, /extensions\.forbidden tlsFeature/],
    ['ok/forbidden extension absent', { extensions: { forbidden: ['tlsFeature'] } }, () => csr('ec-p256'), true, undefined],
    ['fail/required extension missing', { extensions: { required: ['keyUsage'] } }, () => csr('ec-p256'), false, /extensions\.required keyUsage/],
    ['ok/required extension by OID present', { extensions: { required: ['2.5.29.15'] } }, () => csr('ec-p256', { extra: [new KeyUsagesExtension(KeyUsageFlags.digitalSignature)] }), true, /extensions\.required 2\.5\.29\.15/],
    ['fail/maxSans counts every SAN', { maxSans: 2 }, () => csr('ec-p256', { san: [{ type: 'dns', value: 'a.corp.test' }, { type: 'dns', value: 'b.corp.test' }, { type: 'ip', value: '10.0.0.1' }] }), false, /maxSans 2/],
    ['fail/email SAN denied', { deny: { email: ['@corp.test'] } }, () => csr('ec-p256', { san: [{ type: 'dns', value: 'a.corp.test' }, { type: 'email', value: 'ops@corp.test' }] }), false, /deny\.email "@corp\.test"/],
    ['fail/uri SAN host denied', { deny: { uri: ['*.corp.test'] } }, () => csr('ec-p256', { san: [{ type: 'dns', value: 'a.corp.test' }, { type: 'url', value: 'spiffe://x.corp.test/a' }] }), false, /deny\.uri/],
    ['fail/CN that is no SAN is judged too', { allow: { dns: ['*.corp.test'] } }, () => csr('ec-p256', { cn: 'evil.other.test' }), false, /common name judged as dns: allow\.dns \(no rule matches\)/],
    ['fail/CN denied by a cn rule although it equals a SAN', { allow: { dns: ['*.corp.test'] }, deny: { cn: ['a.corp.test'] } }, () => csr('ec-p256', { cn: 'a.corp.test' }), false, /deny\.cn/],
  ];
  for (const [name, policy, make, allowed, rule] of cases) {
    test(name, async () => {
      const checks = layer(policy).checkCsr(await make());
      const refused = checks.filter((c) => !c.allowed);
      assert.equal(refused.length === 0, allowed, JSON.stringify(refused));
      if (rule) assert.ok((allowed ? checks : refused).some((c) => rule.test(c.rule)), JSON.stringify(checks));
      else assert.deepEqual(checks.filter((c) => c.kind !== 'name'), []);
    });
  }

  test('fail/a refused key is badCSR naming the layer and rule; a refused name is rejectedIdentifier', async () => {
    const l = layer({ keys: { types: ['RSA'] }, deny: { dns: ['b.corp.test'] } }, 'relay-k');
    const keyOnly = refusalOf(l.checkCsr(await csr('ec-p256')))!;
    assert.equal(keyOnly.type, 'badCSR');
    assert.match(keyOnly.detail, /policy layer relay-k refused key EC P-256: keys\.types \[RSA\]/);
    assert.equal(keyOnly.subproblems.length, 0);
    const both = refusalOf(l.checkCsr(await csr('ec-p256', { san: [{ type: 'dns', value: 'b.corp.test' }] })))!;
    assert.equal(both.type, 'rejectedIdentifier');
    assert.deepEqual(both.subproblems.map((s) => [s.identifier?.value, s.detail]), [['b.corp.test', 'refused by policy layer relay-k: deny.dns "b.corp.test"']]);
    assert.match(both.detail, /keys\.types/);
  });
});

describe('unit: refusals across layers', () => {
  const edge = layer({ allow: { dns: ['*.iot.corp.test'] } }, 'edge-a');
  const relay = layer({ deny: { dns: ['*.pci.corp.test', 'cam.iot.corp.test'] } }, 'relay-w');
  const gw = layer({ allow: { dns: ['*.corp.test', '*.iot.corp.test', '*.pci.corp.test'] }, maxSans: 2 }, 'gw');

  test('fail/one subproblem per identifier, from the first layer in evaluation order that refused it', () => {
    const ids = [
      { type: 'dns', value: 'ok.iot.corp.test' },
      { type: 'dns', value: 'cam.iot.corp.test' },
      { type: 'dns', value: 'db.pci.corp.test' },
    ];
    const e = refusalOf(checkOrderLayers([edge, relay, gw], ids))!;
    assert.equal(e.type, 'rejectedIdentifier');
    assert.deepEqual(
      e.subproblems.map((s) => [s.identifier?.value, s.detail]),
      [
        ['db.pci.corp.test', 'refused by policy layer edge-a: allow.dns (no rule matches)'],
        ['cam.iot.corp.test', 'refused by policy layer relay-w: deny.dns "cam.iot.corp.test"'],
      ],
    );
    // maxSans refuses the order as a whole: in the detail, no subproblem.
    assert.match(e.detail, /policy layer gw refused 3 subject alternative names: maxSans 2/);
    assert.equal(e.toProblem().status, 400);
  });

  test('ok/every layer allows: no refusal', async () => {
    assert.equal(refusalOf(checkOrderLayers([edge, relay, gw], [{ type: 'dns', value: 'ok.iot.corp.test' }])), undefined);
    assert.equal(refusalOf(checkCsrLayers([edge, relay, gw], await csr('ec-p256', { san: [{ type: 'dns', value: 'ok.iot.corp.test' }], cn: 'ok.iot.corp.test' }))), undefined);
  });
});

describe('unit: lifetime from every layer (RFC 8555 §7.4 notBefore/notAfter)', () => {
  const NOW = Date.parse('2030-01-01T00:00:00Z');
  const at = (h: number) => new Date(NOW + h * 3_600_000).toISOString();
  const L = [
    { name: 'account:k1', maxLifetime: '48h' },
    { name: 'edge-a', defaultLifetime: '12h' },
    { name: 'gw', minLifetime: '1h', maxLifetime: '720h' },
  ];
  const cases: Array<[string, Parameters<typeof resolveValidity>[0], { notBefore: string | null; notAfter: string | null } | undefined, number | RegExp]> = [
    ['ok/default from the first layer that sets one', L, undefined, 12],
    ['ok/no defaultLifetime anywhere: 24h, capped by maxLifetime', [{ name: 'a', maxLifetime: '6h' }], undefined, 6],
    ['ok/default raised to the largest minLifetime', [{ name: 'e', defaultLifetime: '30m' }, { name: 'g', minLifetime: '2h' }], undefined, 2],
    ['ok/requested notAfter within every bound is honoured exactly', L, { notBefore: null, notAfter: at(36) }, 36],
    ['ok/requested notBefore and notAfter', L, { notBefore: at(10), notAfter: at(20) }, 10],
    ['fail/requested beyond the account layer maxLifetime is refused, not capped', L, { notBefore: null, notAfter: at(72) }, /policy layer account:k1 refused the requested validity: maxLifetime 48h \(requested 72h\)/],
    ['fail/requested below a minLifetime', L, { notBefore: at(1), notAfter: at(1.5) }, /policy layer gw refused the requested validity: minLifetime 1h \(requested 30m\)/],
    ['fail/bounds that no lifetime satisfies', [{ name: 'e', maxLifetime: '1h' }, { name: 'g', minLifetime: '2h' }], undefined, /minLifetime 2h of g is longer than maxLifetime 1h of e/],
  ];
  for (const [name, layers, req, want] of cases) {
    test(name, () => {
      if (typeof want === 'number') {
        const v = resolveValidity(layers, req, NOW);
        assert.equal(v.lifetimeMs, want * 3_600_000, v.explanation);
        if (req?.notBefore) assert.equal(v.notBefore?.toISOString(), req.notBefore);
      } else {
        assert.throws(() => resolveValidity(layers, req, NOW), (e: unknown) => e instanceof RaError && e.type === 'rejectedIdentifier' && want.test(e.detail));
      }
    });
  }
});

describe('unit: rate limits (token buckets)', () => {
  const T0 = 1_000_000;
  test('ok/a bucket of burst 2 refills at limit/per', () => {
    const b = new TokenBuckets({ limit: 6, per: '1m', burst: 2 });
    assert.equal(b.wait('k', T0), 0);
    b.take('k', T0);
    b.take('k', T0);
    assert.equal(b.wait('k', T0), 10_000); // 6 per minute: one token every 10 s
    assert.equal(b.wait('k', T0 + 10_000), 0);
    assert.equal(b.wait('other', T0), 0);
  });

  test('fail/limit hit: rateLimited 429 with Retry-After naming the layer, scope and rule; nothing taken', () => {
    const l = new LayerRateLimits('relay-r', { identifier: { limit: 1, per: '1h' }, account: { limit: 5, per: '1h' } });
    const req = { account: 'acct-1', identifiers: [{ type: 'dns', value: 'a.corp.test' }, { type: 'dns', value: 'b.corp.test' }], edge: 'edge-a' };
    l.admit({ ...req, id: 'env-1' }, T0);
    // The same envelope again (a redelivery) is not counted twice.
    l.admit({ ...req, id: 'env-1' }, T0 + 1);
    assert.throws(
      () => l.admit({ ...req, identifiers: [{ type: 'dns', value: 'b.corp.test' }, { type: 'dns', value: 'c.corp.test' }], id: 'env-2' }, T0 + 1000),
      (e: unknown) => {
        assert.ok(e instanceof RateLimitError);
        assert.equal(e.type, 'rateLimited');
        assert.equal(e.status, 429);
        assert.equal(e.headers['Retry-After'], '3599');
        assert.match(e.detail, /policy layer relay-r: rateLimits\.identifier \(1 per 1h\) reached for b\.corp\.test; retry after 3599 s/);
        const p = e.toProblem();
        assert.equal(p.retryAfter, 3599);
        assert.deepEqual(p.rateLimit, { layer: 'relay-r', scope: 'identifier' });
        assert.deepEqual(p.subproblems?.map((s) => s.identifier?.value), ['b.corp.test']);
        assert.deepEqual(rateLimitOf(JSON.parse(JSON.stringify(p))), { retryAfter: 3599, layer: 'relay-r', scope: 'identifier' });
        return true;
      },
    );
    // The refused request took no token: c.corp.test is still free.
    l.admit({ ...req, identifiers: [{ type: 'dns', value: 'c.corp.test' }], id: 'env-3' }, T0 + 2000);
  });

  test('fail/several layers: all or nothing', () => {
    const a = new LayerRateLimits('account:k', { account: { limit: 1, per: '1h' } });
    const e = new LayerRateLimits('edge-a', { edge: { limit: 2, per: '1h' } });
    const req = { account: 'acct', identifiers: [], edge: 'edge-a' };
    admitAll([a, e], req, T0);
    assert.throws(() => admitAll([a, e], req, T0), /account:k: rateLimits\.account/);
    // The edge bucket was not charged by the refused request: another account still passes.
    admitAll([a, e], { ...req, account: 'other' }, T0);
    assert.throws(() => admitAll([e], { ...req, account: 'third' }, T0), /edge-a: rateLimits\.edge \(2 per 1h\) reached for this edge/);
  });

  test('fail/enforceHop: the relay layer counts issue requests; a request refused by a name rule takes no token', async () => {
    const l = layer({ deny: { dns: ['bad.corp.test'] }, rateLimits: { account: { limit: 1, per: '1h' } } }, 'relay-h');
    const der = async (names: string[]) => Buffer.from((await csr('ec-p256', { san: names.map((value) => ({ type: 'dns' as const, value })) })).der).toString('base64url');
    const p = async (id: string, names: string[]) => ({
      id,
      csr: await der(names),
      origin: { node: 'edge-a' },
      account: { id: 'acct-9', eab: null },
      requested: { notBefore: null, notAfter: null },
      identifiers: names.map((value) => ({ type: 'dns', value })),
      renewalOf: null,
    });
    await assert.rejects(enforceHop(l, await p('e1', ['bad.corp.test'])), /policy layer relay-h refused bad\.corp\.test \(deny\.dns "bad\.corp\.test"\)/);
    await enforceHop(l, await p('e2', ['good.corp.test']));
    await enforceHop(l, await p('e2', ['good.corp.test'])); // redelivery: same id
    await assert.rejects(enforceHop(l, await p('e3', ['more.corp.test'])), (e: unknown) => e instanceof RateLimitError && e.hit.scope === 'account');
  });
});

describe('unit: account layer bound to an EAB key', () => {
  test('ok/a key with a policy yields the account layer, the same object (and buckets) while the policy is unchanged', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'ra-mesh-eab-policy-'));
    const db = await NodeStore.open(dir);
    try {
      const eab = new EabStore(db);
      await eab.add({ keyId: 'team-a', policy: { allow: { dns: ['*.team-a.corp.test'] }, maxLifetime: '6h', rateLimits: { account: { limit: 1, per: '1h' } } } });
      await eab.add({ keyId: 'plain' });
      const l = (await eab.policyLayer('team-a'))!;
      assert.equal(l.node, 'account:team-a');
      assert.equal(l.decide({ type: 'dns', value: 'x.other.test' }).rule, 'allow.dns (no rule matches)');
      l.rateLimits.admit({ account: 'acct', identifiers: [], edge: 'e' });
      assert.equal(await eab.policyLayer('team-a'), l);
      assert.throws(() => (l.rateLimits.admit({ account: 'acct', identifiers: [], edge: 'e' })), RateLimitError);
      assert.equal(await eab.policyLayer('plain'), undefined);
      assert.equal(await eab.policyLayer(null), undefined);
    } finally {
      await db.close();
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('fail/an invalid account policy is refused, naming the field', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'ra-mesh-eab-policy-'));
    const db = await NodeStore.open(dir);
    try {
      const eab = new EabStore(db);
      await assert.rejects(eab.add({ keyId: 'bad', policy: { allow: { dns: ['a*.corp.test'] }, maxLifetime: 'soon' } }), (e: unknown) => {
        assert.ok(e instanceof RaError);
        assert.match(e.detail, /invalid account policy: allow\.dns\[0\]: .*; maxLifetime: a duration/);
        return true;
      });
      assert.equal(await eab.keys.get('bad'), undefined);
    } finally {
      await db.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('unit: ra-mesh policy explain', () => {
  const TOPOLOGY = `
mesh: explain-test
nodes:
  - {id: gw, role: gateway, dc: core, policy: {allow: {dns: ["*.corp.test", "*.iot.corp.test"]}, maxLifetime: 48h, keys: {types: [EC, Ed25519]}}}
  - {id: relay-w, role: relay, dc: w, parent: gw, policy: {deny: {dns: ["*.pci.corp.test"]}, rateLimits: {account: {limit: 10, per: 1h}}}}
  - {id: edge-a, role: edge, dc: w, parent: relay-w, policy: {allow: {dns: ["*.iot.corp.test", "*.pci.corp.test"]}, defaultLifetime: 12h}}
`;
  const run = (args: string[]) =>
    new Promise<{ code: number; out: string }>((resolve) => {
      execFile(process.execPath, [BIN, 'policy', 'explain', ...args], { env: { ...process.env, RA_MESH_LOG_LEVEL: 'error' } }, (err, stdout, stderr) =>
        resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, out: stdout + stderr }),
      );
    });

  test('fail/explain names, layer by layer: exit 1, the relay rule that refuses', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'ra-mesh-explain-'));
    try {
      await writeFile(join(dir, 't.yaml'), TOPOLOGY);
      const r = await run(['--topology', join(dir, 't.yaml'), '--edge', 'edge-a', 'cam.iot.corp.test', 'db.pci.corp.test']);
      assert.equal(r.code, 1, r.out);
      const blocks = r.out.split(/\n(?=\d\. )/);
      assert.match(blocks[1]!, /^1\. edge-a \(edge\)\n {3}allow  {2}dns cam\.iot\.corp\.test +allow\.dns "\*\.iot\.corp\.test"\n {3}allow  {2}dns db\.pci\.corp\.test +allow\.dns "\*\.pci\.corp\.test"/);
      assert.match(blocks[2]!, /^2\. relay-w \(relay\)\n.*\n {3}REFUSE {2}dns db\.pci\.corp\.test +deny\.dns "\*\.pci\.corp\.test"/);
      assert.match(blocks[2]!, /rate limits .*account: 10 per 1h/);
      assert.match(blocks[3]!, /^3\. gw \(gateway\)/);
      assert.match(r.out, /lifetime: 12h: defaultLifetime 12h of edge-a/);
      assert.match(r.out, /result: REFUSED \(rejectedIdentifier\)/);
      assert.match(r.out, / {2}- dns db\.pci\.corp\.test: refused by policy layer relay-w: deny\.dns "\*\.pci\.corp\.test"/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('ok/explain a CSR file and an account policy: exit 0, key rule shown; --json', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'ra-mesh-explain-'));
    try {
      await writeFile(join(dir, 't.yaml'), TOPOLOGY);
      await writeFile(join(dir, 'acct.yaml'), 'allow: {dns: ["cam.iot.corp.test"]}\nmaxLifetime: 24h\n');
      const c = await csr('ec-p256', { cn: 'cam.iot.corp.test', san: [{ type: 'dns', value: 'cam.iot.corp.test' }] });
      await writeFile(join(dir, 'req.pem'), derToPem(c.der, 'CERTIFICATE REQUEST'));
      const r = await run(['--topology', join(dir, 't.yaml'), '--edge', 'edge-a', '--account-policy', join(dir, 'acct.yaml'), '--not-after', '20h', join(dir, 'req.pem')]);
      assert.equal(r.code, 0, r.out);
      assert.match(r.out, /^policy for a CSR at edge edge-a: .*req\.pem \(EC P-256, ECDSA-SHA256; CN cam\.iot\.corp\.test; SANs cam\.iot\.corp\.test\)/);
      assert.match(r.out, /1\. account \(account\)\n {3}allow {3}1 subject alternative name|1\. account \(account\)\n {3}allow  {2}dns cam\.iot\.corp\.test +allow\.dns "cam\.iot\.corp\.test"/);
      assert.match(r.out, /allow  {2}key EC P-256 +keys\.types \[EC, Ed25519\]/);
      assert.match(r.out, /allow  {2}validity now \.\. .* +maxLifetime 24h \(requested 20h\)/);
      assert.match(r.out, /result: allowed by every layer/);
      const j = await run(['--topology', join(dir, 't.yaml'), '--edge', 'edge-a', '--json', '10.0.0.1']);
      assert.equal(j.code, 1);
      const e = JSON.parse(j.out);
      assert.deepEqual(e.layers.map((l: { layer: string }) => l.layer), ['edge-a', 'relay-w', 'gw']);
      assert.equal(e.problem.subproblems[0].detail, 'refused by policy layer edge-a: allow (this layer allows only the names it lists; it has no ip rule)');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('fail/explain usage errors exit 2', async () => {
    assert.equal((await run(['--edge', 'edge-a', 'x.corp.test'])).code, 2);
  });
});

// Keep the LayerPolicy type honest: the schema's output is what layers take.
const _typed: LayerPolicy = policySchema.parse({});
void _typed;

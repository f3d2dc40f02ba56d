import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createPrivateKey, createPublicKey } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, request as httpRequest, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join, resolve, sep } from 'node:path';
import { connect } from 'node:tls';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test, type TestContext } from 'node:test';
import { calculateJwkThumbprint, generateKeyPair, type CryptoKey, type JWK } from 'jose';
import { startTestMesh, type TestMesh } from '../harness/mesh.js';
import { freePorts } from '../harness/ports.js';
import { httpGet, opensslVerify, pemCerts, run, sanNames } from '../harness/tools.js';
import { TestAcmeClient } from '../harness/acme-client.js';
import { x509 } from '../../shared/pki/index.js';

// More real ACME clients from Debian through edge -> relay -> gateway (real nats-servers, builtin CA):
// lego dns-01 (also a wildcard) against pebble-challtestsrv as the segment's DNS server, certbot
// --webroot, Caddy (tls-alpn-01 and http-01), dehydrated, uacme (also its key rollover), and python3-acme rolling
// an account over to a new key (RFC 8555 §7.3.5). The edge resolves every name through challtestsrv
// (acme.resolver, no hosts overrides), which answers A 127.0.0.1 for any name. Every client runs with
// a time limit; each case reports how long its client took (diagnostic, never asserted).

const CLIENTS = fileURLToPath(new URL('./clients/', import.meta.url));
const LEGO_DNS_HOOK = join(CLIENTS, 'lego-dns-exec.sh');
const PY_ROLLOVER = join(CLIENTS, 'acme_key_rollover.py');
const UACME_HOOK = '/usr/share/uacme/uacme.sh';
const PROBLEM = 'urn:ietf:params:acme:error:';
const CLIENT_LIMIT_MS = 120_000;

/** A static file server for challenge files: GET <prefix><path> serves <root>/<path>; remembers what it served. */
async function serveFolder(port: number, root: string, prefix = '/'): Promise<{ served: string[]; close(): Promise<void> }> {
  const served: string[] = [];
  const base = resolve(root);
  const server: Server = createServer((req, res) => {
    let path: string;
    try {
      path = decodeURIComponent((req.url ?? '').split('?')[0]!);
    } catch {
      return void res.writeHead(400).end();
    }
    const file = path.startsWith(prefix) ? resolve(base, path.slice(prefix.length)) : undefined;
    if (req.method !== 'GET' || !file || !file.startsWith(base + sep)) return void res.writeHead(404).end();
    readFile(file).then(
      (body) => {
        served.push(path);
        res.writeHead(200, { 'content-type': 'text/plain' }).end(body);
      },
      () => res.writeHead(404).end(),
    );
  });
  await new Promise<void>((r, j) => server.once('error', j).listen(port, '127.0.0.1', () => r()));
  return { served, close: () => new Promise((r) => server.close(() => r())) };
}

/** Every file below `dir` whose name ends with `suffix`. */
async function findFiles(dir: string, suffix: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await findFiles(p, suffix)));
    else if (e.name.endsWith(suffix)) out.push(p);
  }
  return out;
}

function postJson(url: string, body: unknown): Promise<number> {
  return new Promise((res, rej) => {
    const req = httpRequest(url, { method: 'POST', timeout: 5_000 }, (r) => {
      r.resume();
      r.on('end', () => res(r.statusCode ?? 0));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', rej);
    req.end(JSON.stringify(body));
  });
}

/** SIGTERM, then SIGKILL if the process is still there after `graceMs`; resolves once it exited. */
async function stopProcess(child: ChildProcess, graceMs = 10_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}

/** The account URL a key belongs to (newAccount with onlyReturnExisting, RFC 8555 §7.3.1), or the problem type. */
async function accountOfKey(directory: string, edgeCa: string, pem: string): Promise<{ status: number; location?: string; type?: string }> {
  const c = await new TestAcmeClient(directory, edgeCa).init();
  const key = createPrivateKey(pem);
  c.key = key as unknown as CryptoKey;
  c.jwk = createPublicKey(key).export({ format: 'jwk' }) as JWK;
  c.thumbprint = await calculateJwkThumbprint(c.jwk);
  const r = await c.post(c.dir.newAccount!, { onlyReturnExisting: true });
  return { status: r.status, ...(r.status === 200 ? { location: r.headers.location as string } : { type: r.json().type }) };
}

describe('e2e: more ACME clients through the mesh (dns-01, webroot, Caddy, dehydrated, uacme, key rollover)', { timeout: 300_000 }, () => {
  let m: TestMesh;
  let work: string;
  let root: string;
  let edgeCa: string;
  let http01Port: number;
  let tlsAlpnPort: number;
  let dnsPort: number;
  let challtestsrvUrl: string;
  let challtestsrv: ChildProcess | undefined;
  let challtestsrvOut = '';
  const timings: Array<[string, number]> = [];

  /** Runs a client and records how long it took under `label`. */
  async function timed<T>(t: TestContext, label: string, fn: () => Promise<T>): Promise<T> {
    const t0 = performance.now();
    try {
      return await fn();
    } finally {
      const ms = Math.round(performance.now() - t0);
      timings.push([label, ms]);
      t.diagnostic(`${label}: ${(ms / 1000).toFixed(1)} s`);
    }
  }

  before(async () => {
    let mgmtPort: number;
    [http01Port, tlsAlpnPort, dnsPort, mgmtPort] = (await freePorts(4)) as [number, number, number, number];
    work = await mkdtemp(join(tmpdir(), 'ra-mesh-e2e-more-'));
    // The segment's DNS server: answers A 127.0.0.1 for every name (no AAAA), TXT records from /set-txt.
    challtestsrv = spawn('pebble-challtestsrv', ['-dns01', `127.0.0.1:${dnsPort}`, '-management', `127.0.0.1:${mgmtPort}`,
      '-http01', '', '-https01', '', '-tlsalpn01', '', '-defaultIPv4', '127.0.0.1', '-defaultIPv6', ''], { stdio: ['ignore', 'pipe', 'pipe'] });
    const cts = challtestsrv;
    process.once('exit', () => cts.kill('SIGKILL'));
    challtestsrv.stdout!.on('data', (d) => (challtestsrvOut += d));
    challtestsrv.stderr!.on('data', (d) => (challtestsrvOut += d));
    challtestsrvUrl = `http://127.0.0.1:${mgmtPort}`;
    for (let i = 0; ; i++) {
      if (challtestsrv.exitCode !== null) throw new Error(`pebble-challtestsrv exited:\n${challtestsrvOut}`);
      if ((await postJson(`${challtestsrvUrl}/clear-txt`, { host: 'ready.example.test.' }).catch(() => 0)) === 200) break;
      if (i >= 100) throw new Error(`pebble-challtestsrv not ready within 10 s:\n${challtestsrvOut}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    const wildcards = { allowWildcardNames: true };
    m = await startTestMesh({
      nodes: [
        { id: 'gw', role: 'gateway', dc: 'core', policy: { allow: { dns: ['*.example.test', '*.w.example.test'] }, ...wildcards, maxLifetime: '48h' } },
        { id: 'relay-a', role: 'relay', dc: 'dc-a', parent: 'gw', policy: wildcards },
        {
          id: 'edge-a',
          role: 'edge',
          dc: 'dc-a',
          segment: 'seg-a',
          parent: 'relay-a',
          acme: { http01Port, tlsAlpn01Port: tlsAlpnPort, challenges: ['http-01', 'dns-01', 'tls-alpn-01'], resolver: `127.0.0.1:${dnsPort}` },
          policy: { ...wildcards, defaultLifetime: '12h' },
        },
      ],
    });
    root = await httpGet(m.rootsUrl());
    edgeCa = await readFile(m.edgeTlsCert('edge-a'), 'utf8');
  });

  after(async () => {
    if (timings.length) console.log(`client timings: ${timings.map(([l, ms]) => `${l} ${(ms / 1000).toFixed(1)} s`).join('; ')}`);
    await m?.stop();
    if (challtestsrv) await stopProcess(challtestsrv, 5_000);
    if (work) await rm(work, { recursive: true, force: true });
  });

  /** The chain is leaf + intermediate, verifies against the gateway's /roots.pem and names exactly `names`. */
  async function checkChain(chainPem: string, names: string[]): Promise<x509.X509Certificate> {
    const certs = pemCerts(chainPem);
    assert.equal(certs.length, 2, 'leaf + intermediate');
    assert.deepEqual(sanNames(certs[0]!), [...names].sort());
    assert.match(await opensslVerify(work, chainPem, root), /: OK/);
    return certs[0]!;
  }

  function legoArgs(path: string, names: string[]): string[] {
    return ['--server', m.directory('edge-a'), '--email', 'ops@example.test', '--accept-tos', '--path', path, ...names.flatMap((n) => ['--domains', n])];
  }

  function legoDns(hook: string) {
    return {
      args: ['--dns', 'exec', '--dns.disable-cp', '--dns.resolvers', `127.0.0.1:${dnsPort}`],
      env: {
        LEGO_CA_CERTIFICATES: m.edgeTlsCert('edge-a'),
        EXEC_PATH: hook,
        CHALLTESTSRV: challtestsrvUrl,
        // lego waits 60 s between two dns-01 challenges of one name (a wildcard and its base) by default.
        EXEC_SEQUENCE_INTERVAL: '1',
        EXEC_POLLING_INTERVAL: '1',
        EXEC_PROPAGATION_TIMEOUT: '30',
      },
    };
  }

  test('ok/lego dns-01 with pebble-challtestsrv as the edge resolver (exec hook, --dns.disable-cp)', async (t) => {
    const path = join(work, 'lego-dns');
    const dns = legoDns(LEGO_DNS_HOOK);
    await timed(t, 'lego dns-01', () => run('lego', [...legoArgs(path, ['d1.example.test', 'd2.example.test']), ...dns.args, 'run'], { env: dns.env, timeoutMs: CLIENT_LIMIT_MS }));
    await checkChain(await readFile(join(path, 'certificates', 'd1.example.test.crt'), 'utf8'), ['d1.example.test', 'd2.example.test']);
  });

  test('ok/lego dns-01 wildcard *.w.example.test with its base name (two TXT records at one name)', async (t) => {
    const path = join(work, 'lego-wild');
    const dns = legoDns(LEGO_DNS_HOOK);
    await timed(t, 'lego dns-01 wildcard', () => run('lego', [...legoArgs(path, ['*.w.example.test', 'w.example.test']), ...dns.args, 'run'], { env: dns.env, timeoutMs: CLIENT_LIMIT_MS }));
    // lego names the files of a wildcard certificate with "_" for "*".
    await checkChain(await readFile(join(path, 'certificates', '_.w.example.test.crt'), 'utf8'), ['*.w.example.test', 'w.example.test']);
  });

  test('fail/lego dns-01 whose hook publishes no TXT record: the edge answers incorrectResponse, no certificate', async (t) => {
    const path = join(work, 'lego-notxt');
    const dns = legoDns('/bin/true');
    const err = await timed(t, 'lego dns-01 without TXT', () =>
      run('lego', [...legoArgs(path, ['nope.example.test']), ...dns.args, 'run'], { env: dns.env, timeoutMs: CLIENT_LIMIT_MS }).then(
        () => assert.fail('lego must fail without a TXT record'),
        (e: Error & { out?: string }) => e,
      ),
    );
    assert.match(err.out ?? '', new RegExp(`${PROBLEM}incorrectResponse`), err.message);
    assert.match(err.out ?? '', /no TXT record at _acme-challenge\.nope\.example\.test/);
    assert.equal(existsSync(join(path, 'certificates', 'nope.example.test.crt')), false);
  });

  test('ok/certbot webroot http-01 (a static server on the http01 port serves the webroot)', async (t) => {
    const d = join(work, 'certbot');
    const webroot = join(work, 'webroot');
    await mkdir(webroot, { recursive: true });
    const srv = await serveFolder(http01Port, webroot);
    try {
      await timed(t, 'certbot webroot', () =>
        run('certbot', ['certonly', '--webroot', '-w', webroot, '--server', m.directory('edge-a'), '-d', 'cb.example.test', '-d', 'cb2.example.test',
          '--config-dir', d, '--work-dir', d, '--logs-dir', d, '--register-unsafely-without-email', '--agree-tos', '--non-interactive'],
        { env: { REQUESTS_CA_BUNDLE: m.edgeTlsCert('edge-a') }, timeoutMs: CLIENT_LIMIT_MS }),
      );
    } finally {
      await srv.close();
    }
    // The edge fetched both tokens certbot wrote into the webroot.
    assert.equal(srv.served.filter((p) => p.startsWith('/.well-known/acme-challenge/')).length, 2, srv.served.join(', '));
    await checkChain(await readFile(join(d, 'live', 'cb.example.test', 'fullchain.pem'), 'utf8'), ['cb.example.test', 'cb2.example.test']);
  });

  /**
   * Caddy as the ACME client of its own site: global acme_ca / acme_ca_root / skip_install_trust, its
   * http and https ports on the edge's http01 and tls-alpn-01 ports. Caddy picks among the challenges
   * it has enabled in no fixed order, so each case leaves exactly one enabled in the site's issuer.
   */
  async function caddyObtains(t: TestContext, name: string, challenge: 'tls-alpn-01' | 'http-01'): Promise<void> {
    const d = join(work, `caddy-${challenge}`);
    const storage = join(d, 'storage');
    await mkdir(storage, { recursive: true });
    await writeFile(join(d, 'Caddyfile'), [
      '{',
      '\tadmin off',
      `\tstorage file_system ${storage}`,
      `\tacme_ca ${m.directory('edge-a')}`,
      `\tacme_ca_root ${m.edgeTlsCert('edge-a')}`,
      '\tskip_install_trust',
      `\thttp_port ${http01Port}`,
      `\thttps_port ${tlsAlpnPort}`,
      '\tdefault_bind 127.0.0.1',
      '\temail ops@example.test',
      '}',
      `${name} {`,
      `\ttls {\n\t\tissuer acme {\n\t\t\t${challenge === 'tls-alpn-01' ? 'disable_http_challenge' : 'disable_tlsalpn_challenge'}\n\t\t}\n\t}`,
      '\trespond "served by caddy"',
      '}',
      '',
    ].join('\n'));
    let out = '';
    const caddy = spawn('caddy', ['run', '--config', join(d, 'Caddyfile'), '--adapter', 'caddyfile'], {
      // Caddy keeps its autosaved config and data under HOME/XDG: all inside the test's folder.
      env: { ...process.env, HOME: d, XDG_DATA_HOME: join(d, 'data'), XDG_CONFIG_HOME: join(d, 'config') },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    caddy.stdout!.on('data', (x) => (out += x));
    caddy.stderr!.on('data', (x) => (out += x));
    let chainFile: string | undefined;
    let served: Buffer | undefined;
    try {
      await timed(t, `Caddy ${challenge}`, async () => {
        const until = Date.now() + CLIENT_LIMIT_MS;
        while (!(chainFile = (await findFiles(join(storage, 'certificates'), `${name}.crt`))[0])) {
          if (caddy.exitCode !== null) assert.fail(`caddy exited ${caddy.exitCode}:\n${out.slice(-4000)}`);
          // Caddy retries a failed issuance only after a minute: its first failure ends the case.
          const failed = /^.*"logger":"tls\.obtain","msg":"could not get certificate from issuer".*$/m.exec(out);
          if (failed) assert.fail(`caddy could not obtain a certificate: ${failed[0]}`);
          if (Date.now() > until) assert.fail(`caddy obtained no certificate within ${CLIENT_LIMIT_MS} ms:\n${out.slice(-4000)}`);
          await new Promise((r) => setTimeout(r, 200));
        }
      });
      // The certificate Caddy serves on its https port (SNI = the site name) is the one it obtained.
      for (let i = 0; !served; i++) {
        served = await new Promise<Buffer | undefined>((res) => {
          const s = connect({ host: '127.0.0.1', port: tlsAlpnPort, servername: name, rejectUnauthorized: false, timeout: 5_000 }, () => {
            const raw = s.getPeerX509Certificate()?.raw;
            s.destroy();
            res(raw);
          });
          s.on('error', () => res(undefined));
          s.on('timeout', () => s.destroy());
        });
        if (!served && i >= 50) assert.fail(`caddy served no certificate on ${tlsAlpnPort}:\n${out.slice(-4000)}`);
        if (!served) await new Promise((r) => setTimeout(r, 100));
      }
    } finally {
      await stopProcess(caddy);
    }
    const leaf = await checkChain(await readFile(chainFile!, 'utf8'), [name]);
    assert.ok(Buffer.from(leaf.rawData).equals(served!), 'caddy serves the certificate the edge issued');
    // The one challenge type Caddy tried is the one it had enabled, and the edge validated it.
    const tried = [...out.matchAll(/"msg":"trying to solve challenge","identifier":"([^"]+)","challenge_type":"([^"]+)"/g)].map((x) => `${x[1]} ${x[2]}`);
    assert.deepEqual(tried, [`${name} ${challenge}`], out.slice(-4000));
  }

  test('ok/Caddy obtains its certificate with tls-alpn-01 (acme_ca, acme_ca_root) and serves it', async (t) => {
    await caddyObtains(t, 'caddy.example.test', 'tls-alpn-01');
  });

  test('ok/Caddy obtains its certificate with http-01 on its http_port and serves it', async (t) => {
    await caddyObtains(t, 'caddy-http.example.test', 'http-01');
  });

  test('ok/dehydrated http-01 (its WELLKNOWN folder served by the test)', async (t) => {
    const d = join(work, 'dehydrated');
    const wellknown = join(d, 'wellknown');
    await mkdir(wellknown, { recursive: true });
    await writeFile(join(d, 'config'), [
      `CA="${m.directory('edge-a')}"`,
      `BASEDIR="${d}"`,
      `WELLKNOWN="${wellknown}"`,
      'CHALLENGETYPE="http-01"',
      'CONTACT_EMAIL="ops@example.test"',
      'KEY_ALGO=prime256v1',
      '',
    ].join('\n'));
    const srv = await serveFolder(http01Port, wellknown, '/.well-known/acme-challenge/');
    try {
      await timed(t, 'dehydrated', () =>
        run('dehydrated', ['--config', join(d, 'config'), '--cron', '--accept-terms', '-d', 'dh.example.test', '-d', 'dh2.example.test'], {
          env: { CURL_CA_BUNDLE: m.edgeTlsCert('edge-a') },
          timeoutMs: CLIENT_LIMIT_MS,
        }),
      );
    } finally {
      await srv.close();
    }
    assert.equal(srv.served.length, 2, srv.served.join(', '));
    await checkChain(await readFile(join(d, 'certs', 'dh.example.test', 'fullchain.pem'), 'utf8'), ['dh.example.test', 'dh2.example.test']);
  });

  /**
   * uacme has no option to trust a private CA: it runs in its own mount namespace where a bundle with
   * the edge's TLS certificate is bind-mounted over the system bundle (the host's file is untouched).
   */
  async function uacme(confdir: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<string> {
    const bundle = join(work, 'uacme-bundle.pem');
    if (!existsSync(bundle)) await writeFile(bundle, edgeCa);
    const ns = process.getuid?.() === 0 ? ['-m'] : ['-r', '-m'];
    const script = 'mount --bind "$0" /etc/ssl/certs/ca-certificates.crt && exec "$@"';
    const { out } = await run('unshare', [...ns, 'sh', '-c', script, bundle, 'uacme', '-v', '-y', '-t', 'EC', '-a', m.directory('edge-a'), '-c', confdir, ...args], {
      env,
      timeoutMs: CLIENT_LIMIT_MS,
    });
    return out;
  }

  test('ok/uacme with its hook script uacme.sh (trusting the edge through a bind-mounted bundle in unshare -m)', async (t) => {
    const confdir = join(work, 'uacme');
    const challenges = join(work, 'uacme-challenges');
    await mkdir(challenges, { recursive: true });
    const srv = await serveFolder(http01Port, challenges, '/.well-known/acme-challenge/');
    try {
      await timed(t, 'uacme', async () => {
        await uacme(confdir, ['new', 'ops@example.test']);
        await uacme(confdir, ['-h', UACME_HOOK, 'issue', 'ua.example.test', 'ua2.example.test'], { UACME_CHALLENGE_PATH: challenges });
      });
    } finally {
      await srv.close();
    }
    assert.equal(srv.served.length, 2, srv.served.join(', '));
    assert.deepEqual(await readdir(challenges), [], 'the hook removed its challenge files');
    await checkChain(await readFile(join(confdir, 'ua.example.test', 'cert.pem'), 'utf8'), ['ua.example.test', 'ua2.example.test']);
  });

  test('ok/uacme newkey rolls the account over to a new key (RFC 8555 §7.3.5), then issues with it', async (t) => {
    const confdir = join(work, 'uacme-newkey');
    const challenges = join(work, 'uacme-newkey-challenges');
    await mkdir(challenges, { recursive: true });
    const srv = await serveFolder(http01Port, challenges, '/.well-known/acme-challenge/');
    let created: string;
    try {
      created = await timed(t, 'uacme new + newkey + issue', async () => {
        const out = await uacme(confdir, ['new', 'ops@example.test']);
        await uacme(confdir, ['newkey']);
        await uacme(confdir, ['-h', UACME_HOOK, 'issue', 'uk.example.test'], { UACME_CHALLENGE_PATH: challenges });
        return out;
      });
    } finally {
      await srv.close();
    }
    const account = /account created at (\S+)/.exec(created)?.[1];
    assert.ok(account, created);
    await checkChain(await readFile(join(confdir, 'uk.example.test', 'cert.pem'), 'utf8'), ['uk.example.test']);
    // uacme keeps the old key as key-<time>.pem next to the new key.pem.
    const priv = join(confdir, 'private');
    const oldKey = (await readdir(priv)).find((f) => /^key-\d+\.pem$/.test(f));
    assert.ok(oldKey, 'uacme kept the old key');
    assert.deepEqual(await accountOfKey(m.directory('edge-a'), edgeCa, await readFile(join(priv, 'key.pem'), 'utf8')), { status: 200, location: account });
    assert.deepEqual(await accountOfKey(m.directory('edge-a'), edgeCa, await readFile(join(priv, oldKey), 'utf8')), { status: 400, type: `${PROBLEM}accountDoesNotExist` });
  });

  test('ok/python3-acme key rollover: the old key is refused, the new key finds the account and orders a certificate', async (t) => {
    const { out } = await timed(t, 'python3-acme key rollover', () =>
      run('/usr/bin/python3', [PY_ROLLOVER, m.directory('edge-a'), String(http01Port), 'kr.example.test'], {
        env: { REQUESTS_CA_BUNDLE: m.edgeTlsCert('edge-a') },
        timeoutMs: CLIENT_LIMIT_MS,
      }),
    );
    const r = JSON.parse(out.trim().split('\n').at(-1)!) as {
      account: string;
      otherAccount: string;
      rolled: { status: number; body: { status: string } };
      stale: { status: number; body: { type: string; detail: string } };
      staleLookup: { type?: string };
      newLookup: { url?: string };
      conflict: { status: number; location: string | null; body: { type: string } };
      fullchain: string;
    };
    assert.equal(r.rolled.status, 200);
    assert.equal(r.rolled.body.status, 'valid');
    // The old RSA key (RS256) with the account's kid: the signature is not the account key's any more.
    assert.equal(r.stale.status, 400);
    assert.equal(r.stale.body.type, `${PROBLEM}malformed`, r.stale.body.detail);
    assert.match(r.stale.body.detail, /signature verification failed/);
    // RFC 8555 §7.3.1: looked up by the old key there is no account; by the new key it is the same one.
    assert.equal(r.staleLookup.type, `${PROBLEM}accountDoesNotExist`);
    assert.equal(r.newLookup.url, r.account);
    // RFC 8555 §7.3.5: a key held by another account is 409 Conflict with that account's URL.
    assert.equal(r.conflict.status, 409);
    assert.equal(r.conflict.location, r.otherAccount);
    assert.equal(r.conflict.body.type, `${PROBLEM}malformed`);
    await checkChain(r.fullchain, ['kr.example.test']);
  });

  test('fail/a kid request whose alg does not fit the account key is malformed, not badPublicKey (regression, RFC 8555 §6.7)', async () => {
    const client = await new TestAcmeClient(m.directory('edge-a'), edgeCa).init();
    assert.equal((await client.register()).status, 201);
    // Signed with an RSA key (RS256) under the kid of an account whose key is EC P-256.
    const rsa = await generateKeyPair('RS256', { modulusLength: 2048 });
    const ecKey = client.key;
    client.key = rsa.privateKey as CryptoKey;
    const r = await client.post(client.dir.newOrder!, { identifiers: [{ type: 'dns', value: 'rg.example.test' }] }, { alg: 'RS256' });
    assert.equal(r.status, 400);
    assert.equal(r.json().type, `${PROBLEM}malformed`, r.body);
    // The account key still works.
    client.key = ecKey;
    assert.equal((await client.post(client.dir.newOrder!, { identifiers: [{ type: 'dns', value: 'rg.example.test' }] })).status, 201);
  });
});

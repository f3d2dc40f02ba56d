import assert from 'node:assert/strict';
import { test } from 'node:test';
import { reverseName } from '../../services/edge/validation/tls-alpn-01.js';

const cases: Array<[string, string, string]> = [
  ['ok/ipv4 reverse name', '192.0.2.5', '5.2.0.192.in-addr.arpa'],
  ['ok/ipv6 reverse name', '2001:db8::1', '1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa'],
  ['ok/ipv6 loopback', '::1', '1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa'],
];
for (const [name, ip, want] of cases) test(name, () => assert.equal(reverseName(ip), want));

// ---------------------------------------------------------------- http-01 against real loopback servers

import { createServer, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe } from 'node:test';
import { RaError } from '../../shared/errors/index.js';
import { http01Validator } from '../../services/edge/validation/http-01.js';
import { SegmentResolver } from '../../services/edge/validation/resolver.js';
import { loadOrCreateEdgeTls } from '../../services/edge/tls.js';
import { freePorts } from '../harness/ports.js';

const TOKEN = 'tok-123';
const KEY_AUTH = `${TOKEN}.thumb`;

describe('http-01 validator', () => {
  let httpPort: number;
  let httpsPort: number;
  let closedPort: number;
  let dir: string;
  const servers: Server[] = [];

  before(async () => {
    [httpPort, httpsPort, closedPort] = (await freePorts(3)) as [number, number, number];
    dir = await mkdtemp(join(tmpdir(), 'ra-mesh-http01-'));
    const routes: Record<string, (res: import('node:http').ServerResponse) => void> = {
      [`/.well-known/acme-challenge/${TOKEN}`]: (res) => res.writeHead(200).end(`${KEY_AUTH}\r\n`),
      '/wrong/.well-known/acme-challenge/x': (res) => res.writeHead(200).end('nope'),
      '/to-same': (res) => res.writeHead(302, { location: `/.well-known/acme-challenge/${TOKEN}` }).end(),
      '/to-https': (res) => res.writeHead(301, { location: `https://ok.test:${httpsPort}/.well-known/acme-challenge/${TOKEN}` }).end(),
      '/loop': (res) => res.writeHead(302, { location: '/loop' }).end(),
      '/to-bad-port': (res) => res.writeHead(302, { location: `http://ok.test:${closedPort}/x` }).end(),
      '/to-ftp': (res) => res.writeHead(302, { location: 'ftp://ok.test/x' }).end(),
      '/to-forbidden': (res) => res.writeHead(302, { location: `http://blocked.test:${httpPort}/.well-known/acme-challenge/${TOKEN}` }).end(),
      '/big': (res) => res.writeHead(200).end('x'.repeat(100_000)),
    };
    const handler = (req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse) => {
      const path = (req.url ?? '').replace(/^\/(\w[\w-]*)\/\.well-known\/acme-challenge\/.*$/, '/$1');
      const route = routes[req.url ?? ''] ?? routes[path];
      if (route) route(res);
      else res.writeHead(404).end();
    };
    const http = createServer(handler);
    await new Promise<void>((r) => http.listen(httpPort, '127.0.0.1', r));
    const tls = await loadOrCreateEdgeTls(dir, ['ok.test']);
    const https = createHttpsServer({ cert: tls.cert, key: tls.key }, handler);
    await new Promise<void>((r) => https.listen(httpsPort, '127.0.0.1', r));
    servers.push(http, https as unknown as Server);
  });
  after(async () => {
    for (const s of servers) await new Promise((r) => s.close(r));
    await rm(dir, { recursive: true, force: true });
  });

  const resolver = () => new SegmentResolver({ hosts: { 'ok.test': '127.0.0.1', 'blocked.test': '127.0.0.2' }, forbidden: ['127.0.0.2/32'] });
  const validate = (name: string, token: string, opts: { forbidden?: string[]; keyAuth?: string } = {}) =>
    http01Validator(opts.forbidden ? new SegmentResolver({ hosts: { 'ok.test': '127.0.0.1' }, forbidden: opts.forbidden }) : resolver(), {
      port: httpPort,
      redirectPorts: { http: [httpPort], https: [httpsPort] },
      timeoutMs: 3000,
    })({ identifier: { type: 'dns', value: name }, token, keyAuthorization: opts.keyAuth ?? KEY_AUTH });

  test('ok/key authorization with trailing whitespace', async () => {
    assert.deepEqual(await validate('ok.test', TOKEN), { from: `127.0.0.1:${httpPort}` });
  });

  // URL normalisation turns the token "x/../../..<route>" into the path <route>: one validator per route.
  const viaRoute = (route: string) => `x/../../..${route}`;
  const cases: Array<[string, string, string | null, RegExp]> = [
    ['ok/redirect on the same server', '/to-same', null, /^127\.0\.0\.1:HTTP$/],
    ['ok/redirect to https on an allowed port (certificate not checked)', '/to-https', null, /^127\.0\.0\.1:HTTPS$/],
    ['fail/redirect loop stops after 10', '/loop', 'connection', /too many redirects/],
    ['fail/redirect to a port not allowed', '/to-bad-port', 'connection', /only http and https on ports/],
    ['fail/redirect to another scheme', '/to-ftp', 'connection', /only http and https/],
    ['fail/redirect to a forbidden address', '/to-forbidden', 'connection', /may not validate against/],
    ['fail/body too large', '/big', 'connection', /larger than/],
    ['fail/404', '/missing', 'incorrectResponse', /HTTP 404/],
  ];
  for (const [name, route, type, detail] of cases) {
    test(name, async () => {
      const p = validate('ok.test', viaRoute(route));
      if (type === null) {
        const out = await p;
        assert.match(out.from ?? '', new RegExp(detail.source.replace('HTTPS', String(httpsPort)).replace('HTTP', String(httpPort))));
      } else {
        await assert.rejects(p, (e: unknown) => e instanceof RaError && e.type === type && detail.test(e.detail));
      }
    });
  }

  test('fail/wrong key authorization is incorrectResponse', async () => {
    await assert.rejects(validate('ok.test', TOKEN, { keyAuth: 'other.thumb' }), (e: unknown) => e instanceof RaError && e.type === 'incorrectResponse');
  });
  test('fail/nothing listening is connection', async () => {
    const v = http01Validator(resolver(), { port: closedPort, timeoutMs: 2000 });
    await assert.rejects(v({ identifier: { type: 'dns', value: 'ok.test' }, token: TOKEN, keyAuthorization: KEY_AUTH }), (e: unknown) => e instanceof RaError && e.type === 'connection');
  });
  test('fail/address forbidden by the edge config is never contacted', async () => {
    await assert.rejects(validate('ok.test', TOKEN, { forbidden: ['127.0.0.0/8'] }), (e: unknown) => e instanceof RaError && e.type === 'connection' && /may not validate/.test(e.detail));
  });
  test('fail/unspecified address is never a validation target', async () => {
    const r = new SegmentResolver({ hosts: { 'zero.test': '0.0.0.0' } });
    await assert.rejects(r.addresses('zero.test'), (e: unknown) => e instanceof RaError && e.type === 'connection');
  });
  test('fail/unresolvable name is a dns problem', async () => {
    const r = new SegmentResolver({ server: `127.0.0.1:${closedPort}`, timeoutMs: 300 });
    await assert.rejects(r.addresses('nowhere.test'), (e: unknown) => e instanceof RaError && e.type === 'dns');
  });
});

import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { after, before, describe, test } from 'node:test';
import { TestAcmeClient } from '../harness/acme-client.js';
import { startTestMesh, type TestMesh } from '../harness/mesh.js';
import { freePort } from '../harness/ports.js';

// acme.challengeWait (RFC 8555 §7.5.1): the answer to a challenge POST is the challenge as it stands
// once the validation is done ("valid", or "invalid" with its problem) if that takes no longer than the
// wait; otherwise "processing" with Retry-After, and the validation goes on after the answer. A real
// edge validates over real HTTP against a responder the test runs (one of its tokens answers slowly).

const PROBLEM = 'urn:ietf:params:acme:error:';
const NAME = 'wait.example.test';
const SLOW_MS = 1_500;

describe('integration: a challenge answer waits for its validation up to acme.challengeWait', { timeout: 120_000 }, () => {
  let m: TestMesh;
  let server: Server;
  const tokens = new Map<string, string>();
  const slow = new Set<string>();
  const clients = new Map<string, TestAcmeClient>();

  before(async () => {
    const http01Port = await freePort();
    server = createServer((req, res) => {
      const token = /^\/\.well-known\/acme-challenge\/([A-Za-z0-9_-]+)$/.exec(req.url ?? '')?.[1];
      const v = token ? tokens.get(token) : undefined;
      setTimeout(() => res.writeHead(v ? 200 : 404, { 'content-type': 'text/plain' }).end(v ?? 'not found'), token && slow.has(token) ? SLOW_MS : 0);
    });
    await new Promise<void>((r) => server.listen(http01Port, '127.0.0.1', r));
    const acme = (challengeWait?: string) => ({ challenges: ['http-01'], http01Port, hosts: { [NAME]: '127.0.0.1' }, ...(challengeWait ? { challengeWait } : {}) });
    m = await startTestMesh({
      nodes: [
        { id: 'gw', role: 'gateway', dc: 'core' },
        { id: 'edge-default', role: 'edge', dc: 'dc-a', parent: 'gw', acme: acme() },
        { id: 'edge-short', role: 'edge', dc: 'dc-a', parent: 'gw', acme: acme('300ms') },
        { id: 'edge-none', role: 'edge', dc: 'dc-a', parent: 'gw', acme: acme('0s') },
      ],
    });
    for (const id of ['edge-default', 'edge-short', 'edge-none']) {
      const c = await new TestAcmeClient(m.directory(id), await readFile(m.edgeTlsCert(id), 'utf8')).init();
      assert.equal((await c.register()).status, 201);
      clients.set(id, c);
    }
  });
  after(async () => {
    await m?.stop();
    await new Promise((r) => server?.close(r));
  });

  /** A new order's http-01 challenge, answered by the responder as `how` says; returns the POST's answer. */
  async function answer(edge: string, how: 'right' | 'wrong' | 'slow') {
    const c = clients.get(edge)!;
    const o = await c.post(c.dir.newOrder!, { identifiers: [{ type: 'dns', value: NAME }] });
    assert.equal(o.status, 201, o.body);
    const authzUrl = o.json().authorizations[0] as string;
    const ch = (await c.post(authzUrl, undefined)).json().challenges.find((x: { type: string }) => x.type === 'http-01');
    tokens.set(ch.token, how === 'wrong' ? `${ch.token}.not-the-thumbprint` : `${ch.token}.${c.thumbprint}`);
    if (how === 'slow') slow.add(ch.token);
    const r = await c.post(ch.url, {});
    assert.equal(r.status, 200, r.body);
    return { c, r, authzUrl };
  }

  type Case = [name: string, edge: string, how: 'right' | 'wrong' | 'slow', status: string, retryAfter: boolean];
  const cases: Case[] = [
    ['ok/validated within the wait (default 2s): the answer is "valid"', 'edge-default', 'right', 'valid', false],
    ['ok/refused within the wait: the answer is "invalid" with its problem', 'edge-default', 'wrong', 'invalid', false],
    ['ok/slower than the wait (300ms): "processing" with Retry-After, then valid', 'edge-short', 'slow', 'processing', true],
    ['ok/challengeWait 0s: "processing" at once with Retry-After, then valid', 'edge-none', 'right', 'processing', true],
  ];
  for (const [name, edge, how, status, retryAfter] of cases) {
    test(name, async () => {
      const { c, r, authzUrl } = await answer(edge, how);
      const body = r.json();
      assert.equal(body.status, status, r.body);
      assert.equal(r.headers['retry-after'], retryAfter ? '1' : undefined);
      assert.match(String(r.headers.link), /rel="up"/);
      if (status === 'valid') {
        assert.ok(body.validated, 'validated is set');
        // The authorization was settled before the answer: no poll needed.
        assert.equal((await c.post(authzUrl, undefined)).json().status, 'valid');
      } else if (status === 'invalid') {
        assert.equal(body.error.type, `${PROBLEM}incorrectResponse`, r.body);
        assert.equal((await c.post(authzUrl, undefined)).json().status, 'invalid');
      } else {
        // The validation goes on after the answer.
        const authz = await c.poll(authzUrl, (a) => a.status !== 'pending', 20_000);
        assert.equal(authz.status, 'valid', JSON.stringify(authz));
      }
    });
  }
});

import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { pino, type Logger } from 'pino';
import { CasHttpClient, casAnswerError, isFinalCasError, type CasHttpRequest } from '../../services/gateway/cas/cas-http.js';
import { RaError } from '../../shared/errors/index.js';
import { freePort } from '../harness/ports.js';
import { makeTestServerTls, type TestTlsFiles } from '../harness/tls.js';

// The shared HTTP client of the remote CA services against real loopback servers: what is retried,
// what is never repeated, and what each failure becomes for the gateway.

/** What the server does with one request: answer a status (with a JSON body), or never answer. */
type Step = number | { status: number; body: unknown } | 'hang';

interface TestServer {
  url: string;
  /** Requests the server received. */
  seen(): number;
  close(): Promise<void>;
}

/** Answers the i-th request with script[i] (200 {"ok":true} once the script is done). */
function handler(script: Step[], count: () => number) {
  const held: ServerResponse[] = [];
  const fn = (req: IncomingMessage, res: ServerResponse) => {
    req.resume();
    req.on('end', () => {
      const step = script[count() - 1] ?? 200;
      if (step === 'hang') {
        held.push(res);
        return;
      }
      const { status, body } = typeof step === 'number' ? { status: step, body: status200(step) } : step;
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    });
  };
  return { fn, held };
}

function status200(status: number): unknown {
  return status < 300 ? { ok: true } : { errors: [`status ${status}`] };
}

async function listen(server: Server, port: number): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve());
  });
}

async function startServer(script: Step[], opts: { port?: number; tls?: TestTlsFiles; deferListen?: boolean } = {}): Promise<TestServer & { listen(): Promise<void> }> {
  let n = 0;
  const h = handler(script, () => n);
  const onRequest = (req: IncomingMessage, res: ServerResponse) => {
    n += 1;
    h.fn(req, res);
  };
  const server: Server = opts.tls
    ? createHttpsServer({ key: await readFile(opts.tls.key), cert: await readFile(opts.tls.cert) }, onRequest)
    : createHttpServer(onRequest);
  const port = opts.port ?? (await freePort());
  if (!opts.deferListen) await listen(server, port);
  return {
    url: `${opts.tls ? 'https' : 'http'}://127.0.0.1:${port}/v1/pki/sign/role`,
    seen: () => n,
    listen: () => listen(server, port),
    close: async () => {
      for (const r of h.held) r.destroy();
      server.closeAllConnections();
      await new Promise<void>((r) => (server.listening ? server.close(() => r()) : r()));
    },
  };
}

/** A real pino logger whose lines the test reads (the client logs each failed attempt it retries). */
function capturingLogger(onLine?: (line: Record<string, unknown>) => void): { log: Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const log = pino({ level: 'warn' }, {
    write(s: string) {
      const line = JSON.parse(s) as Record<string, unknown>;
      lines.push(line);
      onLine?.(line);
    },
  });
  return { log, lines };
}

function call(url: string, idempotent: boolean): CasHttpRequest {
  return { method: 'POST', url, json: { csr: 'x' }, idempotent, what: 'sign' };
}

async function rejection(p: Promise<unknown>): Promise<RaError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof RaError, `not an RaError: ${String(e)}`);
    return e;
  }
  assert.fail('the call did not fail');
}

describe('unit: cas-http client against loopback servers', { timeout: 60_000 }, () => {
  const servers: TestServer[] = [];
  let dir: string;
  let tls: TestTlsFiles;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ra-mesh-cas-http-'));
    tls = await makeTestServerTls(dir, 'cas-http test');
  });

  after(async () => {
    for (const s of servers) await s.close();
    await rm(dir, { recursive: true, force: true });
  });

  const client = (o: Partial<ConstructorParameters<typeof CasHttpClient>[0]> = {}) =>
    new CasHttpClient({ service: 'test-ca', timeoutMs: 400, attempts: 3, backoffMs: 20, ...o });

  // One call against a scripted server: the outcome and how many requests reached the server.
  const cases: Array<{
    name: string;
    script: Step[];
    idempotent: boolean;
    status?: number;
    json?: unknown;
    reason?: string;
    final?: boolean;
    seen: number;
  }> = [
    { name: 'ok/a 2xx answer is returned', script: [{ status: 200, body: { data: { certificate: 'pem' } } }], idempotent: false, status: 200, json: { data: { certificate: 'pem' } }, seen: 1 },
    { name: 'ok/503 is retried (nothing was done), then the answer', script: [503, 200], idempotent: false, status: 200, seen: 2 },
    { name: 'ok/502 and 429 are retried, then the answer', script: [502, 429, 201], idempotent: false, status: 201, seen: 3 },
    { name: 'ok/a timeout on an idempotent call is retried', script: ['hang', 200], idempotent: true, status: 200, seen: 2 },
    { name: 'ok/a 500 on an idempotent call is retried', script: [500, 200], idempotent: true, status: 200, seen: 2 },
    { name: 'ok/a 4xx answer is returned as it is, never retried', script: [{ status: 400, body: { errors: ['no'] } }], idempotent: true, status: 400, json: { errors: ['no'] }, seen: 1 },
    { name: 'fail/a timeout on a non-idempotent call is not retried: cas-outcome-unknown', script: ['hang'], idempotent: false, reason: 'cas-outcome-unknown', final: true, seen: 1 },
    { name: 'fail/500 on a non-idempotent call: one call, cas-outcome-unknown', script: [500], idempotent: false, reason: 'cas-outcome-unknown', final: true, seen: 1 },
    { name: 'fail/503 on every attempt: cas-unavailable after exactly `attempts` calls', script: [503, 503, 503, 200], idempotent: false, reason: 'cas-unavailable', final: false, seen: 3 },
    { name: 'fail/a timeout on every attempt of an idempotent call: cas-unavailable', script: ['hang', 'hang', 'hang'], idempotent: true, reason: 'cas-unavailable', final: false, seen: 3 },
  ];

  for (const c of cases) {
    test(c.name, async () => {
      const s = await startServer(c.script);
      servers.push(s);
      const p = client().request(call(s.url, c.idempotent));
      if (c.reason) {
        const err = await rejection(p);
        assert.equal(err.type, 'serverInternal');
        assert.equal(err.reason, c.reason);
        assert.equal(isFinalCasError(err), c.final);
        assert.match(err.detail, /test-ca/);
      } else {
        const res = await p;
        assert.equal(res.status, c.status);
        if (c.json !== undefined) assert.deepEqual(res.json(), c.json);
      }
      // Every retry happens before the call returns: the count is final here.
      assert.equal(s.seen(), c.seen);
    });
  }

  test('ok/retried after ECONNREFUSED, then success (the server starts late)', async () => {
    const s = await startServer([200], { deferListen: true });
    servers.push(s);
    let started: Promise<void> | undefined;
    // The server starts when the client reports its first refused attempt, well within its backoff.
    const { log, lines } = capturingLogger(() => (started ??= s.listen()));
    const res = await client({ log, backoffMs: 200 }).request(call(s.url, false));
    assert.equal(res.status, 200);
    assert.equal(s.seen(), 1);
    assert.equal(lines.length, 1);
    assert.equal((lines[0]!.err as { code?: string }).code, 'ECONNREFUSED');
  });

  test('fail/ECONNREFUSED on every attempt: cas-unavailable (transient) after exactly `attempts` tries', async () => {
    const port = await freePort();
    const { log, lines } = capturingLogger();
    const err = await rejection(client({ log, attempts: 4 }).request(call(`http://127.0.0.1:${port}/v1/pki/sign/x`, false)));
    assert.equal(err.reason, 'cas-unavailable');
    assert.equal(isFinalCasError(err), false);
    // One log line per refused attempt, numbered.
    assert.deepEqual(lines.map((l) => l.attempt), [1, 2, 3, 4]);
    assert.ok(lines.every((l) => (l.err as { code?: string }).code === 'ECONNREFUSED'));
  });

  test('ok/https with the CA bundle given in `ca`', async () => {
    const s = await startServer([200], { tls });
    servers.push(s);
    const res = await client({ ca: await readFile(tls.ca) }).request(call(s.url, false));
    assert.equal(res.status, 200);
  });

  test('fail/a TLS certificate the client does not trust: never sent, cas-unavailable', async () => {
    const s = await startServer([200], { tls });
    servers.push(s);
    const err = await rejection(client().request(call(s.url, false)));
    assert.equal(err.reason, 'cas-unavailable');
    assert.equal(s.seen(), 0);
  });

  test('fail/an answer that is not JSON: json() throws cas-outcome-unknown', async () => {
    const raw = createHttpServer((_q, r) => r.end('<html>proxy error</html>'));
    const port = await freePort();
    await listen(raw, port);
    try {
      const res = await client().request(call(`http://127.0.0.1:${port}/v1/pki/sign/x`, false));
      assert.equal(res.status, 200);
      assert.throws(() => res.json(), (e: unknown) => e instanceof RaError && e.reason === 'cas-outcome-unknown');
    } finally {
      raw.closeAllConnections();
      await new Promise<void>((r) => raw.close(() => r()));
    }
  });
});

describe('unit: casAnswerError maps a definite 4xx answer', () => {
  const table: Array<{ name: string; status: number; message?: string; type: string; reason?: string; final: boolean; detail: RegExp; notDetail?: RegExp }> = [
    { name: 'ok/401: the gateway\'s credentials (cas-credentials), the CA\'s words not passed on', status: 401, message: 'bad token xyz', type: 'serverInternal', reason: 'cas-credentials', final: true, detail: /refused the gateway's credentials for sign/, notDetail: /xyz/ },
    { name: 'ok/403: unauthorized with the CA\'s explanation', status: 403, message: 'policy forbids a.example', type: 'unauthorized', final: true, detail: /refused the sign request: policy forbids a\.example/ },
    { name: 'ok/400: badCSR with the CA\'s explanation', status: 400, message: 'common name x not allowed by this role', type: 'badCSR', final: true, detail: /rejected the sign request: common name x not allowed by this role/ },
    { name: 'ok/422: badCSR', status: 422, message: 'unprocessable', type: 'badCSR', final: true, detail: /unprocessable/ },
    { name: 'ok/404: the gateway\'s configuration (cas-config)', status: 404, message: 'no handler for route', type: 'serverInternal', reason: 'cas-config', final: true, detail: /no such resource for sign \(HTTP 404\)/, notDetail: /no handler/ },
    { name: 'ok/409: another refusal (cas-refused) with status and message', status: 409, message: 'conflict', type: 'serverInternal', reason: 'cas-refused', final: true, detail: /refused the sign request \(HTTP 409\): conflict/ },
    { name: 'ok/400 without a message: no dangling colon', status: 400, type: 'badCSR', final: true, detail: /rejected the sign request$/ },
  ];
  for (const c of table) {
    test(c.name, () => {
      const e = casAnswerError('test-ca', 'sign', c.status, c.message);
      assert.equal(e.type, c.type);
      assert.equal(e.reason, c.reason);
      assert.equal(isFinalCasError(e), c.final);
      assert.match(e.detail, c.detail);
      if (c.notDetail) assert.doesNotMatch(e.detail, c.notDetail);
      assert.match(e.detail, /the CA service \(test-ca\)/);
    });
  }

  test('ok/a long message is cut at 300 characters', () => {
    const e = casAnswerError('test-ca', 'sign', 400, 'x'.repeat(1000));
    assert.ok(e.detail.length < 400, `detail of ${e.detail.length} characters`);
  });
});

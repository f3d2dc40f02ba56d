// The ACME load client of the benchmarks: the same code drives the ra-mesh edge, Pebble and Caddy's
// acme_server. `concurrency` workers each run full RFC 8555 orders one after the other, every worker
// with an account of its own that all its orders reuse (accounts 'per-worker', the default), or all
// workers on one account ('shared'): newOrder, the authorization, the http-01 challenge (served by this
// client's own responder), polling the authorization, finalize, polling the order, downloading the
// certificate. Connections are kept alive (one agent), JWS are signed with node:crypto (ES256) and CSRs
// are built directly in DER, so the client spends little CPU of the machine it shares with the servers.
// Polling uses the same fixed schedule for every server (10 ms, doubling to 200 ms), not Retry-After,
// so no server is favoured by its own hint.

import { createHash, createPrivateKey, generateKeyPairSync, randomBytes, sign, type KeyObject } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { Agent, request } from 'node:https';
import { performance } from 'node:perf_hooks';
import { quantile } from './stats.js';

export interface LoadOptions {
  directory: string;
  /** PEM of the CA that signed the server's TLS certificate. */
  ca: string;
  /** Port of the http-01 responder on 127.0.0.1 (the port the server validates on). */
  http01Port: number;
  concurrency: number;
  /** Most orders, and most seconds of the measured window. */
  maxOrders: number;
  maxMs: number;
  /** Names are `<random>.<domain>`, one fresh name per order. */
  domain: string;
  /** Orders done before the measured window starts (connections, caches). Default concurrency. */
  warmupOrders?: number;
  /**
   * 'per-worker' (default): an account per worker. 'shared': every worker's orders on one account.
   * Caddy's acme_server (smallstep's ACME code) fails concurrent newOrder and order polls of one
   * account with serverInternal: it keeps the account's order list as one database value updated by
   * compare-and-swap without retry (smallstep/certificates#340), so 'shared' measures that, not speed.
   */
  accounts?: 'per-worker' | 'shared';
}

export interface LoadResult {
  orders: number;
  failed: number;
  seconds: number;
  ordersPerSec: number;
  p50Ms: number;
  p99Ms: number;
  /** Accounts the orders were made on. */
  accounts: number;
  requests: number;
  badNonceRetries: number;
  errors: string[];
}

interface Res {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

const b64u = (b: Buffer | string) => Buffer.from(b).toString('base64url');
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

// ---- DER, just enough for a PKCS#10 request with one DNS name (RFC 2986, RFC 5280 §4.2.1.6) ----

function derLen(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n]);
  const bytes: number[] = [];
  for (let x = n; x > 0; x >>= 8) bytes.unshift(x & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}
const tlv = (tag: number, ...content: Buffer[]) => {
  const c = Buffer.concat(content);
  return Buffer.concat([Buffer.from([tag]), derLen(c.length), c]);
};
const OID_CN = Buffer.from('0603550403', 'hex');
const OID_ECDSA_SHA256 = Buffer.from('06082a8648ce3d040302', 'hex');
const OID_EXTENSION_REQUEST = Buffer.from('06092a864886f70d01090e', 'hex');
const OID_SAN = Buffer.from('0603551d11', 'hex');

/** A DER CSR for `name` (CN and the one dNSName), signed ECDSA P-256 SHA-256 with `key`. */
export function fastCsr(name: string, key: KeyObject, spki: Buffer): Buffer {
  const subject = tlv(0x30, tlv(0x31, tlv(0x30, OID_CN, tlv(0x0c, Buffer.from(name)))));
  const san = tlv(0x30, tlv(0x82, Buffer.from(name)));
  const ext = tlv(0x30, tlv(0x30, OID_SAN, tlv(0x04, san)));
  const attrs = tlv(0xa0, tlv(0x30, OID_EXTENSION_REQUEST, tlv(0x31, ext)));
  const info = tlv(0x30, Buffer.from([0x02, 0x01, 0x00]), subject, spki, attrs);
  const sig = sign('sha256', info, key);
  return tlv(0x30, info, tlv(0x30, OID_ECDSA_SHA256), tlv(0x03, Buffer.from([0]), sig));
}

// ---- the client ----

/** The keep-alive connections of a load run. */
function loadAgent(o: LoadOptions): Agent {
  return new Agent({ keepAlive: true, ca: o.ca, maxSockets: o.concurrency * 2 });
}

export class AcmeLoadClient {
  private readonly agent: Agent;
  private readonly ownAgent: boolean;
  private dir!: Record<string, string>;
  private readonly nonces: string[] = [];
  private readonly key: KeyObject;
  private readonly jwk: Record<string, string>;
  private readonly thumbprint: string;
  private kid?: string;
  private readonly csrKey: KeyObject;
  private readonly csrSpki: Buffer;
  requests = 0;
  badNonceRetries = 0;

  /** `agent`: connections shared with other clients (then close() leaves it open). */
  constructor(
    readonly o: LoadOptions,
    agent?: Agent,
  ) {
    this.ownAgent = !agent;
    this.agent = agent ?? loadAgent(o);
    const kp = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    this.key = kp.privateKey;
    const j = kp.publicKey.export({ format: 'jwk' }) as Record<string, string>;
    this.jwk = { crv: j.crv!, kty: j.kty!, x: j.x!, y: j.y! };
    this.thumbprint = b64u(createHash('sha256').update(JSON.stringify(this.jwk)).digest());
    const ck = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    this.csrKey = createPrivateKey(ck.privateKey.export({ format: 'pem', type: 'pkcs8' }));
    this.csrSpki = ck.publicKey.export({ format: 'der', type: 'spki' });
  }

  private http(url: string, method: string, body?: string): Promise<Res> {
    this.requests += 1;
    return new Promise((resolve, reject) => {
      const req = request(url, { method, agent: this.agent, timeout: 30_000, headers: body ? { 'content-type': 'application/jose+json' } : {} }, (res) => {
        let data = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (data += d));
        res.on('end', () => {
          const n = res.headers['replay-nonce'];
          if (typeof n === 'string') this.nonces.push(n);
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: data });
        });
        res.on('error', reject);
      });
      req.on('timeout', () => req.destroy(new Error(`timeout: ${method} ${url}`)));
      req.on('error', reject);
      req.end(body);
    });
  }

  private async nonce(): Promise<string> {
    const n = this.nonces.pop();
    if (n) return n;
    await this.http(this.dir.newNonce!, 'HEAD');
    const m = this.nonces.pop();
    if (!m) throw new Error('the server gave no Replay-Nonce');
    return m;
  }

  /** A signed POST (payload undefined = POST-as-GET), retried on badNonce (RFC 8555 §6.5). */
  async post(url: string, payload: unknown): Promise<Res> {
    for (let attempt = 0; ; attempt++) {
      const protectedHeader = { alg: 'ES256', nonce: await this.nonce(), url, ...(this.kid ? { kid: this.kid } : { jwk: this.jwk }) };
      const p = b64u(JSON.stringify(protectedHeader));
      const body = payload === undefined ? '' : b64u(JSON.stringify(payload));
      const signature = b64u(sign('sha256', Buffer.from(`${p}.${body}`), { key: this.key, dsaEncoding: 'ieee-p1363' }));
      const res = await this.http(url, 'POST', JSON.stringify({ protected: p, payload: body, signature }));
      if (res.status === 400 && res.body.includes('badNonce') && attempt < 5) {
        this.badNonceRetries += 1;
        continue;
      }
      return res;
    }
  }

  /** Directory and account; tried three times (a server can drop a request, e.g. Pebble under load after the mesh benchmarks). */
  async init(): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.initOnce();
      } catch (e) {
        if (attempt >= 3) throw e;
        // Fresh connections for the next attempt (the agent stays usable: it opens new ones).
        this.agent.destroy();
      }
    }
  }

  private async initOnce(): Promise<void> {
    const d = await this.http(this.o.directory, 'GET');
    if (d.status !== 200) throw new Error(`directory: ${d.status} ${d.body.slice(0, 300)}`);
    this.dir = JSON.parse(d.body);
    const r = await this.post(this.dir.newAccount!, { termsOfServiceAgreed: true, contact: ['mailto:bench@example.test'] });
    if (r.status !== 201 && r.status !== 200) throw new Error(`newAccount: ${r.status} ${r.body.slice(0, 300)}`);
    this.kid = r.headers.location as string;
  }

  private async poll(url: string, done: (b: any) => boolean, what: string): Promise<any> {
    let wait = 10;
    const until = Date.now() + 60_000;
    for (;;) {
      const r = await this.post(url, undefined);
      if (r.status !== 200) throw new Error(`${what}: ${r.status} ${r.body.slice(0, 300)}`);
      const b = JSON.parse(r.body);
      if (b.status === 'invalid') throw new Error(`${what} invalid: ${JSON.stringify(b.error ?? b).slice(0, 300)}`);
      if (done(b)) return b;
      if (Date.now() > until) throw new Error(`${what}: still ${b.status} after 60 s`);
      await sleep(wait);
      wait = Math.min(200, wait * 2);
    }
  }

  /** One full order for a fresh name; resolves with the PEM chain. */
  async order(responder: Http01Responder): Promise<string> {
    const name = `${randomBytes(6).toString('hex')}.${this.o.domain}`;
    const o = await this.post(this.dir.newOrder!, { identifiers: [{ type: 'dns', value: name }] });
    if (o.status !== 201) throw new Error(`newOrder: ${o.status} ${o.body.slice(0, 300)}`);
    const orderUrl = o.headers.location as string;
    const order = JSON.parse(o.body);
    for (const az of order.authorizations as string[]) {
      const a = await this.post(az, undefined);
      if (a.status !== 200) throw new Error(`authz: ${a.status} ${a.body.slice(0, 300)}`);
      const authz = JSON.parse(a.body);
      if (authz.status === 'valid') continue;
      const ch = authz.challenges.find((c: any) => c.type === 'http-01');
      if (!ch) throw new Error(`no http-01 challenge offered: ${a.body.slice(0, 300)}`);
      responder.set(ch.token, `${ch.token}.${this.thumbprint}`);
      const c = await this.post(ch.url, {});
      if (c.status !== 200) throw new Error(`challenge: ${c.status} ${c.body.slice(0, 300)}`);
      if (JSON.parse(c.body).status !== 'valid') await this.poll(az, (b) => b.status === 'valid', 'authz');
      responder.delete(ch.token);
    }
    const ready = await this.poll(orderUrl, (b) => b.status === 'ready' || b.status === 'valid', 'order (ready)');
    let fin = ready;
    if (ready.status === 'ready') {
      const f = await this.post(order.finalize, { csr: b64u(fastCsr(name, this.csrKey, this.csrSpki)) });
      if (f.status !== 200) throw new Error(`finalize: ${f.status} ${f.body.slice(0, 300)}`);
      fin = JSON.parse(f.body);
    }
    if (fin.status !== 'valid') fin = await this.poll(orderUrl, (b) => b.status === 'valid', 'order (valid)');
    const cert = await this.post(fin.certificate, undefined);
    if (cert.status !== 200 || !cert.body.includes('BEGIN CERTIFICATE')) throw new Error(`certificate: ${cert.status} ${cert.body.slice(0, 300)}`);
    return cert.body;
  }

  /** Creates orders (newOrder only: they stay pending) until `count` exist or the deadline passes. */
  async newOrders(count: number, concurrency: number, deadline: number): Promise<{ created: number; failed: number }> {
    let started = 0;
    let created = 0;
    let failed = 0;
    await Promise.all(Array.from({ length: concurrency }, async () => {
      while (started < count && Date.now() < deadline) {
        started += 1;
        const name = `${randomBytes(6).toString('hex')}.${this.o.domain}`;
        const r = await this.post(this.dir.newOrder!, { identifiers: [{ type: 'dns', value: name }] }).catch(() => undefined);
        if (r?.status === 201) created += 1;
        else failed += 1;
      }
    }));
    return { created, failed };
  }

  close(): void {
    if (this.ownAgent) this.agent.destroy();
  }
}

export interface Http01Responder {
  set(token: string, keyAuth: string): void;
  delete(token: string): void;
  close(): Promise<void>;
}

/** An http-01 responder (RFC 8555 §8.3) on 127.0.0.1:port. */
export async function http01Responder(port: number): Promise<Http01Responder> {
  const tokens = new Map<string, string>();
  const server: Server = createServer((req, res) => {
    const m = /^\/\.well-known\/acme-challenge\/([A-Za-z0-9_-]+)$/.exec(req.url ?? '');
    const v = m ? tokens.get(m[1]!) : undefined;
    res.writeHead(v ? 200 : 404, { 'content-type': 'text/plain' }).end(v ?? 'not found');
  });
  server.keepAliveTimeout = 10_000;
  await new Promise<void>((r, j) => {
    server.once('error', j);
    server.listen(port, '127.0.0.1', () => r());
  });
  return {
    set: (t, k) => tokens.set(t, k),
    delete: (t) => void tokens.delete(t),
    close: () =>
      new Promise((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

/** Runs the load: accounts and warm-up orders first, then the measured window bounded by count and time. */
export async function runLoad(o: LoadOptions): Promise<LoadResult> {
  const responder = await http01Responder(o.http01Port);
  const agent = loadAgent(o);
  const clients = Array.from({ length: o.accounts === 'shared' ? 1 : o.concurrency }, () => new AcmeLoadClient(o, agent));
  /** Worker i's client (its account). */
  const clientOf = (i: number) => clients[i % clients.length]!;
  const errors: string[] = [];
  let failed = 0;
  try {
    for (const c of clients) await c.init();
    const initRequests = clients.reduce((a, c) => a + c.requests, 0);
    const warm = o.warmupOrders ?? o.concurrency;
    await Promise.all(Array.from({ length: Math.min(warm, o.concurrency) }, async (_, i) => {
      for (let k = i; k < warm; k += o.concurrency) await clientOf(i).order(responder).catch((e: Error) => errors.length < 5 && errors.push(`warm-up: ${e.message}`));
    }));
    const lat: number[] = [];
    let started = 0;
    const t0 = performance.now();
    const deadline = t0 + o.maxMs;
    await Promise.all(Array.from({ length: o.concurrency }, async (_, i) => {
      while (started < o.maxOrders && performance.now() < deadline) {
        started += 1;
        const s = performance.now();
        try {
          await clientOf(i).order(responder);
          lat.push(performance.now() - s);
        } catch (e) {
          failed += 1;
          if (errors.length < 5) errors.push((e as Error).message);
        }
      }
    }));
    const seconds = (performance.now() - t0) / 1000;
    return {
      orders: lat.length,
      failed,
      seconds,
      ordersPerSec: lat.length / seconds,
      p50Ms: quantile(lat, 0.5),
      p99Ms: quantile(lat, 0.99),
      accounts: clients.length,
      // Requests of the warm-up orders and the window (not the directory and account creation).
      requests: clients.reduce((a, c) => a + c.requests, 0) - initRequests,
      badNonceRetries: clients.reduce((a, c) => a + c.badNonceRetries, 0),
      errors,
    };
  } finally {
    // The clients share the agent (their close() leaves it open).
    agent.destroy();
    await responder.close();
  }
}

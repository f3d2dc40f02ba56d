import { request } from 'node:https';
import { createServer, type Server } from 'node:http';
import { webcrypto } from 'node:crypto';
import { calculateJwkThumbprint, exportJWK, FlattenedSign, generateKeyPair, type CryptoKey, type JWK } from 'jose';
import { x509 } from '../../shared/pki/index.js';

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

export interface HttpResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
  json(): any;
}

/** HTTPS to a test server whose certificate is given as `ca`. */
export function httpsFetch(url: string, opts: { method?: string; body?: string; headers?: Record<string, string>; ca: string }): Promise<HttpResponse> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: opts.method ?? 'GET', headers: opts.headers, ca: opts.ca, timeout: 15_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body, json: () => JSON.parse(body) }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end(opts.body);
  });
}

/**
 * A small RFC 8555 client for tests that need to send what real clients never send (a CSR with an
 * extra name, a reused nonce, a wrong url). The happy paths are tested with lego and certbot.
 */
export class TestAcmeClient {
  private nonce?: string;
  dir!: Record<string, string>;
  kid?: string;
  key!: CryptoKey;
  jwk!: JWK;
  thumbprint!: string;

  constructor(readonly directoryUrl: string, readonly ca: string) {}

  async init(): Promise<this> {
    this.dir = (await httpsFetch(this.directoryUrl, { ca: this.ca })).json();
    const kp = await generateKeyPair('ES256', { extractable: true });
    this.key = kp.privateKey as CryptoKey;
    this.jwk = await exportJWK(kp.publicKey);
    this.thumbprint = await calculateJwkThumbprint(this.jwk);
    return this;
  }

  async newNonce(): Promise<string> {
    const r = await httpsFetch(this.dir.newNonce!, { method: 'HEAD', ca: this.ca });
    return r.headers['replay-nonce'] as string;
  }

  /** Signs and posts; `payload` undefined = POST-as-GET. `override` tampers with the protected header. */
  async post(url: string, payload: unknown, override: Record<string, unknown> = {}): Promise<HttpResponse> {
    return this.postBody(url, JSON.stringify(await this.sign(url, payload, override)));
  }

  /** The flattened JWS `post` would send (fresh nonce, kid or jwk, then `override`; undefined members removed). */
  async sign(url: string, payload: unknown, override: Record<string, unknown> = {}): Promise<{ protected: string; payload: string; signature: string }> {
    const nonce = this.nonce ?? (await this.newNonce());
    this.nonce = undefined;
    const header: Record<string, unknown> = { alg: 'ES256', nonce, url, ...(this.kid ? { kid: this.kid } : { jwk: this.jwk }), ...override };
    for (const k of Object.keys(header)) if (header[k] === undefined) delete header[k];
    const body = new TextEncoder().encode(payload === undefined ? '' : JSON.stringify(payload));
    return (await new FlattenedSign(body).setProtectedHeader(header as never).sign(this.key)) as { protected: string; payload: string; signature: string };
  }

  /** POSTs a raw body (normally a JWS) and keeps the Replay-Nonce of the answer for the next request. */
  async postBody(url: string, body: string, contentType = 'application/jose+json'): Promise<HttpResponse> {
    const res = await httpsFetch(url, { method: 'POST', body, headers: { 'content-type': contentType }, ca: this.ca });
    const n = res.headers['replay-nonce'];
    if (typeof n === 'string') this.nonce = n;
    return res;
  }

  async register(): Promise<HttpResponse> {
    const r = await this.post(this.dir.newAccount!, { termsOfServiceAgreed: true, contact: ['mailto:ops@example.test'] });
    if (r.status === 201 || r.status === 200) this.kid = r.headers.location as string;
    return r;
  }

  /** An http-01 responder on 127.0.0.1:port serving the key authorizations of the given tokens. */
  static async http01Responder(port: number): Promise<{ set(token: string, keyAuth: string): void; close(): Promise<void>; server: Server }> {
    const tokens = new Map<string, string>();
    const server = createServer((req, res) => {
      const m = /^\/\.well-known\/acme-challenge\/([A-Za-z0-9_-]+)$/.exec(req.url ?? '');
      const v = m ? tokens.get(m[1]!) : undefined;
      res.writeHead(v ? 200 : 404, { 'content-type': 'text/plain' }).end(v ?? 'not found');
    });
    await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
    return { set: (t, k) => tokens.set(t, k), close: () => new Promise((r) => server.close(() => r())), server };
  }

  /** Creates an order and completes its http-01 challenges through the responder; returns the order URL and body. */
  async readyOrder(names: string[], responder: { set(t: string, k: string): void }): Promise<{ url: string; order: any }> {
    const r = await this.post(this.dir.newOrder!, { identifiers: names.map((value) => ({ type: 'dns', value })) });
    if (r.status !== 201) throw new Error(`newOrder: ${r.status} ${r.body}`);
    const url = r.headers.location as string;
    for (const az of r.json().authorizations as string[]) {
      const authz = (await this.post(az, undefined)).json();
      const ch = authz.challenges.find((c: any) => c.type === 'http-01');
      responder.set(ch.token, `${ch.token}.${this.thumbprint}`);
      await this.post(ch.url, {});
    }
    return { url, order: await this.poll(url, (o) => o.status !== 'pending') };
  }

  async poll(url: string, done: (body: any) => boolean, timeoutMs = 20_000): Promise<any> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const body = (await this.post(url, undefined)).json();
      if (done(body)) return body;
      if (Date.now() > until) throw new Error(`timed out polling ${url}: ${JSON.stringify(body)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

/** A CSR (base64url DER) for the given DNS names, with a fresh EC P-256 key. */
export async function makeCsr(names: string[]): Promise<string> {
  const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
  const keys = (await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: `CN=${names[0]}`,
    keys,
    signingAlgorithm: alg,
    extensions: [new x509.SubjectAlternativeNameExtension(names.map((value) => ({ type: 'dns' as const, value })))],
  });
  return Buffer.from(csr.rawData).toString('base64url');
}

// A fake of Google Cloud Certificate Authority Service for tests (Google cannot be reached from here).
//
// It follows the published REST API v1 reference of privateca.googleapis.com
// (https://cloud.google.com/certificate-authority-service/docs/reference/rest):
//   - projects.locations.caPools.certificates.create
//       POST /v1/{parent=projects/*/locations/*/caPools/*}/certificates?certificateId=&requestId=&issuingCertificateAuthorityId=
//       body Certificate {pemCsr, lifetime: "<seconds>s"} -> Certificate
//   - projects.locations.caPools.certificates.get     GET  /v1/{name=projects/*/locations/*/caPools/*/certificates/*}
//   - projects.locations.caPools.certificates.revoke  POST /v1/{name=…/certificates/*}:revoke  body {reason, requestId}
//   - projects.locations.caPools.fetchCaCerts         POST /v1/{caPool=projects/*/locations/*/caPools/*}:fetchCaCerts
//       body {requestId} -> {caCerts: [{certificates: [pem, …]}]}
// with the field names of the Certificate resource (name, pemCsr, issuerCertificateAuthority, lifetime,
// pemCertificate, pemCertificateChain (issuer-to-root), certificateDescription.subjectDescription
// {hexSerialNumber (lower-case hex), notBeforeTime, notAfterTime, lifetime, subject, subjectAltName},
// revocationDetails {revocationState, revocationTime}, createTime, updateTime), the requestId rule
// ("a valid UUID with the exception that zero UUID is not supported"; the same requestId within the
// window, at least 60 minutes, returns the first result and is not executed again), certificateId
// `[a-zA-Z0-9_-]{1,63}` (required: the pool is modelled as Enterprise tier, which keeps certificates),
// and Google's error body {error: {code, message, status}} (https://cloud.google.com/apis/design/errors):
// 400 INVALID_ARGUMENT / FAILED_PRECONDITION, 401 UNAUTHENTICATED, 403 PERMISSION_DENIED, 404 NOT_FOUND,
// 409 ALREADY_EXISTS, 429 RESOURCE_EXHAUSTED, 503 UNAVAILABLE. IAM is checked before existence, as the API
// does ("Permission '…' denied on resource '…' (or it may not exist)").
//
// Authentication follows Google's OAuth 2.0 service-account flow
// (https://developers.google.com/identity/protocols/oauth2/service-account; RFC 7523 JWT bearer grant):
// POST token_uri, application/x-www-form-urlencoded grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer
// &assertion=<JWT>, the JWT RS256-signed with the service account's private key, iss = client_email,
// scope including https://www.googleapis.com/auth/cloud-platform, aud = token_uri, exp at most 1 hour after
// iat; answered {access_token, expires_in, token_type: "Bearer"} or an RFC 6749 §5.2 error
// {error: "invalid_grant", error_description}. The assertion's signature is verified with the public key
// of the service-account key this fake handed out (`serviceAccountKey`).
//
// It is an HTTPS server on 127.0.0.1 with its own test TLS CA (`tlsCaFile`, for the backend's caFile) and
// signs with real crypto: its own root + intermediate (shared/pki BuiltinCa, ECDSA), never canned
// certificates. Every call and every certificate created or revoked is recorded for tests to count.
// Fault injection: the next N calls of a method answer 503 UNAVAILABLE, any given error, hang (never
// answered, nothing done), or are dropped after processing (the connection is closed instead of the answer).

import { generateKeyPairSync, randomBytes, verify as cryptoVerify, type KeyObject } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { join } from 'node:path';
import { BuiltinCa, csrNames, derToPem, parseCsr } from '../../shared/pki/index.js';
import { RaError } from '../../shared/errors/index.js';
import { makeTestServerTls } from './tls.js';
import { freePort } from './ports.js';

export const CLOUD_PLATFORM_SCOPE = 'https://www.googleapis.com/auth/cloud-platform';
const JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
const UUID_RE = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;
const ZERO_UUID = '00000000-0000-0000-0000-000000000000';
const CERTIFICATE_ID_RE = /^[a-zA-Z0-9_-]{1,63}$/;
const POOL_RE = /^projects\/[^/]+\/locations\/[^/]+\/caPools\/[^/:]+$/;
/** google.protobuf.Duration in JSON: seconds with up to nine fractional digits and an "s". */
const DURATION_RE = /^(\d+)(\.\d{1,9})?s$/;
const REVOCATION_REASONS = [
  'REVOCATION_REASON_UNSPECIFIED',
  'KEY_COMPROMISE',
  'CERTIFICATE_AUTHORITY_COMPROMISE',
  'AFFILIATION_CHANGED',
  'SUPERSEDED',
  'CESSATION_OF_OPERATION',
  'CERTIFICATE_HOLD',
  'PRIVILEGE_WITHDRAWN',
  'ATTRIBUTE_AUTHORITY_COMPROMISE',
] as const;
const MAX_BODY = 1 << 20;

export type FakeMethod = 'token' | 'create' | 'get' | 'revoke' | 'fetchCaCerts';

/** The IAM permission each method needs on its resource (Certificate Authority Service access control). */
const PERMISSIONS: Record<Exclude<FakeMethod, 'token'>, string> = {
  create: 'privateca.certificates.create',
  get: 'privateca.certificates.get',
  revoke: 'privateca.certificates.update',
  fetchCaCerts: 'privateca.caPools.get',
};

export interface GoogleError {
  code: number;
  status: string;
  message: string;
}

export interface Fault {
  method: FakeMethod | 'any';
  /** unavailable: 503 UNAVAILABLE; error: `error`; hang: never answered, nothing done; drop: done, then the connection is closed unanswered. */
  mode: 'unavailable' | 'error' | 'hang' | 'drop';
  count: number;
  error?: GoogleError;
}

export interface FakeCall {
  method: FakeMethod;
  at: number;
  /** HTTP status answered, or what happened instead. */
  outcome: number | 'dropped' | 'hung';
  requestId?: string;
  certificateId?: string;
  lifetime?: string;
  /** The bearer token the call carried (API calls). */
  token?: string;
  /** Answered from the requestId record, not executed again. */
  replayed?: boolean;
  /** Google's error status, when refused. */
  status?: string;
}

export interface FakeCertificate {
  name: string;
  certificateId: string;
  requestId?: string;
  serial: string;
  pemCsr: string;
  lifetime: string;
  resource: Record<string, unknown>;
  revocation?: { reason: string; requestId?: string; time: string };
}

export interface FakeToken {
  token: string;
  email: string;
  scope: string;
  issuedAt: number;
  expiresAt: number;
}

interface Answer {
  status: number;
  body: unknown;
  headers?: Record<string, string>;
}

class Refusal extends Error {
  constructor(readonly answer: Answer) {
    super(JSON.stringify(answer.body));
  }
}

function googleError(code: number, status: string, message: string, headers?: Record<string, string>): Refusal {
  return new Refusal({ status: code, body: { error: { code, message, status } }, ...(headers ? { headers } : {}) });
}

/** RFC 6749 §5.2 error answer of the token endpoint. */
function oauthError(code: number, error: string, description: string): Refusal {
  return new Refusal({ status: code, body: { error, error_description: description } });
}

export class FakeCloudCas {
  readonly certificates: FakeCertificate[] = [];
  readonly calls: FakeCall[] = [];
  readonly tokens: FakeToken[] = [];
  /** expires_in of the tokens handed out from now on (Google's are 3599). */
  tokenLifetimeSeconds = 3599;
  /** How long a requestId is remembered (the API guarantees at least 60 minutes); 0: not at all. */
  requestIdWindowMs = 60 * 60_000;
  private readonly faults: Fault[] = [];
  private readonly denied = new Set<string>();
  private readonly accounts = new Map<string, KeyObject>();
  private readonly requests = new Map<string, { at: number; answer: Answer }>();
  private readonly hung = new Set<ServerResponse>();
  private keysDisabled = false;

  private constructor(
    private readonly server: Server,
    readonly url: string,
    /** PEM file of the TLS CA that signed this server's certificate (the backend's caFile). */
    readonly tlsCaFile: string,
    readonly caPool: string,
    /** Id of the one CertificateAuthority in the pool. */
    readonly certificateAuthorityId: string,
    private readonly ca: BuiltinCa,
  ) {}

  static async start(opts: { dir: string; caPool?: string; certificateAuthorityId?: string }): Promise<FakeCloudCas> {
    const caPool = opts.caPool ?? 'projects/ramesh-test/locations/us-central1/caPools/ramesh-pool';
    if (!POOL_RE.test(caPool)) throw new Error(`not a CA pool name: ${caPool}`);
    const tls = await makeTestServerTls(join(opts.dir, 'tls'), 'fake privateca.googleapis.com');
    const ca = await BuiltinCa.loadOrCreate(join(opts.dir, 'ca'), { name: 'Fake Google CAS' });
    const server = createServer({ cert: await readFile(tls.cert), key: await readFile(tls.key) });
    for (let attempt = 1; ; attempt++) {
      const port = await freePort();
      try {
        await new Promise<void>((res, rej) => {
          server.once('error', rej);
          server.listen(port, '127.0.0.1', () => {
            server.off('error', rej);
            res();
          });
        });
        const fake = new FakeCloudCas(server, `https://127.0.0.1:${port}`, tls.ca, caPool, opts.certificateAuthorityId ?? 'ramesh-ca-1', ca);
        server.on('request', (req: IncomingMessage, res: ServerResponse) => void fake.handle(req, res));
        return fake;
      } catch (e) {
        if (attempt < 3 && (e as NodeJS.ErrnoException).code === 'EADDRINUSE') continue;
        throw e;
      }
    }
  }

  /** The token endpoint (token_uri of the service-account keys this fake hands out). */
  get tokenUri(): string {
    return `${this.url}/token`;
  }

  /** The pool's root certificate (PEM): what issued chains must verify against. */
  rootPem(): string {
    return this.ca.rootPem();
  }

  /**
   * A new service-account key for `email` (as IAM serviceAccounts.keys.create hands it out, in the JSON
   * key file format); its public key is what this fake verifies token assertions with.
   */
  serviceAccountKey(email = 'ra-mesh-gateway@ramesh-test.iam.gserviceaccount.com'): Record<string, string> {
    const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    this.accounts.set(email, publicKey);
    const project = this.caPool.split('/')[1]!;
    return {
      type: 'service_account',
      project_id: project,
      private_key_id: randomBytes(20).toString('hex'),
      private_key: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
      client_email: email,
      client_id: String(100000000000000000000n + BigInt(`0x${randomBytes(8).toString('hex')}`)),
      auth_uri: 'https://accounts.google.com/o/oauth2/auth',
      token_uri: this.tokenUri,
      auth_provider_x509_cert_url: 'https://www.googleapis.com/oauth2/v1/certs',
      client_x509_cert_url: `https://www.googleapis.com/robot/v1/metadata/x509/${encodeURIComponent(email)}`,
      universe_domain: 'googleapis.com',
    };
  }

  async writeServiceAccountKey(path: string, email?: string): Promise<void> {
    await writeFile(path, JSON.stringify(this.serviceAccountKey(email), null, 2), { mode: 0o600 });
  }

  /** The next `count` calls of `method` fail as `mode` says. */
  inject(fault: Fault): void {
    this.faults.push({ ...fault });
  }

  /** Faults not yet used up. */
  pendingFaults(): number {
    return this.faults.reduce((n, f) => n + f.count, 0);
  }

  /** IAM: the service accounts lose (deny) or get back (allow) a permission on the pool. */
  deny(permission: string): void {
    this.denied.add(permission);
  }

  allow(permission: string): void {
    this.denied.delete(permission);
  }

  /** IAM keys.disable / keys.enable for every service-account key handed out: a disabled key's assertions fail signature checks. */
  setServiceAccountKeysEnabled(enabled: boolean): void {
    this.keysDisabled = !enabled;
  }

  /** Every access token handed out so far stops being accepted (as if revoked or expired early). */
  expireTokens(): void {
    for (const t of this.tokens) t.expiresAt = Math.min(t.expiresAt, Date.now() - 1);
  }

  /** The certificates created with this requestId. */
  certificatesFor(requestId: string): FakeCertificate[] {
    return this.certificates.filter((c) => c.requestId === requestId.toLowerCase());
  }

  bySerial(serial: string): FakeCertificate | undefined {
    return this.certificates.find((c) => c.serial === serial.toLowerCase());
  }

  callsOf(method: FakeMethod, requestId?: string): FakeCall[] {
    return this.calls.filter((c) => c.method === method && (requestId === undefined || c.requestId === requestId.toLowerCase()));
  }

  async close(): Promise<void> {
    for (const r of this.hung) r.destroy();
    this.hung.clear();
    await new Promise<void>((res) => {
      this.server.close(() => res());
      this.server.closeAllConnections();
    });
  }

  // ---------------------------------------------------------------------------------------------

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', this.url);
    const call: FakeCall = { method: 'get', at: Date.now(), outcome: 0 };
    let answer: Answer;
    let fault: Fault | undefined;
    try {
      const body = await readBody(req);
      const route = this.route(req.method ?? 'GET', url.pathname);
      call.method = route.method;
      // What the call asked for is on record even when it is refused or faulted before it runs.
      describeCall(call, route, url, body);
      fault = this.takeFault(route.method);
      if (fault?.mode === 'hang') {
        call.outcome = 'hung';
        this.calls.push(call);
        this.hung.add(res);
        res.on('close', () => this.hung.delete(res));
        return;
      }
      if (fault?.mode === 'unavailable') throw googleError(503, 'UNAVAILABLE', 'The service is currently unavailable.');
      if (fault?.mode === 'error') throw googleError(fault.error!.code, fault.error!.status, fault.error!.message);
      if (route.method === 'token') answer = this.token(req, body);
      else {
        call.token = this.authenticate(req);
        answer = await this.api(route, url, body, call);
      }
    } catch (e) {
      if (!(e instanceof Refusal)) {
        // A bug here answers like Google's own internal error.
        answer = { status: 500, body: { error: { code: 500, message: `Internal error encountered: ${(e as Error).message}`, status: 'INTERNAL' } } };
      } else answer = e.answer;
    }
    const status = (answer.body as { error?: { status?: string } }).error?.status;
    if (typeof status === 'string') call.status = status;
    if (fault?.mode === 'drop') {
      // Processed (state changed, requestId recorded); the answer never reaches the caller.
      call.outcome = 'dropped';
      this.calls.push(call);
      req.socket.destroy();
      return;
    }
    call.outcome = answer.status;
    this.calls.push(call);
    const payload = Buffer.from(JSON.stringify(answer.body), 'utf8');
    res.writeHead(answer.status, { 'content-type': 'application/json; charset=UTF-8', 'content-length': String(payload.length), ...(answer.headers ?? {}) });
    res.end(payload);
  }

  private takeFault(method: FakeMethod): Fault | undefined {
    const f = this.faults.find((x) => x.count > 0 && (x.method === 'any' || x.method === method));
    if (!f) return undefined;
    f.count -= 1;
    if (f.count === 0) this.faults.splice(this.faults.indexOf(f), 1);
    return f;
  }

  private route(method: string, pathname: string): { method: FakeMethod; resource: string; id?: string } {
    if (pathname === '/token') {
      if (method !== 'POST') throw oauthError(405, 'invalid_request', 'Only POST is allowed at the token endpoint.');
      return { method: 'token', resource: '' };
    }
    const rest = pathname.startsWith('/v1/') ? decodeURIComponent(pathname.slice(4)) : undefined;
    let m: RegExpExecArray | null;
    if (rest !== undefined) {
      if (method === 'POST' && (m = /^(projects\/[^/]+\/locations\/[^/]+\/caPools\/[^/:]+):fetchCaCerts$/.exec(rest))) return { method: 'fetchCaCerts', resource: m[1]! };
      if (method === 'POST' && (m = /^(projects\/[^/]+\/locations\/[^/]+\/caPools\/[^/:]+)\/certificates$/.exec(rest))) return { method: 'create', resource: m[1]! };
      if (method === 'POST' && (m = /^(projects\/[^/]+\/locations\/[^/]+\/caPools\/[^/:]+)\/certificates\/([^/:]+):revoke$/.exec(rest))) return { method: 'revoke', resource: m[1]!, id: m[2]! };
      if (method === 'GET' && (m = /^(projects\/[^/]+\/locations\/[^/]+\/caPools\/[^/:]+)\/certificates\/([^/:]+)$/.exec(rest))) return { method: 'get', resource: m[1]!, id: m[2]! };
    }
    throw googleError(404, 'NOT_FOUND', `The requested URL ${pathname} was not found on this server.`);
  }

  /** The bearer token of an API call; 401 UNAUTHENTICATED when missing, unknown or expired (RFC 6750 §3.1). */
  private authenticate(req: IncomingMessage): string {
    const challenge = { 'www-authenticate': 'Bearer realm="https://accounts.google.com/", error="invalid_token"' };
    const m = /^Bearer\s+(\S+)$/i.exec(req.headers.authorization ?? '');
    if (!m) {
      throw googleError(401, 'UNAUTHENTICATED', 'Request is missing required authentication credential. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.', { 'www-authenticate': 'Bearer realm="https://accounts.google.com/"' });
    }
    const t = this.tokens.find((x) => x.token === m[1]);
    if (!t || t.expiresAt <= Date.now()) {
      throw googleError(401, 'UNAUTHENTICATED', 'Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.', challenge);
    }
    if (!t.scope.split(' ').includes(CLOUD_PLATFORM_SCOPE)) throw googleError(403, 'PERMISSION_DENIED', 'Request had insufficient authentication scopes.');
    return t.token;
  }

  /** The token endpoint: RFC 7523 JWT bearer grant as Google's service-account flow describes it. */
  private token(req: IncomingMessage, body: Buffer): Answer {
    if (!/^application\/x-www-form-urlencoded\b/i.test(req.headers['content-type'] ?? '')) throw oauthError(400, 'invalid_request', 'Bad Request');
    const form = new URLSearchParams(body.toString('utf8'));
    if (form.get('grant_type') !== JWT_BEARER) throw oauthError(400, 'unsupported_grant_type', `Invalid grant_type: ${form.get('grant_type') ?? ''}`);
    const assertion = form.get('assertion');
    if (!assertion) throw oauthError(400, 'invalid_request', 'Missing required parameter: assertion');
    const parts = assertion.split('.');
    if (parts.length !== 3) throw oauthError(400, 'invalid_grant', 'Invalid JWT: not a compact JWS.');
    let header: { alg?: string };
    let claims: { iss?: string; scope?: string; aud?: string; iat?: number; exp?: number };
    try {
      header = JSON.parse(Buffer.from(parts[0]!, 'base64url').toString('utf8')) as typeof header;
      claims = JSON.parse(Buffer.from(parts[1]!, 'base64url').toString('utf8')) as typeof claims;
    } catch {
      throw oauthError(400, 'invalid_grant', 'Invalid JWT: the header or claim set is not JSON.');
    }
    if (header.alg !== 'RS256') throw oauthError(400, 'invalid_grant', 'Invalid JWT: only RS256 assertions are accepted.');
    const key = claims.iss ? this.accounts.get(claims.iss) : undefined;
    if (!key) throw oauthError(400, 'invalid_grant', 'Invalid grant: account not found');
    const signed = Buffer.from(`${parts[0]}.${parts[1]}`, 'utf8');
    if (this.keysDisabled || !cryptoVerify('RSA-SHA256', signed, key, Buffer.from(parts[2]!, 'base64url'))) throw oauthError(400, 'invalid_grant', 'Invalid JWT Signature.');
    if (claims.aud !== this.tokenUri) throw oauthError(400, 'invalid_grant', 'Invalid JWT: Failed audience check.');
    const now = Math.floor(Date.now() / 1000);
    const { iat, exp } = claims;
    // Google: exp at most 1 hour after iat; both in a reasonable timeframe (a little clock skew allowed).
    if (typeof iat !== 'number' || typeof exp !== 'number' || exp <= iat || exp - iat > 3600 || iat > now + 60 || exp < now) {
      throw oauthError(400, 'invalid_grant', 'Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.');
    }
    const scope = claims.scope ?? '';
    if (!scope.split(' ').includes(CLOUD_PLATFORM_SCOPE)) throw oauthError(400, 'invalid_scope', 'Invalid OAuth scope or ID token audience provided.');
    const token = `ya29.fake-${randomBytes(24).toString('base64url')}`;
    const issuedAt = Date.now();
    this.tokens.push({ token, email: claims.iss!, scope, issuedAt, expiresAt: issuedAt + this.tokenLifetimeSeconds * 1000 });
    return { status: 200, body: { access_token: token, expires_in: this.tokenLifetimeSeconds, token_type: 'Bearer' } };
  }

  private async api(route: { method: FakeMethod; resource: string; id?: string }, url: URL, body: Buffer, call: FakeCall): Promise<Answer> {
    const target = route.id ? `${route.resource}/certificates/${route.id}` : route.resource;
    const permission = PERMISSIONS[route.method as Exclude<FakeMethod, 'token'>];
    // IAM comes first: a caller without the permission does not learn whether the resource exists.
    if (this.denied.has(permission)) {
      throw googleError(403, 'PERMISSION_DENIED', `Permission '${permission}' denied on resource '//privateca.googleapis.com/${route.method === 'create' || route.method === 'fetchCaCerts' ? route.resource : target}' (or it may not exist).`);
    }
    if (route.resource !== this.caPool) throw googleError(404, 'NOT_FOUND', `Resource '${route.resource}' was not found`);
    const json = parseJson(body);
    switch (route.method) {
      case 'create':
        return this.create(url, json, call);
      case 'get':
        return this.get(target);
      case 'revoke':
        return this.revoke(target, json, call);
      case 'fetchCaCerts':
        return this.fetchCaCerts(json);
      default:
        throw googleError(404, 'NOT_FOUND', 'not found');
    }
  }

  /** A requestId the API would accept (valid UUID, not the zero UUID); 400 INVALID_ARGUMENT otherwise. */
  private requestIdOf(v: unknown): string | undefined {
    if (v === undefined || v === null || v === '') return undefined;
    if (typeof v !== 'string' || !UUID_RE.test(v) || v === ZERO_UUID) {
      throw googleError(400, 'INVALID_ARGUMENT', 'request_id must be a valid UUID (the zero UUID is not supported).');
    }
    return v.toLowerCase();
  }

  /** The first answer to a requestId still within its window. */
  private replay(method: FakeMethod, requestId: string | undefined, call: FakeCall): Answer | undefined {
    if (!requestId) return undefined;
    const prior = this.requests.get(`${method}:${requestId}`);
    if (!prior || Date.now() - prior.at >= this.requestIdWindowMs) return undefined;
    call.replayed = true;
    return prior.answer;
  }

  private remember(method: FakeMethod, requestId: string | undefined, answer: Answer): Answer {
    if (requestId) this.requests.set(`${method}:${requestId}`, { at: Date.now(), answer });
    return answer;
  }

  private async create(url: URL, body: Record<string, unknown>, call: FakeCall): Promise<Answer> {
    const requestId = this.requestIdOf(url.searchParams.get('requestId'));
    const certificateId = url.searchParams.get('certificateId') ?? '';
    const replayed = this.replay('create', requestId, call);
    if (replayed) return replayed;
    if (!certificateId) throw googleError(400, 'INVALID_ARGUMENT', 'certificate_id is required for a CaPool in the Enterprise tier.');
    if (!CERTIFICATE_ID_RE.test(certificateId)) throw googleError(400, 'INVALID_ARGUMENT', 'certificate_id must match the regular expression [a-zA-Z0-9_-]{1,63}.');
    const issuing = url.searchParams.get('issuingCertificateAuthorityId');
    if (issuing && issuing !== this.certificateAuthorityId) {
      throw googleError(404, 'NOT_FOUND', `Resource '${this.caPool}/certificateAuthorities/${issuing}' was not found`);
    }
    const lifetime = body.lifetime;
    const lm = typeof lifetime === 'string' ? DURATION_RE.exec(lifetime) : null;
    if (!lm) throw googleError(400, 'INVALID_ARGUMENT', 'certificate.lifetime is required and must be a duration such as "3600s".');
    const lifetimeMs = Math.round(Number(`${lm[1]}${lm[2] ?? ''}`) * 1000);
    if (lifetimeMs <= 0) throw googleError(400, 'INVALID_ARGUMENT', 'certificate.lifetime must be positive.');
    if (typeof body.pemCsr !== 'string') {
      throw googleError(400, 'INVALID_ARGUMENT', body.config !== undefined ? 'This CaPool allows CSR-based issuance only.' : 'certificate.pem_csr is required.');
    }
    const name = `${this.caPool}/certificates/${certificateId}`;
    if (this.certificates.some((c) => c.name === name)) throw googleError(409, 'ALREADY_EXISTS', `Resource '${name}' already exists`);
    let csr;
    try {
      csr = await parseCsr(body.pemCsr);
    } catch (e) {
      throw googleError(400, 'INVALID_ARGUMENT', `Could not parse the certificate signing request: ${e instanceof RaError ? e.detail : (e as Error).message}`);
    }
    const names = csrNames(csr);
    let signed;
    try {
      signed = await this.ca.sign({
        csrDer: csr.der,
        dnsNames: names.filter((n) => n.type === 'dns').map((n) => n.value),
        ipAddresses: names.filter((n) => n.type === 'ip').map((n) => n.value),
        lifetimeMs,
      });
    } catch (e) {
      throw googleError(400, 'INVALID_ARGUMENT', e instanceof RaError ? e.detail : (e as Error).message);
    }
    const now = new Date().toISOString();
    const actual = `${Math.round((signed.notAfter.getTime() - signed.notBefore.getTime()) / 1000)}s`;
    const resource = {
      name,
      pemCsr: body.pemCsr,
      issuerCertificateAuthority: `${this.caPool}/certificateAuthorities/${this.certificateAuthorityId}`,
      lifetime,
      subjectMode: 'DEFAULT',
      pemCertificate: signed.certificatePem,
      certificateDescription: {
        subjectDescription: {
          subject: { commonName: names[0]?.value },
          subjectAltName: {
            dnsNames: names.filter((n) => n.type === 'dns').map((n) => n.value),
            ipAddresses: names.filter((n) => n.type === 'ip').map((n) => n.value),
          },
          hexSerialNumber: signed.serial.toLowerCase(),
          lifetime: actual,
          notBeforeTime: signed.notBefore.toISOString(),
          notAfterTime: signed.notAfter.toISOString(),
        },
        publicKey: { key: Buffer.from(derToPem(csr.publicKeySpki, 'PUBLIC KEY')).toString('base64'), format: 'PEM' },
      },
      // Issuer-to-root order (RFC 5246): the issuing CA, then the root.
      pemCertificateChain: [this.ca.intermediatePem(), this.ca.rootPem()],
      createTime: now,
      updateTime: now,
    };
    this.certificates.push({ name, certificateId, ...(requestId ? { requestId } : {}), serial: signed.serial.toLowerCase(), pemCsr: body.pemCsr, lifetime: lifetime as string, resource });
    return this.remember('create', requestId, { status: 200, body: resource });
  }

  private get(name: string): Answer {
    const c = this.certificates.find((x) => x.name === name);
    if (!c) throw googleError(404, 'NOT_FOUND', `Resource '${name}' was not found`);
    return { status: 200, body: c.resource };
  }

  private revoke(name: string, body: Record<string, unknown>, call: FakeCall): Answer {
    const requestId = this.requestIdOf(body.requestId);
    const replayed = this.replay('revoke', requestId, call);
    if (replayed) return replayed;
    const c = this.certificates.find((x) => x.name === name);
    if (!c) throw googleError(404, 'NOT_FOUND', `Resource '${name}' was not found`);
    // proto3 JSON: an omitted enum is its zero value.
    const reason = body.reason ?? 'REVOCATION_REASON_UNSPECIFIED';
    if (typeof reason !== 'string' || !(REVOCATION_REASONS as readonly string[]).includes(reason)) {
      throw googleError(400, 'INVALID_ARGUMENT', `Invalid value at 'reason' (type.googleapis.com/google.cloud.security.privateca.v1.RevocationReason), ${JSON.stringify(reason)}`);
    }
    if (c.revocation) throw googleError(400, 'FAILED_PRECONDITION', `Certificate '${name}' has already been revoked.`);
    const time = new Date().toISOString();
    c.revocation = { reason, ...(requestId ? { requestId } : {}), time };
    c.resource = { ...c.resource, revocationDetails: { revocationState: reason, revocationTime: time }, updateTime: time };
    return this.remember('revoke', requestId, { status: 200, body: c.resource });
  }

  private fetchCaCerts(body: Record<string, unknown>): Answer {
    this.requestIdOf(body.requestId);
    return { status: 200, body: { caCerts: [{ certificates: [this.ca.intermediatePem(), this.ca.rootPem()] }] } };
  }
}

function describeCall(call: FakeCall, route: { method: FakeMethod; id?: string }, url: URL, body: Buffer): void {
  const method = route.method;
  let requestId: unknown;
  if (route.id) call.certificateId = route.id;
  if (method === 'create') {
    requestId = url.searchParams.get('requestId');
    const certificateId = url.searchParams.get('certificateId');
    if (certificateId) call.certificateId = certificateId;
    try {
      const lifetime = (JSON.parse(body.toString('utf8')) as { lifetime?: unknown }).lifetime;
      if (typeof lifetime === 'string') call.lifetime = lifetime;
    } catch {
      // refused later as INVALID_ARGUMENT
    }
  } else if (method === 'revoke') {
    try {
      requestId = (JSON.parse(body.toString('utf8')) as { requestId?: unknown }).requestId;
    } catch {
      // refused later as INVALID_ARGUMENT
    }
  }
  if (typeof requestId === 'string' && requestId) call.requestId = requestId.toLowerCase();
}

function parseJson(body: Buffer): Record<string, unknown> {
  if (body.length === 0) return {};
  try {
    const v = JSON.parse(body.toString('utf8')) as unknown;
    if (v && typeof v === 'object' && !Array.isArray(v)) return v as Record<string, unknown>;
  } catch {
    // below
  }
  throw googleError(400, 'INVALID_ARGUMENT', 'Invalid JSON payload received.');
}

function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (d: Buffer) => {
      size += d.length;
      if (size > MAX_BODY) reject(googleError(400, 'INVALID_ARGUMENT', 'Request payload size exceeds the limit.'));
      else chunks.push(d);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

/** A credentials file of another type (an end-user ADC file), for the refusal test. */
export function authorizedUserCredentials(): Record<string, string> {
  return { type: 'authorized_user', client_id: '764086051850-fake.apps.googleusercontent.com', client_secret: 'fake-secret', refresh_token: 'fake-refresh-token' };
}

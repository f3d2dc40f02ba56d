// A fake HashiCorp Vault for tests (Vault itself cannot be installed here). It follows Vault's published
// HTTP API: paths, methods, request and response JSON field names, status codes and the error body
// {"errors": ["..."]}, as documented on these pages:
//   https://developer.hashicorp.com/vault/api-docs                          overview: /v1 prefix, X-Vault-Token,
//                                                                            X-Vault-Namespace, HTTP status codes, error response
//   https://developer.hashicorp.com/vault/api-docs/auth/approle             "Login with AppRole": POST /auth/:mount/login
//   https://developer.hashicorp.com/vault/api-docs/auth/kubernetes          "Login": POST /auth/:mount/login
//   https://developer.hashicorp.com/vault/api-docs/auth/token               "Renew a token (self)": POST /auth/token/renew-self
//   https://developer.hashicorp.com/vault/api-docs/system/wrapping-unwrap   POST /sys/wrapping/unwrap
//   https://developer.hashicorp.com/vault/api-docs/secret/pki               "Sign certificate" POST /pki/sign/:name,
//                                                                            "Revoke certificate" POST /pki/revoke,
//                                                                            "Read default issuer certificate chain" GET /pki/ca_chain,
//                                                                            /pki/cert/ca_chain, "Read issuer certificate" GET /pki/ca/pem,
//                                                                            role fields of "Create/Update role"
//   https://developer.hashicorp.com/vault/docs/enterprise/namespaces        X-Vault-Namespace
// Where the pages are silent, Vault's own source decides (builtin/logical/pki/cert_util.go, crl_util.go):
// the CSR's CN and SANs are used by default (use_csr_common_name, use_csr_sans), a ttl above the role's
// max_ttl is capped to max_ttl with a warning (not refused), names outside allowed_domains are refused
// with 400 "common name X not allowed by this role" / "subject alternate name X not allowed by this role",
// a CSR key of the wrong type with 400 "role requires keys of type X", revoking a serial revoked before
// answers 200 with the first revocation_time, an unknown serial 400 "certificate with serial X not found",
// an expired one 200 with a warning and no data. Serials are random below 2^159, in colon hex of the
// integer's minimal bytes. `expiration` is a number (Vault's Go code; the docs' samples quote it).
// The fake signs with real crypto (its own EC root and intermediate, @peculiar/x509) and records every
// request, certificate and revocation for tests to count, and the most calls it answered at once. Faults (500,
// 503, 400, hangs, delays) are injected per call.

import { createHash, createPublicKey, randomBytes, randomUUID, webcrypto } from 'node:crypto';
import { createServer, type Server } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { isIP } from 'node:net';
import { readFile } from 'node:fs/promises';
import { derToPem, x509 } from '../../shared/pki/index.js';
import { freePort } from './ports.js';
import { makeTestServerTls } from './tls.js';

const crypto = webcrypto;
type CryptoKeyPair = webcrypto.CryptoKeyPair;

/** A PKI role (the fields of Vault's "Create/Update role" the fake enforces, with Vault's defaults). */
export interface FakeVaultRole {
  /** rsa | ec | ed25519 | any (default rsa, as in Vault). */
  key_type?: 'rsa' | 'ec' | 'ed25519' | 'any';
  /** Minimum RSA bits / EC curve size (default 2048 for rsa, 256 for ec). */
  key_bits?: number;
  /** Seconds; 0: the mount default (768h). */
  ttl?: number;
  /** Seconds; 0: the mount maximum (768h). A longer requested ttl is capped to it with a warning. */
  max_ttl?: number;
  allowed_domains?: string[];
  allow_bare_domains?: boolean;
  allow_subdomains?: boolean;
  allow_glob_domains?: boolean;
  allow_any_name?: boolean;
  allow_localhost?: boolean;
  /** Default true. */
  allow_ip_sans?: boolean;
  /** Default true. */
  use_csr_common_name?: boolean;
  /** Default true. */
  use_csr_sans?: boolean;
  /** Default true. */
  require_cn?: boolean;
  /** Seconds the certificate is back-dated (default 30). */
  not_before_duration?: number;
}

export type FakeVaultOp =
  | 'login:approle'
  | 'login:kubernetes'
  | 'renew-self'
  | 'unwrap'
  | 'sign'
  | 'revoke'
  | 'ca_chain'
  | 'ca/pem'
  | 'cert/ca_chain'
  | 'other';

/** An injected answer for the next matching calls: an HTTP status (Vault's error body), or a hang. */
export type FakeVaultFault =
  | { status: number; errors?: string[] }
  /** Never answers (the socket stays open until the client gives up). With `process`, the call is carried out first (a sign signs). */
  | { hang: true; process?: boolean }
  /** Answered as usual after `delayMs` (a Vault under load: the sign is carried out after the delay). */
  | { delayMs: number };

export interface FakeVaultCall {
  op: FakeVaultOp;
  method: string;
  path: string;
  namespace: string;
  status: number | 'hung';
  /** Role name of a sign call. */
  role?: string;
  at: number;
}

export interface FakeVaultIssued {
  /** Vault's form: colon hex. */
  serialNumber: string;
  /** Lower-case hex without colons. */
  serial: string;
  role: string;
  commonName: string;
  dnsNames: string[];
  ipAddresses: string[];
  keyType: 'rsa' | 'ec' | 'ed25519';
  /** The ttl the certificate got, in seconds (after the max_ttl cap). */
  ttlSeconds: number;
  requestedTtl: unknown;
  notBefore: Date;
  notAfter: Date;
  pem: string;
  namespace: string;
  /** The request body as received. */
  body: Record<string, unknown>;
}

export interface FakeVaultOptions {
  /** Temp dir of the test (the TLS files are written there). */
  dir: string;
  /** PKI mount path (default "pki"). */
  pkiMount?: string;
  roles: Record<string, FakeVaultRole>;
  approle?: { mount?: string; roleId: string; secretIds?: string[]; policies?: string[] };
  kubernetes?: { mount?: string; role: string; jwt: string; policies?: string[] };
  /** Vault Enterprise namespace holding every mount; requests in another namespace get 404. Default: the root namespace. */
  namespace?: string;
  tokenTtlMs?: number;
  tokenMaxTtlMs?: number;
  tokenRenewable?: boolean;
  /** Make serials whose first byte has its top bit set (19 bytes), so their DER carries a 00 pad. */
  signBitSerials?: boolean;
}

interface TokenEntry {
  accessor: string;
  policies: string[];
  namespace: string;
  createdAt: number;
  ttlMs: number;
  maxTtlMs: number;
  expiresAt: number;
  renewable: boolean;
  revoked: boolean;
}

interface Answer {
  status: number;
  body?: unknown;
  /** Raw text (PEM endpoints). */
  text?: string;
  contentType?: string;
}

const SYSTEM_TTL_S = 768 * 3600; // Vault's default and max lease TTL (32 days)
const DAY = 86_400_000;

/** Go's time.Duration %q text, e.g. "2h0m0s", "1m30s", "45s" (Vault's TTL warnings use it). */
export function goDuration(seconds: number): string {
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = seconds % 60;
  if (h > 0) return `${h}h${m}m${s}s`;
  if (m > 0) return `${m}m${s}s`;
  return `${s}s`;
}

export class FakeVault {
  /** Base URL, e.g. https://127.0.0.1:40123 */
  url = '';
  /** PEM of the CA that issued the fake's TLS certificate (the gateway's caFile). */
  tlsCaFile = '';
  readonly calls: FakeVaultCall[] = [];
  readonly issued: FakeVaultIssued[] = [];
  /** Colon serial -> revocation time (unix seconds). */
  readonly revoked = new Map<string, number>();
  /** Policy name -> PKI operations it grants. `default` grants none, like Vault's default policy. */
  readonly policies: Record<string, Array<'sign' | 'revoke'>> = { default: [], 'pki-issuer': ['sign', 'revoke'] };
  readonly roles: Record<string, FakeVaultRole>;
  readonly secretIds: Set<string>;
  tokenTtlMs: number;
  tokenMaxTtlMs: number;
  tokenRenewable: boolean;
  namespace: string;
  kubernetesJwt: string;

  private server?: Server;
  private readonly tokens = new Map<string, TokenEntry>();
  private readonly wrapping = new Map<string, { secretId: string; expiresAt: number }>();
  private readonly faults: Array<{ op: FakeVaultOp | 'any'; left: number; fault: FakeVaultFault }> = [];
  private readonly held = new Set<ServerResponse>();
  private readonly active = new Map<FakeVaultOp, number>();
  /** The most calls of each operation the fake was answering at once (see resetPeaks). */
  readonly peakInFlight = new Map<FakeVaultOp, number>();
  private root!: x509.X509Certificate;
  private inter!: x509.X509Certificate;
  private interKeys!: CryptoKeyPair;
  private interKeyId!: string;
  private readonly mount: string;

  private constructor(private readonly opts: FakeVaultOptions) {
    this.mount = opts.pkiMount ?? 'pki';
    this.roles = opts.roles;
    this.secretIds = new Set(opts.approle?.secretIds ?? []);
    this.tokenTtlMs = opts.tokenTtlMs ?? 3_600_000;
    this.tokenMaxTtlMs = opts.tokenMaxTtlMs ?? 32 * DAY;
    this.tokenRenewable = opts.tokenRenewable ?? true;
    this.namespace = normalizeNamespace(opts.namespace);
    this.kubernetesJwt = opts.kubernetes?.jwt ?? '';
  }

  static async start(opts: FakeVaultOptions): Promise<FakeVault> {
    const v = new FakeVault(opts);
    await v.makeCa();
    const tls = await makeTestServerTls(`${opts.dir}/fake-vault-tls-${randomBytes(3).toString('hex')}`, 'fake vault');
    v.tlsCaFile = tls.ca;
    v.server = createServer({ key: await readFile(tls.key), cert: await readFile(tls.cert) }, (req, res) => void v.handle(req, res).catch(() => res.destroy()));
    // Vault's listener keeps idle connections 5 minutes (http_idle_timeout), longer than Node's client pool does.
    v.server.keepAliveTimeout = 300_000;
    const port = await freePort();
    await new Promise<void>((resolve, reject) => {
      v.server!.once('error', reject);
      v.server!.listen(port, '127.0.0.1', () => resolve());
    });
    v.url = `https://127.0.0.1:${port}`;
    return v;
  }

  async stop(): Promise<void> {
    for (const r of this.held) r.destroy();
    this.held.clear();
    const s = this.server;
    if (!s) return;
    s.closeAllConnections();
    await new Promise<void>((r) => s.close(() => r()));
  }

  /** The fake's root certificate (PEM): issued chains verify against it. */
  rootPem(): string {
    return derToPem(new Uint8Array(this.root.rawData), 'CERTIFICATE');
  }

  intermediatePem(): string {
    return derToPem(new Uint8Array(this.inter.rawData), 'CERTIFICATE');
  }

  /** The next `times` calls of `op` get `fault` instead of their answer. */
  inject(op: FakeVaultOp | 'any', times: number, fault: FakeVaultFault): void {
    this.faults.push({ op, left: times, fault });
  }

  clearFaults(): void {
    this.faults.length = 0;
  }

  /** Forgets the peaks of peakInFlight (calls under way keep counting). */
  resetPeaks(): void {
    this.peakInFlight.clear();
  }

  /** Every call (of one operation). */
  callsOf(op: FakeVaultOp | 'login'): FakeVaultCall[] {
    return this.calls.filter((c) => (op === 'login' ? c.op.startsWith('login:') : c.op === op));
  }

  /** Revokes every token Vault handed out (as `vault token revoke` would): the next call with one gets 403. */
  revokeAllTokens(): void {
    for (const t of this.tokens.values()) t.revoked = true;
  }

  /** A response-wrapping token holding `secretId` (what `vault write -wrap-ttl=... auth/approle/role/x/secret-id` hands out). */
  wrapSecretId(secretId: string, ttlMs = 300_000): string {
    const token = `hvs.${randomBytes(18).toString('base64url')}`;
    this.wrapping.set(token, { secretId, expiresAt: Date.now() + ttlMs });
    return token;
  }

  /** The live tokens (for tests that wait for a token to age). */
  liveTokens(): Array<{ accessor: string; createdAt: number; expiresAt: number }> {
    const now = Date.now();
    return [...this.tokens.values()].filter((t) => !t.revoked && t.expiresAt > now).map(({ accessor, createdAt, expiresAt }) => ({ accessor, createdAt, expiresAt }));
  }

  // ------------------------------------------------------------------ HTTP

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const url = new URL(req.url ?? '/', 'https://vault.invalid');
    const method = req.method ?? 'GET';
    const path = url.pathname.startsWith('/v1/') ? url.pathname.slice(4).replace(/\/+$/, '') : url.pathname;
    const namespace = normalizeNamespace(header(req, 'x-vault-namespace'));
    const op = this.classify(method, path);
    const call: FakeVaultCall = { op, method, path, namespace, status: 0, at: Date.now() };
    if (op === 'sign') call.role = decodeURIComponent(path.split('/').pop() ?? '');
    this.calls.push(call);

    const now = (this.active.get(op) ?? 0) + 1;
    this.active.set(op, now);
    this.peakInFlight.set(op, Math.max(now, this.peakInFlight.get(op) ?? 0));
    res.on('close', () => this.active.set(op, (this.active.get(op) ?? 1) - 1));
    const fault = this.takeFault(op);
    if (fault && 'delayMs' in fault) await new Promise((r) => setTimeout(r, fault.delayMs));
    let answer: Answer;
    if (fault && 'status' in fault) {
      answer = { status: fault.status, body: { errors: fault.errors ?? defaultErrors(fault.status) } };
    } else {
      const hang = fault && 'hang' in fault ? fault : undefined;
      if (hang && !hang.process) return this.hold(call, res);
      try {
        answer = await this.route(req, method, path, namespace, Buffer.concat(chunks));
      } catch (e) {
        answer = { status: 500, body: { errors: [`1 error occurred:\n\t* ${(e as Error).message}\n\n`] } };
      }
      if (hang) return this.hold(call, res);
    }
    call.status = answer.status;
    if (answer.text !== undefined) {
      res.writeHead(answer.status, { 'content-type': answer.contentType ?? 'text/plain', 'cache-control': 'no-store' });
      res.end(answer.text);
      return;
    }
    if (answer.status === 204) {
      res.writeHead(204, { 'cache-control': 'no-store' });
      res.end();
      return;
    }
    res.writeHead(answer.status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
    res.end(JSON.stringify(answer.body ?? {}));
  }

  /** Holds a request unanswered until the client closes it (or the fake stops). */
  private hold(call: FakeVaultCall, res: ServerResponse): void {
    call.status = 'hung';
    this.held.add(res);
    res.on('close', () => this.held.delete(res));
  }

  private takeFault(op: FakeVaultOp): FakeVaultFault | undefined {
    const f = this.faults.find((x) => x.left > 0 && (x.op === 'any' || x.op === op));
    if (!f) return undefined;
    f.left -= 1;
    return f.fault;
  }

  private classify(method: string, path: string): FakeVaultOp {
    const approle = `auth/${this.opts.approle?.mount ?? 'approle'}/login`;
    const k8s = `auth/${this.opts.kubernetes?.mount ?? 'kubernetes'}/login`;
    if (method === 'POST' && this.opts.approle && path === approle) return 'login:approle';
    if (method === 'POST' && this.opts.kubernetes && path === k8s) return 'login:kubernetes';
    if (method === 'POST' && path === 'auth/token/renew-self') return 'renew-self';
    if (method === 'POST' && path === 'sys/wrapping/unwrap') return 'unwrap';
    if (method === 'POST' && path.startsWith(`${this.mount}/sign/`)) return 'sign';
    if (method === 'POST' && path === `${this.mount}/revoke`) return 'revoke';
    if (method === 'GET' && path === `${this.mount}/ca_chain`) return 'ca_chain';
    if (method === 'GET' && path === `${this.mount}/ca/pem`) return 'ca/pem';
    if (method === 'GET' && path === `${this.mount}/cert/ca_chain`) return 'cert/ca_chain';
    return 'other';
  }

  private async route(req: IncomingMessage, method: string, path: string, namespace: string, raw: Buffer): Promise<Answer> {
    // Vault Enterprise: mounts exist inside their namespace only; elsewhere the route is unknown.
    if (namespace !== this.namespace) return noRoute(path);
    let body: Record<string, unknown> = {};
    if (raw.length > 0 && method !== 'GET') {
      try {
        const parsed: unknown = JSON.parse(raw.toString('utf8'));
        if (parsed && typeof parsed === 'object' && !Array.isArray(parsed)) body = parsed as Record<string, unknown>;
        else return bad('failed to parse JSON input: expected an object');
      } catch (e) {
        return bad(`failed to parse JSON input: ${(e as Error).message}`);
      }
    }
    const op = this.classify(method, path);
    const token = header(req, 'x-vault-token');
    switch (op) {
      case 'login:approle':
        return this.loginAppRole(body, namespace);
      case 'login:kubernetes':
        return this.loginKubernetes(body, namespace);
      case 'renew-self':
        return this.renewSelf(token, body, namespace);
      case 'unwrap':
        return this.unwrap(token, body, namespace);
      case 'sign': {
        const denied = this.check(token, namespace, 'sign');
        if (denied) return denied;
        return this.sign(decodeURIComponent(path.slice(`${this.mount}/sign/`.length)), body, namespace);
      }
      case 'revoke': {
        const denied = this.check(token, namespace, 'revoke');
        if (denied) return denied;
        return this.revoke(body);
      }
      // Unauthenticated endpoints (Vault API, PKI "Accessing authority information").
      case 'ca_chain':
        return { status: 200, text: this.rootAndIntermediate(), contentType: 'application/pem-certificate-chain' };
      case 'ca/pem':
        return { status: 200, text: this.intermediatePem(), contentType: 'application/pem-certificate-chain' };
      case 'cert/ca_chain':
        return ok({ certificate: this.rootAndIntermediate(), ca_chain: [this.intermediatePem(), this.rootPem()], revocation_time: 0 });
      default:
        return noRoute(path);
    }
  }

  private rootAndIntermediate(): string {
    return this.intermediatePem() + this.rootPem();
  }

  // ------------------------------------------------------------------ auth

  private loginAppRole(body: Record<string, unknown>, namespace: string): Answer {
    const a = this.opts.approle!;
    const roleId = str(body.role_id);
    const secretId = str(body.secret_id);
    if (!roleId) return bad('missing role_id');
    if (roleId !== a.roleId || !secretId || !this.secretIds.has(secretId)) return bad('invalid role or secret ID');
    return this.issueToken(a.policies ?? ['default', 'pki-issuer'], namespace, { role_name: 'gateway' });
  }

  private loginKubernetes(body: Record<string, unknown>, namespace: string): Answer {
    const k = this.opts.kubernetes!;
    const role = str(body.role);
    const jwt = str(body.jwt);
    if (!role) return bad('missing role');
    if (!jwt) return bad('missing jwt');
    if (role !== k.role) return bad(`invalid role name "${role}"`);
    // The kubernetes auth method answers a JWT it cannot validate with permission denied.
    if (jwt !== this.kubernetesJwt) return denied();
    return this.issueToken(k.policies ?? ['default', 'pki-issuer'], namespace, { role, service_account_name: 'ra-mesh-gateway' });
  }

  private issueToken(policies: string[], namespace: string, metadata: Record<string, string>): Answer {
    const value = `hvs.${randomBytes(18).toString('base64url')}`;
    const now = Date.now();
    const ttl = Math.min(this.tokenTtlMs, this.tokenMaxTtlMs);
    const t: TokenEntry = {
      accessor: randomBytes(12).toString('base64url'),
      policies,
      namespace,
      createdAt: now,
      ttlMs: ttl,
      maxTtlMs: this.tokenMaxTtlMs,
      expiresAt: now + ttl,
      renewable: this.tokenRenewable,
      revoked: false,
    };
    this.tokens.set(value, t);
    return {
      status: 200,
      body: envelope(null, {
        auth: {
          client_token: value,
          accessor: t.accessor,
          policies,
          token_policies: policies,
          metadata,
          lease_duration: Math.floor(ttl / 1000),
          renewable: t.renewable,
          entity_id: randomUUID(),
          token_type: 'service',
          orphan: true,
        },
      }),
    };
  }

  /** The token of a request, when it is live in this namespace. */
  private live(token: string | undefined, namespace: string): TokenEntry | undefined {
    const t = token ? this.tokens.get(token) : undefined;
    if (!t || t.revoked || t.expiresAt <= Date.now() || t.namespace !== namespace) return undefined;
    return t;
  }

  private check(token: string | undefined, namespace: string, op: 'sign' | 'revoke'): Answer | undefined {
    const t = this.live(token, namespace);
    if (!t) return denied();
    if (!t.policies.some((p) => this.policies[p]?.includes(op))) return denied();
    return undefined;
  }

  private renewSelf(token: string | undefined, body: Record<string, unknown>, namespace: string): Answer {
    const t = this.live(token, namespace);
    if (!t) return denied();
    if (!t.renewable) return bad('lease is not renewable');
    const now = Date.now();
    const increment = typeof body.increment === 'number' ? body.increment * 1000 : parseTtl(body.increment) * 1000 || t.ttlMs;
    const left = t.createdAt + t.maxTtlMs - now;
    const warnings: string[] = [];
    let ttl = increment;
    if (ttl > left) {
      ttl = Math.max(0, left);
      warnings.push(`TTL of "${goDuration(Math.floor(increment / 1000))}" exceeded the effective max_ttl of "${goDuration(Math.floor(ttl / 1000))}"; TTL value is capped accordingly`);
    }
    t.expiresAt = now + ttl;
    return {
      status: 200,
      body: envelope(null, {
        auth: { client_token: token, accessor: t.accessor, policies: t.policies, token_policies: t.policies, lease_duration: Math.floor(ttl / 1000), renewable: t.renewable },
        warnings: warnings.length ? warnings : null,
      }),
    };
  }

  private unwrap(token: string | undefined, body: Record<string, unknown>, namespace: string): Answer {
    // The wrapping token comes in the body (then the caller authenticates with its own token) or as X-Vault-Token.
    let wrappingToken = token;
    if (str(body.token)) {
      if (!this.live(token, namespace)) return denied();
      wrappingToken = str(body.token);
    }
    const w = wrappingToken ? this.wrapping.get(wrappingToken) : undefined;
    if (!w || w.expiresAt <= Date.now()) return bad('wrapping token is not valid or does not exist');
    this.wrapping.delete(wrappingToken!); // single use
    return ok({ secret_id: w.secretId, secret_id_accessor: randomUUID(), secret_id_ttl: 0, secret_id_num_uses: 0 });
  }

  // ------------------------------------------------------------------ PKI

  private async sign(roleName: string, body: Record<string, unknown>, namespace: string): Promise<Answer> {
    const role = this.roles[roleName];
    if (!role) return bad(`unknown role: ${roleName}`);
    const csrPem = str(body.csr);
    if (!csrPem) return bad('"csr" is empty');
    const block = /-----BEGIN (?:NEW )?CERTIFICATE REQUEST-----([\s\S]+?)-----END (?:NEW )?CERTIFICATE REQUEST-----/.exec(csrPem);
    if (!block) return bad('csr contains no data');
    let csr: x509.Pkcs10CertificateRequest;
    try {
      csr = new x509.Pkcs10CertificateRequest(Buffer.from(block[1]!.replace(/\s+/g, ''), 'base64'));
    } catch (e) {
      return bad(`certificate request could not be parsed: ${(e as Error).message}`);
    }
    if (!(await csr.verify(crypto as never).catch(() => false))) return bad('request signature invalid');

    const keyType = csrKeyType(csr);
    if (!keyType) return bad(`Unknown key type in CSR: ${csr.publicKey.algorithm.name}`);
    const wanted = role.key_type ?? 'rsa';
    if (wanted !== 'any' && wanted !== keyType) return bad(`role requires keys of type ${wanted}`);
    const bits = keyBits(csr);
    const minBits = wanted === 'any' ? (keyType === 'rsa' ? 2048 : keyType === 'ec' ? 224 : 0) : (role.key_bits ?? (keyType === 'rsa' ? 2048 : keyType === 'ec' ? 256 : 0));
    if (keyType !== 'ed25519' && bits < minBits) return bad(`role requires a minimum of a ${minBits}-bit key, but CSR's key is ${bits} bits`);

    const format = str(body.format) || 'pem';
    if (!['pem', 'der', 'pem_bundle'].includes(format)) return bad('the "format" path parameter must be "pem", "der", or "pem_bundle"');

    // Names (cert_util.go generateCreationBundle): CN and SANs from the CSR unless the role says otherwise.
    const csrCn = csr.subjectName.getField('CN')[0] ?? '';
    let cn = (role.use_csr_common_name ?? true) ? csrCn : '';
    if (!cn) cn = str(body.common_name);
    if (!cn && (role.require_cn ?? true)) {
      return bad('the common_name field is required, or must be provided in a CSR with "use_csr_common_name" set to true, unless "require_cn" is set to false');
    }
    const useCsrSans = role.use_csr_sans ?? true;
    const sanExt = csr.extensions.find((e) => e.type === '2.5.29.17');
    const sanNames = sanExt ? new x509.SubjectAlternativeNameExtension(sanExt.rawData).names.items : [];
    const csrDns = sanNames.filter((n) => n.type === 'dns').map((n) => n.value.toLowerCase());
    const csrIps = sanNames.filter((n) => n.type === 'ip').map((n) => n.value);
    let dnsNames = useCsrSans ? csrDns : commaList(body.alt_names).map((n) => n.toLowerCase());
    if (cn && !body.exclude_cn_from_sans && !isIP(cn) && /^(\*\.)?([a-z0-9]([a-z0-9-]*[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]*[a-z0-9])?\.?$/i.test(cn)) dnsNames = [...dnsNames, cn.toLowerCase()];
    dnsNames = [...new Set(dnsNames)];
    if (cn) {
      const badName = this.badName(role, [cn]);
      if (badName) return bad(`common name ${badName} not allowed by this role`);
    }
    const badSan = this.badName(role, dnsNames);
    if (badSan) return bad(`subject alternate name ${badSan} not allowed by this role`);
    let ips: string[];
    if (useCsrSans) {
      if (csrIps.length > 0 && !(role.allow_ip_sans ?? true)) return bad('IP Subject Alternative Names are not allowed in this role, but was provided some via CSR');
      ips = csrIps;
    } else {
      ips = commaList(body.ip_sans);
      if (ips.length > 0 && !(role.allow_ip_sans ?? true)) return bad(`IP Subject Alternative Names are not allowed in this role, but was provided [${ips.join(' ')}]`);
      const badIp = ips.find((i) => !isIP(i));
      if (badIp) return bad(`the value "${badIp}" is not a valid IP address`);
    }

    // TTL: requested, else the role's, else the mount default; capped to max_ttl with a warning.
    const warnings: string[] = [];
    let ttl: number;
    try {
      ttl = parseTtl(body.ttl);
    } catch (e) {
      return bad(`error converting input ${JSON.stringify(body.ttl)} for field "ttl": ${(e as Error).message}`);
    }
    const notAfterParam = str(body.not_after);
    if (ttl > 0 && notAfterParam) return bad('Either ttl or not_after should be provided. Both should not be provided in the same request.');
    if (ttl === 0) ttl = role.ttl || SYSTEM_TTL_S;
    const maxTtl = role.max_ttl || SYSTEM_TTL_S;
    if (ttl > maxTtl) {
      warnings.push(`TTL "${goDuration(ttl)}" is longer than permitted maxTTL "${goDuration(maxTtl)}", so maxTTL is being used`);
      ttl = maxTtl;
    }
    const now = Date.now();
    const notAfter = notAfterParam ? new Date(notAfterParam) : new Date(Math.floor((now + ttl * 1000) / 1000) * 1000);
    if (Number.isNaN(notAfter.getTime())) return bad(`parsing time "${notAfterParam}" as "2006-01-02T15:04:05Z07:00": cannot parse`);
    if (notAfter > this.inter.notAfter) {
      return bad(`cannot satisfy request, as TTL would result in notAfter ${notAfter.toISOString()} that is beyond the expiration of the CA certificate at ${this.inter.notAfter.toISOString()}`);
    }
    const notBefore = new Date(Math.floor((now - (role.not_before_duration ?? 30) * 1000) / 1000) * 1000);

    const serialBytes = this.serialBytes();
    const serialHex = serialBytes.toString('hex');
    const spki = new Uint8Array(csr.publicKey.rawData);
    const cert = await x509.X509CertificateGenerator.create(
      {
        serialNumber: serialHex,
        ...(cn ? { subject: [{ CN: [cn] }] } : {}),
        issuer: this.inter.subjectName,
        notBefore,
        notAfter,
        publicKey: csr.publicKey,
        signingKey: this.interKeys.privateKey,
        signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' } as webcrypto.EcdsaParams,
        extensions: [
          new x509.BasicConstraintsExtension(false, undefined, true),
          // Vault's role default key_usage: DigitalSignature, KeyAgreement, KeyEncipherment; server_flag and client_flag.
          new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyAgreement | x509.KeyUsageFlags.keyEncipherment, true),
          new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth], false),
          new x509.SubjectKeyIdentifierExtension(keyId(spki), false),
          new x509.AuthorityKeyIdentifierExtension(this.interKeyId, false),
          ...(dnsNames.length + ips.length > 0
            ? [new x509.SubjectAlternativeNameExtension([...dnsNames.map((value) => ({ type: 'dns' as const, value })), ...ips.map((value) => ({ type: 'ip' as const, value }))], !cn)]
            : []),
        ],
      },
      crypto as never,
    );
    const leafPem = derToPem(new Uint8Array(cert.rawData), 'CERTIFICATE').trimEnd();
    const colon = serialHex.match(/../g)!.join(':');
    this.issued.push({
      serialNumber: colon,
      serial: serialHex,
      role: roleName,
      commonName: cn,
      dnsNames,
      ipAddresses: ips,
      keyType,
      ttlSeconds: notAfterParam ? Math.round((notAfter.getTime() - now) / 1000) : ttl,
      requestedTtl: body.ttl,
      notBefore,
      notAfter,
      pem: leafPem,
      namespace,
      body,
    });
    const interPem = this.intermediatePem().trimEnd();
    const caChain = body.remove_roots_from_chain === true ? [interPem] : [interPem, this.rootPem().trimEnd()];
    const certificate = format === 'der' ? Buffer.from(cert.rawData).toString('base64') : format === 'pem_bundle' ? `${leafPem}\n${interPem}` : leafPem;
    return {
      status: 200,
      body: envelope({ certificate, issuing_ca: interPem, ca_chain: caChain, serial_number: colon, expiration: Math.floor(notAfter.getTime() / 1000) }, { warnings: warnings.length ? warnings : null }),
    };
  }

  private revoke(body: Record<string, unknown>): Answer {
    const serialParam = str(body.serial_number);
    const certParam = str(body.certificate);
    if (serialParam && certParam) return bad('Must provide either the certificate or the serial to revoke; not both.');
    if (!serialParam && !certParam) return bad('The serial number must be provided');
    let colon: string;
    if (certParam) {
      try {
        const c = new x509.X509Certificate(certParam);
        colon = minimalBytes(Buffer.from(c.serialNumber, 'hex')).toString('hex').match(/../g)!.join(':');
      } catch (e) {
        return bad(`certificate could not be parsed: ${(e as Error).message}`);
      }
    } else {
      // Vault looks the serial up as given (hyphens become colons): it must be the integer's minimal bytes.
      colon = serialParam.toLowerCase().replace(/-/g, ':');
    }
    const prior = this.revoked.get(colon);
    if (prior !== undefined) return ok({ revocation_time: prior, revocation_time_rfc3339: new Date(prior * 1000).toISOString() });
    const cert = this.issued.find((c) => c.serialNumber === colon);
    if (!cert) return bad(`certificate with serial ${serialParam || colon} not found`);
    if (cert.notAfter.getTime() < Date.now() + 2000) {
      return { status: 200, body: envelope(null, { warnings: [`certificate with serial ${colon} already expired; refusing to add to CRL`] }) };
    }
    const time = Math.floor(Date.now() / 1000);
    this.revoked.set(colon, time);
    return ok({ revocation_time: time, revocation_time_rfc3339: new Date(time * 1000).toISOString() });
  }

  /** The first name the role does not allow (cert_util.go validateNames, without templates and emails). */
  private badName(role: FakeVaultRole, names: string[]): string | undefined {
    for (const name of names) {
      if (role.allow_any_name) continue;
      const wildcard = name.startsWith('*.');
      const reduced = wildcard ? name.slice(2) : name;
      if (role.allow_localhost && (reduced === 'localhost' || reduced === 'localdomain')) continue;
      const ok = (role.allowed_domains ?? []).some((d) => {
        if (!d) return false;
        if (role.allow_bare_domains && name.toLowerCase() === d.toLowerCase()) return true;
        if (role.allow_subdomains && (reduced.endsWith(`.${d}`) || (wildcard && reduced === d))) return true;
        if (role.allow_glob_domains && d.includes('*') && globMatch(d, name)) return true;
        return false;
      });
      if (!ok) return name;
    }
    return undefined;
  }

  /** Vault's serials: random below 2^159 (certutil.GenerateSerialNumber), as minimal big-endian bytes. */
  private serialBytes(): Buffer {
    if (this.opts.signBitSerials) {
      const b = randomBytes(19);
      b[0]! |= 0x80;
      return b;
    }
    const b = randomBytes(20);
    b[0]! &= 0x7f;
    return minimalBytes(b);
  }

  private async makeCa(): Promise<void> {
    const ec = (namedCurve: string) => ({ name: 'ECDSA', namedCurve });
    const rootKeys = (await crypto.subtle.generateKey(ec('P-384'), true, ['sign', 'verify'])) as CryptoKeyPair;
    this.interKeys = (await crypto.subtle.generateKey(ec('P-256'), true, ['sign', 'verify'])) as CryptoKeyPair;
    const notBefore = new Date(Date.now() - 3_600_000);
    const rootSpki = new Uint8Array(await crypto.subtle.exportKey('spki', rootKeys.publicKey));
    const interSpki = new Uint8Array(await crypto.subtle.exportKey('spki', this.interKeys.publicKey));
    this.interKeyId = keyId(interSpki);
    this.root = await x509.X509CertificateGenerator.createSelfSigned(
      {
        serialNumber: minimalBytes(randomBytes(20)).toString('hex'),
        name: 'CN=fake-vault Root CA',
        notBefore,
        notAfter: new Date(notBefore.getTime() + 3650 * DAY),
        keys: rootKeys,
        signingAlgorithm: { name: 'ECDSA', hash: 'SHA-384' } as webcrypto.EcdsaParams,
        extensions: [
          new x509.BasicConstraintsExtension(true, undefined, true),
          new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
          new x509.SubjectKeyIdentifierExtension(keyId(rootSpki), false),
        ],
      },
      crypto as never,
    );
    this.inter = await x509.X509CertificateGenerator.create(
      {
        serialNumber: minimalBytes(randomBytes(20)).toString('hex'),
        subject: 'CN=fake-vault Intermediate CA',
        issuer: this.root.subjectName,
        notBefore,
        notAfter: new Date(notBefore.getTime() + 1825 * DAY),
        publicKey: this.interKeys.publicKey,
        signingKey: rootKeys.privateKey,
        signingAlgorithm: { name: 'ECDSA', hash: 'SHA-384' } as webcrypto.EcdsaParams,
        extensions: [
          new x509.BasicConstraintsExtension(true, 0, true),
          new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign | x509.KeyUsageFlags.digitalSignature, true),
          new x509.SubjectKeyIdentifierExtension(this.interKeyId, false),
          new x509.AuthorityKeyIdentifierExtension(keyId(rootSpki), false),
        ],
      },
      crypto as never,
    );
  }
}

// -------------------------------------------------------------------- helpers

/** Vault's success envelope (request_id, lease fields, data, wrap_info, warnings, auth). */
function envelope(data: unknown, extra: { auth?: unknown; warnings?: string[] | null } = {}): Record<string, unknown> {
  return { request_id: randomUUID(), lease_id: '', renewable: false, lease_duration: 0, data, wrap_info: null, warnings: extra.warnings ?? null, auth: extra.auth ?? null };
}

function ok(data: unknown): Answer {
  return { status: 200, body: envelope(data) };
}

/** 400: Vault's "invalid request" with its message. */
function bad(message: string): Answer {
  return { status: 400, body: { errors: [message] } };
}

/** 403: missing, expired, revoked or insufficient token. */
function denied(): Answer {
  return { status: 403, body: { errors: ['permission denied'] } };
}

function noRoute(path: string): Answer {
  return { status: 404, body: { errors: [`no handler for route "${path}". route entry not found.`] } };
}

function defaultErrors(status: number): string[] {
  if (status === 503) return ['Vault is sealed'];
  if (status === 500) return ['1 error occurred:\n\t* internal error\n\n'];
  if (status === 429) return ['request path "pki/sign": rate limit quota exceeded'];
  if (status === 403) return ['permission denied'];
  return ['invalid request'];
}

function header(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

function normalizeNamespace(ns: string | undefined): string {
  const n = (ns ?? '').trim().replace(/^\/+|\/+$/g, '');
  return n === 'root' ? '' : n;
}

function str(v: unknown): string {
  return typeof v === 'string' ? v.trim() : '';
}

/** Vault's TypeCommaStringSlice: a comma-delimited string or a JSON list. */
function commaList(v: unknown): string[] {
  const items = Array.isArray(v) ? v.map(String) : typeof v === 'string' ? v.split(',') : [];
  return [...new Set(items.map((s) => s.trim()).filter(Boolean))].sort();
}

/** Vault's TypeDurationSecond: seconds as a number or numeric string, or a duration like "90s", "15m", "24h", "1h30m". */
function parseTtl(v: unknown): number {
  if (v === undefined || v === null || v === '') return 0;
  if (typeof v === 'number') {
    if (!Number.isFinite(v) || v < 0) throw new Error('invalid duration');
    return Math.floor(v);
  }
  if (typeof v !== 'string') throw new Error('invalid duration');
  const s = v.trim();
  if (/^\d+$/.test(s)) return Number(s);
  const re = /(\d+)(ms|s|m|h|d)/gy;
  let total = 0;
  let m: RegExpExecArray | null;
  let consumed = 0;
  while ((m = re.exec(s))) {
    total += Number(m[1]) * { ms: 0.001, s: 1, m: 60, h: 3600, d: 86400 }[m[2] as 'ms' | 's' | 'm' | 'h' | 'd'];
    consumed = re.lastIndex;
  }
  if (consumed !== s.length || s.length === 0) throw new Error(`time: invalid duration "${s}"`);
  return Math.floor(total);
}

function csrKeyType(csr: x509.Pkcs10CertificateRequest): 'rsa' | 'ec' | 'ed25519' | undefined {
  const name = csr.publicKey.algorithm.name;
  if (name === 'RSASSA-PKCS1-v1_5' || name === 'RSA-PSS' || name === 'RSA-OAEP') return 'rsa';
  if (name === 'ECDSA' || name === 'ECDH') return 'ec';
  if (name === 'Ed25519' || name === 'EdDSA') return 'ed25519';
  return undefined;
}

function keyBits(csr: x509.Pkcs10CertificateRequest): number {
  const k = createPublicKey({ key: Buffer.from(csr.publicKey.rawData), format: 'der', type: 'spki' });
  const d = k.asymmetricKeyDetails ?? {};
  if (d.modulusLength) return d.modulusLength;
  const curve = d.namedCurve ?? '';
  return curve === 'prime256v1' ? 256 : curve === 'secp384r1' ? 384 : curve === 'secp521r1' ? 521 : 0;
}

/** Big-endian bytes without leading zero bytes (Go's big.Int.Bytes()). */
function minimalBytes(b: Buffer): Buffer {
  let i = 0;
  while (i < b.length - 1 && b[i] === 0) i++;
  return b.subarray(i);
}

/** RFC 5280 §4.2.1.2 method 1 (SHA-1 of the subjectPublicKey bits), as Vault's certutil computes the SKID. */
function keyId(spki: Uint8Array): string {
  // SubjectPublicKeyInfo ::= SEQUENCE { algorithm, subjectPublicKey BIT STRING }: hash the BIT STRING contents.
  const der = Buffer.from(spki);
  const len = (o: number): [number, number] => {
    const first = der[o + 1]!;
    if (first < 0x80) return [first, o + 2];
    const n = first & 0x7f;
    let l = 0;
    for (let i = 0; i < n; i++) l = l * 256 + der[o + 2 + i]!;
    return [l, o + 2 + n];
  };
  const [, seqStart] = len(0);
  const [algLen, algStart] = len(seqStart);
  const bitsAt = algStart + algLen;
  const [bitsLen, bitsStart] = len(bitsAt);
  return createHash('sha1').update(der.subarray(bitsStart + 1, bitsStart + bitsLen)).digest('hex');
}

/** go-glob: `*` matches any run of characters. */
function globMatch(pattern: string, s: string): boolean {
  const re = new RegExp(`^${pattern.split('*').map((p) => p.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*')}$`, 'i');
  return re.test(s);
}

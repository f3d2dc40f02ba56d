// HashiCorp Vault's PKI secrets engine as the gateway's CA service, after step-ca's cas/vaultcas
// (role by CSR key type, `<mount>/sign/<role>` with the CSR PEM, revoke by colon-hex serial, AppRole or
// Kubernetes login). Vault HTTP API pages followed:
//   https://developer.hashicorp.com/vault/api-docs                    (X-Vault-Token, X-Vault-Namespace, {"errors": [...]})
//   https://developer.hashicorp.com/vault/api-docs/auth/approle       (POST auth/<mount>/login {role_id, secret_id})
//   https://developer.hashicorp.com/vault/api-docs/auth/kubernetes    (POST auth/<mount>/login {role, jwt})
//   https://developer.hashicorp.com/vault/api-docs/auth/token         (POST auth/token/renew-self)
//   https://developer.hashicorp.com/vault/api-docs/system/wrapping-unwrap (POST sys/wrapping/unwrap)
//   https://developer.hashicorp.com/vault/api-docs/secret/pki         (sign, revoke, ca_chain, ca/pem)
//
// Vault signs once per call and has no idempotency key: `idempotent = false`, so the gateway never sends
// one envelope's sign call twice (callOnce), and this backend never repeats a sign call whose outcome is
// unknown (cas-http). Revocation by serial is safe to repeat at Vault, so revoke calls are retried.

import { webcrypto } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { parseDuration, type CasConfigOf } from '../../../shared/config/index.js';
import type { CrlReason } from '../../../shared/envelope/index.js';
import { RaError } from '../../../shared/errors/index.js';
import type { Logger } from '../../../shared/logging/logger.js';
import { derToPem, parseCsr, pemBlocks, x509, type KeyAlgorithm } from '../../../shared/pki/index.js';
import type { Collection } from '../../../shared/store/index.js';
import { CasHttpClient, casAnswerError, type CasHttpResponse } from './cas-http.js';
import type { CasContext } from './create-cas.js';
import type { CertificateAuthorityService, CreateCertificateRequest, CreateCertificateResponse, RevokeCertificateRequest, RevokeCertificateResponse } from './cas.js';

type VaultConfig = CasConfigOf<'vault'>;
type AppRoleAuth = Extract<VaultConfig['auth'], { type: 'approle' }>;

const SERVICE = 'vault';
/** Trust anchors are read from Vault again after this long (an operator may rotate the root). */
const ROOTS_CACHE_MS = 3_600_000;
/** A token is renewed once this share of its lease has passed. */
const RENEW_AT = 2 / 3;

/** The gateway's Vault token (never logged: only its accessor is). */
interface VaultToken {
  value: string;
  accessor?: string;
  renewable: boolean;
  /** Lease in ms; 0 means the token does not expire (e.g. a periodic or root token). */
  leaseMs: number;
  /** When the login (or renewal) that gave this lease was sent. */
  since: number;
}

/** The `auth` block of a login or renew-self answer. */
interface VaultAuth {
  client_token?: string;
  accessor?: string;
  policies?: string[];
  lease_duration?: number;
  renewable?: boolean;
}

/** `data` of `<mount>/sign/<role>` (Vault API: PKI, sign certificate). */
interface VaultSignData {
  certificate?: string;
  issuing_ca?: string;
  ca_chain?: string[];
  serial_number?: string;
  expiration?: number;
}

/** A serial this gateway revoked at Vault. Vault answers success for a serial revoked before, so this is how a second request learns it is `alreadyRevoked`. */
interface RevokedRecord {
  serial: string;
  reason: CrlReason;
  revokedAt: string;
  /** The revoke envelope id. */
  requestId: string;
}

/** Lower-case hex without separators and without DER sign padding (a leading 00), even length. */
export function normalizeVaultSerial(serial: string): string {
  let s = serial.toLowerCase().replace(/[:\s-]/g, '');
  while (s.length > 2 && s.startsWith('00')) s = s.slice(2);
  return s.length % 2 ? `0${s}` : s;
}

/** Vault's serial form: colon-separated byte pairs of the integer's minimal bytes, e.g. "39:dd:2e". */
export function vaultColonSerial(serial: string): string {
  return normalizeVaultSerial(serial).match(/../g)!.join(':');
}

/**
 * A 400 from Vault's pki sign endpoint that refuses names by the role (builtin/logical/pki
 * cert_util.go: "common name X not allowed by this role", "subject alternate name X not allowed by this
 * role", "IP Subject Alternative Names are not allowed in this role, ..."): RFC 8555 §6.7
 * rejectedIdentifier, with a subproblem for the name when Vault names one of the request's.
 */
export function vaultNameRefusal(message: string | undefined, req: { dnsNames: string[]; ipAddresses: string[] }): RaError | undefined {
  if (!message) return undefined;
  const detail = `the CA service (${SERVICE}) refused the name by its role: ${message.slice(0, 300)}`;
  const named = /(?:common name|subject alternate name) (\S+) not allowed by this role/.exec(message)?.[1];
  if (named) {
    const identifier = req.dnsNames.includes(named) ? { type: 'dns' as const, value: named } : req.ipAddresses.includes(named) ? { type: 'ip' as const, value: named } : undefined;
    return new RaError('rejectedIdentifier', { detail, ...(identifier ? { subproblems: [{ type: 'rejectedIdentifier', detail: `${named} is not allowed by the CA service's role`, identifier }] } : {}) });
  }
  if (/IP Subject Alternative Names are not allowed in this role/.test(message)) {
    return new RaError('rejectedIdentifier', {
      detail,
      subproblems: req.ipAddresses.map((value) => ({ type: 'rejectedIdentifier' as const, detail: `IP addresses are not allowed by the CA service's role`, identifier: { type: 'ip' as const, value } })),
    });
  }
  return undefined;
}

export class VaultCas implements CertificateAuthorityService {
  readonly type = 'vault';
  readonly idempotent = false;

  private readonly http: CasHttpClient;
  private readonly base: string;
  private readonly mount: string;
  private readonly revoked: Collection<RevokedRecord>;
  private token?: VaultToken;
  private loggingIn?: Promise<VaultToken>;
  private renewing?: Promise<VaultToken>;
  /** The last response-wrapping token unwrapped and the secret_id it held: a wrapping token can be unwrapped only once. */
  private unwrapped?: { wrappingToken: string; secretId: string };
  private roots?: { pem: string; at: number };
  private notBeforeNoted = false;

  private constructor(
    readonly config: VaultConfig,
    private readonly ctx: CasContext,
    private readonly log: Logger,
    /** YAML path of this cas block, for configuration errors. */
    private readonly yamlPath: string,
    ca: string | undefined,
  ) {
    this.base = config.url.replace(/\/+$/, '');
    this.mount = config.pkiMountPath.replace(/^\/+|\/+$/g, '');
    this.http = new CasHttpClient({ service: SERVICE, timeoutMs: parseDuration(config.timeout), ...(ca ? { ca } : {}), log });
    this.revoked = ctx.db.collection('cas-vault-revoked');
  }

  static async create(config: VaultConfig, ctx: CasContext): Promise<VaultCas> {
    const index = ctx.topology.config.nodes.findIndex((n) => n.id === ctx.nodeId);
    const yamlPath = `nodes[${index}].cas`;
    const log = ctx.log.child({ cas: SERVICE });
    let ca: string | undefined;
    if (config.caFile !== undefined) {
      const path = ctx.topology.resolvePath(config.caFile);
      try {
        ca = await readFile(path, 'utf8');
      } catch (e) {
        throw new Error(`${yamlPath}.caFile: cannot read ${path} (${(e as Error).message})`);
      }
      if (!ca.includes('-----BEGIN CERTIFICATE-----')) throw new Error(`${yamlPath}.caFile: ${path} holds no PEM certificate`);
    }
    if (config.url.startsWith('http://')) log.warn({ url: config.url }, 'the Vault address is plain http: the gateway\'s Vault token travels unencrypted');
    return new VaultCas(config, ctx, log, yamlPath, ca);
  }

  // ---------------------------------------------------------------- issuance

  async createCertificate(req: CreateCertificateRequest): Promise<CreateCertificateResponse> {
    const csr = await parseCsr(req.csrDer);
    const role = this.roleFor(csr.keyAlgorithm);
    if (req.notBefore && !this.notBeforeNoted) {
      // Vault's sign endpoint takes ttl or not_after, never a notBefore: the certificate starts when Vault
      // signs it (back-dated by the role's not_before_duration). The lifetime is kept, not the start.
      this.notBeforeNoted = true;
      this.log.info({ requestId: req.requestId, notBefore: req.notBefore.toISOString() }, 'Vault PKI cannot set notBefore; certificates start when Vault signs them');
    }
    const ttlSeconds = Math.max(1, Math.ceil(req.lifetimeMs / 1000));
    // Vault API, PKI "Sign certificate": csr (PEM), common_name, alt_names and ip_sans (comma-delimited), ttl, format.
    const body: Record<string, unknown> = {
      csr: derToPem(csr.der, 'CERTIFICATE REQUEST'),
      common_name: req.dnsNames[0] ?? req.ipAddresses[0] ?? csr.commonName ?? '',
      ttl: `${ttlSeconds}s`,
      format: 'pem',
    };
    if (req.dnsNames.length > 0) body.alt_names = req.dnsNames.join(',');
    if (req.ipAddresses.length > 0) body.ip_sans = req.ipAddresses.join(',');
    const path = `${this.mount}/sign/${encodeURIComponent(role)}`;
    const res = await this.authorized('sign', (token) => this.send({ method: 'POST', path, token, json: body, idempotent: false, what: 'sign' }));
    if (res.status >= 400) {
      const message = vaultMessage(res);
      this.log.warn({ status: res.status, role, vault: message, requestId: req.requestId }, 'Vault refused the sign request');
      throw (res.status === 400 ? vaultNameRefusal(message, req) : undefined) ?? casAnswerError(SERVICE, 'sign', res.status, message);
    }
    // From here Vault has signed: whatever goes wrong, the call is not repeated (outcome-unknown is final).
    const answer = this.json<{ data?: VaultSignData; warnings?: string[] | null }>(res, 'sign', 'cas-outcome-unknown');
    if (answer.warnings?.length) this.log.warn({ warnings: answer.warnings, role, requestId: req.requestId }, 'Vault signed with warnings');
    const data = answer.data;
    if (!data?.certificate) throw this.unusable('the answer to the sign call holds no certificate');
    let leaf: x509.X509Certificate;
    let chain: x509.X509Certificate[];
    try {
      const [first, ...bundled] = certificates(data.certificate);
      if (!first) throw new Error('no CERTIFICATE block');
      leaf = first;
      const caPems = data.ca_chain?.length ? data.ca_chain : data.issuing_ca ? [data.issuing_ca] : [];
      chain = await intermediates(leaf, [...bundled, ...caPems.flatMap(certificates)]);
    } catch (e) {
      throw this.unusable('the certificate in the answer to the sign call does not parse', e);
    }
    if (!Buffer.from(leaf.publicKey.rawData).equals(Buffer.from(csr.publicKeySpki))) {
      // Never hand out a certificate for another key than the CSR's.
      throw new RaError('serverInternal', {
        reason: 'cas-refused',
        detail: `the CA service (${SERVICE}) returned a certificate that is not for the key of the CSR; it was not handed out`,
      });
    }
    const serial = normalizeVaultSerial(leaf.serialNumber);
    if (data.serial_number && normalizeVaultSerial(data.serial_number) !== serial) {
      this.log.warn({ serial, vaultSerial: data.serial_number }, 'Vault\'s serial_number differs from the certificate\'s; the certificate\'s is used');
    }
    this.log.info({ serial, role, requestId: req.requestId, notAfter: leaf.notAfter.toISOString() }, 'Vault signed a certificate');
    return {
      chainPem: [leaf, ...chain].map((c) => derToPem(new Uint8Array(c.rawData), 'CERTIFICATE')).join(''),
      serial,
      notAfter: leaf.notAfter,
    };
  }

  /** The PKI role for a CSR key type (pkiRoleRSA/EC/Ed25519, else pkiRoleDefault), as step-ca's vaultcas chooses it. */
  private roleFor(alg: KeyAlgorithm): string {
    const c = this.config;
    switch (alg) {
      case 'RSA':
        return c.pkiRoleRSA ?? c.pkiRoleDefault;
      case 'EC':
        return c.pkiRoleEC ?? c.pkiRoleDefault;
      case 'Ed25519':
        return c.pkiRoleEd25519 ?? c.pkiRoleDefault;
      default:
        // Vault's PKI engine signs RSA, ECDSA and Ed25519 keys only.
        throw new RaError('badCSR', { detail: `the CA service (${SERVICE}) does not sign ${alg} keys; use an RSA, ECDSA or Ed25519 key` });
    }
  }

  // ---------------------------------------------------------------- revocation

  async revokeCertificate(req: RevokeCertificateRequest): Promise<RevokeCertificateResponse> {
    const serial = normalizeVaultSerial(req.serial);
    return this.ctx.locks.run(`cas-vault-revoke:${serial}`, async () => {
      const prior = await this.revoked.get(serial);
      if (prior) {
        // The same request again (a redelivery after a crash): its first answer, Vault is not asked again.
        if (prior.requestId === req.requestId) return { serial, reason: prior.reason, revokedAt: new Date(prior.revokedAt) };
        throw new RaError('alreadyRevoked', { detail: `the certificate ${serial} was revoked at ${prior.revokedAt}` });
      }
      // Vault API, PKI "Revoke certificate": serial_number in colon-separated hex. Vault has no reason
      // codes: its CRL lists the serial without one; the reason is kept here and in the gateway's audit.
      const res = await this.authorized('revoke', (token) =>
        this.send({ method: 'POST', path: `${this.mount}/revoke`, token, json: { serial_number: vaultColonSerial(serial) }, idempotent: true, what: 'revoke' }),
      );
      if (res.status >= 400) {
        const message = vaultMessage(res);
        this.log.warn({ status: res.status, serial, vault: message }, 'Vault refused the revocation');
        if (res.status === 400) {
          // e.g. "certificate with serial 39:dd:... not found"
          throw new RaError('malformed', {
            detail: /not found/i.test(message ?? '')
              ? `the CA service (${SERVICE}) has no certificate with serial ${serial}`
              : `the CA service (${SERVICE}) refused the revocation${message ? `: ${message.slice(0, 300)}` : ''}`,
          });
        }
        throw casAnswerError(SERVICE, 'revoke', res.status, message);
      }
      const answer = this.json<{ data?: { revocation_time?: number } | null; warnings?: string[] | null }>(res, 'revoke', 'cas-unavailable');
      const time = answer.data?.revocation_time;
      if (typeof time !== 'number') {
        // Vault answers an expired certificate with a warning and no revocation ("already expired; refusing to add to CRL").
        this.log.warn({ serial, warnings: answer.warnings }, 'Vault did not revoke the certificate');
        throw new RaError('malformed', { detail: `the certificate ${serial} has expired; the CA service (${SERVICE}) does not revoke expired certificates` });
      }
      const rec: RevokedRecord = { serial, reason: req.reason, revokedAt: new Date(time * 1000).toISOString(), requestId: req.requestId };
      await this.revoked.put(serial, rec);
      this.log.info({ serial, reason: req.reason, requestId: req.requestId }, 'Vault revoked a certificate');
      return { serial, reason: rec.reason, revokedAt: new Date(rec.revokedAt) };
    });
  }

  // ---------------------------------------------------------------- trust anchors

  async rootsPem(): Promise<string> {
    if (this.roots && Date.now() - this.roots.at < ROOTS_CACHE_MS) return this.roots.pem;
    // Vault API, PKI "Read default issuer certificate chain" (unauthenticated PEM; the full chain since
    // Vault 1.11), else "Read issuer certificate" (ca/pem) of the default issuer.
    let certs = await this.readPemCerts(`${this.mount}/ca_chain`, 'CA chain read');
    if (certs.length === 0) certs = await this.readPemCerts(`${this.mount}/ca/pem`, 'CA certificate read');
    if (certs.length === 0) {
      throw new RaError('serverInternal', { reason: 'cas-config', detail: `the CA service (${SERVICE}) has no CA certificate at ${this.mount}; the operator must check pkiMountPath and namespace` });
    }
    let anchors: x509.X509Certificate[] = [];
    for (const c of certs) if (await selfSigned(c)) anchors.push(c);
    if (anchors.length === 0) {
      anchors = [certs[certs.length - 1]!];
      this.log.warn({ subject: anchors[0]!.subject }, 'Vault knows no self-signed root above its issuer; the top-most CA certificate is served as the trust anchor');
    }
    const pem = anchors.map((c) => derToPem(new Uint8Array(c.rawData), 'CERTIFICATE')).join('');
    this.roots = { pem, at: Date.now() };
    return pem;
  }

  private async readPemCerts(path: string, what: string): Promise<x509.X509Certificate[]> {
    const res = await this.send({ method: 'GET', path, idempotent: true, what });
    if (res.status === 204 || res.status === 404) return [];
    if (res.status >= 400) throw casAnswerError(SERVICE, what, res.status, vaultMessage(res));
    try {
      return certificates(res.body.toString('utf8'));
    } catch (e) {
      throw new RaError('serverInternal', { reason: 'cas-config', detail: `the CA service (${SERVICE}) answered the ${what} with something that is not PEM certificates`, cause: e });
    }
  }

  // ---------------------------------------------------------------- token handling

  /**
   * A call with the gateway's token. A 403 with a cached token means Vault no longer accepts it
   * (revoked, expired before its lease said, Vault's token store restored): one new login, then the
   * same call once more; a 403 with a fresh token is the policy refusing the path (cas-credentials).
   */
  private async authorized(what: string, call: (token: string) => Promise<CasHttpResponse>): Promise<CasHttpResponse> {
    let { token, fresh } = await this.currentToken();
    let res = await call(token.value);
    if (res.status === 403 && !fresh) {
      this.log.warn({ call: what, accessor: token.accessor, vault: vaultMessage(res) }, 'Vault refused the cached token; logging in again');
      if (this.token === token) this.token = undefined;
      token = this.token ?? (await this.login());
      res = await call(token.value);
    }
    if (res.status === 403) {
      this.log.error({ call: what, accessor: token.accessor, vault: vaultMessage(res) }, 'Vault refused a freshly issued token: its policies do not allow this call');
      throw new RaError('serverInternal', {
        reason: 'cas-credentials',
        detail: `the CA service (${SERVICE}) denied the gateway permission for the ${what} call; the operator must check the policies of the gateway's Vault role`,
      });
    }
    return res;
  }

  /** The cached token; renewed (renew-self) once RENEW_AT of its lease has passed, else a new login. */
  private async currentToken(): Promise<{ token: VaultToken; fresh: boolean }> {
    const t = this.token;
    const now = Date.now();
    if (t && (t.leaseMs === 0 || now < t.since + t.leaseMs * RENEW_AT)) return { token: t, fresh: false };
    if (t && t.renewable && now < t.since + t.leaseMs) {
      try {
        return { token: await this.renew(t), fresh: false };
      } catch (e) {
        this.log.warn({ err: e, accessor: t.accessor }, 'Vault token renewal failed; logging in again');
      }
    }
    if (this.token === t) this.token = undefined;
    return { token: await this.login(), fresh: true };
  }

  /** One login at a time: concurrent calls share it. */
  private login(): Promise<VaultToken> {
    if (!this.loggingIn) {
      const p = this.doLogin().finally(() => {
        if (this.loggingIn === p) this.loggingIn = undefined;
      });
      this.loggingIn = p;
    }
    return this.loggingIn;
  }

  private async doLogin(): Promise<VaultToken> {
    const a = this.config.auth;
    let body: Record<string, string>;
    if (a.type === 'approle') {
      // Vault API, AppRole "Login with AppRole".
      body = { role_id: a.roleId, secret_id: await this.secretId(a) };
    } else {
      // Vault API, Kubernetes "Login": the service-account JWT, read again at every login (it is rotated).
      const path = this.ctx.topology.resolvePath(a.tokenPath);
      let jwt: string;
      try {
        jwt = (await readFile(path, 'utf8')).trim();
      } catch (e) {
        this.log.error({ err: e, path }, 'cannot read the Kubernetes service-account token');
        throw this.credentialsMissing(`${this.yamlPath}.auth.tokenPath`);
      }
      if (!jwt) throw this.credentialsMissing(`${this.yamlPath}.auth.tokenPath`);
      body = { role: a.role, jwt };
    }
    const mount = a.mountPath.replace(/^\/+|\/+$/g, '');
    const since = Date.now();
    const res = await this.send({ method: 'POST', path: `auth/${mount}/login`, json: body, idempotent: true, what: 'login' });
    if (res.status >= 400) throw this.loginRefused(res, `${a.type} login at auth/${mount}`);
    const auth = this.json<{ auth?: VaultAuth | null }>(res, 'login', 'cas-config').auth;
    if (!auth?.client_token) {
      throw new RaError('serverInternal', { reason: 'cas-config', detail: `the CA service (${SERVICE}) answered the gateway's login without a token; the operator must check the Vault address and auth mount` });
    }
    const token: VaultToken = {
      value: auth.client_token,
      ...(auth.accessor ? { accessor: auth.accessor } : {}),
      renewable: auth.renewable === true,
      leaseMs: Math.max(0, auth.lease_duration ?? 0) * 1000,
      since,
    };
    this.token = token;
    this.log.info({ auth: a.type, accessor: token.accessor, policies: auth.policies, leaseSeconds: auth.lease_duration, renewable: token.renewable }, 'logged in to Vault');
    return token;
  }

  /** One renewal at a time (Vault API, Token "Renew a token (self)"). */
  private renew(t: VaultToken): Promise<VaultToken> {
    if (!this.renewing) {
      const p = (async (): Promise<VaultToken> => {
        const since = Date.now();
        const res = await this.send({ method: 'POST', path: 'auth/token/renew-self', token: t.value, json: {}, idempotent: true, what: 'token renewal' });
        if (res.status >= 400) throw new Error(`renew-self answered HTTP ${res.status}: ${vaultMessage(res) ?? ''}`);
        const auth = this.json<{ auth?: VaultAuth | null }>(res, 'token renewal', 'cas-unavailable').auth;
        const leaseMs = Math.max(0, auth?.lease_duration ?? 0) * 1000;
        // At its max TTL Vault renews for what is left; a lease of 0 would mean nothing is.
        if (leaseMs === 0) throw new Error('renew-self gave no lease (the token reached its max TTL)');
        const renewed: VaultToken = { ...t, value: auth?.client_token || t.value, renewable: auth?.renewable ?? t.renewable, leaseMs, since };
        if (this.token === t) this.token = renewed;
        this.log.debug({ accessor: t.accessor, leaseSeconds: leaseMs / 1000 }, 'Vault token renewed');
        return renewed;
      })().finally(() => {
        if (this.renewing === p) this.renewing = undefined;
      });
      this.renewing = p;
    }
    return this.renewing;
  }

  /** The AppRole secret_id from the config, a file (read at every login) or the environment; unwrapped first when it is a wrapping token. */
  private async secretId(a: AppRoleAuth): Promise<string> {
    let raw: string;
    let where: string;
    if (a.secretId !== undefined) {
      raw = a.secretId;
      where = `${this.yamlPath}.auth.secretId`;
    } else if (a.secretIdFile !== undefined) {
      where = `${this.yamlPath}.auth.secretIdFile`;
      const path = this.ctx.topology.resolvePath(a.secretIdFile);
      try {
        raw = await readFile(path, 'utf8');
      } catch (e) {
        this.log.error({ err: e, path }, 'cannot read the AppRole secret_id file');
        throw this.credentialsMissing(where);
      }
    } else {
      where = `${this.yamlPath}.auth.secretIdEnv`;
      raw = process.env[a.secretIdEnv!] ?? '';
    }
    raw = raw.trim();
    if (!raw) {
      this.log.error({ where }, 'the AppRole secret_id is empty');
      throw this.credentialsMissing(where);
    }
    if (!a.isWrappingToken) return raw;
    if (this.unwrapped?.wrappingToken === raw) return this.unwrapped.secretId;
    const secretId = await this.unwrap(raw);
    this.unwrapped = { wrappingToken: raw, secretId };
    return secretId;
  }

  /** Vault API, System "sys/wrapping/unwrap" with the wrapping token as X-Vault-Token: the wrapped secret_id. */
  private async unwrap(wrappingToken: string): Promise<string> {
    let res: CasHttpResponse;
    try {
      // Not repeated after an ambiguous failure: a wrapping token unwraps once, a second try would fail anyway.
      res = await this.send({ method: 'POST', path: 'sys/wrapping/unwrap', token: wrappingToken, idempotent: false, what: 'unwrap' });
    } catch (e) {
      if (e instanceof RaError && e.reason === 'cas-outcome-unknown') {
        throw new RaError('serverInternal', { reason: 'cas-unavailable', detail: `the gateway could not log in to the CA service (${SERVICE}); the request stays queued and is retried`, cause: e.cause ?? e });
      }
      throw e;
    }
    if (res.status >= 400) throw this.loginRefused(res, 'unwrapping of the secret_id wrapping token');
    const secretId = this.json<{ data?: { secret_id?: string } | null }>(res, 'unwrap', 'cas-config').data?.secret_id;
    if (!secretId) {
      this.log.error('the unwrapped response holds no secret_id');
      throw this.credentialsMissing(`${this.yamlPath}.auth`);
    }
    return secretId;
  }

  // ---------------------------------------------------------------- helpers

  private async send(o: { method: 'GET' | 'POST'; path: string; token?: string; json?: unknown; idempotent: boolean; what: string }): Promise<CasHttpResponse> {
    const headers: Record<string, string> = { 'x-vault-request': 'true' };
    if (o.token) headers['x-vault-token'] = o.token;
    // Vault Enterprise namespaces: every call, logins included, is made in the configured namespace.
    if (this.config.namespace) headers['x-vault-namespace'] = this.config.namespace;
    const res = await this.http.request({
      method: o.method,
      url: `${this.base}/v1/${o.path}`,
      headers,
      ...(o.json !== undefined ? { json: o.json } : {}),
      idempotent: o.idempotent,
      what: o.what,
    });
    // Vault API "HTTP status codes": 412 is data not yet replicated to this node ("should be retried"),
    // a 3xx a standby node redirecting (request forwarding off). Neither carried out the call.
    if (res.status === 412) {
      this.log.warn({ call: o.what, vault: vaultMessage(res) }, 'Vault answered 412 (not yet consistent); retried later');
      throw new RaError('serverInternal', { reason: 'cas-unavailable', detail: `the CA service (${SERVICE}) could not carry out the ${o.what} call yet; the request stays queued and is retried` });
    }
    if (res.status >= 300 && res.status < 400) {
      this.log.error({ call: o.what, status: res.status, location: res.headers.location }, 'Vault redirected the call');
      throw new RaError('serverInternal', {
        reason: 'cas-config',
        detail: `the CA service (${SERVICE}) redirected the ${o.what} call (HTTP ${res.status}); the operator must point the gateway at the active Vault node or its load balancer`,
      });
    }
    return res;
  }

  /** The JSON body; a body that is not JSON is an RaError with `reason`. */
  private json<T>(res: CasHttpResponse, what: string, reason: 'cas-outcome-unknown' | 'cas-unavailable' | 'cas-config'): T {
    try {
      return JSON.parse(res.body.toString('utf8')) as T;
    } catch (e) {
      this.log.error({ call: what, status: res.status, body: res.body.toString('utf8').slice(0, 200) }, 'Vault answered with something that is not JSON');
      const detail =
        reason === 'cas-outcome-unknown'
          ? `the CA service (${SERVICE}) sent an unreadable answer to the ${what} call and its outcome is unknown; it is not repeated: start a new order`
          : reason === 'cas-unavailable'
            ? `the CA service (${SERVICE}) sent an unreadable answer to the ${what} call; the request stays queued and is retried`
            : `the CA service (${SERVICE}) sent an unreadable answer to the ${what} call; the operator must check the gateway's Vault address`;
      throw new RaError('serverInternal', { reason, detail, cause: e });
    }
  }

  /** A signed certificate that cannot be handed out: final, never signed again. */
  private unusable(what: string, cause?: unknown): RaError {
    this.log.error({ err: cause }, `Vault sign answer unusable: ${what}`);
    return new RaError('serverInternal', {
      reason: 'cas-outcome-unknown',
      detail: `the CA service (${SERVICE}) sent an answer to the sign call that cannot be used; it is not repeated, so that no second certificate is issued: start a new order`,
      ...(cause === undefined ? {} : { cause }),
    });
  }

  private loginRefused(res: CasHttpResponse, what: string): RaError {
    const message = vaultMessage(res);
    this.log.error({ status: res.status, vault: message, call: what }, 'Vault refused the gateway\'s login');
    // A missing auth mount or namespace is configuration (404); any other refusal is the credentials.
    if (res.status === 404) return casAnswerError(SERVICE, what, 404, message);
    return new RaError('serverInternal', {
      reason: 'cas-credentials',
      detail: `the CA service (${SERVICE}) refused the gateway's ${this.config.auth.type} login; the operator must check the gateway's Vault credentials`,
    });
  }

  private credentialsMissing(where: string): RaError {
    return new RaError('serverInternal', {
      reason: 'cas-credentials',
      detail: `the gateway has no usable Vault credentials (${where}); the operator must check them`,
    });
  }
}

/** Vault's `errors` array joined, the message of every Vault error answer ({"errors": ["..."]}). */
function vaultMessage(res: CasHttpResponse): string | undefined {
  try {
    const errors = (JSON.parse(res.body.toString('utf8')) as { errors?: unknown }).errors;
    if (Array.isArray(errors)) {
      const text = errors.filter((e): e is string => typeof e === 'string').map((e) => e.trim()).filter(Boolean).join('; ');
      return text || undefined;
    }
  } catch {
    // not JSON: no message
  }
  return undefined;
}

function certificates(pem: string): x509.X509Certificate[] {
  return pemBlocks(pem)
    .filter((b) => b.label === 'CERTIFICATE')
    .map((b) => new x509.X509Certificate(b.der));
}

/** The CA certificates to send after the leaf: in Vault's order, without duplicates, the leaf itself, or self-signed roots. */
async function intermediates(leaf: x509.X509Certificate, candidates: x509.X509Certificate[]): Promise<x509.X509Certificate[]> {
  const seen = new Set([Buffer.from(leaf.rawData).toString('base64')]);
  const out: x509.X509Certificate[] = [];
  for (const c of candidates) {
    const k = Buffer.from(c.rawData).toString('base64');
    if (seen.has(k)) continue;
    seen.add(k);
    if (await selfSigned(c)) continue;
    out.push(c);
  }
  return out;
}

async function selfSigned(c: x509.X509Certificate): Promise<boolean> {
  try {
    return await c.isSelfSigned(webcrypto as unknown as Parameters<x509.X509Certificate['isSelfSigned']>[0]);
  } catch {
    return c.subject === c.issuer;
  }
}

// Google Cloud Certificate Authority Service (privateca.googleapis.com, REST API v1) as the gateway's
// CA service, after step-ca's cas/cloudcas: certificates are created from the CSR in one CA pool,
// revoked by resource name, and the pool's trust anchors come from caPools.fetchCaCerts.
//
// Idempotent (`idempotent = true`): every create call carries requestId = the envelope id (a UUID, as
// the API requires) and a certificateId derived from it, so a retry after an ambiguous failure gets
// the first certificate back from the API's requestId dedupe (at least 60 minutes), and later than
// that the certificateId collides (409 ALREADY_EXISTS) and the existing certificate is read back:
// one envelope never yields two certificates. Revocations carry the revoke envelope id the same way.
//
// Authentication: Google's OAuth 2.0 service-account flow (RFC 7523 JWT bearer grant,
// https://developers.google.com/identity/protocols/oauth2/service-account): an RS256 assertion
// signed with the key of the credentials file is exchanged at its token_uri for an access token,
// which is cached until shortly before it expires and refreshed once when the API answers 401.
//
// References: .../rest/v1/projects.locations.caPools.certificates/create, /get, /revoke and
// .../rest/v1/projects.locations.caPools/fetchCaCerts (cloud.google.com/certificate-authority-service/docs/reference).

import { createHash, createPrivateKey, X509Certificate, type KeyObject } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { SignJWT } from 'jose';
import { parseDuration, TopologyError, type CasConfigOf } from '../../../shared/config/index.js';
import type { CrlReason } from '../../../shared/envelope/index.js';
import { RaError } from '../../../shared/errors/index.js';
import type { Logger } from '../../../shared/logging/logger.js';
import { derToPem, fingerprint, pemToDer } from '../../../shared/pki/index.js';
import type { Collection } from '../../../shared/store/index.js';
import { casAnswerError, CasHttpClient, type CasHttpResponse } from './cas-http.js';
import type { CasContext } from './create-cas.js';
import type { CertificateAuthorityService, CreateCertificateRequest, CreateCertificateResponse, RevokeCertificateRequest, RevokeCertificateResponse } from './cas.js';

/** The name in details and logs. */
const SERVICE = 'Google CAS';
/** OAuth scope of the Certificate Authority Service API (every method of it). */
export const CLOUD_PLATFORM_SCOPE = 'https://www.googleapis.com/auth/cloud-platform';
const DEFAULT_TOKEN_URI = 'https://oauth2.googleapis.com/token';
/** RFC 7523 §2.1 grant type. */
const JWT_BEARER_GRANT = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
/** Google: the assertion's exp may be at most 1 hour after iat. */
const ASSERTION_LIFETIME_S = 3600;
/** A token is refreshed this long before it expires (at most; a quarter of a short token's life). */
const TOKEN_REFRESH_MARGIN_MS = 5 * 60_000;
/** How long the pool's trust anchors are served from memory before fetchCaCerts is called again. */
const ROOTS_CACHE_MS = 10 * 60_000;
/** Prefix of the certificate ids this gateway creates: `ramesh-<request uuid>` (43 characters). */
const CERTIFICATE_ID_PREFIX = 'ramesh-';

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const ZERO_UUID = '00000000-0000-0000-0000-000000000000';

/** RFC 5280 §5.3.1 CRLReason -> the API's RevocationReason (as step-ca's revocationCodeMap). 8 (removeFromCRL) has none. */
export const REVOCATION_REASONS: Readonly<Partial<Record<CrlReason, string>>> = {
  0: 'REVOCATION_REASON_UNSPECIFIED',
  1: 'KEY_COMPROMISE',
  2: 'CERTIFICATE_AUTHORITY_COMPROMISE',
  3: 'AFFILIATION_CHANGED',
  4: 'SUPERSEDED',
  5: 'CESSATION_OF_OPERATION',
  6: 'CERTIFICATE_HOLD',
  9: 'PRIVILEGE_WITHDRAWN',
  10: 'ATTRIBUTE_AUTHORITY_COMPROMISE',
};

/** The fields of a service-account JSON key file this backend uses. */
interface ServiceAccountKey {
  clientEmail: string;
  privateKeyId?: string;
  privateKey: KeyObject;
  tokenUri: string;
}

/** The API's Certificate resource, as far as it is read here. */
interface ApiCertificate {
  name?: string;
  pemCsr?: string;
  pemCertificate?: string;
  pemCertificateChain?: string[];
  certificateDescription?: { subjectDescription?: { hexSerialNumber?: string; notAfterTime?: string } };
  revocationDetails?: { revocationState?: string; revocationTime?: string };
}

/** Google's error body (google.rpc.Status in JSON: https://cloud.google.com/apis/design/errors). */
interface ApiError {
  error?: { code?: number; message?: string; status?: string };
}

/** What the gateway keeps of every certificate it created at Google CAS (collection 'cas-cloudcas-certs', keyed by serial). */
export interface CloudCasCertRecord {
  serial: string;
  /** The certificate's resource name: projects/…/caPools/…/certificates/<certificateId>. */
  name: string;
  /** The requestId of the create call (the envelope id). */
  requestId: string;
  notAfter: string;
  createdAt: string;
  /** Set once this gateway revoked it: the revoke envelope id, so a repeat gets the first answer. */
  revocation?: { requestId: string; reason: CrlReason; revokedAt: string };
}

/** Lower-case hex serial without DER sign padding (the form the edge and the envelope schema use). */
export function normalizeSerial(hex: string): string {
  let s = hex.toLowerCase().replace(/[^0-9a-f]/g, '');
  while (s.length > 2 && s.startsWith('00')) s = s.slice(2);
  return s.length % 2 ? `0${s}` : s;
}

/**
 * The API requestId for a gateway request id: the id itself when it is a (non-zero) UUID, as the API
 * requires; otherwise a UUID derived from its SHA-256, so the same id always maps to the same requestId.
 */
export function apiRequestId(id: string): string {
  const lower = id.toLowerCase();
  if (UUID_RE.test(lower) && lower !== ZERO_UUID) return lower;
  const h = createHash('sha256').update(id, 'utf8').digest('hex');
  // Version 8 (RFC 9562 §5.8, custom) with the variant bits set.
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-8${h.slice(13, 16)}-${((parseInt(h[16]!, 16) & 0x3) | 0x8).toString(16)}${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

/** The certificateId for a requestId: [a-z0-9-], 43 characters (the API allows [a-zA-Z0-9_-]{1,63}). */
export function certificateIdFor(requestId: string): string {
  return CERTIFICATE_ID_PREFIX + apiRequestId(requestId);
}

/** Google CAS as the gateway's CA service. */
export class CloudCas implements CertificateAuthorityService {
  readonly type = 'cloudcas';
  // Google CAS dedupes create and revoke calls on requestId (and certificateId is unique in the pool).
  readonly idempotent = true;

  private token?: { value: string; refreshAt: number };
  private tokenInflight?: Promise<string>;
  private roots?: { pem: string; at: number };
  private readonly endpoint: string;

  private constructor(
    readonly config: CasConfigOf<'cloudcas'>,
    private readonly account: ServiceAccountKey,
    private readonly http: CasHttpClient,
    /** serial -> the certificate's resource name (and this gateway's revocation of it), in the gateway store. */
    private readonly certs: Collection<CloudCasCertRecord>,
    private readonly log: Logger,
  ) {
    this.endpoint = config.endpoint.replace(/\/+$/, '');
  }

  /** Reads the credentials file (and caFile) once; a file that is not a service-account key fails here, naming the file and the YAML path. */
  static async create(config: CasConfigOf<'cloudcas'>, ctx: CasContext): Promise<CloudCas> {
    const index = ctx.topology.nodes.findIndex((n) => n.id === ctx.nodeId);
    const yamlPath = (field: string) => `nodes[${index}].cas.${field}`;
    const configError = (field: string, message: string): never => {
      throw new TopologyError(ctx.topology.source, [{ path: yamlPath(field), message }]);
    };
    const credentialsPath = ctx.topology.resolvePath(config.credentialsFile);
    const account = await loadServiceAccount(credentialsPath, (m) => configError('credentialsFile', m));
    let ca: Buffer | undefined;
    if (config.caFile) {
      const caPath = ctx.topology.resolvePath(config.caFile);
      try {
        ca = await readFile(caPath);
      } catch (e) {
        configError('caFile', `cannot read ${caPath}: ${(e as Error).message}`);
      }
      if (pemToDer(ca!.toString('utf8'), 'CERTIFICATE').length === 0) configError('caFile', `${caPath} holds no PEM CERTIFICATE`);
    }
    const log = ctx.log.child({ cas: 'cloudcas' });
    const http = new CasHttpClient({ service: SERVICE, timeoutMs: parseDuration(config.timeout), ...(ca ? { ca } : {}), log });
    log.info({ caPool: config.caPool, endpoint: config.endpoint, serviceAccount: account.clientEmail, credentialsFile: credentialsPath }, 'Google CAS backend configured');
    return new CloudCas(config, account, http, ctx.db.collection<CloudCasCertRecord>('cas-cloudcas-certs'), log);
  }

  async createCertificate(req: CreateCertificateRequest): Promise<CreateCertificateResponse> {
    const requestId = apiRequestId(req.requestId);
    const certificateId = certificateIdFor(req.requestId);
    const pemCsr = derToPem(req.csrDer, 'CERTIFICATE REQUEST');
    const query = new URLSearchParams({
      certificateId,
      requestId,
      // The CA's id in the pool; a full resource name (…/certificateAuthorities/<id>) is cut to its id, as step-ca does.
      ...(this.config.certificateAuthority ? { issuingCertificateAuthorityId: this.config.certificateAuthority.split('/').at(-1)! } : {}),
    });
    // The requester's notBefore is not passed: requestedNotBeforeTime is refused unless the pool allows it.
    if (req.notBefore) this.log.debug({ notBefore: req.notBefore.toISOString() }, 'requested notBefore not passed to Google CAS (the pool decides)');
    // Certificate.lifetime is a google.protobuf.Duration in JSON: seconds with an "s" suffix.
    const lifetime = `${Math.max(1, Math.round(req.lifetimeMs / 1000))}s`;
    // POST /v1/{parent=projects/*/locations/*/caPools/*}/certificates (certificates.create).
    const res = await this.call('create', 'POST', `${this.endpoint}/v1/${this.config.caPool}/certificates?${query}`, { pemCsr, lifetime });
    let cert: ApiCertificate;
    if (res.status === 200) {
      cert = res.json<ApiCertificate>();
    } else if (res.status === 409 && apiError(res).status === 'ALREADY_EXISTS') {
      // The certificate id is this request's: created by an earlier call for it whose requestId
      // window has passed. Read it back (certificates.get) instead of issuing a second one.
      cert = await this.existing(certificateId, pemCsr);
    } else {
      throw this.answerError('certificate', res);
    }
    const issued = this.parseIssued(cert);
    const record: CloudCasCertRecord = {
      serial: issued.serial,
      name: cert.name ?? `${this.config.caPool}/certificates/${certificateId}`,
      requestId,
      notAfter: issued.notAfter.toISOString(),
      createdAt: new Date().toISOString(),
    };
    // Recorded before the certificate leaves this call: revocation finds its resource name by serial.
    await this.certs.put(issued.serial, record);
    this.log.info({ serial: issued.serial, name: record.name, requestId, lifetime }, 'certificate created at Google CAS');
    return issued;
  }

  async revokeCertificate(req: RevokeCertificateRequest): Promise<RevokeCertificateResponse> {
    const serial = normalizeSerial(req.serial);
    const rec = await this.certs.get(serial);
    if (!rec) throw new RaError('malformed', { detail: `the certificate ${serial} was not issued by this CA service` });
    const reason = REVOCATION_REASONS[req.reason];
    if (!reason) throw new RaError('badRevocationReason', { detail: `Google CAS has no revocation reason for code ${req.reason} (RFC 5280 removeFromCRL)` });
    const requestId = apiRequestId(req.requestId);
    const first = rec.revocation?.requestId === requestId ? rec.revocation : undefined;
    // POST /v1/{name=projects/*/locations/*/caPools/*/certificates/*}:revoke with RevokeCertificateRequest.
    const res = await this.call('revoke', 'POST', `${this.endpoint}/v1/${rec.name}:revoke`, { reason, requestId });
    if (res.status === 200) {
      const cert = res.json<ApiCertificate>();
      const revokedAt = first?.revokedAt ?? isoOrNow(cert.revocationDetails?.revocationTime);
      const revocation = { requestId, reason: first?.reason ?? req.reason, revokedAt };
      await this.certs.put(serial, { ...rec, revocation });
      this.log.info({ serial, name: rec.name, reason, requestId }, 'certificate revoked at Google CAS');
      return { serial, reason: revocation.reason, revokedAt: new Date(revokedAt) };
    }
    const err = apiError(res);
    if (res.status === 400 && err.status === 'FAILED_PRECONDITION') {
      // The API refuses to revoke a revoked certificate. When this very request revoked it (its requestId
      // window has passed), that is the first answer again; otherwise another request did.
      if (first) return { serial, reason: first.reason, revokedAt: new Date(first.revokedAt) };
      this.log.info({ serial, name: rec.name, message: err.message }, 'certificate already revoked at Google CAS');
      throw new RaError('alreadyRevoked', { detail: `the certificate ${serial} has already been revoked` });
    }
    throw this.answerError('revocation', res);
  }

  async rootsPem(): Promise<string> {
    if (this.roots && Date.now() - this.roots.at < ROOTS_CACHE_MS) return this.roots.pem;
    try {
      // POST /v1/{caPool=projects/*/locations/*/caPools/*}:fetchCaCerts -> FetchCaCertsResponse {caCerts: [CertChain]}.
      const res = await this.call('fetchCaCerts', 'POST', `${this.endpoint}/v1/${this.config.caPool}:fetchCaCerts`, {});
      if (res.status !== 200) throw this.answerError('trust anchor', res);
      const body = res.json<{ caCerts?: Array<{ certificates?: string[] }> }>();
      // Each chain runs from a CA of the pool to its root: the last certificate is the trust anchor.
      const anchors = new Map<string, string>();
      for (const chain of body.caCerts ?? []) {
        const last = chain.certificates?.at(-1);
        if (!last) continue;
        for (const der of pemToDer(last, 'CERTIFICATE')) anchors.set(fingerprint(der), derToPem(der, 'CERTIFICATE'));
      }
      if (anchors.size === 0) throw new RaError('serverInternal', { reason: 'cas-config', detail: `the CA pool ${this.config.caPool} has no CA certificates (no enabled, disabled or staged CA)` });
      const pem = [...anchors.values()].join('');
      this.roots = { pem, at: Date.now() };
      return pem;
    } catch (e) {
      // A passing failure does not take the trust anchors away once they were fetched.
      if (this.roots) {
        this.log.warn({ err: e }, 'fetchCaCerts failed; serving the trust anchors fetched before');
        return this.roots.pem;
      }
      throw e;
    }
  }

  /** certificates.get of a certificate this gateway created; it must be for the same CSR. */
  private async existing(certificateId: string, pemCsr: string): Promise<ApiCertificate> {
    const res = await this.call('get', 'GET', `${this.endpoint}/v1/${this.config.caPool}/certificates/${certificateId}`);
    if (res.status !== 200) throw this.answerError('certificate', res);
    const cert = res.json<ApiCertificate>();
    if (cert.pemCsr !== undefined && cert.pemCsr.replace(/\s+/g, '') !== pemCsr.replace(/\s+/g, '')) {
      this.log.error({ certificateId, name: cert.name }, 'certificate id taken by a certificate for another CSR');
      throw new RaError('serverInternal', {
        reason: 'cas-refused',
        detail: `the CA service (${SERVICE}) already holds a different certificate under this request's id; the operator must check the CA pool`,
      });
    }
    return cert;
  }

  /** The chain (leaf, then intermediates), serial and notAfter of an issued Certificate. */
  private parseIssued(cert: ApiCertificate): CreateCertificateResponse {
    const bad = (what: string, cause?: unknown): never => {
      throw new RaError('serverInternal', {
        reason: 'cas-outcome-unknown',
        detail: `the CA service (${SERVICE}) answered with an unusable certificate; the operator must check the CA pool`,
        cause: cause ?? new Error(what),
      });
    };
    if (!cert.pemCertificate) bad('the Certificate has no pemCertificate');
    let leaf: X509Certificate;
    let chain: X509Certificate[];
    try {
      leaf = new X509Certificate(cert.pemCertificate!);
      // pemCertificateChain is in issuer-to-root order (RFC 5246); the root is left out of the chain
      // handed to clients (they hold it as a trust anchor), as step-ca's getCertificateAndChain does.
      chain = (cert.pemCertificateChain ?? []).flatMap((p) => pemToDer(p, 'CERTIFICATE')).map((d) => new X509Certificate(d));
    } catch (e) {
      return bad('the certificate or its chain does not parse', e);
    }
    const top = chain.at(-1);
    if (top && top.subject === top.issuer && top.checkIssued(top)) chain = chain.slice(0, -1);
    const leafSerial = normalizeSerial(leaf.serialNumber);
    const hex = cert.certificateDescription?.subjectDescription?.hexSerialNumber;
    const serial = hex ? normalizeSerial(hex) : leafSerial;
    if (serial !== leafSerial) bad(`hexSerialNumber ${hex} is not the certificate's serial ${leafSerial}`);
    const chainPem = [leaf, ...chain].map((c) => derToPem(c.raw, 'CERTIFICATE')).join('');
    return { chainPem, serial, notAfter: new Date(leaf.validTo) };
  }

  /**
   * One API call with the access token; a 401 (the token expired or was revoked early, RFC 6750 §3.1
   * invalid_token) gets one fresh token and one more try. Every call here is safe to repeat
   * (requestId dedupe, or a read), so ambiguous failures are retried by the HTTP client.
   */
  private async call(what: string, method: 'GET' | 'POST', url: string, json?: unknown): Promise<CasHttpResponse> {
    const send = (token: string) =>
      this.http.request({ method, url, headers: { authorization: `Bearer ${token}` }, ...(json !== undefined ? { json } : {}), idempotent: true, what });
    const token = await this.accessToken();
    const res = await send(token);
    if (res.status !== 401) return res;
    this.log.warn({ call: what, message: apiError(res).message }, 'Google CAS refused the access token; fetching a new one');
    return send(await this.accessToken(token));
  }

  /** The cached access token, or a new one; `rejected` is a token the API refused (never returned again). */
  private async accessToken(rejected?: string): Promise<string> {
    const t = this.token;
    if (t && t.value !== rejected && Date.now() < t.refreshAt) return t.value;
    if (t && t.value === rejected) this.token = undefined;
    // One token request at a time; concurrent callers share it.
    this.tokenInflight ??= this.fetchToken().finally(() => (this.tokenInflight = undefined));
    return this.tokenInflight;
  }

  /** RFC 7523 §2.1 JWT bearer grant at the service account's token_uri. */
  private async fetchToken(): Promise<string> {
    const a = this.account;
    const now = Math.floor(Date.now() / 1000);
    // Google's service-account flow: iss = client_email, scope, aud = token_uri, iat, exp <= iat + 1 h; RS256, kid = private_key_id.
    const assertion = await new SignJWT({ scope: CLOUD_PLATFORM_SCOPE })
      .setProtectedHeader({ alg: 'RS256', typ: 'JWT', ...(a.privateKeyId ? { kid: a.privateKeyId } : {}) })
      .setIssuer(a.clientEmail)
      .setAudience(a.tokenUri)
      .setIssuedAt(now)
      .setExpirationTime(now + ASSERTION_LIFETIME_S)
      .sign(a.privateKey);
    const res = await this.http.request({ method: 'POST', url: a.tokenUri, form: { grant_type: JWT_BEARER_GRANT, assertion }, idempotent: true, what: 'token' });
    if (res.status !== 200) {
      let body: { error?: string; error_description?: string } = {};
      try {
        body = JSON.parse(res.body.toString('utf8')) as typeof body;
      } catch {
        // not JSON: the status says enough
      }
      this.log.error({ status: res.status, error: body.error, description: body.error_description, serviceAccount: a.clientEmail, tokenUri: a.tokenUri }, 'the token endpoint refused the service account');
      // RFC 6749 §5.2: invalid_grant / invalid_client / unauthorized_client are credential problems.
      if (res.status === 400 || res.status === 401 || res.status === 403) throw casAnswerError(SERVICE, 'token', 401, undefined);
      throw casAnswerError(SERVICE, 'token', res.status, undefined);
    }
    const body = res.json<{ access_token?: string; expires_in?: number; token_type?: string }>();
    if (!body.access_token || (body.token_type && body.token_type.toLowerCase() !== 'bearer')) {
      throw new RaError('serverInternal', { reason: 'cas-credentials', detail: `the token endpoint of ${SERVICE} answered without a bearer token; the operator must check the credentials`, cause: new Error(JSON.stringify({ token_type: body.token_type })) });
    }
    const lifetimeMs = (typeof body.expires_in === 'number' && body.expires_in > 0 ? body.expires_in : 3600) * 1000;
    const got = Date.now();
    this.token = { value: body.access_token, refreshAt: got + lifetimeMs - Math.min(TOKEN_REFRESH_MARGIN_MS, lifetimeMs / 4) };
    this.log.debug({ expiresInS: lifetimeMs / 1000 }, 'access token fetched');
    return body.access_token;
  }

  /** A definite refusal of the API as the gateway's error; the message is Google's error.message. */
  private answerError(what: string, res: CasHttpResponse): RaError {
    const err = apiError(res);
    this.log.warn({ call: what, status: res.status, code: err.status, message: err.message }, 'Google CAS refused the request');
    // 400 with FAILED_PRECONDITION (e.g. no enabled CA in the pool) is the pool's state, not the CSR's fault.
    if (res.status === 400 && err.status === 'FAILED_PRECONDITION') {
      return new RaError('serverInternal', { reason: 'cas-refused', detail: `the CA service (${SERVICE}) cannot serve the ${what} request now: ${(err.message ?? 'failed precondition').slice(0, 300)}` });
    }
    return casAnswerError(SERVICE, what, res.status, err.message);
  }
}

function apiError(res: CasHttpResponse): { code?: number; message?: string; status?: string } {
  try {
    return (JSON.parse(res.body.toString('utf8')) as ApiError).error ?? {};
  } catch {
    return {};
  }
}

function isoOrNow(t: string | undefined): string {
  const ms = t ? Date.parse(t) : NaN;
  return new Date(Number.isFinite(ms) ? ms : Date.now()).toISOString();
}

/** Reads and checks a service-account JSON key file (type "service_account", client_email, private_key, token_uri). */
async function loadServiceAccount(path: string, fail: (message: string) => never): Promise<ServiceAccountKey> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    return fail(`cannot read the credentials file ${path}: ${(e as Error).message}`);
  }
  let json: Record<string, unknown>;
  try {
    json = JSON.parse(text) as Record<string, unknown>;
  } catch {
    return fail(`the credentials file ${path} is not JSON; expected a Google service-account key (type "service_account")`);
  }
  if (json === null || typeof json !== 'object' || json.type !== 'service_account') {
    const type = json && typeof json === 'object' && typeof json.type === 'string' ? `"${json.type}"` : 'missing';
    return fail(`the credentials file ${path} is not a Google service-account key: its type is ${type}, expected "service_account"`);
  }
  const str = (k: string): string | undefined => (typeof json[k] === 'string' && (json[k] as string).length > 0 ? (json[k] as string) : undefined);
  const clientEmail = str('client_email');
  const pem = str('private_key');
  if (!clientEmail) return fail(`the service-account key ${path} has no client_email`);
  if (!pem) return fail(`the service-account key ${path} has no private_key`);
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey({ key: pem, format: 'pem' });
  } catch {
    return fail(`the private_key of the service-account key ${path} is not a PEM private key`);
  }
  if (privateKey.asymmetricKeyType !== 'rsa') return fail(`the private_key of the service-account key ${path} is not an RSA key (RS256 assertions need one)`);
  const tokenUri = str('token_uri') ?? DEFAULT_TOKEN_URI;
  if (!/^https?:\/\//.test(tokenUri)) return fail(`the token_uri of the service-account key ${path} is not an http(s) URL`);
  const privateKeyId = str('private_key_id');
  return { clientEmail, privateKey, tokenUri, ...(privateKeyId ? { privateKeyId } : {}) };
}

// step-ca (smallstep/certificates) as the gateway's CA service, over its HTTP API:
//   GET  /root/<sha256>   the root, fetched once without TLS verification and pinned by its hash
//                         (what `step ca bootstrap --fingerprint` does); every other call trusts only it
//   POST /1.0/sign        {csr, ott, notBefore?, notAfter?} -> 201 {crt, ca, certChain}
//   POST /1.0/revoke      {serial (decimal), ott, reasonCode, reason, passive: true} -> 200 {status: "ok"}
//   GET  /provisioners    the JWK provisioner's encryptedKey, when the gateway holds only its password
//   GET  /roots           {crts: [PEM]}
// The one-time token (ott) is a JWT signed by the provisioner's key (JWK provisioner, header kid) or by
// a certificate's key with the chain in the x5c header (X5C provisioner). Errors from step-ca are JSON
// {status, message} (smallstep/certificates errs.ErrorResponse).
//
// step-ca has no idempotency key: signing twice issues two certificates, so `idempotent` is false and
// the gateway never repeats a sign call (callOnce). Revoking is safe to repeat: a second revoke of the
// same serial is answered "already revoked", which this backend maps back to the first answer when it
// was the same request. step-ca refuses a token it has seen (jti), so a retry always carries a new one.

import { createHash, createPrivateKey, createPublicKey, randomBytes, type KeyObject } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { calculateJwkThumbprint, compactDecrypt, SignJWT, type JWK, type JWTPayload } from 'jose';
import { parseDuration, type CasConfigOf } from '../../../shared/config/index.js';
import type { CrlReason } from '../../../shared/envelope/index.js';
import { RaError } from '../../../shared/errors/index.js';
import type { Logger } from '../../../shared/logging/logger.js';
import { derToPem, parseCsr, pemToDer, x509 } from '../../../shared/pki/index.js';
import type { Collection } from '../../../shared/store/index.js';
import { casAnswerError, CasHttpClient, type CasHttpResponse } from './cas-http.js';
import type { CasContext } from './create-cas.js';
import type { CertificateAuthorityService, CreateCertificateRequest, CreateCertificateResponse, RevokeCertificateRequest, RevokeCertificateResponse } from './cas.js';

const SERVICE = 'step-ca';
/** Lifetime of a one-time token (step CLI uses 5 minutes). */
const TOKEN_LIFETIME_S = 300;
/** Upper bound of PBES2 iterations accepted for the encryptedKey (step CLI writes 100000 or 600000). */
const MAX_PBES2_COUNT = 1_000_000;
const PBES2_ALGS = ['PBES2-HS256+A128KW', 'PBES2-HS384+A192KW', 'PBES2-HS512+A256KW'];
/** RFC 5280 §5.3.1 reason names, for step-ca's free-text `reason`. */
const REASON_NAMES: Record<number, string> = {
  0: 'unspecified',
  1: 'keyCompromise',
  2: 'cACompromise',
  3: 'affiliationChanged',
  4: 'superseded',
  5: 'cessationOfOperation',
  6: 'certificateHold',
  8: 'removeFromCRL',
  9: 'privilegeWithdrawn',
  10: 'aACompromise',
};

/** The pinned root as stored in the gateway's DB, keyed by its fingerprint (immutable for a given hash). */
interface PinnedRoot {
  pem: string;
  at: number;
}

/** This gateway's revocation of a serial at step-ca, keyed by serial (hex). */
interface RevokeRecord {
  requestId: string;
  reason: CrlReason;
  /** Set once step-ca answered ok (or "already revoked" to a repeat of this request). */
  revokedAt?: string;
  at: number;
}

/** What signs one token. */
interface TokenSigner {
  key: KeyObject;
  alg: string;
  kid?: string;
  /** base64 DER chain, leaf first (x5c header, RFC 7515 §4.1.6). */
  x5c?: string[];
  /** x5c leaf validity: a certificate signed with it cannot outlive it (smallstep x5c.go profileLimitDuration). */
  notAfter?: Date;
}

type StepcaConfig = CasConfigOf<'stepca'>;

/** The pinned root and the clients that trust only it. */
interface Pinned {
  pem: string;
  cert: x509.X509Certificate;
  http: CasHttpClient;
  /** Without retries of its own (see revokeCertificate). */
  once: CasHttpClient;
}

/** Attempts of one revocation (each with a new token) and the first pause between them. */
const REVOKE_ATTEMPTS = 3;
const REVOKE_BACKOFF_MS = 250;

/** step-ca as the gateway's CA service. */
export class StepCas implements CertificateAuthorityService {
  readonly type = 'stepca';
  readonly idempotent = false;
  private readonly base: URL;
  private readonly fingerprint: string;
  private readonly roots: Collection<PinnedRoot>;
  private readonly revocations: Collection<RevokeRecord>;
  private readonly log: Logger;
  private pinned?: Promise<Pinned>;
  /** The JWK provisioner key decrypted from /provisioners (passwordFile), dropped when step-ca refuses it. */
  private decrypted?: Promise<TokenSigner>;

  private constructor(
    readonly config: StepcaConfig,
    private readonly ctx: CasContext,
  ) {
    this.base = new URL(config.url.replace(/\/+$/, '') + '/');
    this.fingerprint = config.rootFingerprint.toLowerCase();
    this.roots = ctx.db.collection('cas-stepca-root');
    this.revocations = ctx.db.collection('cas-stepca-revoke');
    this.log = ctx.log.child({ cas: SERVICE });
  }

  static async create(config: StepcaConfig, ctx: CasContext): Promise<StepCas> {
    // step-ca serves https only, and the root pin is meaningless over plain http.
    if (!config.url.startsWith('https://')) throw new Error(`nodes["${ctx.nodeId}"].cas.url: step-ca is served over https, got ${config.url}`);
    return new StepCas(config, ctx);
  }

  private get timeoutMs(): number {
    return parseDuration(this.config.timeout);
  }

  private url(path: string): string {
    return new URL(path.replace(/^\//, ''), this.base).toString();
  }

  /** aud of a token for `path` (smallstep config.GetAudiences: https://<dnsName>/1.0/sign; X5C adds #x5c/<name>). */
  private audience(path: '/1.0/sign' | '/1.0/revoke'): string {
    const p = this.config.provisioner;
    return `https://${this.base.host}${path}${p.type === 'x5c' ? `#x5c/${p.name}` : ''}`;
  }

  // --- root pinning -------------------------------------------------------------------------------

  /** The pinned root and the client that trusts only it; bootstrapped once (DB cache, else GET /root/<fp>). */
  private pin(): Promise<Pinned> {
    this.pinned ??= this.bootstrap().catch((e) => {
      this.pinned = undefined;
      throw e;
    });
    return this.pinned;
  }

  private async bootstrap(): Promise<Pinned> {
    let pem = (await this.roots.get(this.fingerprint))?.pem;
    if (pem === undefined || !this.matchesPin(pem)) {
      // The only call without TLS verification: its answer is trusted only if it hashes to the pin.
      const insecure = new CasHttpClient({ service: SERVICE, timeoutMs: this.timeoutMs, tlsInsecure: true, log: this.log });
      const res = await insecure.request({ method: 'GET', url: this.url(`/root/${this.fingerprint}`), idempotent: true, what: 'root bootstrap' });
      if (res.status === 404) {
        throw new RaError('serverInternal', {
          reason: 'cas-config',
          detail: `the step-ca at ${this.config.url} has no root with the configured rootFingerprint ${this.fingerprint}; the gateway does not use it until cas.rootFingerprint is corrected`,
        });
      }
      if (res.status !== 200) throw this.answerError(res, 'root bootstrap');
      const ca = res.json<{ ca?: unknown }>().ca;
      if (typeof ca !== 'string' || !this.matchesPin(ca)) {
        const got = typeof ca === 'string' ? sha256Hex(pemToDer(ca, 'CERTIFICATE')[0] ?? new Uint8Array()) : 'no certificate';
        this.log.error({ expected: this.fingerprint, got }, 'step-ca root does not match the pinned fingerprint: refusing to talk to it');
        throw new RaError('serverInternal', {
          reason: 'cas-config',
          detail: `the step-ca at ${this.config.url} answered with a root that does not match the configured rootFingerprint; the gateway does not talk to it`,
        });
      }
      pem = derToPem(pemToDer(ca, 'CERTIFICATE')[0]!, 'CERTIFICATE');
      await this.roots.put(this.fingerprint, { pem, at: Date.now() });
      this.log.info({ fingerprint: this.fingerprint }, 'step-ca root fetched and pinned');
    }
    return {
      pem,
      cert: new x509.X509Certificate(pem),
      http: new CasHttpClient({ service: SERVICE, timeoutMs: this.timeoutMs, ca: pem, log: this.log }),
      // One attempt per call: revokeCertificate retries itself, each time with a fresh one-time token.
      once: new CasHttpClient({ service: SERVICE, timeoutMs: this.timeoutMs, ca: pem, log: this.log, attempts: 1 }),
    };
  }

  private matchesPin(pem: string): boolean {
    const ders = pemToDer(pem, 'CERTIFICATE');
    return ders.length === 1 && sha256Hex(ders[0]!) === this.fingerprint;
  }

  // --- tokens -------------------------------------------------------------------------------------

  /** The provisioner key and header, read from its files on every call (so rotation needs no restart). */
  private async signer(http: CasHttpClient): Promise<TokenSigner> {
    const p = this.config.provisioner;
    if (p.type === 'x5c') {
      const certPem = await this.readCredential(p.certFile, 'certFile');
      const keyPem = await this.readCredential(p.keyFile, 'keyFile');
      const chain = pemToDer(certPem, 'CERTIFICATE');
      if (chain.length === 0) throw credentialsError(`the x5c certFile ${p.certFile} holds no certificate`);
      const key = parseKey(keyPem, `the x5c keyFile ${p.keyFile}`);
      const leaf = new x509.X509Certificate(chain[0]!);
      const leafKey = createPublicKey({ key: Buffer.from(leaf.publicKey.rawData), format: 'der', type: 'spki' });
      if (!createPublicKey(key).equals(leafKey)) throw credentialsError(`the x5c keyFile ${p.keyFile} is not the key of the certificate in ${p.certFile}`);
      if (leaf.notAfter.getTime() <= Date.now()) throw credentialsError(`the x5c certificate in ${p.certFile} expired at ${leaf.notAfter.toISOString()}`);
      return { key, alg: algorithmOf(key), x5c: chain.map((d) => Buffer.from(d).toString('base64')), notAfter: leaf.notAfter };
    }
    if (p.keyFile !== undefined) {
      const text = await this.readCredential(p.keyFile, 'keyFile');
      const jwk = text.trimStart().startsWith('{') ? parseJwk(text, `the jwk keyFile ${p.keyFile}`) : undefined;
      const key = jwk ? jwkKey(jwk, `the jwk keyFile ${p.keyFile}`) : parseKey(text, `the jwk keyFile ${p.keyFile}`);
      // kid: configured, else the JWK's own, else its RFC 7638 thumbprint (what step CLI sets).
      const kid = p.kid ?? jwk?.kid ?? (await calculateJwkThumbprint(createPublicKey(key).export({ format: 'jwk' }) as JWK, 'sha256'));
      return { key, alg: typeof jwk?.alg === 'string' ? jwk.alg : algorithmOf(key), kid };
    }
    this.decrypted ??= this.decryptProvisionerKey(http).catch((e) => {
      this.decrypted = undefined;
      throw e;
    });
    return this.decrypted;
  }

  /** The JWK provisioner's encryptedKey from GET /provisioners, decrypted with the password in passwordFile. */
  private async decryptProvisionerKey(http: CasHttpClient): Promise<TokenSigner> {
    const p = this.config.provisioner;
    if (p.type !== 'jwk' || p.passwordFile === undefined) throw new Error('unreachable');
    type Listed = { type?: string; name?: string; key?: JWK; encryptedKey?: string };
    let found: Listed | undefined;
    let cursor = '';
    for (let page = 0; page < 100 && !found; page++) {
      const res = await http.request({ method: 'GET', url: this.url(`/provisioners?limit=100${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`), idempotent: true, what: 'provisioners' });
      if (res.status !== 200) throw this.answerError(res, 'provisioners');
      const body = res.json<{ provisioners?: Listed[]; nextCursor?: string }>();
      found = (body.provisioners ?? []).find((x) => x.type === 'JWK' && x.name === p.name && (p.kid === undefined || x.key?.kid === p.kid));
      cursor = body.nextCursor ?? '';
      if (!cursor) break;
    }
    if (!found) throw new RaError('serverInternal', { reason: 'cas-config', detail: `the step-ca has no JWK provisioner named "${p.name}"${p.kid ? ` with kid ${p.kid}` : ''}; the operator must check cas.provisioner` });
    if (!found.encryptedKey) {
      throw new RaError('serverInternal', { reason: 'cas-config', detail: `the step-ca JWK provisioner "${p.name}" publishes no encryptedKey; configure cas.provisioner.keyFile instead of passwordFile` });
    }
    // step CLI reads password files with trailing white space removed.
    const password = (await this.readCredential(p.passwordFile, 'passwordFile')).replace(/\s+$/, '');
    let plain: Uint8Array;
    try {
      // RFC 7518 §4.8 PBES2: the key is wrapped under a key derived from the password.
      ({ plaintext: plain } = await compactDecrypt(found.encryptedKey, new TextEncoder().encode(password), { keyManagementAlgorithms: PBES2_ALGS, maxPBES2Count: MAX_PBES2_COUNT }));
    } catch (e) {
      this.log.error({ err: e, provisioner: p.name }, 'the encryptedKey of the step-ca provisioner could not be decrypted');
      throw credentialsError(`the encryptedKey of the step-ca provisioner "${p.name}" could not be decrypted with the password in ${p.passwordFile}`);
    }
    const jwk = parseJwk(new TextDecoder().decode(plain), `the decrypted key of provisioner "${p.name}"`);
    const key = jwkKey(jwk, `the decrypted key of provisioner "${p.name}"`);
    const kid = p.kid ?? found.key?.kid ?? jwk.kid ?? (await calculateJwkThumbprint(createPublicKey(key).export({ format: 'jwk' }) as JWK, 'sha256'));
    this.log.info({ provisioner: p.name, kid }, 'step-ca provisioner key decrypted from /provisioners');
    return { key, alg: typeof jwk.alg === 'string' ? jwk.alg : typeof found.key?.alg === 'string' ? found.key.alg : algorithmOf(key), kid };
  }

  private async readCredential(path: string, field: string): Promise<string> {
    try {
      return await readFile(this.ctx.topology.resolvePath(path), 'utf8');
    } catch (e) {
      this.log.error({ err: e, path }, `cannot read cas.provisioner.${field}`);
      throw credentialsError(`the gateway cannot read cas.provisioner.${field} (${path})`);
    }
  }

  /** A one-time token (smallstep authority/provisioner: iss, sub, aud, iat, nbf, exp, jti, sans). */
  private async token(signer: TokenSigner, path: '/1.0/sign' | '/1.0/revoke', sub: string, extra: JWTPayload = {}): Promise<string> {
    const now = Math.floor(Date.now() / 1000);
    const header: Record<string, unknown> = { alg: signer.alg, typ: 'JWT' };
    if (signer.kid !== undefined) header.kid = signer.kid;
    if (signer.x5c) header.x5c = signer.x5c;
    try {
      return await new SignJWT({ ...extra, sha: this.fingerprint })
        .setProtectedHeader(header as { alg: string })
        .setIssuer(this.config.provisioner.name)
        .setSubject(sub)
        .setAudience(this.audience(path))
        .setIssuedAt(now)
        .setNotBefore(now)
        .setExpirationTime(now + TOKEN_LIFETIME_S)
        .setJti(randomBytes(32).toString('hex'))
        .sign(signer.key);
    } catch (e) {
      this.log.error({ err: e, alg: signer.alg }, 'the provisioner key cannot sign a token');
      throw credentialsError(`the step-ca provisioner key cannot sign a token with ${signer.alg}`);
    }
  }

  // --- the CA service -----------------------------------------------------------------------------

  async createCertificate(req: CreateCertificateRequest): Promise<CreateCertificateResponse> {
    const { http, cert: root } = await this.pin();
    const csr = await parseCsr(req.csrDer);
    const sans = [...req.dnsNames, ...req.ipAddresses];
    // smallstep commonNameValidator: a CSR CN must equal the token subject; without a CN the first SAN.
    const sub = csr.commonName ?? sans[0];
    if (!sub) throw new RaError('badCSR', { detail: 'the CSR names no identifier' });
    const signer = await this.signer(http);

    const body: Record<string, unknown> = { csr: derToPem(req.csrDer, 'CERTIFICATE REQUEST') };
    let notAfterMs = (req.notBefore?.getTime() ?? Date.now()) + req.lifetimeMs;
    const capped = signer.notAfter !== undefined && notAfterMs > signer.notAfter.getTime();
    if (capped) notAfterMs = signer.notAfter!.getTime();
    if (req.notBefore) {
      body.notBefore = rfc3339(req.notBefore);
      body.notAfter = rfc3339(new Date(notAfterMs));
    } else if (capped) {
      body.notAfter = rfc3339(new Date(notAfterMs));
    } else {
      // Relative to step-ca's clock (api.TimeDuration): no skew between the two machines.
      body.notAfter = `${Math.max(1, Math.round(req.lifetimeMs / 1000))}s`;
    }
    if (capped) this.log.info({ requestId: req.requestId, x5cNotAfter: signer.notAfter!.toISOString() }, 'lifetime capped at the x5c certificate notAfter');
    body.ott = await this.token(signer, '/1.0/sign', sub, { sans });

    const res = await http.request({ method: 'POST', url: this.url('/1.0/sign'), json: body, idempotent: false, what: 'sign' });
    if (res.status !== 201 && res.status !== 200) {
      if (res.status === 401) this.decrypted = undefined;
      throw this.answerError(res, 'sign', req.requestId);
    }
    const signed = res.json<{ crt?: unknown; ca?: unknown; certChain?: unknown }>();
    const pems = Array.isArray(signed.certChain) && signed.certChain.length > 0 ? signed.certChain : [signed.crt, signed.ca].filter((x) => x !== undefined);
    let chain: x509.X509Certificate[];
    try {
      chain = pems.map((p) => {
        if (typeof p !== 'string') throw new Error('not a PEM string');
        return new x509.X509Certificate(pemToDer(p, 'CERTIFICATE')[0]!);
      });
      if (chain.length === 0) throw new Error('no certificate');
    } catch (e) {
      // A certificate may exist at step-ca, but the gateway cannot hand it out.
      throw new RaError('serverInternal', { reason: 'cas-outcome-unknown', detail: 'the CA service (step-ca) answered the sign call with no readable certificate: start a new order', cause: e });
    }
    if (!(await chainsTo(chain, root))) {
      this.log.error({ requestId: req.requestId, serial: chain[0]!.serialNumber }, 'step-ca returned a certificate that does not chain to the pinned root');
      throw new RaError('serverInternal', { reason: 'cas-config', detail: 'the certificate step-ca returned does not chain to the pinned root (cas.rootFingerprint); it is not handed out' });
    }
    const leaf = chain[0]!;
    return {
      chainPem: chain.map((c) => derToPem(new Uint8Array(c.rawData), 'CERTIFICATE')).join(''),
      serial: normalizeSerial(leaf.serialNumber),
      notAfter: leaf.notAfter,
    };
  }

  async revokeCertificate(req: RevokeCertificateRequest): Promise<RevokeCertificateResponse> {
    const serial = normalizeSerial(req.serial);
    if (!/^[0-9a-f]+$/.test(serial)) throw new RaError('malformed', { detail: `${req.serial} is not a hex serial number` });
    return this.ctx.locks.run(`cas-stepca-revoke:${serial}`, async () => {
      const prior = await this.revocations.get(serial);
      // The same request again (a redelivery): the first answer.
      if (prior?.requestId === req.requestId && prior.revokedAt) return { serial, reason: prior.reason, revokedAt: new Date(prior.revokedAt) };
      // The first request through this gateway to revoke the serial claims it before the call: should the
      // answer be lost and a retry be told "already revoked", that was this request's own revocation.
      if (!prior) await this.revocations.put(serial, { requestId: req.requestId, reason: req.reason, at: Date.now() });
      const { http, once } = await this.pin();
      // step-ca keys revocations by the decimal serial (x509.Certificate.SerialNumber.String()).
      const decimal = BigInt(`0x${serial}`).toString(10);
      let res: CasHttpResponse | undefined;
      for (let i = 0; !res; i++) {
        const signer = await this.signer(http);
        try {
          res = await once.request({
            method: 'POST',
            url: this.url('/1.0/revoke'),
            // Only passive revocation (recorded in step-ca's DB) exists in smallstep/certificates api/revoke.go.
            json: { serial: decimal, ott: await this.token(signer, '/1.0/revoke', decimal), reasonCode: req.reason, reason: REASON_NAMES[req.reason] ?? 'unspecified', passive: true },
            // Repeating a revocation changes nothing at step-ca: an unknown outcome is transient, not final.
            idempotent: true,
            what: 'revoke',
          });
        } catch (e) {
          // step-ca records every token it accepted (jti): a retry must carry a new one, or it is a 401.
          if (!(e instanceof RaError && e.reason === 'cas-unavailable') || i + 1 >= REVOKE_ATTEMPTS) throw e;
          this.log.warn({ err: e.cause ?? e, serial, attempt: i + 1 }, 'step-ca revoke call failed; retrying with a new token');
          await new Promise((r) => setTimeout(r, REVOKE_BACKOFF_MS * 2 ** i * (0.75 + Math.random() * 0.5)));
        }
      }
      if (res.status === 200) {
        const revokedAt = new Date();
        // This request revoked it: it owns the record from now on (an earlier claimant that never got through does not).
        await this.revocations.put(serial, { requestId: req.requestId, reason: req.reason, revokedAt: revokedAt.toISOString(), at: Date.now() });
        return { serial, reason: req.reason, revokedAt };
      }
      const message = errorMessage(res);
      if (res.status === 400 && /already revoked/i.test(message ?? '')) {
        const mine = await this.revocations.get(serial);
        if (mine?.requestId === req.requestId) {
          // An earlier attempt of this very request reached step-ca (a retry after a lost answer).
          const revokedAt = new Date(mine.revokedAt ?? mine.at);
          await this.revocations.put(serial, { ...mine, revokedAt: revokedAt.toISOString() });
          return { serial, reason: mine.reason, revokedAt };
        }
        throw new RaError('alreadyRevoked', { detail: `the certificate ${serial} is already revoked at the CA service (step-ca)` });
      }
      if (res.status === 401) this.decrypted = undefined;
      if (res.status === 400) {
        this.log.warn({ serial, status: res.status, message }, 'step-ca refused the revocation');
        throw new RaError('malformed', { detail: `the CA service (step-ca) refused the revocation${message ? `: ${message.slice(0, 300)}` : ''}` });
      }
      throw this.answerError(res, 'revoke');
    });
  }

  /** The CA's roots (GET /roots), the pinned one first; the pinned root alone when step-ca cannot be reached. */
  async rootsPem(): Promise<string> {
    const { http, pem } = await this.pin();
    try {
      const res = await http.request({ method: 'GET', url: this.url('/roots'), idempotent: true, what: 'roots' });
      if (res.status !== 200) throw this.answerError(res, 'roots');
      const crts = res.json<{ crts?: unknown[] }>().crts ?? [];
      const others = crts
        .filter((c): c is string => typeof c === 'string')
        .flatMap((c) => pemToDer(c, 'CERTIFICATE'))
        .filter((d) => sha256Hex(d) !== this.fingerprint)
        .map((d) => derToPem(d, 'CERTIFICATE'));
      return [pem, ...others].join('');
    } catch (e) {
      this.log.warn({ err: e }, 'step-ca /roots unavailable: serving the pinned root only');
      return pem;
    }
  }

  /** A non-success answer as RaError; step-ca's own message is logged, and kept in the detail only where casAnswerError puts it. */
  private answerError(res: CasHttpResponse, what: string, requestId?: string): RaError {
    const message = errorMessage(res);
    this.log.warn({ call: what, status: res.status, message, ...(requestId ? { requestId } : {}) }, 'step-ca refused the call');
    return casAnswerError(SERVICE, what, res.status, message);
  }
}

/** step-ca's error body {status, message} (smallstep errs.ErrorResponse); undefined when not JSON. */
function errorMessage(res: CasHttpResponse): string | undefined {
  try {
    const m = (JSON.parse(res.body.toString('utf8')) as { message?: unknown }).message;
    return typeof m === 'string' && m.length > 0 ? m : undefined;
  } catch {
    return undefined;
  }
}

function credentialsError(detail: string): RaError {
  return new RaError('serverInternal', { reason: 'cas-credentials', detail: `${detail}; the operator must check the gateway's step-ca credentials` });
}

function sha256Hex(der: Uint8Array): string {
  return createHash('sha256').update(der).digest('hex');
}

/** Lower-case hex without DER sign padding (as the builtin CA and the edges use serials). */
function normalizeSerial(hex: string): string {
  let s = hex.toLowerCase().replace(/[^0-9a-f]/g, '');
  while (s.length > 2 && s.startsWith('00')) s = s.slice(2);
  return s.length % 2 ? `0${s}` : s;
}

/** RFC 3339 in whole seconds (api.TimeDuration parses time.RFC3339). */
function rfc3339(d: Date): string {
  return new Date(Math.floor(d.getTime() / 1000) * 1000).toISOString().replace(/\.000Z$/, 'Z');
}

function parseKey(pem: string, what: string): KeyObject {
  try {
    const key = createPrivateKey(pem);
    return key;
  } catch (e) {
    throw credentialsError(`${what} is not a readable unencrypted private key (${(e as Error).message})`);
  }
}

function parseJwk(text: string, what: string): JWK {
  try {
    const j = JSON.parse(text) as JWK;
    if (typeof j !== 'object' || j === null || typeof j.kty !== 'string') throw new Error('no kty');
    return j;
  } catch (e) {
    throw credentialsError(`${what} is not a JWK (${(e as Error).message})`);
  }
}

function jwkKey(jwk: JWK, what: string): KeyObject {
  try {
    const key = createPrivateKey({ key: jwk as import('node:crypto').JsonWebKey, format: 'jwk' });
    return key;
  } catch (e) {
    throw credentialsError(`${what} is not a private JWK (${(e as Error).message})`);
  }
}

/** RFC 7518 §3.1 alg for a key: ES256/384/512 by curve, RS256, PS256, EdDSA. */
function algorithmOf(key: KeyObject): string {
  switch (key.asymmetricKeyType) {
    case 'ec': {
      const curve = key.asymmetricKeyDetails?.namedCurve;
      if (curve === 'prime256v1' || curve === 'P-256') return 'ES256';
      if (curve === 'secp384r1' || curve === 'P-384') return 'ES384';
      if (curve === 'secp521r1' || curve === 'P-521') return 'ES512';
      throw credentialsError(`the provisioner key is on an unsupported curve (${curve})`);
    }
    case 'rsa':
      return 'RS256';
    case 'rsa-pss':
      return 'PS256';
    case 'ed25519':
      return 'EdDSA';
    default:
      throw credentialsError(`the provisioner key type ${key.asymmetricKeyType} cannot sign step-ca tokens`);
  }
}

/** Each certificate is signed by the next, the last by the pinned root (signatures only: step-ca has just issued it). */
async function chainsTo(chain: x509.X509Certificate[], root: x509.X509Certificate): Promise<boolean> {
  const path = chain[chain.length - 1]!.equal(root) ? chain : [...chain, root];
  for (let i = 0; i < path.length - 1; i++) {
    if (!(await path[i]!.verify({ publicKey: path[i + 1]!, signatureOnly: true }))) return false;
  }
  return true;
}

import { createHash, createPrivateKey, createPublicKey, webcrypto, type KeyObject } from 'node:crypto';
import { certificateFacts, derToPem, leafDer, pemToDer, x509 } from '../../../shared/pki/index.js';
import type { Recipient } from './cms.js';
import type { ScepRaRecord, ScepStore } from './scep-store.js';

// The edge's SCEP RA identity (RFC 8894 §2.1: an RA between device and CA). RAs never sign
// certificates: the RA key is an RSA key the edge makes, and its certificate is issued by the mesh CA
// through the normal envelope path (a 'scep-ra' request for scep.raName). The RA key decrypts the
// devices' pkcsPKIEnvelope and signs CertRep; GetCACert serves the RA certificate with its CA chain.
// A new RA certificate is asked for after two thirds of the current one's lifetime; the previous key
// still decrypts requests made with the old certificate until that one expires.

const RSA = { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256', publicExponent: new Uint8Array([1, 0, 1]), modulusLength: 2048 } as const;

export interface RaCertificate {
  /** The RA certificate (DER). */
  cert: Uint8Array;
  key: KeyObject;
  /** RA certificate first, then the CA chain from the mesh (DER). */
  chain: Uint8Array[];
  notBefore: Date;
  notAfter: Date;
}

function loaded(rec: ScepRaRecord): RaCertificate | undefined {
  if (!rec.chainPem) return undefined;
  const chain = pemToDer(rec.chainPem, 'CERTIFICATE');
  const facts = certificateFacts(chain[0]!);
  return { cert: chain[0]!, key: createPrivateKey(rec.keyPem), chain, notBefore: facts.notBefore, notAfter: facts.notAfter };
}

export class ScepRaIdentity {
  private cur?: RaCertificate;
  private prev?: RaCertificate;

  constructor(
    private readonly store: ScepStore,
    readonly raName: string,
  ) {}

  async load(): Promise<void> {
    const cur = await this.store.ra.get('current');
    const prev = await this.store.ra.get('previous');
    this.cur = cur ? loaded(cur) : undefined;
    this.prev = prev ? loaded(prev) : undefined;
  }

  /** The RA certificate in use (undefined until the mesh CA issued the first one). */
  get current(): RaCertificate | undefined {
    return this.cur;
  }

  /** Keys that may decrypt a device's request: the current RA certificate and, until it expires, the previous one. */
  recipients(now = Date.now()): Recipient[] {
    return [this.cur, this.prev].filter((r): r is RaCertificate => !!r && (r === this.cur || r.notAfter.getTime() > now)).map((r) => ({ cert: r.cert, key: r.key }));
  }

  /** Whether to ask the mesh for an RA certificate now: none yet, or two thirds of the current lifetime gone. */
  async due(now = Date.now()): Promise<boolean> {
    if (await this.store.ra.get('next')) return false;
    if (!this.cur) return true;
    const life = this.cur.notAfter.getTime() - this.cur.notBefore.getTime();
    return now >= this.cur.notBefore.getTime() + (life * 2) / 3;
  }

  /** A fresh RSA key and its PKCS #10 request for raName (the key is stored with the request by the caller). */
  async newRequest(): Promise<{ record: ScepRaRecord; csrDer: Uint8Array; spkiThumbprint: string }> {
    const keys = (await webcrypto.subtle.generateKey(RSA, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
    const csr = await x509.Pkcs10CertificateRequestGenerator.create({
      name: `CN=${this.raName}`,
      keys,
      signingAlgorithm: RSA,
      extensions: [
        new x509.SubjectAlternativeNameExtension([{ type: 'dns', value: this.raName }]),
        // RFC 8894 §2.2: an RA certificate used for both signing and key transport.
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
      ],
    });
    const pkcs8 = new Uint8Array(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey));
    const spki = new Uint8Array(await webcrypto.subtle.exportKey('spki', keys.publicKey));
    return {
      record: { keyPem: derToPem(pkcs8, 'PRIVATE KEY'), requestedAt: new Date().toISOString() },
      csrDer: new Uint8Array(csr.rawData),
      spkiThumbprint: createHash('sha256').update(spki).digest('base64url'),
    };
  }

  /**
   * The mesh CA's answer to the pending request: the chain must certify the requested key. The
   * current certificate becomes the previous one. Returns false when no request is pending or the
   * certificate is not for its key.
   */
  async issued(envelopeId: string, chainPem: string): Promise<boolean> {
    const next = await this.store.ra.get('next');
    if (!next || next.envelopeId !== envelopeId) return false;
    const leaf = leafDer(chainPem);
    const certified = createPublicKey({ key: Buffer.from(certificateFacts(leaf).spki), format: 'der', type: 'spki' });
    if (!certified.equals(createPublicKey(createPrivateKey(next.keyPem)))) return false;
    const cur = await this.store.ra.get('current');
    const done: ScepRaRecord = { keyPem: next.keyPem, chainPem, requestedAt: next.requestedAt, notAfter: certificateFacts(leaf).notAfter.toISOString() };
    await this.store.db.batch([
      ...(cur ? [{ coll: this.store.ra as never, type: 'put' as const, key: 'previous', value: cur }] : []),
      { coll: this.store.ra as never, type: 'put', key: 'current', value: done },
      { coll: this.store.ra as never, type: 'del', key: 'next' },
    ]);
    await this.load();
    return true;
  }

  /** The pending request was refused or expired: forget it (a new one is asked for later). */
  async dropRequest(envelopeId: string): Promise<void> {
    const next = await this.store.ra.get('next');
    if (next?.envelopeId === envelopeId) await this.store.ra.del('next');
  }
}

import {
  createCipheriv,
  createDecipheriv,
  createHash,
  createPublicKey,
  constants as cryptoConstants,
  privateDecrypt,
  publicEncrypt,
  randomBytes,
  sign as cryptoSign,
  timingSafeEqual,
  verify as cryptoVerify,
  type KeyObject,
} from 'node:crypto';
import { AsnConvert, OctetString } from '@peculiar/asn1-schema';
import {
  Attribute,
  CertificateChoices,
  CertificateSet,
  ContentInfo,
  EncapsulatedContent,
  EncapsulatedContentInfo,
  EncryptedContent,
  EncryptedContentInfo,
  EnvelopedData,
  IssuerAndSerialNumber,
  KeyTransRecipientInfo,
  RecipientIdentifier,
  RecipientInfo,
  RecipientInfos,
  SignedData,
  SignerIdentifier,
  SignerInfo,
  SignerInfos,
  DigestAlgorithmIdentifiers,
  id_data,
  id_envelopedData,
  id_signedData,
} from '@peculiar/asn1-cms';
import { AlgorithmIdentifier, Certificate } from '@peculiar/asn1-x509';
import { readTlv, type Tlv } from '../../../shared/pki/der.js';

// CMS (RFC 5652) as SCEP (RFC 8894 §3) uses it: SignedData around an EnvelopedData, key transport
// with RSA (PKCS #1 v1.5, RFC 8017 §7.2), content encryption with AES-CBC or triple DES, and the
// degenerate certificates-only SignedData. Real crypto from node:crypto; ASN.1 by @peculiar/asn1-cms.

export const OID = {
  contentType: '1.2.840.113549.1.9.3',
  messageDigest: '1.2.840.113549.1.9.4',
  signingTime: '1.2.840.113549.1.9.5',
  challengePassword: '1.2.840.113549.1.9.7',
  rsaEncryption: '1.2.840.113549.1.1.1',
  sha1: '1.3.14.3.2.26',
  sha256: '2.16.840.1.101.3.4.2.1',
  sha384: '2.16.840.1.101.3.4.2.2',
  sha512: '2.16.840.1.101.3.4.2.3',
  aes128cbc: '2.16.840.1.101.3.4.1.2',
  aes192cbc: '2.16.840.1.101.3.4.1.22',
  aes256cbc: '2.16.840.1.101.3.4.1.42',
  desEde3cbc: '1.2.840.113549.3.7',
  desCbc: '1.3.14.3.2.7',
} as const;

const DIGESTS: Record<string, string> = { [OID.sha1]: 'sha1', [OID.sha256]: 'sha256', [OID.sha384]: 'sha384', [OID.sha512]: 'sha512' };
/** RFC 8017 Appendix A.2.4: sha*WithRSAEncryption; RFC 5652 §10.1.2 also allows rsaEncryption with the digest algorithm. */
const RSA_SIGNATURES: Record<string, string | undefined> = {
  [OID.rsaEncryption]: undefined,
  '1.2.840.113549.1.1.5': 'sha1',
  '1.2.840.113549.1.1.11': 'sha256',
  '1.2.840.113549.1.1.12': 'sha384',
  '1.2.840.113549.1.1.13': 'sha512',
};
/** Content encryption algorithms: OpenSSL cipher, key length, IV length. */
const CIPHERS: Record<string, { cipher: string; keyLen: number; legacy?: true }> = {
  [OID.aes128cbc]: { cipher: 'aes-128-cbc', keyLen: 16 },
  [OID.aes192cbc]: { cipher: 'aes-192-cbc', keyLen: 24 },
  [OID.aes256cbc]: { cipher: 'aes-256-cbc', keyLen: 32 },
  [OID.desEde3cbc]: { cipher: 'des-ede3-cbc', keyLen: 24 },
  // Single DES (FIPS 46-3), only with scep.legacyCrypto: OpenSSL 3 keeps it in the legacy provider,
  // so it runs as EDE with K1 = K2 = K3, which is DES itself.
  [OID.desCbc]: { cipher: 'des-ede3-cbc', keyLen: 8, legacy: true },
};

export type ContentCipher = 'aes-128-cbc' | 'aes-192-cbc' | 'aes-256-cbc' | 'des-ede3-cbc';
const CIPHER_OIDS: Record<ContentCipher, string> = {
  'aes-128-cbc': OID.aes128cbc,
  'aes-192-cbc': OID.aes192cbc,
  'aes-256-cbc': OID.aes256cbc,
  'des-ede3-cbc': OID.desEde3cbc,
};

/** Why a CMS message was refused; maps onto SCEP failInfo (RFC 8894 §3.2.1.4). */
export class CmsError extends Error {
  constructor(
    readonly failInfo: 'badAlg' | 'badMessageCheck' | 'badRequest',
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'CmsError';
  }
}

// ---------------------------------------------------------------------------------------------
// DER helpers

function derLength(n: number): Uint8Array {
  if (n < 0x80) return Uint8Array.of(n);
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return Uint8Array.of(0x80 | bytes.length, ...bytes);
}

/** One DER TLV. */
export function tlv(tag: number, content: Uint8Array): Uint8Array {
  return Buffer.concat([Uint8Array.of(tag), derLength(content.length), content]);
}

/** DER PrintableString (X.680 §41.4: letters, digits, space and '()+,-./:=?). */
export function printableString(s: string): Uint8Array {
  if (!/^[A-Za-z0-9 '()+,\-./:=?]*$/.test(s)) throw new CmsError('badRequest', 'not a PrintableString');
  return tlv(0x13, Buffer.from(s, 'ascii'));
}

export function octetString(b: Uint8Array): Uint8Array {
  return tlv(0x04, b);
}

/** Reads a string value (PrintableString, UTF8String, IA5String, T61String, BMPString) of an attribute. */
export function readString(der: Uint8Array): string {
  const { tag, content } = readOne(der);
  if (tag === 0x13 || tag === 0x0c || tag === 0x16 || tag === 0x14) return Buffer.from(content).toString(tag === 0x0c ? 'utf8' : 'latin1');
  if (tag === 0x1e) return Buffer.from(content).swap16().toString('utf16le');
  throw new CmsError('badRequest', `attribute value of ASN.1 tag ${tag} is not a string`);
}

export function readOctets(der: Uint8Array): Uint8Array {
  const { tag, content } = readOne(der);
  if (tag !== 0x04) throw new CmsError('badRequest', 'attribute value is not an OCTET STRING');
  return content;
}

/** The one primitive TLV of `der` (definite length). */
function readOne(der: Uint8Array): { tag: number; content: Uint8Array } {
  if (der.length < 2) throw new CmsError('badRequest', 'truncated ASN.1 value');
  const tag = der[0]!;
  let len = der[1]!;
  let off = 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 4) throw new CmsError('badRequest', 'unsupported ASN.1 length');
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + der[off + i]!;
    off += n;
  }
  if (off + len > der.length) throw new CmsError('badRequest', 'truncated ASN.1 value');
  return { tag, content: der.subarray(off, off + len) };
}

const u8 = (b: ArrayBuffer | Uint8Array): Uint8Array => (b instanceof Uint8Array ? b : new Uint8Array(b));

function parse<T>(der: Uint8Array, type: new () => T, what: string): T {
  try {
    return AsnConvert.parse(der, type);
  } catch (e) {
    throw new CmsError('badRequest', `${what} does not parse`, { cause: e });
  }
}

// ---------------------------------------------------------------------------------------------
// Certificates

export interface CertInfo {
  der: Uint8Array;
  asn: Certificate;
  /** DER of the issuer Name. */
  issuerDer: Uint8Array;
  serial: Uint8Array;
  publicKey: KeyObject;
}

export function certInfo(der: Uint8Array): CertInfo {
  const asn = parse(der, Certificate, 'a certificate');
  let publicKey: KeyObject;
  try {
    publicKey = createPublicKey({ key: Buffer.from(AsnConvert.serialize(asn.tbsCertificate.subjectPublicKeyInfo)), format: 'der', type: 'spki' });
  } catch (e) {
    throw new CmsError('badAlg', 'the certificate key is not usable', { cause: e });
  }
  return { der, asn, issuerDer: u8(AsnConvert.serialize(asn.tbsCertificate.issuer)), serial: u8(asn.tbsCertificate.serialNumber), publicKey };
}

function sameSerial(a: Uint8Array, b: Uint8Array): boolean {
  const strip = (x: Uint8Array) => {
    let i = 0;
    while (i < x.length - 1 && x[i] === 0) i++;
    return Buffer.from(x.subarray(i));
  };
  return strip(a).equals(strip(b));
}

function matchesIssuerSerial(cert: CertInfo, ias: IssuerAndSerialNumber): boolean {
  return sameSerial(cert.serial, u8(ias.serialNumber)) && Buffer.from(cert.issuerDer).equals(Buffer.from(AsnConvert.serialize(ias.issuer)));
}

function issuerAndSerial(cert: CertInfo): IssuerAndSerialNumber {
  return new IssuerAndSerialNumber({ issuer: cert.asn.tbsCertificate.issuer, serialNumber: cert.asn.tbsCertificate.serialNumber });
}

// ---------------------------------------------------------------------------------------------
// SignedData

/**
 * The signed attributes of a SignedData without verifying anything (to answer a message whose
 * algorithms are refused with a CertRep naming its transaction; such an answer changes nothing).
 */
export function peekSignedAttributes(der: Uint8Array): Map<string, Uint8Array[]> | undefined {
  try {
    const raw = rawSignedAttributes(der);
    if (!raw) return undefined;
    const set = raw.slice();
    set[0] = 0x31;
    return new Map(readAttributes(set));
  } catch {
    return undefined;
  }
}

export interface SignedMessage {
  /** The encapsulated content (eContent), undefined when absent. */
  content?: Uint8Array;
  /** The signer's certificate (found in the message's certificates by its SignerIdentifier). */
  signer: CertInfo;
  /** Signed attributes: OID -> DER of each value. */
  attributes: Map<string, Uint8Array[]>;
  /** Hash the signer used ('sha1', 'sha256', ...). */
  digest: string;
}

function unwrapContentInfo(der: Uint8Array, type: string, what: string): Uint8Array {
  const ci = parse(der, ContentInfo, what);
  if (ci.contentType !== type) throw new CmsError('badRequest', `${what}: content type ${ci.contentType}, expected ${type}`);
  return u8(ci.content);
}

function eContentOf(info: EncapsulatedContentInfo): Uint8Array | undefined {
  const e = info.eContent;
  if (!e) return undefined;
  if (e.single) return u8(e.single.buffer);
  if (e.any) {
    // A constructed (BER) OCTET STRING: the concatenated segments.
    const os = AsnConvert.parse(e.any, OctetString);
    return u8(os.buffer);
  }
  return undefined;
}

/**
 * Parses and verifies a CMS SignedData (RFC 5652 §5) with one signer whose certificate is in the
 * message: RSA signature over the DER of the signed attributes (§5.4), which must hold contentType
 * and a messageDigest matching the content. `allowSha1` admits SHA-1 digests.
 */
export function parseSignedMessage(der: Uint8Array, opts: { allowSha1: boolean }): SignedMessage {
  const sd = parse(unwrapContentInfo(der, id_signedData, 'the SCEP message'), SignedData, 'the SCEP SignedData');
  if (sd.signerInfos.length !== 1) throw new CmsError('badRequest', `the SCEP message has ${sd.signerInfos.length} signers, not one`);
  const si = sd.signerInfos[0]!;
  const certs = (sd.certificates ?? []).filter((c) => c.certificate).map((c) => certInfo(u8(AsnConvert.serialize(c.certificate!))));
  const ias = si.sid.issuerAndSerialNumber;
  const signer = ias ? certs.find((c) => matchesIssuerSerial(c, ias)) : undefined;
  if (!signer) throw new CmsError('badRequest', 'the certificate of the signer is not in the SCEP message');
  const digest = DIGESTS[si.digestAlgorithm.algorithm];
  if (!digest || (digest === 'sha1' && !opts.allowSha1)) throw new CmsError('badAlg', `digest algorithm ${si.digestAlgorithm.algorithm} is not accepted`);
  if (!(si.signatureAlgorithm.algorithm in RSA_SIGNATURES)) throw new CmsError('badAlg', `signature algorithm ${si.signatureAlgorithm.algorithm} is not accepted (RSA only)`);
  const sigHash = RSA_SIGNATURES[si.signatureAlgorithm.algorithm];
  if (sigHash !== undefined && sigHash !== digest) throw new CmsError('badAlg', 'the signature algorithm does not match the digest algorithm');
  if (signer.publicKey.asymmetricKeyType !== 'rsa') throw new CmsError('badAlg', 'the signer key is not RSA');
  const signedAttrs = rawSignedAttributes(der);
  if (!signedAttrs) throw new CmsError('badRequest', 'the SCEP message has no signed attributes');
  // RFC 5652 §5.4: the signature covers the DER of the attributes with the EXPLICIT SET OF tag.
  const rawAttrs = signedAttrs.slice();
  rawAttrs[0] = 0x31;
  let ok = false;
  try {
    ok = cryptoVerify(digest, rawAttrs, { key: signer.publicKey, padding: cryptoConstants.RSA_PKCS1_PADDING }, u8(si.signature.buffer));
  } catch (e) {
    throw new CmsError('badMessageCheck', 'the SCEP message signature does not verify', { cause: e });
  }
  if (!ok) throw new CmsError('badMessageCheck', 'the SCEP message signature does not verify');
  const attributes = new Map<string, Uint8Array[]>();
  for (const [type, values] of readAttributes(rawAttrs)) {
    // RFC 5652 §5.3: an attribute type appears once in signedAttrs.
    if (attributes.has(type)) throw new CmsError('badRequest', `signed attribute ${type} appears twice`);
    attributes.set(type, values);
  }
  const content = eContentOf(sd.encapContentInfo);
  const ct = attributes.get(OID.contentType)?.[0];
  // RFC 5652 §11.1: the contentType attribute equals eContentType.
  if (!ct || readOid(ct) !== sd.encapContentInfo.eContentType) throw new CmsError('badMessageCheck', 'the contentType attribute does not match the content');
  const md = attributes.get(OID.messageDigest)?.[0];
  const want = createHash(digest).update(content ?? new Uint8Array()).digest();
  // RFC 5652 §11.2: messageDigest is the digest of the content.
  if (!md || !timingSafeEqualLen(readOctets(md), want)) throw new CmsError('badMessageCheck', 'the messageDigest attribute does not match the content');
  return { ...(content ? { content } : {}), signer, attributes, digest };
}

/** Walks DER TLVs: the element at `pos`, refusing what is not DER (indefinite lengths, truncation). */
function tlvAt(buf: Uint8Array, pos: number, what: string): Tlv {
  try {
    return readTlv(buf, pos);
  } catch (e) {
    throw new CmsError('badRequest', `${what}: not DER (${(e as Error).message})`, { cause: e });
  }
}

/**
 * The raw [0] IMPLICIT signedAttrs of the (single) SignerInfo, exactly as received: ContentInfo ->
 * [0] SignedData -> signerInfos SET -> SignerInfo -> after version, sid and digestAlgorithm.
 */
function rawSignedAttributes(der: Uint8Array): Uint8Array | undefined {
  const what = 'the SCEP message';
  const ci = tlvAt(der, 0, what);
  const content = tlvAt(der, tlvAt(der, ci.contentStart, what).end, what); // [0] EXPLICIT
  const sd = tlvAt(der, content.contentStart, what);
  let pos = sd.contentStart;
  let el = tlvAt(der, pos, what);
  // version, digestAlgorithms, encapContentInfo, [0] certificates, [1] crls, then signerInfos (SET).
  const fields: Tlv[] = [];
  while (pos < sd.end) {
    el = tlvAt(der, pos, what);
    fields.push(el);
    pos = el.end;
  }
  const signerInfos = fields.at(-1);
  if (!signerInfos || signerInfos.tag !== 0x31) return undefined;
  const si = tlvAt(der, signerInfos.contentStart, what);
  let p = si.contentStart;
  for (let i = 0; i < 3; i++) p = tlvAt(der, p, what).end; // version, sid, digestAlgorithm
  const attrs = tlvAt(der, p, what);
  return attrs.tag === 0xa0 ? der.subarray(attrs.start, attrs.end) : undefined;
}

/** The attributes of a DER SET OF Attribute: type OID -> DER of each value. */
function readAttributes(set: Uint8Array): Array<[string, Uint8Array[]]> {
  const what = 'the signed attributes';
  const outer = tlvAt(set, 0, what);
  const out: Array<[string, Uint8Array[]]> = [];
  for (let pos = outer.contentStart; pos < outer.end; ) {
    const attr = tlvAt(set, pos, what);
    const type = tlvAt(set, attr.contentStart, what);
    const values = tlvAt(set, type.end, what);
    if (attr.tag !== 0x30 || type.tag !== 0x06 || values.tag !== 0x31) throw new CmsError('badRequest', `${what} do not parse`);
    const vals: Uint8Array[] = [];
    for (let v = values.contentStart; v < values.end; ) {
      const val = tlvAt(set, v, what);
      vals.push(set.subarray(val.start, val.end));
      v = val.end;
    }
    out.push([readOid(set.subarray(type.start, type.end)), vals]);
    pos = attr.end;
  }
  return out;
}

function timingSafeEqualLen(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

function readOid(der: Uint8Array): string {
  const { tag, content } = readOne(der);
  if (tag !== 0x06 || content.length === 0) throw new CmsError('badRequest', 'not an OBJECT IDENTIFIER');
  const parts: number[] = [];
  let v = 0;
  for (const b of content) {
    v = v * 128 + (b & 0x7f);
    if (!(b & 0x80)) {
      parts.push(v);
      v = 0;
    }
  }
  const first = parts.shift()!;
  const a = first < 80 ? Math.floor(first / 40) : 2;
  return [a, first - a * 40, ...parts].join('.');
}

function oidDer(oid: string): Uint8Array {
  const p = oid.split('.').map(Number);
  const out: number[] = [];
  const push = (n: number) => {
    const bytes = [n & 0x7f];
    for (let v = Math.floor(n / 128); v > 0; v = Math.floor(v / 128)) bytes.unshift((v & 0x7f) | 0x80);
    out.push(...bytes);
  };
  push(p[0]! * 40 + p[1]!);
  for (const n of p.slice(2)) push(n);
  return tlv(0x06, Uint8Array.from(out));
}

export interface SignInput {
  /** eContent (absent for SCEP PENDING and FAILURE replies, RFC 8894 §3.3.2). */
  content?: Uint8Array;
  /** Attributes besides contentType and messageDigest: [OID, DER value]. */
  attributes: Array<[string, Uint8Array]>;
  signerCert: Uint8Array;
  signerKey: KeyObject;
  /** Certificates to carry (default: the signer's). */
  certificates?: Uint8Array[];
}

/** A CMS SignedData (ContentInfo DER) signed with RSA PKCS #1 v1.5 and SHA-256 over DER signed attributes. */
export function signMessage(input: SignInput): Uint8Array {
  const signer = certInfo(input.signerCert);
  const content = input.content;
  const attrs: Array<[string, Uint8Array]> = [
    [OID.contentType, oidDer(id_data)],
    [OID.messageDigest, octetString(createHash('sha256').update(content ?? new Uint8Array()).digest())],
    ...input.attributes,
  ];
  // DER SET OF (X.690 §11.6): elements sorted by their encodings; the signature covers this exact SET.
  const encoded = attrs
    .map(([type, value]) => ({ type, value, der: tlv(0x30, Buffer.concat([oidDer(type), tlv(0x31, value)])) }))
    .sort((a, b) => Buffer.compare(Buffer.from(a.der), Buffer.from(b.der)));
  const setDer = tlv(0x31, Buffer.concat(encoded.map((e) => e.der)));
  const signature = cryptoSign('sha256', setDer, { key: input.signerKey, padding: cryptoConstants.RSA_PKCS1_PADDING });
  const sha256 = new AlgorithmIdentifier({ algorithm: OID.sha256 });
  const si = new SignerInfo({
    version: 1,
    sid: new SignerIdentifier({ issuerAndSerialNumber: issuerAndSerial(signer) }),
    digestAlgorithm: sha256,
    signedAttrs: encoded.map((e) => new Attribute({ attrType: e.type, attrValues: [toArrayBuffer(e.value)] })),
    signatureAlgorithm: new AlgorithmIdentifier({ algorithm: OID.rsaEncryption, parameters: null }),
    signature: new OctetString(signature),
  });
  const sd = new SignedData({
    version: 1,
    digestAlgorithms: new DigestAlgorithmIdentifiers([sha256]),
    encapContentInfo: new EncapsulatedContentInfo({
      eContentType: id_data,
      ...(content ? { eContent: new EncapsulatedContent({ single: new OctetString(content) }) } : {}),
    }),
    certificates: new CertificateSet((input.certificates ?? [input.signerCert]).map((c) => new CertificateChoices({ certificate: AsnConvert.parse(c, Certificate) }))),
    signerInfos: new SignerInfos([si]),
  });
  return u8(AsnConvert.serialize(new ContentInfo({ contentType: id_signedData, content: AsnConvert.serialize(sd) })));
}

function toArrayBuffer(b: Uint8Array): ArrayBuffer {
  return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer;
}

/** RFC 8894 §3.4 / RFC 5652 §5: a degenerate certificates-only SignedData (no content, no signers). */
export function degenerateCertificates(certs: Uint8Array[]): Uint8Array {
  const sd = new SignedData({
    version: 1,
    digestAlgorithms: new DigestAlgorithmIdentifiers([]),
    encapContentInfo: new EncapsulatedContentInfo({ eContentType: id_data }),
    certificates: new CertificateSet(certs.map((c) => new CertificateChoices({ certificate: AsnConvert.parse(c, Certificate) }))),
    signerInfos: new SignerInfos([]),
  });
  return u8(AsnConvert.serialize(new ContentInfo({ contentType: id_signedData, content: AsnConvert.serialize(sd) })));
}

/** The certificates (DER, in order) of a SignedData, e.g. a degenerate one. */
export function signedDataCertificates(der: Uint8Array): Uint8Array[] {
  const sd = parse(unwrapContentInfo(der, id_signedData, 'the certificates message'), SignedData, 'the SignedData');
  return (sd.certificates ?? []).filter((c) => c.certificate).map((c) => u8(AsnConvert.serialize(c.certificate!)));
}

// ---------------------------------------------------------------------------------------------
// EnvelopedData

export interface Recipient {
  cert: Uint8Array;
  key: KeyObject;
}

/**
 * RSAES-PKCS1-v1_5 decryption (RFC 8017 §7.2.2) of a content-encryption key of `keyLen` bytes. A
 * malformed block yields a random key instead of an error (RFC 3218 §2.3.2), so that a forged key
 * fails later, at the content, exactly like a well-formed wrong one (no padding oracle).
 */
function unwrapKey(encrypted: Uint8Array, key: KeyObject, keyLen: number): Buffer {
  let em: Buffer;
  try {
    em = privateDecrypt({ key, padding: cryptoConstants.RSA_NO_PADDING }, encrypted);
  } catch {
    return randomBytes(keyLen);
  }
  const fallback = randomBytes(keyLen);
  // EM = 0x00 || 0x02 || PS (at least 8 non-zero bytes) || 0x00 || K; scanned in full whatever it holds.
  let sep = 0;
  let bad = (em[0]! !== 0 ? 1 : 0) | (em[1]! !== 2 ? 1 : 0);
  for (let i = 2; i < em.length; i++) {
    const isZero = em[i] === 0 ? 1 : 0;
    const first = isZero & (sep === 0 ? 1 : 0);
    sep = first ? i : sep;
  }
  bad |= sep < 10 ? 1 : 0;
  bad |= em.length - sep - 1 !== keyLen ? 1 : 0;
  const k = em.subarray(em.length - keyLen);
  const out = Buffer.alloc(keyLen);
  for (let i = 0; i < keyLen; i++) out[i] = bad ? fallback[i]! : k[i]!;
  return out;
}

/**
 * Decrypts a CMS EnvelopedData (RFC 5652 §6) for one of `recipients` (key transport recipient by
 * issuer and serial, RSA PKCS #1 v1.5). AES-CBC and triple DES; single DES only with `allowDes`.
 */
export function decryptEnveloped(der: Uint8Array, recipients: Recipient[], opts: { allowDes: boolean }): { plaintext: Uint8Array; cipher: string } {
  const ed = parse(unwrapContentInfo(der, id_envelopedData, 'the pkcsPKIEnvelope'), EnvelopedData, 'the EnvelopedData');
  const eci = ed.encryptedContentInfo;
  const alg = CIPHERS[eci.contentEncryptionAlgorithm.algorithm];
  if (!alg || (alg.legacy && !opts.allowDes)) {
    throw new CmsError('badAlg', `content encryption algorithm ${eci.contentEncryptionAlgorithm.algorithm} is not accepted`);
  }
  const params = eci.contentEncryptionAlgorithm.parameters;
  const iv = params ? readOctets(u8(params)) : undefined;
  if (!iv || iv.length !== (alg.cipher.startsWith('aes') ? 16 : 8)) throw new CmsError('badRequest', 'the content encryption IV is missing or of the wrong size');
  const ciphertext = eci.encryptedContent?.value
    ? u8(eci.encryptedContent.value.buffer)
    : eci.encryptedContent?.constructedValue
      ? Buffer.concat(eci.encryptedContent.constructedValue.map((o) => u8(o.buffer)))
      : undefined;
  if (!ciphertext) throw new CmsError('badRequest', 'the EnvelopedData has no encrypted content');
  let found: { ri: KeyTransRecipientInfo; r: Recipient } | undefined;
  for (const ri of ed.recipientInfos) {
    const kt = ri.ktri;
    const ias = kt?.rid.issuerAndSerialNumber;
    if (!kt || !ias) continue;
    const r = recipients.find((x) => matchesIssuerSerial(certInfo(x.cert), ias));
    if (r) {
      found = { ri: kt, r };
      break;
    }
  }
  if (!found) throw new CmsError('badMessageCheck', 'the message is not encrypted for this RA certificate (GetCACert gives the current one)');
  if (found.ri.keyEncryptionAlgorithm.algorithm !== OID.rsaEncryption) {
    throw new CmsError('badAlg', `key encryption algorithm ${found.ri.keyEncryptionAlgorithm.algorithm} is not accepted (rsaEncryption only)`);
  }
  const cek = unwrapKey(u8(found.ri.encryptedKey.buffer), found.r.key, alg.keyLen);
  const key = alg.keyLen === 8 ? Buffer.concat([cek, cek, cek]) : cek;
  try {
    const d = createDecipheriv(alg.cipher, key, iv);
    return { plaintext: Buffer.concat([d.update(ciphertext), d.final()]), cipher: alg.keyLen === 8 ? 'des-cbc' : alg.cipher };
  } catch (e) {
    throw new CmsError('badMessageCheck', 'the pkcsPKIEnvelope does not decrypt', { cause: e });
  }
}

/** A CMS EnvelopedData (ContentInfo DER) for one recipient certificate (RSA key transport, PKCS #1 v1.5). */
export function encryptEnveloped(plaintext: Uint8Array, recipientCert: Uint8Array, cipher: ContentCipher = 'aes-256-cbc'): Uint8Array {
  const recipient = certInfo(recipientCert);
  if (recipient.publicKey.asymmetricKeyType !== 'rsa') throw new CmsError('badAlg', 'the recipient key is not RSA');
  const keyLen = { 'aes-128-cbc': 16, 'aes-192-cbc': 24, 'aes-256-cbc': 32, 'des-ede3-cbc': 24 }[cipher];
  const cek = randomBytes(keyLen);
  const iv = randomBytes(cipher.startsWith('aes') ? 16 : 8);
  const c = createCipheriv(cipher, cek, iv);
  const ciphertext = Buffer.concat([c.update(plaintext), c.final()]);
  const encryptedKey = publicEncrypt({ key: recipient.publicKey, padding: cryptoConstants.RSA_PKCS1_PADDING }, cek);
  const ed = new EnvelopedData({
    version: 0,
    recipientInfos: new RecipientInfos([
      new RecipientInfo({
        ktri: new KeyTransRecipientInfo({
          version: 0,
          rid: new RecipientIdentifier({ issuerAndSerialNumber: issuerAndSerial(recipient) }),
          keyEncryptionAlgorithm: new AlgorithmIdentifier({ algorithm: OID.rsaEncryption, parameters: null }),
          encryptedKey: new OctetString(encryptedKey),
        }),
      }),
    ]),
    encryptedContentInfo: new EncryptedContentInfo({
      contentType: id_data,
      contentEncryptionAlgorithm: new AlgorithmIdentifier({ algorithm: CIPHER_OIDS[cipher], parameters: toArrayBuffer(octetString(iv)) }),
      encryptedContent: new EncryptedContent({ value: new OctetString(ciphertext) }),
    }),
  });
  return u8(AsnConvert.serialize(new ContentInfo({ contentType: id_envelopedData, content: AsnConvert.serialize(ed) })));
}

// PKCS#10 certificate signing requests (RFC 2986) as ACME clients send them at finalize
// (RFC 8555 §7.4): parse, check the self-signature and the key, and list the names requested.
//
// The DER is read directly (shared/pki/der.ts: strict lengths, no BER), field by field, taking only
// what a registration authority judges; the key is imported and the signature checked with
// node:crypto over the exact signed bytes (certificationRequestInfo as received), which covers RSA
// PKCS#1 v1.5, RSA-PSS, ECDSA (DER signatures) and Ed25519/Ed448 without format conversions.
// (An earlier version parsed with @peculiar/x509; its schema-driven ASN.1 took ~4 ms a CSR, most of
// an edge's finalize and a gateway's signing; test/unit/csr.test.ts still compares the two.)

import { constants as cryptoConstants, verify as cryptoVerify, type AsymmetricKeyDetails, type KeyObject } from 'node:crypto';
import { importSpki, type ImportedKey } from './spki.js';
import { RaError } from '../errors/index.js';
import { children, content, oidText, readTlv, splitSigned, stringValue, type Tlv } from './der.js';
import { canonicalIp, ipFromBytes } from './ip.js';
import { pemBlocks } from './pem.js';

export type KeyAlgorithm = 'EC' | 'RSA' | 'Ed25519' | 'Ed448' | 'unknown';

export interface CsrInfo {
  /** The CSR DER. */
  der: Uint8Array;
  /** SAN dNSName entries, lower-cased, in order, deduplicated. */
  dnsNames: string[];
  /** SAN iPAddress entries in canonical text form (IPv4 dotted, IPv6 compressed lower-case), deduplicated. */
  ipAddresses: string[];
  /** Subject CN if present (as written in the CSR). */
  commonName?: string;
  /** SAN rfc822Name entries (only with `otherNames`; otherwise such a CSR is refused). */
  emailAddresses: string[];
  /** SAN uniformResourceIdentifier entries (only with `otherNames`; otherwise such a CSR is refused). */
  uris: string[];
  keyAlgorithm: KeyAlgorithm;
  /** e.g. 'EC P-256', 'RSA 2048', 'RSA-PSS 2048', 'Ed25519'. */
  keyDescription: string;
  /** RSA modulus length in bits. */
  keyBits?: number;
  /** EC curve: 'P-256', 'P-384' or 'P-521'. */
  curve?: string;
  /** Signature algorithm in Go's x509 naming: 'ECDSA-SHA256', 'SHA256-RSA', 'SHA256-RSAPSS', 'Ed25519', 'Ed448'. */
  signatureAlgorithm: string;
  /** Extensions of the PKCS#9 extensionRequest attribute (RFC 2986 §4.1, RFC 2985 §5.4.2), in order. */
  extensions: Array<{ oid: string; critical: boolean }>;
  /** SubjectPublicKeyInfo DER. */
  publicKeySpki: Uint8Array;
}

export interface ParseCsrOptions {
  /**
   * Also return SAN email addresses and URIs (for policy checks that judge every name) instead of
   * refusing them; other SAN types are refused either way.
   */
  otherNames?: boolean;
}

/** One identifier a CSR asks for (RFC 8555 identifier types "dns" and "ip", RFC 8738). */
export interface CsrName {
  type: 'dns' | 'ip';
  value: string;
}

/** Largest CSR accepted, in DER bytes (an RSA-8192 CSR with 100 long names is well below). */
export const MAX_CSR_BYTES = 64 * 1024;
export const MIN_RSA_BITS = 2048;
export const MAX_RSA_BITS = 8192;

const OID_SAN = '2.5.29.17';
const CSR_PEM_LABELS = new Set(['CERTIFICATE REQUEST', 'NEW CERTIFICATE REQUEST']);
const HASHES: Record<string, string> = { 'SHA-256': 'sha256', 'SHA-384': 'sha384', 'SHA-512': 'sha512' };
const EC_CURVES: Record<string, string> = { prime256v1: 'P-256', secp384r1: 'P-384', secp521r1: 'P-521' };

/** CSRs (their exact DER) whose key passed checkKey and whose self-signature verified, with what was found. */
const verifiedCsrs = new Map<string, ReturnType<typeof checkKey> & { signatureAlgorithm: string }>();
const VERIFIED_MAX = 256;

function badCsr(detail: string, cause?: unknown): RaError {
  return new RaError('badCSR', cause === undefined ? { detail } : { detail, cause });
}

/**
 * Parses a CSR given as DER bytes, PEM text (or PEM bytes), or base64url DER (the ACME finalize
 * "csr" field), verifies its self-signature and its key, and returns what it asks for.
 * Throws RaError badCSR when the CSR does not parse, its signature is invalid or uses an
 * unaccepted algorithm (only SHA-256/384/512 hashes, Ed25519, Ed448), its key is RSA below 2048
 * (or above 8192) bits, EC on a curve other than P-256/P-384/P-521, or of another type, it has
 * several subject CNs, or its SAN holds names other than dNSName and iPAddress (with `otherNames`:
 * also rfc822Name and uniformResourceIdentifier, returned for policy checks).
 */
export async function parseCsr(input: Uint8Array | string, opts: ParseCsrOptions = {}): Promise<CsrInfo> {
  const der = decodeInput(input);

  let parts;
  try {
    parts = splitSigned(der);
  } catch (e) {
    throw badCsr(`the CSR is not a valid PKCS#10 DER structure (${(e as Error).message})`, e);
  }
  const body = safe(() => readRequest(parts.tbs, parts.algorithm), 'the CSR is not a valid PKCS#10 request');
  const spki = body.spki;

  // The key import and the signature check are the costly part (~0.5 ms): a CSR seen again in this
  // process (the gateway reads it, then its CA service) reuses the answer for exactly these bytes.
  const seenKey = Buffer.from(der).toString('base64');
  let checked = verifiedCsrs.get(seenKey);
  if (!checked) {
    let imported: ImportedKey;
    try {
      imported = importSpki(spki);
    } catch (e) {
      throw badCsr('the CSR public key is invalid or of an unsupported type', e);
    }
    const key = imported.key;
    const facts = checkKey(key, imported.details);
    checked = { ...facts, signatureAlgorithm: await verifySignature(body.algorithm, key, parts.tbs, parts.signature) };
    if (verifiedCsrs.size >= VERIFIED_MAX) verifiedCsrs.delete(verifiedCsrs.keys().next().value!);
    verifiedCsrs.set(seenKey, checked);
  }
  const { keyAlgorithm, keyDescription, keyBits, curve, signatureAlgorithm } = checked;

  const commonNames = body.commonNames;
  if (commonNames.length > 1) throw badCsr('the CSR subject has more than one common name');
  const commonName = commonNames[0] === '' ? undefined : commonNames[0];

  const dnsNames: string[] = [];
  const ipAddresses: string[] = [];
  const emailAddresses: string[] = [];
  const uris: string[] = [];
  const extensions = body.extensions;
  for (const ext of extensions) {
    if (ext.oid !== OID_SAN) continue;
    const names = safe(() => readGeneralNames(ext.value), 'the CSR subjectAltName extension does not parse');
    for (const gn of names) {
      if (gn.type === 'dns' && gn.value !== undefined) {
        const v = gn.value.toLowerCase();
        if (!dnsNames.includes(v)) dnsNames.push(v);
      } else if (gn.type === 'ip' && gn.bytes) {
        // [7] IMPLICIT OCTET STRING: 4 bytes (IPv4) or 16 (IPv6).
        const ip = ipFromBytes(gn.bytes);
        if (ip === null) throw badCsr('the CSR has an iPAddress name that is neither 4 nor 16 bytes');
        if (!ipAddresses.includes(ip)) ipAddresses.push(ip);
      } else if (opts.otherNames && gn.type === 'email' && gn.value !== undefined) {
        if (!emailAddresses.includes(gn.value)) emailAddresses.push(gn.value);
      } else if (opts.otherNames && gn.type === 'url' && gn.value !== undefined) {
        if (!uris.includes(gn.value)) uris.push(gn.value);
      } else {
        throw badCsr(`the CSR subjectAltName has a name of type "${gn.type}"; only DNS names and IP addresses are supported`);
      }
    }
  }

  const info: CsrInfo = {
    der,
    dnsNames,
    ipAddresses,
    emailAddresses,
    uris,
    keyAlgorithm,
    keyDescription,
    ...(keyBits !== undefined ? { keyBits } : {}),
    ...(curve !== undefined ? { curve } : {}),
    signatureAlgorithm,
    extensions: extensions.map((e) => ({ oid: e.oid, critical: e.critical })),
    publicKeySpki: spki,
  };
  if (commonName !== undefined) info.commonName = commonName;
  return info;
}

/**
 * The identifiers a CSR requests: all SAN dNSNames and iPAddresses, plus the subject CN when it is
 * not already among them (an IP address if it parses as one, else a lower-cased DNS name).
 */
export function csrNames(info: Pick<CsrInfo, 'dnsNames' | 'ipAddresses' | 'commonName'>): CsrName[] {
  const out: CsrName[] = [];
  const seen = new Set<string>();
  const add = (n: CsrName): void => {
    const k = `${n.type}:${n.value}`;
    if (seen.has(k)) return;
    seen.add(k);
    out.push(n);
  };
  for (const d of info.dnsNames) add({ type: 'dns', value: d.toLowerCase() });
  for (const i of info.ipAddresses) add({ type: 'ip', value: canonicalIp(i) ?? i });
  if (info.commonName !== undefined && info.commonName.trim() !== '') {
    const cn = info.commonName.trim();
    const ip = canonicalIp(cn);
    add(ip !== null ? { type: 'ip', value: ip } : { type: 'dns', value: cn.toLowerCase() });
  }
  return out;
}

function safe<T>(fn: () => T, detail: string): T {
  try {
    return fn();
  } catch (e) {
    if (e instanceof RaError) throw e;
    throw badCsr(detail, e);
  }
}

function decodeInput(input: Uint8Array | string): Uint8Array {
  let der: Uint8Array;
  if (typeof input === 'string') {
    der = decodeText(input);
  } else if (input instanceof Uint8Array) {
    // PEM given as bytes (e.g. a file read without an encoding).
    const head = Buffer.from(input.buffer, input.byteOffset, Math.min(input.byteLength, 64)).toString('latin1');
    der = head.trimStart().startsWith('-----BEGIN') ? decodeText(Buffer.from(input).toString('utf8')) : input;
  } else {
    throw badCsr('the CSR must be DER bytes, PEM text or base64url text');
  }
  if (der.length === 0) throw badCsr('the CSR is empty');
  if (der.length > MAX_CSR_BYTES) throw badCsr(`the CSR is larger than ${MAX_CSR_BYTES} bytes`);
  return new Uint8Array(der); // own copy, detached from the caller's buffer
}

function decodeText(text: string): Uint8Array {
  const s = text.trim();
  if (s.includes('-----BEGIN')) {
    let blocks;
    try {
      blocks = pemBlocks(s);
    } catch (e) {
      throw badCsr(`the CSR PEM does not parse (${(e as Error).message})`, e);
    }
    const csr = blocks.find((b) => CSR_PEM_LABELS.has(b.label));
    if (!csr) throw badCsr('no "CERTIFICATE REQUEST" PEM block found');
    return csr.der;
  }
  if (s.length > MAX_CSR_BYTES * 2) throw badCsr(`the CSR is larger than ${MAX_CSR_BYTES} bytes`);
  if (!/^[A-Za-z0-9_+/-]+={0,2}$/.test(s)) throw badCsr('the CSR is neither PEM nor base64url DER');
  return new Uint8Array(Buffer.from(s.replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, ''), 'base64url'));
}

function checkKey(key: KeyObject, details: AsymmetricKeyDetails): { keyAlgorithm: KeyAlgorithm; keyDescription: string; keyBits?: number; curve?: string } {
  switch (key.asymmetricKeyType) {
    case 'rsa':
    case 'rsa-pss': {
      const bits = details.modulusLength ?? 0;
      const label = key.asymmetricKeyType === 'rsa' ? 'RSA' : 'RSA-PSS';
      if (bits < MIN_RSA_BITS) throw badCsr(`the CSR key is ${label} ${bits} bits; at least ${MIN_RSA_BITS} bits are required`);
      if (bits > MAX_RSA_BITS) throw badCsr(`the CSR key is ${label} ${bits} bits; at most ${MAX_RSA_BITS} bits are accepted`);
      const e = details.publicExponent;
      if (e !== undefined && (e < 3n || e % 2n === 0n)) throw badCsr('the CSR RSA key has an invalid public exponent');
      return { keyAlgorithm: 'RSA', keyDescription: `${label} ${bits}`, keyBits: bits };
    }
    case 'ec': {
      const curve = EC_CURVES[details.namedCurve ?? ''];
      if (!curve) throw badCsr(`the CSR key is on EC curve ${details.namedCurve ?? '(unnamed)'}; only P-256, P-384 and P-521 are accepted`);
      return { keyAlgorithm: 'EC', keyDescription: `EC ${curve}`, curve };
    }
    case 'ed25519':
      return { keyAlgorithm: 'Ed25519', keyDescription: 'Ed25519' };
    case 'ed448':
      return { keyAlgorithm: 'Ed448', keyDescription: 'Ed448' };
    default:
      throw badCsr(`the CSR key type ${key.asymmetricKeyType ?? 'unknown'} is not supported`);
  }
}

/** RFC 4055 / RFC 5758 / RFC 8410 signature algorithm OIDs (AlgorithmIdentifier.algorithm). */
const SIG_OIDS: Record<string, { kind: 'rsa' | 'rsa-pss' | 'ecdsa' | 'ed25519' | 'ed448'; hash?: string }> = {
  '1.2.840.113549.1.1.4': { kind: 'rsa', hash: 'MD5' },
  '1.2.840.113549.1.1.5': { kind: 'rsa', hash: 'SHA-1' },
  '1.2.840.113549.1.1.14': { kind: 'rsa', hash: 'SHA-224' },
  '1.2.840.113549.1.1.11': { kind: 'rsa', hash: 'SHA-256' },
  '1.2.840.113549.1.1.12': { kind: 'rsa', hash: 'SHA-384' },
  '1.2.840.113549.1.1.13': { kind: 'rsa', hash: 'SHA-512' },
  '1.2.840.113549.1.1.10': { kind: 'rsa-pss' },
  '1.2.840.10045.4.1': { kind: 'ecdsa', hash: 'SHA-1' },
  '1.2.840.10045.4.3.1': { kind: 'ecdsa', hash: 'SHA-224' },
  '1.2.840.10045.4.3.2': { kind: 'ecdsa', hash: 'SHA-256' },
  '1.2.840.10045.4.3.3': { kind: 'ecdsa', hash: 'SHA-384' },
  '1.2.840.10045.4.3.4': { kind: 'ecdsa', hash: 'SHA-512' },
  '1.3.101.112': { kind: 'ed25519' },
  '1.3.101.113': { kind: 'ed448' },
};
const HASH_OIDS: Record<string, string> = {
  '1.3.14.3.2.26': 'SHA-1',
  '2.16.840.1.101.3.4.2.4': 'SHA-224',
  '2.16.840.1.101.3.4.2.1': 'SHA-256',
  '2.16.840.1.101.3.4.2.2': 'SHA-384',
  '2.16.840.1.101.3.4.2.3': 'SHA-512',
};
const OID_MGF1 = '1.2.840.113549.1.1.8';
const OID_CN = '2.5.4.3';
/** PKCS#9 extensionRequest (RFC 2985 §5.4.2). */
const OID_EXTENSION_REQUEST = '1.2.840.113549.1.9.14';

interface AlgorithmId {
  oid: string;
  /** The parameters element, if any (buf + its TLV). */
  params?: { buf: Uint8Array; tlv: Tlv };
}

interface RequestBody {
  commonNames: string[];
  spki: Uint8Array;
  extensions: Array<{ oid: string; critical: boolean; value: Uint8Array }>;
  algorithm: AlgorithmId;
}

function expect(t: Tlv, tag: number, what: string): Tlv {
  if (t.tag !== tag) throw new Error(`${what}: expected tag 0x${tag.toString(16)}, found 0x${t.tag.toString(16)}`);
  return t;
}

function readAlgorithmId(buf: Uint8Array, tlv: Tlv): AlgorithmId {
  const parts = children(buf, expect(tlv, 0x30, 'AlgorithmIdentifier'));
  if (parts.length < 1 || parts.length > 2) throw new Error('AlgorithmIdentifier: wrong number of elements');
  const oid = oidText(content(buf, expect(parts[0]!, 0x06, 'AlgorithmIdentifier.algorithm')));
  return parts[1] ? { oid, params: { buf, tlv: parts[1] } } : { oid };
}

/**
 * RFC 2986 §4: CertificationRequestInfo ::= SEQUENCE { version INTEGER { v1(0) }, subject Name,
 * subjectPKInfo SubjectPublicKeyInfo, attributes [0] Attributes }, read from the signed bytes.
 */
function readRequest(tbs: Uint8Array, algorithm: Uint8Array): RequestBody {
  const info = children(tbs, readTlv(tbs, 0));
  if (info.length < 3 || info.length > 4) throw new Error('CertificationRequestInfo: wrong number of elements');
  const version = content(tbs, expect(info[0]!, 0x02, 'version'));
  if (version.length !== 1 || version[0] !== 0) throw new Error('CertificationRequestInfo: version is not v1 (0)');

  // Name ::= SEQUENCE OF RelativeDistinguishedName (SET OF AttributeTypeAndValue) (RFC 5280 §4.1.2.4).
  const commonNames: string[] = [];
  for (const rdn of children(tbs, expect(info[1]!, 0x30, 'subject'))) {
    for (const atv of children(tbs, expect(rdn, 0x31, 'RelativeDistinguishedName'))) {
      const [type, value, ...rest] = children(tbs, expect(atv, 0x30, 'AttributeTypeAndValue'));
      if (!type || !value || rest.length) throw new Error('AttributeTypeAndValue: wrong number of elements');
      const oid = oidText(content(tbs, expect(type, 0x06, 'AttributeType')));
      if (oid !== OID_CN) continue;
      const text = stringValue(value.tag, content(tbs, value));
      if (text === null) throw badCsr('the CSR subject common name is not a string');
      commonNames.push(text);
    }
  }

  const spkiTlv = expect(info[2]!, 0x30, 'subjectPKInfo');
  const spki = tbs.slice(spkiTlv.start, spkiTlv.end);

  const extensions: RequestBody['extensions'] = [];
  // RFC 2986 §4.1: attributes [0] IMPLICIT SET OF Attribute; a request without it is read as empty.
  let sawExtensionRequest = false;
  if (info[3]) {
    for (const attr of children(tbs, expect(info[3], 0xa0, 'attributes'))) {
      const [type, values, ...rest] = children(tbs, expect(attr, 0x30, 'Attribute'));
      if (!type || !values || rest.length) throw new Error('Attribute: wrong number of elements');
      const oid = oidText(content(tbs, expect(type, 0x06, 'Attribute.type')));
      const vals = children(tbs, expect(values, 0x31, 'Attribute.values'));
      if (oid !== OID_EXTENSION_REQUEST) continue;
      if (sawExtensionRequest || vals.length !== 1) throw badCsr('the CSR has more than one extension request');
      sawExtensionRequest = true;
      // Extensions ::= SEQUENCE OF Extension; Extension ::= SEQUENCE { extnID, critical BOOLEAN DEFAULT FALSE, extnValue OCTET STRING }.
      for (const ext of children(tbs, expect(vals[0]!, 0x30, 'Extensions'))) {
        const parts = children(tbs, expect(ext, 0x30, 'Extension'));
        if (parts.length < 2 || parts.length > 3) throw new Error('Extension: wrong number of elements');
        const extOid = oidText(content(tbs, expect(parts[0]!, 0x06, 'extnID')));
        let critical = false;
        if (parts.length === 3) {
          const b = content(tbs, expect(parts[1]!, 0x01, 'critical'));
          if (b.length !== 1) throw new Error('Extension.critical: bad BOOLEAN');
          critical = b[0] !== 0;
        }
        const value = content(tbs, expect(parts[parts.length - 1]!, 0x04, 'extnValue'));
        // RFC 5280 §4.2: a certificate must not include more than one instance of an extension.
        if (extensions.some((e) => e.oid === extOid)) throw badCsr(`the CSR requests extension ${extOid} more than once`);
        extensions.push({ oid: extOid, critical, value });
      }
    }
  }
  return { commonNames, spki, extensions, algorithm: readAlgorithmId(algorithm, readTlv(algorithm, 0)) };
}

/** `value` for the IA5String names (dns, email, url), `bytes` for ip; neither for the other types. */
interface GeneralName {
  type: string;
  value?: string;
  bytes?: Uint8Array;
}
const GENERAL_NAME_TYPES = ['otherName', 'email', 'dns', 'x400Address', 'dn', 'ediPartyName', 'url', 'ip', 'registeredID'];

/** RFC 5280 §4.2.1.6: GeneralNames ::= SEQUENCE OF GeneralName (context tags [0]..[8]). */
function readGeneralNames(value: Uint8Array): GeneralName[] {
  const top = readTlv(value, 0);
  if (top.end !== value.length) throw new Error('subjectAltName: trailing bytes');
  const out: GeneralName[] = [];
  for (const gn of children(value, expect(top, 0x30, 'GeneralNames'))) {
    if ((gn.tag & 0xc0) !== 0x80) throw new Error('GeneralName: not a context-specific tag');
    const n = gn.tag & 0x1f;
    const type = GENERAL_NAME_TYPES[n] ?? `[${n}]`;
    const primitive = (gn.tag & 0x20) === 0;
    const bytes = content(value, gn);
    if ((n === 1 || n === 2 || n === 6) && primitive) {
      // rfc822Name, dNSName, uniformResourceIdentifier: IA5String.
      const text = stringValue(0x16, bytes);
      out.push({ type, value: text! });
    } else if (n === 7 && primitive) {
      out.push({ type: 'ip', bytes });
    } else {
      out.push({ type });
    }
  }
  if (out.length === 0) throw new Error('subjectAltName: empty');
  return out;
}

function hashOf(alg: AlgorithmId | undefined, what: string): string {
  // RFC 4055 §2.1: the hash AlgorithmIdentifier's parameters are absent or NULL.
  if (!alg) return 'SHA-1';
  const h = HASH_OIDS[alg.oid];
  if (!h) throw badCsr(`the CSR ${what} hash ${alg.oid} is not accepted; use SHA-256, SHA-384 or SHA-512`);
  return h;
}

/** RFC 4055 §3.1: RSASSA-PSS-params (hash, MGF1 with the same hash, salt length, trailer 1). */
function readPssParams(params: AlgorithmId['params']): { hash: string; saltLength: number } {
  let hash = 'SHA-1';
  let mgfHash = 'SHA-1';
  let saltLength = 20;
  if (params) {
    for (const f of children(params.buf, expect(params.tlv, 0x30, 'RSASSA-PSS-params'))) {
      const [inner, ...rest] = children(params.buf, f);
      if (!inner || rest.length) throw new Error('RSASSA-PSS-params: bad field');
      if (f.tag === 0xa0) hash = hashOf(readAlgorithmId(params.buf, inner), 'signature');
      else if (f.tag === 0xa1) {
        const mgf = readAlgorithmId(params.buf, inner);
        if (mgf.oid !== OID_MGF1 || !mgf.params) throw badCsr('the CSR RSA-PSS mask generation function is not MGF1');
        mgfHash = hashOf(readAlgorithmId(mgf.params.buf, mgf.params.tlv), 'MGF1');
      } else if (f.tag === 0xa2) {
        const b = content(params.buf, expect(inner, 0x02, 'saltLength'));
        if (b.length < 1 || b.length > 2 || (b[0]! & 0x80) !== 0) throw badCsr('the CSR RSA-PSS salt length is invalid');
        saltLength = b.length === 1 ? b[0]! : (b[0]! << 8) | b[1]!;
      } else if (f.tag === 0xa3) {
        const b = content(params.buf, expect(inner, 0x02, 'trailerField'));
        if (b.length !== 1 || b[0] !== 1) throw badCsr('the CSR RSA-PSS trailer field is not 1');
      } else throw new Error('RSASSA-PSS-params: unknown field');
    }
  }
  if (mgfHash !== hash) throw badCsr(`the CSR RSA-PSS signature uses ${hash} with MGF1-${mgfHash}; both must use the same hash`);
  return { hash, saltLength };
}

/** Verifies the self-signature; returns the algorithm's name (Go x509 naming, e.g. ECDSA-SHA256). */
async function verifySignature(alg: AlgorithmId, key: KeyObject, tbs: Uint8Array, signature: Uint8Array): Promise<string> {
  const known = SIG_OIDS[alg.oid];
  if (!known) throw badCsr(`the CSR signature algorithm ${alg.oid} is not supported`);
  const keyType = key.asymmetricKeyType;
  let digest: string | null = null;
  let keyParams: Parameters<typeof cryptoVerify>[2] = key;
  let name: string;

  const needHash = (hashName: string | undefined): string => {
    const h = hashName ? HASHES[hashName] : undefined;
    if (!h) throw badCsr(`the CSR signature hash ${hashName ?? '(none)'} is not accepted; use SHA-256, SHA-384 or SHA-512`);
    return h;
  };
  const needKey = (...types: string[]): void => {
    if (!types.includes(keyType ?? '')) throw badCsr(`the CSR signature algorithm ${known.kind.toUpperCase()} does not match its ${keyType} key`);
  };
  // Parameters: NULL or absent for PKCS#1 v1.5 (RFC 4055 §5), absent for ECDSA (RFC 5758 §3.2) and
  // EdDSA (RFC 8410 §3); a NULL there is tolerated, anything else refused.
  const noParams = (): void => {
    const p = alg.params;
    if (p && !(p.tlv.tag === 0x05 && p.tlv.end === p.tlv.contentStart)) throw badCsr('the CSR signature algorithm has unexpected parameters');
  };

  switch (known.kind) {
    case 'rsa':
      noParams();
      needKey('rsa');
      digest = needHash(known.hash);
      keyParams = { key, padding: cryptoConstants.RSA_PKCS1_PADDING };
      name = `${digest.toUpperCase()}-RSA`;
      break;
    case 'rsa-pss': {
      needKey('rsa', 'rsa-pss');
      const pss = readPssParams(alg.params);
      digest = needHash(pss.hash);
      keyParams = { key, padding: cryptoConstants.RSA_PKCS1_PSS_PADDING, saltLength: pss.saltLength };
      name = `${digest.toUpperCase()}-RSAPSS`;
      break;
    }
    case 'ecdsa':
      noParams();
      needKey('ec');
      digest = needHash(known.hash);
      keyParams = { key, dsaEncoding: 'der' };
      name = `ECDSA-${digest.toUpperCase()}`;
      break;
    case 'ed25519':
      noParams();
      needKey('ed25519');
      name = 'Ed25519';
      break;
    case 'ed448':
      noParams();
      needKey('ed448');
      name = 'Ed448';
      break;
  }

  // Synchronous: the callback form runs on the libuv thread pool, and that round trip (~0.7 ms here,
  // more under load) cost several times the check itself (0.13 ms for P-256; RSA verifies are cheaper).
  let ok: boolean;
  try {
    ok = cryptoVerify(digest, tbs, keyParams, signature);
  } catch {
    ok = false;
  }
  if (!ok) throw badCsr('the CSR signature is invalid');
  return name;
}

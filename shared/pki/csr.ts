// PKCS#10 certificate signing requests (RFC 2986) as ACME clients send them at finalize
// (RFC 8555 §7.4): parse, check the self-signature and the key, and list the names requested.
//
// Parsing is done with @peculiar/x509; the signature is checked with node:crypto over the exact
// signed bytes (certificationRequestInfo as received), which covers RSA PKCS#1 v1.5, RSA-PSS,
// ECDSA (DER signatures) and Ed25519/Ed448 without format conversions.

import { createPublicKey, constants as cryptoConstants, verify as cryptoVerify, type KeyObject } from 'node:crypto';
import { Pkcs10CertificateRequest, SubjectAlternativeNameExtension } from './x509.js';
import { RaError } from '../errors/index.js';
import { readTlv, splitSigned } from './der.js';
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
  let req: Pkcs10CertificateRequest;
  let spki: Uint8Array;
  try {
    req = new Pkcs10CertificateRequest(der);
    spki = new Uint8Array(req.publicKey.rawData);
  } catch (e) {
    throw badCsr('the CSR is not a valid PKCS#10 request', e);
  }

  let key: KeyObject;
  try {
    key = createPublicKey({ key: Buffer.from(spki), format: 'der', type: 'spki' });
  } catch (e) {
    throw badCsr('the CSR public key is invalid or of an unsupported type', e);
  }
  const { keyAlgorithm, keyDescription, keyBits, curve } = checkKey(key);
  const signatureAlgorithm = await verifySignature(req, key, parts.tbs, parts.signature);

  const commonNames = safe(() => req.subjectName.getField('CN'), 'the CSR subject does not parse');
  if (commonNames.length > 1) throw badCsr('the CSR subject has more than one common name');
  const commonName = commonNames[0] === '' ? undefined : commonNames[0];

  const dnsNames: string[] = [];
  const ipAddresses: string[] = [];
  const emailAddresses: string[] = [];
  const uris: string[] = [];
  const extensions = safe(() => req.extensions, 'the CSR extension request does not parse');
  for (const ext of extensions) {
    if (ext.type !== OID_SAN) continue;
    const san = safe(() => new SubjectAlternativeNameExtension(ext.rawData), 'the CSR subjectAltName extension does not parse');
    for (const gn of san.names.items) {
      if (gn.type === 'dns') {
        const v = gn.value.toLowerCase();
        if (!dnsNames.includes(v)) dnsNames.push(v);
      } else if (gn.type === 'ip') {
        // Take the address bytes from the encoding itself ([7] IMPLICIT OCTET STRING).
        const raw = new Uint8Array(gn.rawData);
        const tlv = safe(() => readTlv(raw, 0), 'the CSR has an invalid iPAddress name');
        const ip = ipFromBytes(raw.subarray(tlv.contentStart, tlv.end));
        if (ip === null) throw badCsr('the CSR has an iPAddress name that is neither 4 nor 16 bytes');
        if (!ipAddresses.includes(ip)) ipAddresses.push(ip);
      } else if (opts.otherNames && gn.type === 'email') {
        if (!emailAddresses.includes(gn.value)) emailAddresses.push(gn.value);
      } else if (opts.otherNames && gn.type === 'url') {
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
    extensions: extensions.map((e) => ({ oid: e.type, critical: e.critical })),
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

function checkKey(key: KeyObject): { keyAlgorithm: KeyAlgorithm; keyDescription: string; keyBits?: number; curve?: string } {
  const details = key.asymmetricKeyDetails ?? {};
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

interface WebAlgorithmLike {
  name: string;
  hash?: { name: string } | string;
  saltLength?: number;
  namedCurve?: string;
}

/** Verifies the self-signature; returns the algorithm's name (Go x509 naming, e.g. ECDSA-SHA256). */
async function verifySignature(req: Pkcs10CertificateRequest, key: KeyObject, tbs: Uint8Array, signature: Uint8Array): Promise<string> {
  const alg = safe(() => req.signatureAlgorithm as unknown as WebAlgorithmLike, 'the CSR signature algorithm is not supported');
  const hashName = typeof alg.hash === 'string' ? alg.hash : alg.hash?.name;
  const keyType = key.asymmetricKeyType;
  let digest: string | null = null;
  let keyParams: Parameters<typeof cryptoVerify>[2] = key;
  let name: string;

  const needHash = (): string => {
    const h = hashName ? HASHES[hashName.toUpperCase()] : undefined;
    if (!h) throw badCsr(`the CSR signature hash ${hashName ?? '(none)'} is not accepted; use SHA-256, SHA-384 or SHA-512`);
    return h;
  };
  const needKey = (...types: string[]): void => {
    if (!types.includes(keyType ?? '')) throw badCsr(`the CSR signature algorithm ${alg.name} does not match its ${keyType} key`);
  };

  switch (alg?.name) {
    case 'RSASSA-PKCS1-v1_5':
      needKey('rsa');
      digest = needHash();
      keyParams = { key, padding: cryptoConstants.RSA_PKCS1_PADDING };
      name = `${digest.toUpperCase()}-RSA`;
      break;
    case 'RSA-PSS':
      needKey('rsa', 'rsa-pss');
      digest = needHash();
      keyParams = { key, padding: cryptoConstants.RSA_PKCS1_PSS_PADDING, saltLength: alg.saltLength ?? 20 };
      name = `${digest.toUpperCase()}-RSAPSS`;
      break;
    case 'ECDSA':
      needKey('ec');
      digest = needHash();
      keyParams = { key, dsaEncoding: 'der' };
      name = `ECDSA-${digest.toUpperCase()}`;
      break;
    case 'Ed25519':
      needKey('ed25519');
      name = 'Ed25519';
      break;
    case 'EdDSA':
      if (alg.namedCurve === 'Ed448') needKey('ed448');
      else if (alg.namedCurve === 'Ed25519') needKey('ed25519');
      else throw badCsr('the CSR signature algorithm is not supported');
      name = alg.namedCurve;
      break;
    default:
      throw badCsr(`the CSR signature algorithm ${alg?.name ?? '(unknown)'} is not supported`);
  }

  const ok = await new Promise<boolean>((resolve) => {
    try {
      cryptoVerify(digest, tbs, keyParams, signature, (err, result) => resolve(!err && result));
    } catch {
      resolve(false);
    }
  });
  if (!ok) throw badCsr('the CSR signature is invalid');
  return name;
}

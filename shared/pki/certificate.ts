import { createHash } from 'node:crypto';
import { readTlv } from './der.js';
import { canonicalIp } from './ip.js';
import { pemToDer } from './pem.js';
import * as x509 from './x509.js';

// What ra-mesh reads off an issued certificate: its serial as every node writes it, its names and
// key (renewal by the old key), and its RFC 9773 certificate identifier.

/** Lower-case hex serial without DER sign padding, as the envelope schema and the CA services use it. */
export function normalizeSerial(hex: string): string {
  let s = hex.toLowerCase().replace(/:/g, '');
  while (s.length > 2 && s.startsWith('00')) s = s.slice(2);
  return s.length % 2 ? `0${s}` : s;
}

/** The DER of the leaf (first certificate) of a PEM chain. */
export function leafDer(chainPem: string): Uint8Array {
  const der = pemToDer(chainPem, 'CERTIFICATE')[0];
  if (!der) throw new Error('no certificate in the PEM chain');
  return der;
}

/** The serial of the leaf (first certificate) of a PEM chain. */
export function leafSerial(chainPem: string): string {
  return serialOf(leafDer(chainPem));
}

/**
 * The serial number of a DER certificate, read straight off the DER (RFC 5280 §4.1: Certificate >
 * tbsCertificate > [0] version > serialNumber), without parsing the rest (a full parse costs ~1 ms).
 */
export function serialOf(der: Uint8Array): string {
  const tbs = readTlv(der, readTlv(der, 0).contentStart);
  let field = readTlv(der, tbs.contentStart);
  if (field.tag === 0xa0) field = readTlv(der, field.end);
  if (field.tag !== 0x02) throw new Error('DER: no serialNumber INTEGER in the certificate');
  return normalizeSerial(Buffer.from(der.subarray(field.contentStart, field.end)).toString('hex'));
}

export interface CertificateFacts {
  serial: string;
  notBefore: Date;
  notAfter: Date;
  /** SAN names as envelope identifiers ("dns" lower-cased, "ip" as written by the CA). */
  identifiers: Array<{ type: 'dns' | 'ip'; value: string }>;
  /** SubjectPublicKeyInfo DER of the certified key. */
  spki: Uint8Array;
  /** SHA-256 of the certificate DER, base64url. */
  digest: string;
}

/** Reads the facts of a DER certificate; throws when it is not one. */
export function certificateFacts(der: Uint8Array): CertificateFacts {
  const cert = new x509.X509Certificate(der);
  const san = cert.getExtension(x509.SubjectAlternativeNameExtension);
  const identifiers: CertificateFacts['identifiers'] = [];
  for (const n of san?.names.items ?? []) {
    if (n.type === 'dns') identifiers.push({ type: 'dns', value: n.value.toLowerCase() });
    else if (n.type === 'ip') identifiers.push({ type: 'ip', value: canonicalIp(n.value) ?? n.value });
  }
  return {
    serial: normalizeSerial(cert.serialNumber),
    notBefore: cert.notBefore,
    notAfter: cert.notAfter,
    identifiers,
    spki: new Uint8Array(cert.publicKey.rawData),
    digest: createHash('sha256').update(der).digest('base64url'),
  };
}

/**
 * RFC 9773 §4.1: the ARI certificate identifier, base64url(authority key identifier) "."
 * base64url(serial number octets as DER encodes them). Undefined without an AKI keyIdentifier.
 */
export function ariCertId(der: Uint8Array): string | undefined {
  const cert = new x509.X509Certificate(der);
  const aki = cert.getExtension(x509.AuthorityKeyIdentifierExtension)?.keyId;
  if (!aki) return undefined;
  let serial = cert.serialNumber.toLowerCase();
  if (serial.length % 2) serial = `0${serial}`;
  // DER INTEGER contents: a leading 00 when the high bit is set (the library may have dropped it).
  if (/^[89a-f]/.test(serial)) serial = `00${serial}`;
  return `${Buffer.from(aki, 'hex').toString('base64url')}.${Buffer.from(serial, 'hex').toString('base64url')}`;
}

/** Splits an ARI certificate identifier into the AKI (hex) and the normalized serial; undefined when malformed. */
export function parseAriCertId(certId: string): { aki: string; serial: string } | undefined {
  const m = /^([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)$/.exec(certId);
  if (!m) return undefined;
  const aki = Buffer.from(m[1]!, 'base64url').toString('hex');
  const serialBytes = Buffer.from(m[2]!, 'base64url');
  if (aki.length === 0 || serialBytes.length === 0 || serialBytes.length > 21) return undefined;
  return { aki, serial: normalizeSerial(serialBytes.toString('hex')) };
}

/** The AKI keyIdentifier of a certificate, lower-case hex. */
export function authorityKeyId(der: Uint8Array): string | undefined {
  return new x509.X509Certificate(der).getExtension(x509.AuthorityKeyIdentifierExtension)?.keyId?.toLowerCase();
}

// Vocabulary of a layer's CSR rules (keys, signature algorithms, extensions), shared by the topology
// schema and the checks in layer.ts. No imports: the schema module loads this.

/** Key types as parseCsr reports them (RSA covers RSASSA-PSS keys too). */
export const KEY_TYPES = ['EC', 'RSA', 'Ed25519', 'Ed448'] as const;
export const EC_CURVES = ['P-256', 'P-384', 'P-521'] as const;

/** CSR signature algorithms in Go's crypto/x509 naming (what step-ca and `openssl req -text` users know). */
export const SIGNATURE_ALGORITHMS = [
  'ECDSA-SHA256',
  'ECDSA-SHA384',
  'ECDSA-SHA512',
  'SHA256-RSA',
  'SHA384-RSA',
  'SHA512-RSA',
  'SHA256-RSAPSS',
  'SHA384-RSAPSS',
  'SHA512-RSAPSS',
  'Ed25519',
  'Ed448',
] as const;

/** Names for the extensions a CSR may request (RFC 5280 §4.2, RFC 7633, RFC 6962); any dotted OID works too. */
export const EXTENSION_NAMES: Record<string, string> = {
  subjectAltName: '2.5.29.17',
  keyUsage: '2.5.29.15',
  extKeyUsage: '2.5.29.37',
  basicConstraints: '2.5.29.19',
  subjectKeyIdentifier: '2.5.29.14',
  nameConstraints: '2.5.29.30',
  certificatePolicies: '2.5.29.32',
  tlsFeature: '1.3.6.1.5.5.7.1.24', // RFC 7633 (OCSP must-staple)
  ctPrecertificatePoison: '1.3.6.1.4.1.11129.2.4.3', // RFC 6962 §3.1
};

const OID_RE = /^[0-2](\.(0|[1-9]\d*))+$/;

/** The dotted OID an extension rule names, or undefined when it is neither a known name nor an OID. */
export function extensionOid(nameOrOid: string): string | undefined {
  const s = nameOrOid.trim();
  if (Object.prototype.hasOwnProperty.call(EXTENSION_NAMES, s)) return EXTENSION_NAMES[s];
  return OID_RE.test(s) ? s : undefined;
}

/** "tlsFeature (1.3.6.1.5.5.7.1.24)" for a known OID, else the OID. */
export function extensionLabel(oid: string): string {
  const name = Object.entries(EXTENSION_NAMES).find(([, o]) => o === oid)?.[0];
  return name ? `${name} (${oid})` : oid;
}

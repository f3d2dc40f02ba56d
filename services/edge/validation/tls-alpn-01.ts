import { createHash } from 'node:crypto';
import { isIP } from 'node:net';
import { connect, type TLSSocket } from 'node:tls';
import { RaError } from '../../../shared/errors/index.js';
import { x509 } from '../../../shared/pki/index.js';
import type { SegmentResolver } from './resolver.js';
import type { Validator } from './validators.js';

/** RFC 8737 §3: the acmeIdentifier extension, id-pe-acmeIdentifier. */
export const ACME_IDENTIFIER_OID = '1.3.6.1.5.5.7.1.31';
export const ACME_TLS_ALPN = 'acme-tls/1';

/** RFC 8738 §6: for an IP identifier the SNI is the reverse-mapping name (in-addr.arpa / ip6.arpa). */
export function reverseName(ip: string): string {
  if (isIP(ip) === 4) return `${ip.split('.').reverse().join('.')}.in-addr.arpa`;
  const full = new URL(`http://[${ip}]/`).hostname.slice(1, -1);
  const groups = full.split('::');
  const head = groups[0] ? groups[0].split(':') : [];
  const tail = groups.length > 1 && groups[1] ? groups[1].split(':') : [];
  const all = [...head, ...Array(8 - head.length - tail.length).fill('0'), ...tail].map((g) => g.padStart(4, '0'));
  return `${all.join('').split('').reverse().join('.')}.ip6.arpa`;
}

function handshake(address: string, port: number, servername: string, timeoutMs: number): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const sock = connect({
      host: address,
      port,
      // RFC 8737 §3: SNI names the identifier (no SNI for IP literals: the reverse name, RFC 8738 §6).
      servername,
      ALPNProtocols: [ACME_TLS_ALPN],
      // The validation certificate is self-signed by design; what it proves is checked below.
      rejectUnauthorized: false,
      timeout: timeoutMs,
    });
    sock.once('secureConnect', () => resolve(sock));
    sock.once('timeout', () => sock.destroy(new Error(`timeout after ${timeoutMs} ms`)));
    sock.once('error', reject);
  });
}

/**
 * RFC 8737 tls-alpn-01: a TLS handshake with ALPN "acme-tls/1" and SNI = the identifier; the server's
 * certificate must name exactly that identifier and carry a critical acmeIdentifier extension holding
 * SHA-256(keyAuthorization).
 */
export function tlsAlpn01Validator(resolver: SegmentResolver, port: number, timeoutMs = 10_000): Validator {
  return async ({ identifier, keyAuthorization }) => {
    const addresses = await resolver.addresses(identifier.value);
    const servername = identifier.type === 'ip' ? reverseName(identifier.value) : identifier.value;
    const want = createHash('sha256').update(keyAuthorization).digest();
    let lastErr: RaError | undefined;
    for (const address of addresses) {
      let sock: TLSSocket;
      try {
        sock = await handshake(address, port, servername, timeoutMs);
      } catch (e) {
        lastErr = new RaError('tls', { detail: `${identifier.value} (${address}:${port}): ${(e as Error).message}` });
        continue;
      }
      try {
        // RFC 8737 §3: the server must have negotiated acme-tls/1.
        if (sock.alpnProtocol !== ACME_TLS_ALPN) {
          throw new RaError('tls', { detail: `${address}:${port} did not negotiate ALPN ${ACME_TLS_ALPN}` });
        }
        const raw = sock.getPeerX509Certificate()?.raw;
        if (!raw) throw new RaError('tls', { detail: `${address}:${port} sent no certificate` });
        const cert = new x509.X509Certificate(raw);
        const san = cert.getExtension(x509.SubjectAlternativeNameExtension);
        const names = san?.names.items ?? [];
        const wantType = identifier.type === 'ip' ? 'ip' : 'dns';
        // RFC 8737 §3: the certificate names exactly one identifier: the one being validated.
        if (names.length !== 1 || names[0]!.type !== wantType || names[0]!.value.toLowerCase() !== identifier.value) {
          throw new RaError('incorrectResponse', { detail: `tls-alpn-01 certificate must name exactly ${identifier.value}` });
        }
        const ext = cert.extensions.find((x) => x.type === ACME_IDENTIFIER_OID);
        // RFC 8737 §3: the acmeIdentifier extension is critical.
        if (!ext || !ext.critical) throw new RaError('incorrectResponse', { detail: 'certificate lacks the critical acmeIdentifier extension' });
        const v = new Uint8Array(ext.value);
        // Authorization ::= OCTET STRING (SIZE (32)) -> DER 04 20 <32 bytes>
        if (v.length !== 34 || v[0] !== 0x04 || v[1] !== 0x20 || !Buffer.from(v.subarray(2)).equals(want)) {
          throw new RaError('incorrectResponse', { detail: 'acmeIdentifier does not hold the key authorization digest' });
        }
        return { from: `${address}:${port}` };
      } finally {
        sock.destroy();
      }
    }
    throw lastErr ?? new RaError('connection', { detail: `no address to reach ${identifier.value}` });
  };
}

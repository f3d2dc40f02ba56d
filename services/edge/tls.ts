import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { isIP } from 'node:net';
import { webcrypto } from 'node:crypto';
import { x509 } from '../../shared/pki/index.js';

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

/**
 * The ACME listener's TLS certificate. Operators configure acme.tls {cert, key}; without it the edge
 * makes a self-signed ECDSA P-256 certificate once, keeps it in its store and logs its path, so
 * clients can be pointed at it (LEGO_CA_CERTIFICATES, REQUESTS_CA_BUNDLE).
 */
export async function loadOrCreateEdgeTls(dir: string, names: string[]): Promise<{ cert: string; key: string; certFile: string; created: boolean }> {
  const certFile = join(dir, 'tls-cert.pem');
  const keyFile = join(dir, 'tls-key.pem');
  try {
    return { cert: await readFile(certFile, 'utf8'), key: await readFile(keyFile, 'utf8'), certFile, created: false };
  } catch {
    // fall through: make one
  }
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
  const keys = (await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const uniq = [...new Set(names)];
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: Buffer.from(webcrypto.getRandomValues(new Uint8Array(16))).toString('hex').replace(/^[89a-f]/, '1'),
    name: `CN=${uniq[0] ?? 'ra-mesh edge'}, O=ra-mesh edge`,
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Date.now() + 825 * 86_400_000),
    keys,
    signingAlgorithm: alg,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension(uniq.map((n) => (isIP(n) ? { type: 'ip' as const, value: n } : { type: 'dns' as const, value: n }))),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  const pkcs8 = await webcrypto.subtle.exportKey('pkcs8', keys.privateKey);
  const keyPem = x509.PemConverter.encode(pkcs8, 'PRIVATE KEY');
  const certPem = cert.toString('pem');
  await writeFile(keyFile, keyPem + '\n', { mode: 0o600 });
  await writeFile(certFile, certPem + '\n', { mode: 0o644 });
  return { cert: certPem, key: keyPem, certFile, created: true };
}

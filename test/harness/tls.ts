import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execFileP } from './tools.js';

export interface TestTlsFiles {
  ca: string;
  cert: string;
  key: string;
}

/**
 * A throwaway CA and a server certificate for 127.0.0.1 / ::1 / localhost, made with openssl in `dir`
 * (a test's temp dir): TLS for the NATS servers of a test mesh. Valid for one day.
 */
export async function makeTestServerTls(dir: string, cn = 'ra-mesh test nats'): Promise<TestTlsFiles> {
  await mkdir(dir, { recursive: true });
  const f = (n: string) => join(dir, n);
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  await execFileP('openssl', ['req', '-x509', ...ec, '-keyout', f('ca.key'), '-out', f('ca.pem'), '-subj', `/CN=${cn} CA`, '-days', '1']);
  await execFileP('openssl', ['req', ...ec, '-keyout', f('server.key'), '-out', f('server.csr'), '-subj', `/CN=${cn}`]);
  await writeFile(f('server.ext'), 'subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n');
  await execFileP('openssl', [
    'x509', '-req', '-in', f('server.csr'), '-CA', f('ca.pem'), '-CAkey', f('ca.key'), '-CAcreateserial',
    '-out', f('server.pem'), '-days', '1', '-extfile', f('server.ext'),
  ]);
  return { ca: f('ca.pem'), cert: f('server.pem'), key: f('server.key') };
}

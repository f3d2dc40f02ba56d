import { execFile, spawn } from 'node:child_process';
import { get } from 'node:http';
import { writeFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import { x509 } from '../../shared/pki/index.js';

export const execFileP = promisify(execFile);

/** Runs a command with a time limit; resolves with its output, rejects with the output on failure. */
export function run(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number; cwd?: string } = {}): Promise<{ code: number; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env: { ...process.env, ...opts.env }, cwd: opts.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 120_000);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      if (code === 0) resolve({ code, out });
      else reject(Object.assign(new Error(`${cmd} exited ${code}:\n${out.slice(-4000)}`), { code, out }));
    });
  });
}

export function httpGet(url: string): Promise<string> {
  return new Promise((resolve, reject) => {
    get(url, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => (res.statusCode === 200 ? resolve(body) : reject(new Error(`GET ${url}: ${res.statusCode} ${body}`))));
    }).on('error', reject);
  });
}

/** Splits a PEM bundle into certificates. */
export function pemCerts(pem: string): x509.X509Certificate[] {
  return (pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? []).map((p) => new x509.X509Certificate(p));
}

export function sanNames(cert: x509.X509Certificate): string[] {
  const san = cert.getExtension(x509.SubjectAlternativeNameExtension);
  return (san?.names.items ?? []).map((n) => n.value).sort();
}

/** openssl verify of a chain file (leaf first, then intermediates) against a root PEM. */
export async function opensslVerify(dir: string, chainPem: string, rootPem: string): Promise<string> {
  const [leaf, ...rest] = pemCerts(chainPem);
  await writeFile(`${dir}/v-root.pem`, rootPem);
  await writeFile(`${dir}/v-leaf.pem`, leaf!.toString('pem'));
  await writeFile(`${dir}/v-inter.pem`, rest.map((c) => c.toString('pem')).join('\n'));
  const { stdout } = await execFileP('openssl', ['verify', '-CAfile', `${dir}/v-root.pem`, '-untrusted', `${dir}/v-inter.pem`, `${dir}/v-leaf.pem`]);
  return stdout;
}

/** Runs `fn` over `items` with at most `limit` at a time. */
export async function pool<T, R>(items: T[], limit: number, fn: (item: T, i: number) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < items.length; i = next++) out[i] = await fn(items[i]!, i);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

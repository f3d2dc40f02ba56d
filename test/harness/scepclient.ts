import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';

// Debian's `scepclient` (micromdm scep 2.1.0, apt-get install scep) as the device. What it does, read
// from its source and seen here: GetCACert (a degenerate CMS of CA + RA certificates; -ca-fingerprint
// picks the RA certificate, without it it would encrypt to every certificate and fail on the EC CA
// key), GetCACaps (POST if POSTPKIOperation), then PKCSReq signed by a self-signed certificate of a
// new RSA key (kept in <dir>/key.pem, csr.pem, self.pem), or RenewalReq signed by <dir>/client.pem when
// that file exists. It encrypts with single DES and signs with SHA-1 whatever GetCACaps says (the edge
// needs scep.legacyCrypto), derives the transactionID from the key, and on PENDING sleeps 30 s and
// sends the same request again; it cannot send CertPoll. It puts only a CN in the CSR (no
// subjectAltName flag in 2.1.0) and writes the issued certificate to <dir>/client.pem.

export interface ScepClientRun {
  readonly child: ChildProcess;
  output(): string;
  exited: Promise<number | null>;
  /** Resolves when the client reported PENDING once. */
  pending: Promise<void>;
  kill(): Promise<void>;
}

const live = new Set<ChildProcess>();
process.on('exit', () => {
  for (const c of live) c.kill('SIGKILL');
});

/** SHA-256 (hex) of a DER certificate: scepclient's -ca-fingerprint. */
export function fingerprintOf(der: Uint8Array): string {
  return createHash('sha256').update(der).digest('hex');
}

/** Starts scepclient for the device in `dir` (made if missing). */
export async function startScepClient(opts: { dir: string; url: string; cn: string; challenge?: string; raFingerprint: string; timeoutMs?: number }): Promise<ScepClientRun> {
  await mkdir(opts.dir, { recursive: true });
  const args = ['-server-url', opts.url, '-private-key', join(opts.dir, 'key.pem'), '-cn', opts.cn, '-ca-fingerprint', opts.raFingerprint];
  if (opts.challenge !== undefined) args.push('-challenge', opts.challenge);
  const child = spawn('scepclient', args, { cwd: opts.dir, stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(child);
  let out = '';
  let onPending: () => void = () => undefined;
  const pending = new Promise<void>((r) => (onPending = r));
  const onData = (d: Buffer) => {
    out += d.toString();
    if (/pkiStatus=PENDING/.test(out)) onPending();
  };
  child.stdout!.on('data', onData);
  child.stderr!.on('data', onData);
  const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 120_000);
  const exited = new Promise<number | null>((resolve) => {
    child.once('exit', (code) => {
      clearTimeout(timer);
      live.delete(child);
      resolve(code);
    });
    child.once('error', (e) => {
      out += `\nspawn failed: ${e.message}`;
      clearTimeout(timer);
      live.delete(child);
      resolve(-1);
    });
  });
  return {
    child,
    output: () => out,
    exited,
    pending,
    kill: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
  };
}

/** Runs scepclient to its end; resolves with its exit code and output. */
export async function runScepClient(opts: Parameters<typeof startScepClient>[0]): Promise<{ code: number | null; out: string }> {
  const r = await startScepClient(opts);
  const code = await r.exited;
  return { code, out: r.output() };
}

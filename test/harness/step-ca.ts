// A real step-ca (smallstep/certificates) for tests: built offline from Debian's
// golang-github-smallstep-certificates-dev (the package ships the library, not the command: a
// ten-line main.go calling its `commands` app), cached under node_modules/.cache/ra-mesh/step-ca/
// keyed by the package and Go versions, and started on a free loopback port with a generated
// config (authority/config.Config of smallstep/certificates 0.19): root + intermediate made here,
// a JWK provisioner (public key, kid = RFC 7638 thumbprint, and the private key as encryptedKey:
// a PBES2 JWE as `step ca provisioner add` writes it), an X5C provisioner trusting a client CA made
// here, a bbolt DB in a temp dir and the JSON request log, from which the test reads what step-ca
// signed and revoked.

import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, webcrypto } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { calculateJwkThumbprint, CompactEncrypt, exportJWK, generateKeyPair, type JWK } from 'jose';
import { derToPem, x509 } from '../../shared/pki/index.js';
import { freePort } from './ports.js';
import { run } from './tools.js';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const CACHE_DIR = join(REPO, 'node_modules', '.cache', 'ra-mesh', 'step-ca');
const GOCODE = '/usr/share/gocode';
const PACKAGE = 'golang-github-smallstep-certificates-dev';

const MAIN_GO = `package main

import (
	"fmt"
	"os"

	"github.com/smallstep/certificates/commands"
	"github.com/urfave/cli"
)

// step-ca: the package's own start command as the whole app (upstream cmd/step-ca, reduced).
func main() {
	app := cli.NewApp()
	app.Name = "step-ca"
	app.Usage = "step-ca <config>"
	app.Flags = commands.AppCommand.Flags
	app.Action = commands.AppCommand.Action
	if err := app.Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
`;

export interface StepCaBuild {
  binary: string;
  /** Wall time of the build in ms; 0 when the cached binary was used. */
  buildMs: number;
  version: string;
}

let building: Promise<StepCaBuild | { missing: string }> | undefined;

/**
 * The step-ca binary: the cached one for this package version, else built now (once per machine,
 * ~35-45 s). Resolves `{missing}` (a sentence for a test skip) when go or the package is not installed.
 */
export function stepCaBinary(): Promise<StepCaBuild | { missing: string }> {
  return (building ??= build());
}

async function build(): Promise<StepCaBuild | { missing: string }> {
  let pkg: string;
  let go: string;
  try {
    pkg = (await run('dpkg-query', ['-W', '-f=${Version}', PACKAGE], { timeoutMs: 10_000 })).out.trim();
    go = (await run('go', ['env', 'GOVERSION'], { timeoutMs: 10_000 })).out.trim();
  } catch {
    return { missing: `step-ca needs the apt packages golang-go and ${PACKAGE} (test/run-all.sh installs them)` };
  }
  if (!pkg || !existsSync(join(GOCODE, 'src/github.com/smallstep/certificates/commands'))) {
    return { missing: `${PACKAGE} is not installed` };
  }
  const version = `${pkg}-${go}`.replace(/[^A-Za-z0-9.+_-]/g, '_');
  const binary = join(CACHE_DIR, version, 'step-ca');
  if (existsSync(binary)) return { binary, buildMs: 0, version };
  await mkdir(dirname(binary), { recursive: true });
  const gopath = await mkdtemp(join(tmpdir(), 'ra-mesh-stepca-gopath-'));
  try {
    const src = join(gopath, 'src', 'ra-mesh-step-ca');
    await mkdir(src, { recursive: true });
    await writeFile(join(src, 'main.go'), MAIN_GO);
    const out = `${binary}.${process.pid}.tmp`;
    const started = Date.now();
    // Offline, from the Debian source tree only (PEERS.md): no modules, no proxy; pure Go (no C
    // compiler needed: bbolt and the rest build without cgo).
    await run('go', ['build', '-o', out, '.'], {
      cwd: src,
      timeoutMs: 600_000,
      env: { GO111MODULE: 'off', GOPROXY: 'off', GOFLAGS: '', CGO_ENABLED: '0', GOPATH: `${gopath}:${GOCODE}`, GOCACHE: join(CACHE_DIR, 'go-build') },
    });
    const buildMs = Date.now() - started;
    // Atomic: a concurrent build of another process at worst replaces it with an equal binary.
    await rename(out, binary);
    return { binary, buildMs, version };
  } finally {
    await rm(gopath, { recursive: true, force: true });
  }
}

export interface StepCaClaims {
  minTLSCertDuration?: string;
  maxTLSCertDuration?: string;
  defaultTLSCertDuration?: string;
}

export interface StepCaOptions {
  /** Claims of both provisioners (default min 10s, max 24h, default 1h). */
  claims?: StepCaClaims;
  /** Password of the JWK provisioner's encryptedKey (default: random). */
  password?: string;
  /** p2c of the encryptedKey JWE (default 100000, as step CLI 0.19 writes it). */
  p2c?: number;
}

export interface StepCaRequestLog {
  path: string;
  method: string;
  status: number;
  /** Decimal serial (step-ca's logs and API use decimal). */
  serial?: string;
  /** CN of a signed certificate. */
  subject?: string;
  'valid-from'?: string;
  'valid-to'?: string;
  provisioner?: string;
  error?: string;
}

export interface StepCa {
  /** https://127.0.0.1:<port> */
  url: string;
  dir: string;
  rootPem: string;
  intermediatePem: string;
  /** The intermediate's private key (PKCS#8 PEM), e.g. to give a test's TLS proxy a certificate under the same root. */
  intermediateKeyFile: string;
  /** SHA-256 of the root DER, lower-case hex (what `step certificate fingerprint` prints). */
  rootFingerprint: string;
  jwk: {
    name: string;
    kid: string;
    /** The private key as PKCS#8 PEM. */
    keyFile: string;
    /** The private key as a JWK. */
    jwkFile: string;
    /** The password of the encryptedKey step-ca serves at /provisioners. */
    passwordFile: string;
  };
  x5c: {
    name: string;
    /** The client CA the provisioner trusts. */
    rootPem: string;
    certFile: string;
    keyFile: string;
    /** Issues a new client certificate (fresh key) and writes both files; returns its serial (hex) and notAfter. */
    rotate(validityMs?: number): Promise<{ serial: string; notAfter: Date }>;
  };
  /** Every request step-ca logged (JSON log), in order, across restarts. */
  requests(): StepCaRequestLog[];
  /** Decimal serials of the certificates step-ca signed (POST /1.0/sign answered 201). */
  signedSerials(): string[];
  /** Everything step-ca wrote. */
  output(): string;
  running(): boolean;
  /** Stops step-ca (SIGTERM, then SIGKILL after 5 s). */
  stop(): Promise<void>;
  /** Starts it again on the same port with the same config and DB. */
  start(): Promise<void>;
  /** stop() and remove its directory. */
  close(): Promise<void>;
}

const EC = { name: 'ECDSA', namedCurve: 'P-256' } as const;
const SIG = { name: 'ECDSA', hash: 'SHA-256' } as const;
const crypto = webcrypto;
type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;

function serial(): string {
  const b = webcrypto.getRandomValues(new Uint8Array(16));
  b[0] = (b[0]! & 0x7f) | 0x01;
  return Buffer.from(b).toString('hex');
}

async function keyPair(): Promise<CryptoKeyPair> {
  return (await crypto.subtle.generateKey(EC, true, ['sign', 'verify'])) as CryptoKeyPair;
}

async function pkcs8Pem(k: CryptoKey): Promise<string> {
  return derToPem(new Uint8Array(await crypto.subtle.exportKey('pkcs8', k)), 'PRIVATE KEY');
}

async function caCert(subject: string, keys: CryptoKeyPair, issuer?: { cert: x509.X509Certificate; key: CryptoKey }, pathLen = 1): Promise<x509.X509Certificate> {
  const notBefore = new Date(Date.now() - 60_000);
  const notAfter = new Date(Date.now() + 10 * 365 * 86_400_000);
  return x509.X509CertificateGenerator.create(
    {
      serialNumber: serial(),
      subject,
      issuer: issuer ? issuer.cert.subject : subject,
      notBefore,
      notAfter,
      publicKey: keys.publicKey,
      signingKey: issuer ? issuer.key : keys.privateKey,
      signingAlgorithm: SIG,
      extensions: [
        new x509.BasicConstraintsExtension(true, pathLen, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey, false, crypto),
        ...(issuer ? [await x509.AuthorityKeyIdentifierExtension.create(issuer.cert, false, crypto)] : []),
      ],
    },
    crypto,
  );
}

/** Waits (bounded) until GET /health answers {"status":"ok"} over TLS verified by `rootPem`. */
async function waitHealthy(url: string, rootPem: string, child: ChildProcess, out: () => string, timeoutMs = 20_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`step-ca exited before it was healthy:\n${out().slice(-3000)}`);
    const ok = await new Promise<boolean>((res) => {
      const r = request(`${url}/health`, { ca: rootPem, timeout: 1_000 }, (resp) => {
        let b = '';
        resp.on('data', (d) => (b += d));
        resp.on('end', () => res(resp.statusCode === 200 && /"ok"/.test(b)));
      });
      r.on('error', () => res(false));
      r.on('timeout', () => r.destroy());
      r.end();
    });
    if (ok) return;
    if (Date.now() > until) throw new Error(`step-ca not healthy within ${timeoutMs} ms:\n${out().slice(-3000)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const running = new Set<ChildProcess>();
process.on('exit', () => {
  for (const c of running) c.kill('SIGKILL');
});

/** Builds (or takes the cached) step-ca and starts it. Throws when go or the package is missing: check stepCaBinary() first. */
export async function startStepCa(opts: StepCaOptions = {}): Promise<StepCa> {
  const built = await stepCaBinary();
  if ('missing' in built) throw new Error(built.missing);
  const dir = await mkdtemp(join(tmpdir(), 'ra-mesh-stepca-'));
  try {
    // The CA: root and intermediate (step-ca signs with the intermediate; its TLS cert too).
    const rootKeys = await keyPair();
    const root = await caCert('CN=ra-mesh test step-ca Root', rootKeys);
    const interKeys = await keyPair();
    const inter = await caCert('CN=ra-mesh test step-ca Intermediate', interKeys, { cert: root, key: rootKeys.privateKey }, 0);
    const rootPem = root.toString('pem') + '\n';
    const intermediatePem = inter.toString('pem') + '\n';
    await writeFile(join(dir, 'root_ca.crt'), rootPem);
    await writeFile(join(dir, 'intermediate_ca.crt'), intermediatePem);
    await writeFile(join(dir, 'intermediate_ca_key'), await pkcs8Pem(interKeys.privateKey), { mode: 0o600 });

    // JWK provisioner: ES256 key, kid = RFC 7638 thumbprint (as step CLI makes it).
    const jwkKeys = await generateKeyPair('ES256', { extractable: true });
    const pubJwk: JWK = await exportJWK(jwkKeys.publicKey);
    const kid = await calculateJwkThumbprint(pubJwk, 'sha256');
    const privJwk: JWK = { ...(await exportJWK(jwkKeys.privateKey)), kid, use: 'sig', alg: 'ES256' };
    const password = opts.password ?? Buffer.from(webcrypto.getRandomValues(new Uint8Array(18))).toString('base64url');
    // encryptedKey: JWE compact, PBES2-HS256+A128KW / A256GCM, cty jwk+json (step CLI's format).
    const encryptedKey = await new CompactEncrypt(new TextEncoder().encode(JSON.stringify(privJwk)))
      .setProtectedHeader({ alg: 'PBES2-HS256+A128KW', enc: 'A256GCM', cty: 'jwk+json' })
      .setKeyManagementParameters({ p2c: opts.p2c ?? 100_000, p2s: webcrypto.getRandomValues(new Uint8Array(16)) })
      .encrypt(new TextEncoder().encode(password));
    const jwk = {
      name: 'ra-mesh-jwk',
      kid,
      keyFile: join(dir, 'jwk-provisioner.key'),
      jwkFile: join(dir, 'jwk-provisioner.json'),
      passwordFile: join(dir, 'jwk-provisioner.password'),
    };
    await writeFile(jwk.keyFile, await pkcs8Pem(jwkKeys.privateKey as CryptoKey), { mode: 0o600 });
    await writeFile(jwk.jwkFile, JSON.stringify(privJwk), { mode: 0o600 });
    await writeFile(jwk.passwordFile, `${password}\n`, { mode: 0o600 });

    // X5C provisioner: trusts a client CA; the gateway gets a client cert + key signed by it.
    const x5cRootKeys = await keyPair();
    const x5cRoot = await caCert('CN=ra-mesh test x5c client CA', x5cRootKeys, undefined, 0);
    const x5cRootPem = x5cRoot.toString('pem') + '\n';
    const x5cCertFile = join(dir, 'x5c-client.crt');
    const x5cKeyFile = join(dir, 'x5c-client.key');
    const rotate = async (validityMs = 86_400_000): Promise<{ serial: string; notAfter: Date }> => {
      const keys = await keyPair();
      const notAfter = new Date(Math.floor((Date.now() + validityMs) / 1000) * 1000);
      const cert = await x509.X509CertificateGenerator.create(
        {
          serialNumber: serial(),
          subject: 'CN=ra-mesh gateway',
          issuer: x5cRoot.subject,
          notBefore: new Date(Date.now() - 60_000),
          notAfter,
          publicKey: keys.publicKey,
          signingKey: x5cRootKeys.privateKey,
          signingAlgorithm: SIG,
          extensions: [
            new x509.BasicConstraintsExtension(false, undefined, true),
            // smallstep x5c.go: the leaf must allow digitalSignature and clientAuth.
            new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
            new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.clientAuth], false),
            await x509.AuthorityKeyIdentifierExtension.create(x5cRoot, false, crypto),
          ],
        },
        crypto,
      );
      // Written to temp names and renamed: a reader never sees half a file or a cert without its key.
      await writeFile(`${x5cKeyFile}.new`, await pkcs8Pem(keys.privateKey), { mode: 0o600 });
      await writeFile(`${x5cCertFile}.new`, cert.toString('pem') + '\n' + x5cRootPem);
      await rename(`${x5cKeyFile}.new`, x5cKeyFile);
      await rename(`${x5cCertFile}.new`, x5cCertFile);
      return { serial: cert.serialNumber, notAfter: cert.notAfter };
    };
    await rotate();

    const claims = { minTLSCertDuration: '10s', maxTLSCertDuration: '24h', defaultTLSCertDuration: '1h', ...opts.claims };
    const port = await freePort();
    const url = `https://127.0.0.1:${port}`;
    const config = {
      root: join(dir, 'root_ca.crt'),
      crt: join(dir, 'intermediate_ca.crt'),
      key: join(dir, 'intermediate_ca_key'),
      address: `127.0.0.1:${port}`,
      dnsNames: ['127.0.0.1', 'localhost'],
      logger: { format: 'json' },
      db: { type: 'bbolt', dataSource: join(dir, 'db') },
      authority: {
        claims,
        provisioners: [
          { type: 'JWK', name: jwk.name, key: { ...pubJwk, kid, use: 'sig', alg: 'ES256' }, encryptedKey, claims },
          // Roots: the PEM bytes ([]byte in Go's JSON: base64).
          { type: 'X5C', name: 'ra-mesh-x5c', roots: Buffer.from(x5cRootPem).toString('base64'), claims },
        ],
      },
    };
    const configFile = join(dir, 'ca.json');
    await writeFile(configFile, JSON.stringify(config, null, 2));
    await chmod(dir, 0o700);

    let out = '';
    let child: ChildProcess | undefined;
    const exits: Array<Promise<void>> = [];
    const start = async (): Promise<void> => {
      const c = spawn(built.binary, [configFile], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, HOME: dir, STEPPATH: join(dir, '.step') } });
      child = c;
      running.add(c);
      c.stdout!.on('data', (d) => (out += d));
      c.stderr!.on('data', (d) => (out += d));
      exits.push(new Promise((res) => c.once('exit', () => (running.delete(c), res()))));
      try {
        await waitHealthy(url, rootPem, c, () => out);
      } catch (e) {
        c.kill('SIGKILL');
        throw e;
      }
    };
    const stop = async (): Promise<void> => {
      const c = child;
      if (!c || c.exitCode !== null || c.signalCode !== null) return;
      const gone = new Promise<void>((res) => c.once('exit', () => res()));
      c.kill('SIGTERM');
      const t = setTimeout(() => c.kill('SIGKILL'), 5_000);
      await gone;
      clearTimeout(t);
    };
    const requests = (): StepCaRequestLog[] => {
      const lines: StepCaRequestLog[] = [];
      for (const line of out.split('\n')) {
        if (!line.startsWith('{')) continue;
        try {
          const j = JSON.parse(line) as Partial<StepCaRequestLog> & { path?: string };
          if (typeof j.path === 'string' && typeof j.status === 'number') lines.push(j as StepCaRequestLog);
        } catch {
          // not a log record
        }
      }
      return lines;
    };
    const ca: StepCa = {
      url,
      dir,
      rootPem,
      intermediatePem,
      intermediateKeyFile: join(dir, 'intermediate_ca_key'),
      rootFingerprint: createHash('sha256').update(Buffer.from(root.rawData)).digest('hex'),
      jwk,
      x5c: { name: 'ra-mesh-x5c', rootPem: x5cRootPem, certFile: x5cCertFile, keyFile: x5cKeyFile, rotate },
      requests,
      signedSerials: () => requests().filter((r) => r.path === '/1.0/sign' && r.status === 201 && r.serial).map((r) => r.serial!),
      output: () => out,
      running: () => !!child && child.exitCode === null && child.signalCode === null,
      stop,
      start,
      close: async () => {
        await stop();
        await Promise.all(exits);
        await rm(dir, { recursive: true, force: true });
      },
    };
    await start();
    return ca;
  } catch (e) {
    await rm(dir, { recursive: true, force: true });
    throw e;
  }
}

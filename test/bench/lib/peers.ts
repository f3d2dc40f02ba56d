// The third-party ACME servers the edge is compared with (see /work/shared/PEERS.md):
// - pebble-challtestsrv as the DNS server of the validators (every name -> 127.0.0.1, no AAAA);
// - Pebble (Let's Encrypt's test server) with PEBBLE_VA_NOSLEEP=1, nonces never rejected on purpose,
//   authorizations never reused (each order validates, as at the edge), its TLS certificate made here;
// - Caddy's acme_server, which validates http-01 on port 80 of the name through the system resolver:
//   it runs in a network + mount namespace made here (unshare), where port 80 and 127.0.0.1 are private
//   and /etc/resolv.conf is bind-mounted to point at a challtestsrv inside the namespace. The load client
//   runs inside the same namespace (nsenter).

import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { run } from '../../harness/tools.js';
import { freePorts } from '../../harness/ports.js';
import { sleep } from './stats.js';

export interface Proc {
  child: ChildProcess;
  output(): string;
  stop(): Promise<void>;
}

const procs = new Set<ChildProcess>();
process.on('exit', () => {
  for (const c of procs) c.kill('SIGKILL');
});

export function startProc(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): Proc {
  const child = spawn(cmd, args, { env: { ...process.env, ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'], ...(opts.cwd ? { cwd: opts.cwd } : {}) });
  procs.add(child);
  let out = '';
  child.stdout!.on('data', (d) => (out = (out + d).slice(-20_000)));
  child.stderr!.on('data', (d) => (out = (out + d).slice(-20_000)));
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  void exited.then(() => procs.delete(child));
  return {
    child,
    output: () => out,
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await exited;
      clearTimeout(t);
    },
  };
}

async function waitFor(what: string, p: Proc, ok: () => Promise<boolean> | boolean, ms = 20_000): Promise<void> {
  const until = Date.now() + ms;
  for (;;) {
    if (p.child.exitCode !== null) throw new Error(`${what} exited:\n${p.output()}`);
    if (await ok()) return;
    if (Date.now() > until) throw new Error(`${what} not ready within ${ms} ms:\n${p.output()}`);
    await sleep(100);
  }
}

/** pebble-challtestsrv answering every A query with 127.0.0.1 (and no AAAA), only its DNS server. */
export async function startChallDns(addr?: string, prefix: string[] = []): Promise<{ addr: string; proc: Proc }> {
  const [dnsPort, mgmtPort] = await freePorts(2);
  const dns = addr ?? `127.0.0.1:${dnsPort}`;
  const proc = startProc(prefix[0] ?? 'pebble-challtestsrv', [...prefix.slice(1), ...(prefix.length ? ['pebble-challtestsrv'] : []),
    '-dns01', dns, '-http01', '', '-https01', '', '-tlsalpn01', '', '-management', `127.0.0.1:${mgmtPort}`, '-defaultIPv4', '127.0.0.1', '-defaultIPv6', '']);
  await waitFor('pebble-challtestsrv', proc, () => /Starting management server/i.test(proc.output()) || /dns/i.test(proc.output()));
  await sleep(200);
  return { addr: dns, proc };
}

/** A self-signed certificate (also its own CA) for 127.0.0.1 and localhost, made with openssl. */
export async function selfSignedTls(dir: string, cn: string): Promise<{ cert: string; key: string }> {
  await mkdir(dir, { recursive: true });
  const cert = join(dir, `${cn}.crt`);
  const key = join(dir, `${cn}.key`);
  await run('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', cert, '-days', '2',
    '-subj', `/CN=${cn}`, '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost']);
  return { cert, key };
}

export interface AcmePeer {
  name: string;
  directory: string;
  caFile: string;
  http01Port: number;
  /** Process ids whose CPU and RSS belong to this server. */
  pids(): number[];
  output?(): string;
  /** Runs the bench load client where it must run (the Caddy namespace) and returns its JSON. */
  runClient(args: Record<string, unknown>): Promise<unknown>;
  /** Started afresh (empty state, same ports and certificate) before each of its turns (see startPebble). */
  freshEachTurn?: boolean;
  restart?(): Promise<void>;
  stop(): Promise<void>;
}

const CLI = new URL('../acme-load-cli.ts', import.meta.url).pathname;

export async function runClientHere(args: Record<string, unknown>, prefix: string[] = []): Promise<unknown> {
  const argv = [...prefix, process.execPath, '--import', 'tsx', CLI, JSON.stringify(args)];
  const { out } = await run(argv[0]!, argv.slice(1), { cwd: new URL('../../..', import.meta.url).pathname, timeoutMs: 180_000 });
  const line = out.trim().split('\n').filter((l) => l.includes('"ordersPerSec"')).pop();
  if (!line) throw new Error(`the load client printed no result:\n${out}`);
  return JSON.parse(line);
}

/** Pebble (PEERS.md): PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0, authorizations never reused, restarted per turn. */
export async function startPebble(dir: string, dns: string): Promise<AcmePeer> {
  const tls = await selfSignedTls(dir, 'pebble');
  const [port, mgmt, http01Port] = await freePorts(3);
  const cfg = join(dir, 'pebble-config.json');
  await writeFile(cfg, JSON.stringify({
    pebble: {
      listenAddress: `127.0.0.1:${port}`,
      managementListenAddress: `127.0.0.1:${mgmt}`,
      certificate: tls.cert,
      privateKey: tls.key,
      httpPort: http01Port,
      tlsPort: 5001,
      ocspResponderURL: '',
      externalAccountBindingRequired: false,
    },
  }));
  const start = async () => {
    const p = startProc('pebble', ['-config', cfg, '-dnsserver', dns], {
      env: { PEBBLE_VA_NOSLEEP: '1', PEBBLE_WFE_NONCEREJECT: '0', PEBBLE_AUTHZREUSE: '0' },
      cwd: dir,
    });
    await waitFor('pebble', p, () => /Listening on/i.test(p.output()));
    return p;
  };
  let proc = await start();
  return {
    name: 'pebble',
    directory: `https://127.0.0.1:${port}/dir`,
    caFile: tls.cert,
    http01Port,
    pids: () => [proc.child.pid!],
    output: () => proc.output(),
    runClient: (args) => runClientHere(args),
    // Same ports and TLS certificate; its state (accounts, orders) is in memory and starts empty.
    // Before every turn, because Pebble 2.x deadlocks under concurrent newOrders and never recovers. From
    // its goroutine dump: one newOrder holds a new authorization's lock while it adds the challenges
    // (makeChallenges -> AddChallenge, which waits for the store's write lock); another newOrder holds
    // the store's read lock in FindValidAuthorization (called also with PEBBLE_AUTHZREUSE=0), which
    // takes every authorization's lock in turn and waits for that one; every later request parks on the
    // store's lock. The scan grows with the authorizations held, so the longer Pebble runs the likelier
    // it gets; a fresh Pebble per turn keeps a deadlock to its own turn (its orders fail: no ratio from
    // it). A fresh Pebble is also its fastest, so the comparison is conservative.
    freshEachTurn: true,
    restart: async () => {
      await proc.stop();
      proc = await start();
    },
    stop: () => proc.stop(),
  };
}

/**
 * Caddy's acme_server inside a private network + mount namespace. Caddy's own http port is moved off
 * 80 (the client's http-01 responder takes 80 there); the ACME directory is
 * https://127.0.0.1:9443/acme/local/directory, its TLS certificate from Caddy's internal CA.
 */
export async function startCaddy(dir: string): Promise<AcmePeer> {
  await mkdir(dir, { recursive: true });
  const resolv = join(dir, 'resolv.conf');
  await writeFile(resolv, 'nameserver 127.0.0.1\noptions attempts:1 timeout:1\n');
  // The namespace holder: loopback up, resolv.conf replaced, then it waits; everything else joins it.
  const holder = startProc('unshare', ['--net', '--mount', '--propagation', 'private', 'sh', '-c',
    `ip link set lo up && mount --bind ${resolv} /etc/resolv.conf && echo ns-ready && exec sleep 3600`]);
  await waitFor('namespace', holder, () => /ns-ready/.test(holder.output()));
  const repo = new URL('../../..', import.meta.url).pathname;
  const ns = ['nsenter', '-t', String(holder.child.pid), '--net', '--mount', `--wd=${repo}`];
  const stops: Array<() => Promise<void>> = [() => holder.stop()];
  try {
    const dns = await startChallDns('127.0.0.1:53', ns);
    stops.unshift(() => dns.proc.stop());
    const caddyfile = join(dir, 'Caddyfile');
    await writeFile(caddyfile, ['{', '\tadmin off', '\tskip_install_trust', '\thttp_port 8080', '\thttps_port 9443', '}',
      'https://127.0.0.1:9443 {', '\ttls internal', '\tacme_server', '}', ''].join('\n'));
    const env = { HOME: dir, XDG_DATA_HOME: join(dir, 'data'), XDG_CONFIG_HOME: join(dir, 'config') };
    const caddy = startProc(ns[0]!, [...ns.slice(1), 'caddy', 'run', '--config', caddyfile, '--adapter', 'caddyfile'], { env });
    stops.unshift(() => caddy.stop());
    const rootFile = join(dir, 'data', 'caddy', 'pki', 'authorities', 'local', 'root.crt');
    await waitFor('caddy', caddy, async () => {
      if (!/serving initial configuration|server running/i.test(caddy.output())) return false;
      try {
        await readFile(rootFile);
        // Its own certificate for 127.0.0.1 is issued right after start.
        const r = await run(ns[0]!, [...ns.slice(1), 'curl', '-sS', '--cacert', rootFile, 'https://127.0.0.1:9443/acme/local/directory']).catch(() => ({ out: '' }));
        return /newNonce/.test(r.out);
      } catch {
        return false;
      }
    }, 30_000);
    // The pid of caddy itself (nsenter execs it).
    return {
      name: 'caddy',
      directory: 'https://127.0.0.1:9443/acme/local/directory',
      caFile: rootFile,
      http01Port: 80,
      pids: () => [caddy.child.pid!],
      output: () => caddy.output(),
      runClient: (args) => runClientHere(args, ns),
      stop: async () => {
        for (const s of stops) await s();
      },
    };
  } catch (e) {
    for (const s of stops) await s().catch(() => undefined);
    throw e;
  }
}

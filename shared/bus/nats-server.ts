// Real nats-server processes: one hub and one leaf per data center, each running JetStream in its own
// domain (the hub's domain is "hub", a leaf's is its dc name). Used by `ra-mesh up` and by the tests.
// Verified against nats-server 2.9.10 (Debian package); see /work/shared/PEERS.md, section NATS.

import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { chmod, mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { connect as netConnect } from 'node:net';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { splitHostPort, urlHost, type Topology } from '../config/index.js';
import type { Logger } from '../logging/logger.js';
import type { BusCredentials, LeafLinkUser, NatsUser } from './auth.js';

export interface NatsServerSpec {
  /** 'hub' or the dc name; also names the config and log files. */
  name: string;
  role: 'hub' | 'leaf';
  /** Client listener. */
  host: string;
  port: number;
  /** Hub only: where leaf servers connect. */
  leafnodeListen?: { host: string; port: number };
  /** Leaf only: nats-leaf://host:port of the hub's leafnode listener. */
  hubLeafUrl?: string;
  /** Every server runs JetStream in its own domain ('hub' or the dc name). */
  jetstream: { storeDir: string; domain: string };
  /** server_name (unique in the whole hub + leaf network). Default `ra-mesh-<name>`. */
  serverName?: string;
  /** HTTP monitoring port on `host`. Default: a random port chosen by nats-server, found through its ports file. */
  httpPort?: number;
  /** Node users with their subject permissions (every server knows every node: a node may connect anywhere). */
  users?: NatsUser[];
  /** Hub only: the logins leaf servers use on their links. */
  leafUsers?: LeafLinkUser[];
  /** Leaf only: this leaf's login on its link to the hub. */
  leafLogin?: { user: string; password: string };
  /** TLS on the client port and the leaf link (absolute file paths). */
  tls?: { ca: string; cert: string; key: string };
}

export interface RunningNatsServer {
  readonly spec: NatsServerSpec;
  /** Client URL, nats://host:port. */
  readonly url: string;
  /** pid of the current process (changes on restart()). */
  readonly pid: number;
  /** http://host:port of the monitoring endpoint of the current process. */
  readonly monitorUrl: string;
  /** false once the process has exited. */
  readonly running: boolean;
  /** SIGTERM, wait for exit, SIGKILL after 5 s. No-op when not running. */
  stop(): Promise<void>;
  /** Send a signal (default SIGKILL) and wait for exit. No-op when not running. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** stop() if running, then start again with the same config (a leaf waits for its link to the hub). */
  restart(): Promise<void>;
  /** Number of leafnode connections the server has now (its /leafz). */
  leafLinks(): Promise<number>;
}

export interface StartNatsServerOptions {
  /** Where config, log and ports file go. Default: `<jetstream.storeDir>/..`, i.e. next to the store. */
  dir?: string;
  /** nats-server binary. Default: env NATS_SERVER_BIN or 'nats-server' on PATH. */
  bin?: string;
  log?: Logger;
  /** Bound on each readiness wait (client port, then the leaf link). Default 15 s. */
  readyTimeoutMs?: number;
  /** Leaf only: wait until the leafnode link to the hub is up (default true). */
  waitForLeafLink?: boolean;
}

const STOP_GRACE_MS = 5_000;
const DEFAULT_READY_TIMEOUT_MS = 15_000;
const POLL_MS = 50;
const DOMAIN_RE = /^[A-Za-z0-9_-]+$/;

// ---------------------------------------------------------------------------------------------
// Specs from a topology

function parseNatsUrl(url: string, what: string): { host: string; port: number } {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new Error(`${what}: not a URL: ${url}`);
  }
  if (u.protocol !== 'nats:') {
    throw new Error(
      `${what}: ${url}: ra-mesh only starts plain nats:// servers itself; run a TLS NATS server yourself and do not use "ra-mesh up" for it`,
    );
  }
  const host = u.hostname.replace(/^\[|\]$/g, '');
  const port = u.port ? Number(u.port) : 4222;
  if (!host) throw new Error(`${what}: no host in ${url}`);
  return { host, port };
}

function isWildcard(host: string): boolean {
  return host === '0.0.0.0' || host === '::' || host === '';
}

function loopbackFor(host: string): string {
  return host.includes(':') ? '::1' : '127.0.0.1';
}

/**
 * The hub plus one leaf per `nats.dcs` entry. JetStream stores go to `<dataDir>/<name>`
 * (dataDir default `<stateDir>/nats`; nats-server adds its own `jetstream/` below that).
 */
export function natsServerSpecs(
  topology: Topology,
  dataDir: string = join(topology.stateDir(), 'nats'),
  credentials?: BusCredentials,
): NatsServerSpec[] {
  if (topology.config.nats.auth === 'nkey' && !credentials) {
    throw new Error('nats.auth is nkey: pass the bus credentials (ensureBusCredentials) to natsServerSpecs');
  }
  const nats = topology.config.nats;
  const base = resolve(dataDir);
  const mesh = topology.config.mesh.replace(/[^A-Za-z0-9_-]/g, '_');
  const hub = parseNatsUrl(nats.hub, 'nats.hub');
  const [lnHost, lnPort] = splitHostPort(nats.leafnodeListen);
  // Where leaves dial: the listen address, or loopback/the hub's host when it listens on a wildcard.
  const dialHost = !isWildcard(lnHost) ? lnHost : !isWildcard(hub.host) ? hub.host : loopbackFor(lnHost);
  const hubLeafUrl = `nats-leaf://${urlHost(dialHost)}:${lnPort}`;

  const specs: NatsServerSpec[] = [
    {
      name: 'hub',
      role: 'hub',
      host: hub.host,
      port: hub.port,
      leafnodeListen: { host: lnHost, port: lnPort },
      jetstream: { storeDir: join(base, 'hub'), domain: 'hub' },
      serverName: `${mesh}-hub`,
    },
  ];
  for (const [dc, url] of Object.entries(nats.dcs)) {
    if (dc === 'hub') throw new Error(`nats.dcs: a data center may not be named "hub" (the hub's JetStream domain)`);
    const c = parseNatsUrl(url, `nats.dcs.${dc}`);
    specs.push({
      name: dc,
      role: 'leaf',
      host: c.host,
      port: c.port,
      hubLeafUrl,
      jetstream: { storeDir: join(base, dc), domain: dc },
      serverName: `${mesh}-${dc}`,
    });
  }
  // Two servers on one listener cannot both start: say so now rather than through a bind error.
  const seen = new Map<string, string>();
  const claim = (host: string, port: number, who: string) => {
    const k = `${host}:${port}`;
    const prev = seen.get(k);
    if (prev) throw new Error(`nats: ${who} and ${prev} both listen on ${k}`);
    seen.set(k, who);
  };
  for (const s of specs) {
    claim(s.host, s.port, `${s.name} (client)`);
    if (s.leafnodeListen) claim(s.leafnodeListen.host, s.leafnodeListen.port, `${s.name} (leafnodes)`);
  }
  const tls = topology.config.nats.tls;
  for (const s of specs) {
    if (credentials) {
      s.users = credentials.users;
      if (s.role === 'hub') s.leafUsers = credentials.leafLinks;
      else {
        const login = credentials.leafLinks.find((l) => l.dc === s.name);
        if (!login) throw new Error(`nats: no leaf-link login for data center "${s.name}"`);
        s.leafLogin = { user: login.user, password: login.password };
      }
    }
    if (tls) s.tls = { ca: topology.resolvePath(tls.ca), cert: topology.resolvePath(tls.cert), key: topology.resolvePath(tls.key) };
  }
  for (const s of specs) validateSpec(s);
  return specs;
}

function validateSpec(spec: NatsServerSpec): void {
  if (!DOMAIN_RE.test(spec.jetstream.domain)) {
    throw new Error(
      `nats server "${spec.name}": JetStream domain "${spec.jetstream.domain}" may only contain letters, digits, "-" and "_" (it becomes a subject token)`,
    );
  }
  if (spec.role === 'hub' && !spec.leafnodeListen) throw new Error(`nats server "${spec.name}": a hub needs leafnodeListen`);
  if (spec.role === 'leaf' && !spec.hubLeafUrl) throw new Error(`nats server "${spec.name}": a leaf needs hubLeafUrl`);
}

// ---------------------------------------------------------------------------------------------
// Config text

const q = (s: string): string => JSON.stringify(s);

function serverNameOf(spec: NatsServerSpec): string {
  return spec.serverName ?? `ra-mesh-${spec.name}`;
}

/**
 * nats-server config text for one server. Without `portsFileDir` and `httpPort` no monitoring port is set
 * (`startNatsServer` always passes a ports dir and uses a random monitoring port when `httpPort` is unset).
 */
export function renderNatsConfig(spec: NatsServerSpec, extra: { portsFileDir?: string } = {}): string {
  validateSpec(spec);
  const lines: string[] = [
    `# ra-mesh: ${spec.role} "${spec.name}" (generated; edits are overwritten)`,
    `server_name: ${q(serverNameOf(spec))}`,
    `host: ${q(spec.host)}`,
    `port: ${spec.port}`,
  ];
  if (spec.httpPort !== undefined) lines.push(`http_port: ${spec.httpPort}`);
  else if (extra.portsFileDir !== undefined) lines.push(`http_port: -1`);
  if (extra.portsFileDir !== undefined) lines.push(`ports_file_dir: ${q(extra.portsFileDir)}`);
  lines.push(
    '',
    'jetstream {',
    `  store_dir: ${q(spec.jetstream.storeDir)}`,
    `  domain: ${q(spec.jetstream.domain)}`,
    '}',
    '',
  );
  const tlsBlock = (indent: string, server: boolean): string[] =>
    spec.tls
      ? [
          `${indent}tls {`,
          ...(server ? [`${indent}  cert_file: ${q(spec.tls.cert)}`, `${indent}  key_file: ${q(spec.tls.key)}`] : []),
          `${indent}  ca_file: ${q(spec.tls.ca)}`,
          `${indent}}`,
        ]
      : [];
  lines.push(...tlsBlock('', true));
  if (spec.users) {
    lines.push('authorization {', '  users: [');
    for (const u of spec.users) {
      lines.push(
        `    # ${u.node}`,
        `    { nkey: ${q(u.nkey)}, permissions: {`,
        `        publish: { allow: ${JSON.stringify(u.permissions.publish)} },`,
        `        subscribe: { allow: ${JSON.stringify(u.permissions.subscribe)} } } }`,
      );
    }
    lines.push('  ]', '}', '');
  }
  if (spec.role === 'hub') {
    lines.push('leafnodes {', `  host: ${q(spec.leafnodeListen!.host)}`, `  port: ${spec.leafnodeListen!.port}`);
    lines.push(...tlsBlock('  ', true));
    if (spec.leafUsers) {
      lines.push('  authorization {', '    users: [');
      for (const l of spec.leafUsers) lines.push(`      { user: ${q(l.user)}, password: ${q(l.password)} }`);
      lines.push('    ]', '  }');
    }
    lines.push('}');
  } else {
    let url = spec.hubLeafUrl!;
    if (spec.leafLogin) {
      const u = new URL(url);
      u.username = encodeURIComponent(spec.leafLogin.user);
      u.password = encodeURIComponent(spec.leafLogin.password);
      url = u.toString().replace(/\/$/, '');
    }
    lines.push('leafnodes {', '  reconnect: 1', '  remotes: [ {', `    url: ${q(url)}`);
    lines.push(...tlsBlock('    ', false));
    lines.push('  } ]', '}');
  }
  return lines.join('\n') + '\n';
}

// ---------------------------------------------------------------------------------------------
// Processes

// Every child still alive; killed synchronously if this process exits without stopping them.
const live = new Set<ChildProcess>();
let exitHookInstalled = false;
function track(child: ChildProcess): void {
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.on('exit', () => {
      for (const c of live) {
        try {
          c.kill('SIGKILL');
        } catch {
          /* already gone */
        }
      }
    });
  }
  live.add(child);
  child.once('exit', () => live.delete(child));
}

async function logTail(file: string, lines = 25): Promise<string> {
  try {
    const text = await readFile(file, 'utf8');
    return text.trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

function notFound(bin: string): Error {
  return new Error(
    `nats-server not found (tried "${bin}"): install it with "apt-get install nats-server" ` +
      `(ra-mesh is tested with 2.9.10), or set NATS_SERVER_BIN to its path`,
  );
}

/** Spawn; resolves once the OS started the process, rejects (ENOENT etc.) when it could not. */
function spawnServer(bin: string, configFile: string, logFile: string): Promise<ChildProcess> {
  const fd = openSync(logFile, 'a');
  try {
    const child = spawn(bin, ['-c', configFile], { stdio: ['ignore', fd, fd] });
    return new Promise<ChildProcess>((res, rej) => {
      child.once('spawn', () => {
        track(child);
        res(child);
      });
      child.once('error', (e: NodeJS.ErrnoException) => {
        if (e.code === 'ENOENT') rej(notFound(bin));
        else if (e.code === 'EACCES') rej(new Error(`cannot run nats-server "${bin}": permission denied (apt-get install nats-server, or fix NATS_SERVER_BIN)`));
        else rej(new Error(`cannot start nats-server "${bin}": ${e.message}`));
      });
    });
  } finally {
    closeSync(fd);
  }
}

function exited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

function waitExit(child: ChildProcess): Promise<void> {
  if (exited(child)) return Promise.resolve();
  return new Promise((res) => child.once('exit', () => res()));
}

/** Connect to the client port and read the INFO line; returns its server_name, or undefined if not (yet) a NATS server. */
function probeInfo(host: string, port: number, timeoutMs = 1_000): Promise<string | undefined> {
  return new Promise((res) => {
    const sock = netConnect({ host, port });
    let buf = '';
    const done = (v: string | undefined) => {
      clearTimeout(timer);
      sock.destroy();
      res(v);
    };
    const timer = setTimeout(() => done(undefined), timeoutMs);
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      const line = buf.slice(0, nl).trim();
      if (!line.startsWith('INFO ')) return done(undefined);
      try {
        done(String((JSON.parse(line.slice(5)) as { server_name?: unknown }).server_name ?? ''));
      } catch {
        done(undefined);
      }
    });
    sock.on('error', () => done(undefined));
    sock.on('close', () => done(undefined));
  });
}

async function fetchJson(url: string, timeoutMs = 1_000): Promise<unknown> {
  const r = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  return r.json();
}

class ManagedNatsServer implements RunningNatsServer {
  readonly url: string;
  private child: ChildProcess | undefined;
  private monitor = '';
  private readonly configFile: string;
  private readonly logFile: string;
  private readonly bin: string;
  private readonly timeoutMs: number;

  constructor(
    readonly spec: NatsServerSpec,
    private readonly dir: string,
    private readonly opts: StartNatsServerOptions,
  ) {
    this.url = `nats://${urlHost(spec.host)}:${spec.port}`;
    this.configFile = join(dir, `${spec.name}.conf`);
    this.logFile = join(dir, `${spec.name}.log`);
    this.bin = opts.bin ?? process.env.NATS_SERVER_BIN ?? 'nats-server';
    this.timeoutMs = opts.readyTimeoutMs ?? DEFAULT_READY_TIMEOUT_MS;
  }

  get pid(): number {
    return this.child?.pid ?? -1;
  }

  get monitorUrl(): string {
    return this.monitor;
  }

  get running(): boolean {
    return this.child !== undefined && !exited(this.child);
  }

  private get portsDir(): string {
    return join(this.dir, `${this.spec.name}.ports.d`);
  }

  async start(): Promise<void> {
    // Stale ports files of killed processes would only confuse; nats-server removes its own on a clean exit.
    await rm(this.portsDir, { recursive: true, force: true });
    await mkdir(this.portsDir, { recursive: true });
    await mkdir(this.spec.jetstream.storeDir, { recursive: true });
    // The config may hold leaf-link passwords: owner-only.
    await writeFile(this.configFile, renderNatsConfig(this.spec, { portsFileDir: this.portsDir }), { mode: 0o600 });
    await chmod(this.configFile, 0o600);
    const child = await spawnServer(this.bin, this.configFile, this.logFile);
    this.child = child;
    this.monitor = '';
    this.opts.log?.info({ nats: this.spec.name, pid: child.pid, url: this.url, log: this.logFile }, 'nats-server started');
    try {
      await this.waitReady(child);
    } catch (e) {
      if (!exited(child)) await this.terminate(child, 'SIGKILL');
      throw e;
    }
  }

  private async failure(child: ChildProcess, what: string): Promise<Error> {
    const how = exited(child) ? `exited (${child.exitCode !== null ? `code ${child.exitCode}` : child.signalCode})` : 'still running';
    // Give the log a moment to be flushed by the dying process.
    await sleep(POLL_MS);
    return new Error(
      `nats-server "${this.spec.name}" (${this.url}) ${what}; process ${how}. Config ${this.configFile}, log ${this.logFile}:\n` +
        (await logTail(this.logFile)),
    );
  }

  private async waitReady(child: ChildProcess): Promise<void> {
    const deadline = Date.now() + this.timeoutMs;
    const name = serverNameOf(this.spec);
    // 1. The client port answers with an INFO line from *this* server (not some other process on the port).
    for (;;) {
      if (exited(child)) throw await this.failure(child, 'exited before it was ready');
      if ((await probeInfo(this.spec.host, this.spec.port)) === name) break;
      if (Date.now() > deadline) throw await this.failure(child, `did not accept client connections within ${this.timeoutMs} ms`);
      await sleep(POLL_MS);
    }
    // 2. Monitoring endpoint: fixed, or the random one nats-server wrote to its ports file.
    if (this.spec.httpPort !== undefined) {
      this.monitor = `http://${urlHost(this.spec.host)}:${this.spec.httpPort}`;
    } else {
      for (;;) {
        const m = await this.readPortsFile(child.pid!);
        if (m) {
          this.monitor = m;
          break;
        }
        if (exited(child)) throw await this.failure(child, 'exited before it was ready');
        if (Date.now() > deadline) throw await this.failure(child, `wrote no ports file within ${this.timeoutMs} ms`);
        await sleep(POLL_MS);
      }
    }
    // 3. A leaf: its link to the hub is up.
    if (this.spec.role === 'leaf' && this.opts.waitForLeafLink !== false) {
      const linkDeadline = Date.now() + this.timeoutMs;
      for (;;) {
        if (exited(child)) throw await this.failure(child, 'exited before its leafnode link was up');
        if ((await this.leafLinks().catch(() => 0)) >= 1) break;
        if (Date.now() > linkDeadline) {
          throw await this.failure(child, `has no leafnode link to the hub (${this.spec.hubLeafUrl}) after ${this.timeoutMs} ms; is the hub running?`);
        }
        await sleep(POLL_MS);
      }
    }
    this.opts.log?.info({ nats: this.spec.name, pid: child.pid, monitor: this.monitor }, 'nats-server ready');
  }

  private async readPortsFile(pid: number): Promise<string | undefined> {
    let files: string[];
    try {
      files = await readdir(this.portsDir);
    } catch {
      return undefined;
    }
    const f = files.find((x) => x.endsWith(`_${pid}.ports`));
    if (!f) return undefined;
    try {
      const j = JSON.parse(await readFile(join(this.portsDir, f), 'utf8')) as { monitoring?: string[] };
      return j.monitoring?.[0];
    } catch {
      return undefined; // being written
    }
  }

  async leafLinks(): Promise<number> {
    if (!this.monitor) throw new Error(`nats-server "${this.spec.name}" has no monitoring endpoint (not running?)`);
    const j = (await fetchJson(`${this.monitor}/leafz`)) as { leafnodes?: number };
    return j.leafnodes ?? 0;
  }

  private async terminate(child: ChildProcess, signal: NodeJS.Signals): Promise<void> {
    if (exited(child)) return;
    const gone = waitExit(child);
    child.kill(signal);
    if (signal === 'SIGKILL') {
      await gone;
      return;
    }
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<'late'>((res) => {
      timer = setTimeout(() => res('late'), STOP_GRACE_MS);
    });
    const r = await Promise.race([gone, late]);
    clearTimeout(timer);
    if (r === 'late') {
      this.opts.log?.warn({ nats: this.spec.name, pid: child.pid }, `nats-server did not exit ${STOP_GRACE_MS} ms after ${signal}; SIGKILL`);
      child.kill('SIGKILL');
      await gone;
    }
  }

  async stop(): Promise<void> {
    if (!this.child) return;
    await this.terminate(this.child, 'SIGTERM');
    this.opts.log?.info({ nats: this.spec.name }, 'nats-server stopped');
  }

  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    if (!this.child) return;
    await this.terminate(this.child, signal);
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }
}

/** Start one nats-server and wait until it is ready (client port; for a leaf, also its link to the hub). */
export async function startNatsServer(spec: NatsServerSpec, opts: StartNatsServerOptions = {}): Promise<RunningNatsServer> {
  validateSpec(spec);
  const dir = resolve(opts.dir ?? join(spec.jetstream.storeDir, '..'));
  await mkdir(dir, { recursive: true });
  const s = new ManagedNatsServer(spec, dir, opts);
  await s.start();
  return s;
}

/**
 * Start the hub, then all leaves (in parallel). Resolves when every leaf's link to the hub is up, seen from
 * both ends. On any failure the servers already started are stopped before the error is rethrown.
 */
export async function startNatsServers(
  specs: NatsServerSpec[],
  opts: StartNatsServerOptions = {},
): Promise<{ servers: RunningNatsServer[]; stop(): Promise<void> }> {
  const hubs = specs.filter((s) => s.role === 'hub');
  const leaves = specs.filter((s) => s.role === 'leaf');
  const servers: RunningNatsServer[] = [];
  const stopAll = async () => {
    // Leaves first, so they do not log a lost uplink for a hub that is going away on purpose.
    await Promise.all(servers.filter((s) => s.spec.role === 'leaf').map((s) => s.stop()));
    await Promise.all(servers.filter((s) => s.spec.role === 'hub').map((s) => s.stop()));
  };
  try {
    for (const h of hubs) servers.push(await startNatsServer(h, opts));
    const results = await Promise.allSettled(leaves.map((l) => startNatsServer(l, { ...opts, waitForLeafLink: true })));
    for (const r of results) if (r.status === 'fulfilled') servers.push(r.value);
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
    // The hub sees every leaf too.
    if (hubs.length === 1 && leaves.length > 0) {
      const hub = servers[0]!;
      const deadline = Date.now() + (opts.readyTimeoutMs ?? DEFAULT_READY_TIMEOUT_MS);
      for (;;) {
        const n = await hub.leafLinks().catch(() => 0);
        if (n >= leaves.length) break;
        if (Date.now() > deadline) throw new Error(`nats hub sees ${n} of ${leaves.length} leafnode links after ${opts.readyTimeoutMs ?? DEFAULT_READY_TIMEOUT_MS} ms`);
        await sleep(POLL_MS);
      }
    }
  } catch (e) {
    await stopAll();
    throw e;
  }
  return { servers, stop: stopAll };
}

/** Poll a server's /leafz until it has at least `count` leafnode links (bounded by `timeoutMs`). */
export async function waitForLeafLinks(server: RunningNatsServer, count: number, timeoutMs = DEFAULT_READY_TIMEOUT_MS): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let n = 0;
  for (;;) {
    n = await server.leafLinks().catch(() => 0);
    if (n >= count) return;
    if (Date.now() > deadline) throw new Error(`nats-server "${server.spec.name}" has ${n} of ${count} leafnode links after ${timeoutMs} ms`);
    await sleep(POLL_MS);
  }
}

// `ra-mesh compose <topology.yaml>`: a docker-compose deployment generated from the topology, so the
// topology stays the one source of truth. Three things come out of it:
//   - the compose file: a hub NATS, one leaf NATS per data center, one container per node, a network per
//     segment (an isolated one is `internal: true`), a volume per store, health checks, secrets;
//   - a compose-flavoured topology next to the source (container host names, container paths), which
//     every container reads at /etc/ra-mesh/topology.yaml;
//   - with --secrets: the secret files (each node's private key and NATS nkey, each nats-server's config
//     with its users, permissions and leaf logins) and the public-keys folder every node mounts read-only,
//     synced from the source topology's keys and credentials (made when missing).
// The public-keys folder is the nodes' keysDir: every node's public keys (with their rotation stages, so
// a rotation reaches running nodes within keyReload) and, for each node, a link <id>.key.jwk ->
// /run/secrets/<id>.key.jwk that resolves only in that node's own container, where its key secret is.
// Network layout (an edge reaches only its segment and the NATS server it connects to):
//   core          hub NATS, every leaf NATS (leaf links), nodes connecting to the hub (the gateway)
//   dc-<dc>       a leaf NATS and the relays/gateway connecting to it
//   seg-<segment> the edges of a segment and the NATS server(s) they connect to; internal when isolated

import { createHash } from 'node:crypto';
import { chmod, mkdir, readdir, readFile, readlink, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { basename, dirname, join, relative, resolve, sep } from 'node:path';
import { parseArgs } from 'node:util';
import { stringify } from 'yaml';
import {
  loadTopology,
  parseTopology,
  splitHostPort,
  type NodeConfig,
  type Topology,
  type TopologyConfig,
} from '../../../shared/config/index.js';
import { ensureBusCredentials } from '../../../shared/bus/auth.js';
import { natsServerSpecs, renderNatsConfig } from '../../../shared/bus/nats-server.js';
import { KEY_STAGES, loadOrCreateMeshNodeKey, privateKeyFile, stagedPublicKeyFile } from '../../../shared/envelope/index.js';

const USAGE = `usage: ra-mesh compose <topology.yaml> [--out <docker-compose.yml>] [--check] [--secrets] [--image <name:tag>]
  writes the compose file (default ./docker-compose.yml) and the compose-flavoured topology
  (<topology dir>/compose/<topology file name>); --check only compares them with the files on disk;
  --secrets also writes the secret folders (<topology dir>/compose/secrets) from the topology's keys
  and NATS credentials, creating missing ones (run it again after every key rotation step)
`;

/** Where things live inside the containers (the compose-flavoured topology names these paths). */
export const CONTAINER = {
  topology: '/etc/ra-mesh/topology.yaml',
  stateDir: '/var/lib/ra-mesh',
  /** The keysDir: the public-keys folder (read-only bind mount) with the link to the node's own key secret. */
  keysDir: '/etc/ra-mesh/keys',
  /** Compose secrets: <id>.key.jwk, <id>.nk for a node; nats.conf for a nats-server. */
  secrets: '/run/secrets',
  /** Writable (tmpfs): the entrypoint links the node's own nkey here (the credentialsDir). */
  credentialsDir: '/run/ra-mesh/nats',
  files: '/run/secrets/files',
} as const;

const NATS_CLIENT_PORT = 4222;
const NATS_LEAF_PORT = 7422;
/** nats-server monitoring, bound to the container's loopback only: for its health check. */
const NATS_MONITOR = '127.0.0.1:8222';
const DEFAULT_METRICS_PORT = 9464;
const DEFAULT_GATEWAY_HTTP_PORT = 8080;
export const DEFAULT_IMAGE = 'ra-mesh:latest';

export interface ComposeOptions {
  /** The compose file to write; its paths are relative to its folder. */
  composeFile: string;
  /** The compose-flavoured topology. Default `<source dir>/compose/<source file name>`. */
  topologyFile?: string;
  /** Host folder of the secrets. Default `<source dir>/compose/secrets`. */
  secretsDir?: string;
  /** Image of every container. Default `${RA_MESH_IMAGE:-ra-mesh:latest}` (an environment variable may override it). */
  image?: string;
}

export interface NatsServerPlan {
  /** 'hub' or the data center. */
  name: string;
  service: string;
  secret: string;
}

export interface ComposePlan {
  composeFile: string;
  topologyFile: string;
  secretsDir: string;
  composeText: string;
  topologyText: string;
  /** The compose-flavoured topology, parsed. */
  derived: Topology;
  nats: NatsServerPlan[];
  /** Node id -> service name and the names of its key and nkey secrets. */
  nodes: Array<{ id: string; service: string; keySecret: string; nkeySecret: string }>;
  /** Host folder of the public keys (mounted as every node's keysDir). */
  publicKeysDir: string;
}

class ComposeError extends Error {}

const fail = (msg: string): never => {
  throw new ComposeError(`ra-mesh compose: ${msg}`);
};

/** A compose resource name ([a-zA-Z0-9._-]) from free text (segment and data center names). */
function slug(s: string): string {
  return s.replace(/[^A-Za-z0-9_.-]+/g, '-').replace(/^[-.]+|[-.]+$/g, '') || 'x';
}

function isLoopback(address: string): boolean {
  const a = address.toLowerCase();
  return a === 'localhost' || a === '::1' || a === '[::1]' || /^127\./.test(a);
}

/** Which server of the source topology a node's NATS URL is: 'hub' or a data center name. */
function natsServerOf(source: Topology, id: string): string {
  try {
    return source.jetStreamDomain(id);
  } catch {
    return fail(`node "${id}" connects to NATS at ${source.natsUrl(id)}, which is neither nats.hub nor a nats.dcs server: compose runs only those`);
  }
}

/** The network of a data center's leaf NATS and the relays on it: dc-<dc> (a dc named dc-x keeps its name). */
const dcNetwork = (dc: string): string => (/^dc-/.test(slug(dc)) ? slug(dc) : `dc-${slug(dc)}`);

const natsService = (server: string): string => (server === 'hub' ? 'nats-hub' : `nats-${slug(server)}`);

/** A `./relative/path` from the compose file's folder (compose resolves relative paths against it). */
function fromCompose(composeDir: string, file: string): string {
  const r = relative(composeDir, file).split(sep).join('/');
  return r.startsWith('../') ? r : `./${r}`;
}

/**
 * The compose-flavoured topology config and the files it must mount: host names of the compose services,
 * listeners on every interface of the container, container paths for state, keys and credentials.
 */
function deriveConfig(source: Topology): { config: TopologyConfig; files: Array<{ secret: string; hostFile: string; users: string[] }> } {
  const c = structuredClone(source.config) as TopologyConfig;
  const files = new Map<string, { secret: string; hostFile: string; users: Set<string> }>();
  // A file the topology names (TLS, CA credentials) becomes a compose secret mounted at /run/secrets/files/<name>.
  const fileSecret = (p: string, user: string | string[]): string => {
    const hostFile = source.resolvePath(p);
    let f = files.get(hostFile);
    if (!f) {
      // The file name keeps its meaning for the operator; the hash tells two files of one name apart.
      const tag = createHash('sha256').update(hostFile).digest('hex').slice(0, 6);
      f = { secret: `file-${slug(basename(hostFile))}-${tag}`, hostFile, users: new Set() };
      files.set(hostFile, f);
    }
    for (const u of Array.isArray(user) ? user : [user]) f.users.add(u);
    return `${CONTAINER.files}/${f.secret}`;
  };

  c.stateDir = CONTAINER.stateDir;
  c.keysDir = CONTAINER.keysDir;
  const serverOf = new Map(source.nodes.map((n) => [n.id, natsServerOf(source, n.id)]));
  const urlOf = (server: string) => `nats://${natsService(server)}:${NATS_CLIENT_PORT}`;
  c.nats.hub = urlOf('hub');
  c.nats.leafnodeListen = `0.0.0.0:${NATS_LEAF_PORT}`;
  c.nats.dcs = Object.fromEntries(Object.keys(source.config.nats.dcs).map((dc) => [dc, urlOf(dc)]));
  c.nats.credentialsDir = CONTAINER.credentialsDir;
  const natsServers = ['hub', ...Object.keys(source.config.nats.dcs)].map(natsService);
  if (c.nats.tls) {
    const everyone = [...natsServers, ...source.nodes.map((n) => n.id)];
    c.nats.tls = {
      ca: fileSecret(c.nats.tls.ca, everyone),
      cert: fileSecret(c.nats.tls.cert, natsServers),
      key: fileSecret(c.nats.tls.key, natsServers),
    };
  }
  for (const n of c.nodes) {
    const server = serverOf.get(n.id)!;
    // The default (nats.dcs[dc], else the hub) is kept when it picks the same server; otherwise say which.
    const byDefault = c.nats.dcs[n.dc] ? n.dc : 'hub';
    if (server !== byDefault || n.nats !== undefined) n.nats = urlOf(server);
    if (server === byDefault) delete n.nats;
    delete n.store; // <stateDir>/nodes/<id>, on the node's volume
    const port = (hp: string | undefined, dflt: number) => (hp ? splitHostPort(hp)[1] : dflt);
    if (n.role === 'gateway') n.http = `0.0.0.0:${port(n.http, DEFAULT_GATEWAY_HTTP_PORT)}`;
    // Every node gets a metrics listener: its health check (the gateway's is its http /health).
    if (n.metrics || n.role !== 'gateway') n.metrics = `0.0.0.0:${port(n.metrics, DEFAULT_METRICS_PORT)}`;
    if (n.acme) {
      const [, p] = splitHostPort(n.acme.listen);
      n.acme.listen = `0.0.0.0:${p}`;
      n.acme.externalUrl ??= `https://${n.id}:${p}`;
      if (n.acme.hosts) {
        // Loopback overrides point at the edge's own container: names resolve through the segment's DNS instead.
        const kept = Object.fromEntries(Object.entries(n.acme.hosts).filter(([, a]) => !isLoopback(a)));
        if (Object.keys(kept).length > 0) n.acme.hosts = kept;
        else delete n.acme.hosts;
      }
      if (n.acme.tls) n.acme.tls = { cert: fileSecret(n.acme.tls.cert, n.id), key: fileSecret(n.acme.tls.key, n.id) };
    }
    if (n.cas) {
      const cas = n.cas;
      if (cas.type === 'stepca') {
        const p = cas.provisioner;
        if (p.type === 'jwk') {
          if (p.keyFile) p.keyFile = fileSecret(p.keyFile, n.id);
          if (p.passwordFile) p.passwordFile = fileSecret(p.passwordFile, n.id);
        } else {
          p.certFile = fileSecret(p.certFile, n.id);
          p.keyFile = fileSecret(p.keyFile, n.id);
        }
      } else if (cas.type === 'vault') {
        if (cas.caFile) cas.caFile = fileSecret(cas.caFile, n.id);
        if (cas.auth.type === 'approle' && cas.auth.secretIdFile) cas.auth.secretIdFile = fileSecret(cas.auth.secretIdFile, n.id);
      } else if (cas.type === 'cloudcas') {
        cas.credentialsFile = fileSecret(cas.credentialsFile, n.id);
        if (cas.caFile) cas.caFile = fileSecret(cas.caFile, n.id);
      }
    }
  }
  return { config: c, files: [...files.values()].map((f) => ({ secret: f.secret, hostFile: f.hostFile, users: [...f.users] })) };
}

/** deploy/healthcheck.mjs: GET url answers 200 (and its JSON has `expect`, e.g. nats.state=connected). */
function healthcheck(url: string, expect?: string): Record<string, unknown> {
  return {
    test: ['CMD', 'node', '/opt/ra-mesh/deploy/healthcheck.mjs', url, ...(expect ? [expect] : [])],
    interval: '5s',
    timeout: '4s',
    retries: 24,
    start_period: '10s',
  };
}

/** Plans the compose deployment of a topology (nothing is written). */
export function planCompose(source: Topology, opts: ComposeOptions): ComposePlan {
  const composeFile = resolve(opts.composeFile);
  const composeDir = dirname(composeFile);
  const srcFile = resolve(source.source);
  const topologyFile = resolve(opts.topologyFile ?? join(dirname(srcFile), 'compose', basename(srcFile)));
  const secretsDir = resolve(opts.secretsDir ?? join(dirname(topologyFile), 'secrets'));
  const image = opts.image ?? `\${RA_MESH_IMAGE:-${DEFAULT_IMAGE}}`;

  // segments: every entry names a segment some edge serves (a typo must not leave a segment routable).
  const served = new Set(source.edges().map((e) => e.segment).filter((s): s is string => s !== undefined));
  for (const s of Object.keys(source.config.segments ?? {})) {
    if (!served.has(s)) fail(`segments.${s}: no edge serves segment "${s}" (nodes[].segment)`);
  }
  if (source.config.nats.auth !== 'nkey') {
    fail('nats.auth: compose deployments need "nkey" (per-node credentials as secrets); "none" leaves the bus open to every container of every segment');
  }

  const { config, files } = deriveConfig(source);
  const topologyHeader =
    `# Generated by \`ra-mesh compose ${fromCompose(composeDir, srcFile)}\` from that topology; do not edit.\n` +
    `# The topology every container of ${fromCompose(composeDir, composeFile)} reads at ${CONTAINER.topology}:\n` +
    `# compose service names as hosts, container paths for state, keys and credentials.\n`;
  const topologyText = topologyHeader + stringify(config, { lineWidth: 0 });
  // The derived topology must itself be valid (it is what the nodes load).
  const derived = parseTopology(topologyText, topologyFile, dirname(topologyFile));

  const services: Record<string, Record<string, unknown>> = {};
  const networks: Record<string, Record<string, unknown>> = {};
  const volumes: Record<string, Record<string, never>> = {};
  const secrets: Record<string, { file: string }> = {};
  const memberOf = new Map<string, Set<string>>();
  const join_ = (service: string, network: string) => {
    if (!memberOf.has(service)) memberOf.set(service, new Set());
    memberOf.get(service)!.add(network);
  };
  const addNetwork = (name: string, def: Record<string, unknown>) => {
    networks[name] ??= def;
  };

  const natsNames = ['hub', ...Object.keys(config.nats.dcs)];
  const natsPlans: NatsServerPlan[] = natsNames.map((name) => ({ name, service: natsService(name), secret: `${natsService(name)}.conf` }));
  const nodePlans = config.nodes.map((n) => ({ id: n.id, service: n.id, keySecret: `${n.id}.key.jwk`, nkeySecret: `${n.id}.nk` }));
  const publicKeysDir = join(secretsDir, 'public-keys');
  const taken = new Map<string, string>();
  for (const [svc, who] of [...natsPlans.map((p) => [p.service, `the NATS server "${p.name}"`]), ...nodePlans.map((p) => [p.service, `node "${p.id}"`])]) {
    const prev = taken.get(svc!);
    if (prev) fail(`${who} and ${prev} would both be compose service "${svc}": rename one`);
    taken.set(svc!, who!);
  }

  addNetwork('core', { driver: 'bridge' });
  for (const p of natsPlans) join_(p.service, 'core');
  const serverOf = (n: NodeConfig) => derived.jetStreamDomain(n.id);
  for (const n of config.nodes) {
    const server = serverOf(n);
    if (n.role === 'edge') {
      const seg = n.segment ?? n.id;
      const net = `seg-${slug(seg)}`;
      const isolated = n.segment !== undefined && config.segments?.[n.segment]?.isolated === true;
      const prev = networks[net];
      if (prev && (prev.internal === true) !== isolated) fail(`network ${net}: segment names "${seg}" clash after slugging`);
      addNetwork(net, isolated ? { driver: 'bridge', internal: true } : { driver: 'bridge' });
      join_(n.id, net);
      join_(natsService(server), net);
    } else if (server === 'hub') {
      join_(n.id, 'core');
    } else {
      const net = dcNetwork(server);
      addNetwork(net, { driver: 'bridge' });
      join_(n.id, net);
      join_(natsService(server), net);
    }
  }

  const topoMount = `${fromCompose(composeDir, topologyFile)}:${CONTAINER.topology}:ro`;
  const keysMount = `${fromCompose(composeDir, publicKeysDir)}:${CONTAINER.keysDir}:ro`;
  const hardening = {
    read_only: true,
    security_opt: ['no-new-privileges:true'],
    cap_drop: ['ALL'],
    // DAC_OVERRIDE: secret files keep the host owner (compose bind-mounts them) and mode 0600.
    cap_add: ['DAC_OVERRIDE', 'NET_BIND_SERVICE'],
    tmpfs: ['/run/ra-mesh', '/tmp'],
    restart: 'unless-stopped',
  };
  const logLevel = { RA_MESH_LOG_LEVEL: '${RA_MESH_LOG_LEVEL:-info}' };

  for (const p of natsPlans) {
    const vol = `${p.service}-data`;
    volumes[vol] = {};
    secrets[p.secret] = { file: fromCompose(composeDir, join(secretsDir, p.secret)) };
    const fileSecrets = files.filter((f) => f.users.includes(p.service)).map((f) => ({ source: f.secret, target: `files/${f.secret}` }));
    services[p.service] = {
      image,
      command: ['nats', p.name],
      hostname: p.service,
      volumes: [`${vol}:${CONTAINER.stateDir}/nats/${p.name}`],
      secrets: [{ source: p.secret, target: 'nats.conf' }, ...fileSecrets],
      networks: [...memberOf.get(p.service)!].sort(),
      healthcheck: healthcheck(`http://${NATS_MONITOR}/healthz`),
      ...(p.name === 'hub' ? {} : { depends_on: { 'nats-hub': { condition: 'service_healthy' } } }),
      ...hardening,
    };
  }

  for (const n of config.nodes) {
    const d = derived.node(n.id);
    const server = serverOf(n);
    const vol = `store-${n.id}`;
    volumes[vol] = {};
    const plan = nodePlans.find((p) => p.id === n.id)!;
    secrets[plan.keySecret] = { file: fromCompose(composeDir, join(secretsDir, plan.keySecret)) };
    secrets[plan.nkeySecret] = { file: fromCompose(composeDir, join(secretsDir, plan.nkeySecret)) };
    const fileSecrets = files.filter((f) => f.users.includes(n.id)).map((f) => ({ source: f.secret, target: `files/${f.secret}` }));
    let health: string;
    let expect: string | undefined;
    const ports: string[] = [];
    if (d.role === 'gateway') {
      const [, p] = splitHostPort(d.http!);
      health = `http://127.0.0.1:${p}/health`;
      expect = 'nats=connected';
      // The gateway's /roots.pem, /crl, /status and /metrics, on the docker host's loopback only.
      ports.push(`127.0.0.1:${p}:${p}`);
    } else if (d.role === 'edge') {
      const [, p] = splitHostPort(d.acme!.listen);
      health = `https://127.0.0.1:${p}/acme/directory`;
      // A segment with a route out is served on the docker host's port too; an isolated one only inside.
      const isolated = d.segment !== undefined && config.segments?.[d.segment]?.isolated === true;
      if (!isolated) ports.push(`${p}:${p}`);
    } else {
      // The metrics listener's /node-status: up, and connected to its NATS server.
      health = `http://127.0.0.1:${splitHostPort(d.metrics!)[1]}/node-status`;
      expect = 'nats.state=connected';
    }
    const depends: Record<string, { condition: string }> = { [natsService(server)]: { condition: 'service_healthy' } };
    if (d.parent) depends[d.parent] = { condition: 'service_healthy' };
    services[n.id] = {
      image,
      command: ['node', n.id],
      hostname: n.id,
      environment: logLevel,
      volumes: [topoMount, keysMount, `${vol}:${CONTAINER.stateDir}/nodes/${n.id}`],
      secrets: [plan.keySecret, plan.nkeySecret, ...fileSecrets],
      networks: [...memberOf.get(n.id)!].sort(),
      ...(ports.length ? { ports } : {}),
      healthcheck: healthcheck(health, expect),
      depends_on: depends,
      ...hardening,
    };
  }
  for (const f of files) secrets[f.secret] = { file: fromCompose(composeDir, f.hostFile) };

  const header =
    `# Generated by \`ra-mesh compose ${fromCompose(composeDir, srcFile)}\` from that topology; do not edit.\n` +
    `# Regenerate after changing the topology; a test keeps this file and the topology in step.\n` +
    `# Before \`docker-compose up\`: build the image (deploy/build-image.sh) and write the secrets:\n` +
    `#   npx ra-mesh compose ${fromCompose(composeDir, srcFile)} --out ${fromCompose(composeDir, composeFile)} --secrets\n` +
    `# Networks: core (hub and leaf NATS, gateway), dc-<dc> (a leaf NATS and its relays), seg-<segment> (edges and\n` +
    `# their leaf NATS; internal when the topology marks the segment isolated).\n`;
  const compose = { version: '3.8', services, networks, volumes, secrets };
  const composeText = header + stringify(compose, { lineWidth: 0, aliasDuplicateObjects: false });
  return { composeFile, topologyFile, secretsDir, publicKeysDir, composeText, topologyText, derived, nats: natsPlans, nodes: nodePlans };
}

// ---------------------------------------------------------------------------------------------
// Secrets

async function writeIfChanged(file: string, text: string, mode: number): Promise<boolean> {
  const have = await readFile(file, 'utf8').catch(() => undefined);
  if (have === text) {
    await chmod(file, mode);
    return false;
  }
  // Atomic: a node re-reading its (bind-mounted) folder never sees a half-written key.
  const tmp = `${file}.${process.pid}.tmp`;
  await writeFile(tmp, text, { mode });
  await chmod(tmp, mode);
  await rename(tmp, file);
  return true;
}

/**
 * Writes (or brings up to date) the secrets of the plan from the source topology's keys and NATS
 * credentials, creating missing node keys and credentials there. Returns the files that changed.
 *   <id>.key.jwk, <id>.nk    each node's private key and NATS nkey (0600)
 *   nats-<name>.conf         each nats-server's config: users, permissions, leaf logins (0600)
 *   public-keys/             every node's public keys with rotation stages, links to the key secrets
 */
export async function writeComposeSecrets(source: Topology, plan: ComposePlan): Promise<string[]> {
  const changed: string[] = [];
  const keysDir = source.keysDir();
  for (const n of source.nodes) await loadOrCreateMeshNodeKey(source, n.id);
  const credentials = await ensureBusCredentials(source);
  if (!credentials) fail('nats.auth: compose deployments need "nkey"');
  for (const d of [plan.secretsDir, plan.publicKeysDir]) await mkdir(d, { recursive: true, mode: 0o700 });
  await chmod(plan.secretsDir, 0o700);
  await chmod(plan.publicKeysDir, 0o755);
  const put = async (file: string, text: string, mode: number) => {
    if (await writeIfChanged(file, text, mode)) changed.push(file);
  };
  for (const p of plan.nodes) {
    await put(join(plan.secretsDir, p.keySecret), await readFile(privateKeyFile(keysDir, p.id), 'utf8'), 0o600);
    await put(join(plan.secretsDir, p.nkeySecret), await readFile(join(source.natsCredentialsDir(), `${p.id}.nk`), 'utf8'), 0o600);
  }
  // Public keys with their rotation stages; what the master folder no longer has (a retired prev key, a
  // withdrawn next key) disappears here too, and the running nodes stop accepting it at their next reload.
  const want = new Map<string, string>();
  for (const n of source.nodes) {
    for (const stage of KEY_STAGES) {
      const f = stagedPublicKeyFile(keysDir, n.id, stage);
      const text = await readFile(f, 'utf8').catch(() => undefined);
      if (text !== undefined) want.set(basename(f), text);
    }
  }
  for (const [name, text] of want) await put(join(plan.publicKeysDir, name), text, 0o644);
  const links = new Map(plan.nodes.map((p) => [p.keySecret, `${CONTAINER.secrets}/${p.keySecret}`]));
  for (const [name, target] of links) {
    const file = join(plan.publicKeysDir, name);
    if ((await readlink(file).catch(() => undefined)) === target) continue;
    await rm(file, { force: true });
    await symlink(target, file);
    changed.push(file);
  }
  for (const f of await readdir(plan.publicKeysDir)) {
    if (!want.has(f) && !links.has(f)) {
      await rm(join(plan.publicKeysDir, f), { force: true });
      changed.push(join(plan.publicKeysDir, f));
    }
  }
  // Every server listens on all of its container's networks (the core and the segments it serves).
  const specs = natsServerSpecs(plan.derived, `${CONTAINER.stateDir}/nats`, credentials).map((s) => ({ ...s, host: '0.0.0.0' }));
  for (const p of plan.nats) {
    const spec = specs.find((s) => s.name === p.name);
    if (!spec) fail(`no nats-server spec for "${p.name}"`);
    // Monitoring on the container's loopback only: the health check's /healthz, nothing for the segments.
    const text = renderNatsConfig(spec!) + `\n# health check (loopback of the container only)\nhttp: ${JSON.stringify(NATS_MONITOR)}\n`;
    await put(join(plan.secretsDir, p.secret), text, 0o600);
  }
  return changed;
}

// ---------------------------------------------------------------------------------------------
// Command

export async function composeCommand(args: string[]): Promise<number> {
  const { positionals, values } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      out: { type: 'string', default: 'docker-compose.yml' },
      check: { type: 'boolean', default: false },
      secrets: { type: 'boolean', default: false },
      image: { type: 'string' },
    },
  });
  if (positionals.length !== 1) {
    process.stderr.write(USAGE);
    return 2;
  }
  try {
    return await runCompose(positionals[0]!, values);
  } catch (e) {
    if (e instanceof ComposeError) {
      process.stderr.write(`${e.message}\n`);
      return 1;
    }
    throw e;
  }
}

async function runCompose(topologyArg: string, values: { out?: string; check?: boolean; secrets?: boolean; image?: string }): Promise<number> {
  const source = loadTopology(topologyArg);
  const plan = planCompose(source, { composeFile: values.out!, ...(values.image ? { image: values.image } : {}) });
  const outputs: Array<[string, string]> = [
    [plan.composeFile, plan.composeText],
    [plan.topologyFile, plan.topologyText],
  ];
  if (values.check) {
    const stale: string[] = [];
    for (const [file, text] of outputs) if ((await readFile(file, 'utf8').catch(() => undefined)) !== text) stale.push(file);
    if (stale.length) {
      process.stderr.write(`ra-mesh compose: out of date with ${source.source}: ${stale.join(', ')}\n  regenerate: ra-mesh compose ${topologyArg} --out ${values.out}\n`);
      return 1;
    }
    process.stdout.write(`${plan.composeFile} and ${plan.topologyFile} are up to date\n`);
    return 0;
  }
  for (const [file, text] of outputs) {
    await mkdir(dirname(file), { recursive: true });
    await writeFile(file, text);
    process.stdout.write(`wrote ${file}\n`);
  }
  if (values.secrets) {
    const changed = await writeComposeSecrets(source, plan);
    process.stdout.write(`secrets in ${plan.secretsDir}: ${changed.length} file(s) changed\n`);
  }
  return 0;
}

import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { parseTopology, type Topology } from '../../shared/config/index.js';
import { createLogger } from '../../shared/logging/logger.js';
import { startMesh, type RunningMesh } from '../../services/cli/mesh.js';
import { loadOrCreateMeshNodeKey } from '../../shared/envelope/index.js';
import type { TestBus } from './nats.js';
import { freePort, freePorts } from './ports.js';

export interface TestNode {
  id: string;
  role: 'edge' | 'relay' | 'gateway';
  dc: string;
  parent?: string;
  segment?: string;
  policy?: Record<string, unknown>;
  acme?: Record<string, unknown>;
  cas?: Record<string, unknown>;
}

export interface TestMesh {
  topology: Topology;
  bus: TestBus;
  mesh: RunningMesh;
  dir: string;
  /** The topology file of this mesh. */
  topologyFile: string;
  /** ACME directory URL of an edge. */
  directory(edgeId: string): string;
  /** File with the TLS certificate of an edge's ACME listener (trust it in clients). */
  edgeTlsCert(edgeId: string): string;
  rootsUrl(): string;
  /** Runs a node of the topology as its own `ra-mesh up --only <id> --no-nats` process (for kill -9 tests). */
  spawnNode(id: string, env?: NodeJS.ProcessEnv): Promise<NodeProcess>;
  stop(): Promise<void>;
}

export interface NodeProcess {
  readonly pid: number;
  /** Everything the process wrote so far. */
  output(): string;
  /** Sends a signal (default SIGKILL) and waits for the exit. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** Resolves when the process exits (by itself or killed). */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

const BIN = fileURLToPath(new URL('../../bin/ra-mesh.js', import.meta.url));

/** Starts `ra-mesh up <file> --only <id> --no-nats` and waits for "is up" (bounded). */
async function spawnNodeProcess(topologyFile: string, id: string, env: NodeJS.ProcessEnv = {}): Promise<NodeProcess> {
  const child = spawn(process.execPath, [BIN, 'up', topologyFile, '--only', id, '--no-nats'], {
    env: { ...process.env, RA_MESH_LOG_LEVEL: process.env.RA_MESH_LOG_LEVEL ?? 'error', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((res) => child.once('exit', (code, signal) => res({ code, signal })));
  children.add(child);
  void exited.then(() => children.delete(child));
  const proc: NodeProcess = {
    pid: child.pid!,
    output: () => out,
    exited,
    kill: async (signal = 'SIGKILL') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      await exited;
    },
  };
  const until = Date.now() + 30_000;
  while (!/is up/.test(out)) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`node ${id} exited before it was up:\n${out}`);
    if (Date.now() > until) {
      await proc.kill();
      throw new Error(`node ${id} not up within 30 s:\n${out}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return proc;
}

// Node processes still running when the test process exits are killed with it.
const children = new Set<ChildProcess>();
process.on('exit', () => {
  for (const c of children) c.kill('SIGKILL');
});

const HOST = '127.0.0.1';
const PORT_RACE_ATTEMPTS = 3;

/**
 * Starts a real mesh for tests through the same code path as `ra-mesh up`: the topology (built from
 * `nodes`, with free loopback ports) is written to disk, then startMesh starts the hub + one leaf
 * nats-server per data center of the topology (with the bus credentials and permissions it generates)
 * and every node.
 */
export async function startTestMesh(opts: {
  nodes: TestNode[];
  retransmitMs?: number;
  envelope?: Record<string, unknown>;
  /** Extra members of the topology's nats block (auth, tls, ...). */
  nats?: Record<string, unknown>;
  /** Nodes not started in this process: the test runs them with spawnNode(). */
  external?: string[];
  /** topology.keyReload (how often nodes re-read the keys folder). */
  keyReload?: string;
}): Promise<TestMesh> {
  const dir = await mkdtemp(join(tmpdir(), 'ra-mesh-test-'));
  const dcs = [...new Set(opts.nodes.filter((n) => n.role !== 'gateway').map((n) => n.dc))];
  try {
    for (let attempt = 1; ; attempt++) {
      const [hubPort, leafPort, ...dcPorts] = await freePorts(2 + dcs.length, HOST);
      const natsBlock = {
        hub: `nats://${HOST}:${hubPort}`,
        leafnodeListen: `${HOST}:${leafPort}`,
        dcs: Object.fromEntries(dcs.map((dc, i) => [dc, `nats://${HOST}:${dcPorts[i]}`])),
        ...(opts.nats ?? {}),
      };
      const nodes = [];
      for (const n of opts.nodes) {
        const node: Record<string, unknown> = { ...n };
        if (n.role === 'edge') node.acme = { listen: `${HOST}:${await freePort()}`, ...(n.acme ?? {}) };
        if (n.role === 'gateway') node.http = `${HOST}:${await freePort()}`;
        node.metrics = `${HOST}:${await freePort()}`;
        nodes.push(node);
      }
      const yaml = stringify({
        mesh: 'test-mesh',
        stateDir: join(dir, 'state'),
        nats: natsBlock,
        ...(opts.envelope ? { envelope: opts.envelope } : {}),
        ...(opts.keyReload ? { keyReload: opts.keyReload } : {}),
        nodes,
      });
      // On disk too, so tests can run the ra-mesh command against the same topology.
      await writeFile(join(dir, 'topology.yaml'), yaml);
      const topology = parseTopology(yaml, join(dir, 'topology.yaml'), dir);
      // Every node's signing key exists before any starts, also those the test runs as processes.
      for (const n of opts.nodes) await loadOrCreateMeshNodeKey(topology, n.id);
      let mesh: RunningMesh;
      try {
        mesh = await startMesh(topology, {
          log: createLogger('test-mesh'),
          ...(opts.external ? { only: opts.nodes.map((n) => n.id).filter((id) => !opts.external!.includes(id)) } : {}),
          ...(opts.retransmitMs ? { retransmitMs: opts.retransmitMs } : {}),
        });
      } catch (e) {
        // Another process may have taken a port between freePorts() and the bind: try new ones.
        if (attempt < PORT_RACE_ATTEMPTS && /address already in use/i.test((e as Error).message)) continue;
        throw e;
      }
      const servers = mesh.nats!;
      const spawned: NodeProcess[] = [];
      const byName = new Map(servers.map((s) => [s.spec.name, s]));
      const bus: TestBus = {
        hubUrl: natsBlock.hub,
        leafnodeListen: natsBlock.leafnodeListen,
        dcs: natsBlock.dcs,
        servers,
        dir: join(topology.stateDir(), 'nats'),
        server(name: string) {
          const s = byName.get(name);
          if (!s) throw new Error(`no nats server "${name}" in this mesh`);
          return s;
        },
        stop: async () => {
          for (const s of [...servers].reverse()) await s.stop();
        },
      };
      return {
        topology,
        bus,
        mesh,
        dir,
        topologyFile: join(dir, 'topology.yaml'),
        directory: (id) => mesh.edges.get(id)!.directoryUrl,
        edgeTlsCert: (id) => mesh.edges.get(id)!.tlsCertFile,
        rootsUrl: () => `${mesh.gateway?.httpUrl ?? `http://${topology.node(topology.gateway().id).http}`}/roots.pem`,
        spawnNode: async (id, env) => {
          const p = await spawnNodeProcess(join(dir, 'topology.yaml'), id, env);
          spawned.push(p);
          return p;
        },
        stop: async () => {
          for (const p of spawned) await p.kill();
          await mesh.stop();
          await rm(dir, { recursive: true, force: true });
        },
      };
    }
  } catch (e) {
    await rm(dir, { recursive: true, force: true });
    throw e;
  }
}

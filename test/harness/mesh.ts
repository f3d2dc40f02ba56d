import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { parseTopology, type Topology } from '../../shared/config/index.js';
import { createLogger } from '../../shared/logging/logger.js';
import { startMesh, type RunningMesh } from '../../services/cli/mesh.js';
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
  stop(): Promise<void>;
}

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
        nodes.push(node);
      }
      const yaml = stringify({
        mesh: 'test-mesh',
        stateDir: join(dir, 'state'),
        nats: natsBlock,
        ...(opts.envelope ? { envelope: opts.envelope } : {}),
        nodes,
      });
      // On disk too, so tests can run the ra-mesh command against the same topology.
      await writeFile(join(dir, 'topology.yaml'), yaml);
      const topology = parseTopology(yaml, join(dir, 'topology.yaml'), dir);
      let mesh: RunningMesh;
      try {
        mesh = await startMesh(topology, {
          log: createLogger('test-mesh'),
          ...(opts.retransmitMs ? { retransmitMs: opts.retransmitMs } : {}),
        });
      } catch (e) {
        // Another process may have taken a port between freePorts() and the bind: try new ones.
        if (attempt < PORT_RACE_ATTEMPTS && /address already in use/i.test((e as Error).message)) continue;
        throw e;
      }
      const servers = mesh.nats!;
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
        rootsUrl: () => `${mesh.gateway!.httpUrl}/roots.pem`,
        stop: async () => {
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

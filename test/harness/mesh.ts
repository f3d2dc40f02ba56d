import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { parseTopology, type Topology } from '../../shared/config/index.js';
import { createLogger } from '../../shared/logging/logger.js';
import { startMesh, type RunningMesh } from '../../services/cli/mesh.js';
import { startTestBus, type TestBus } from './nats.js';
import { freePort } from './ports.js';

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

/**
 * Starts a real mesh for tests: hub + one leaf nats-server per data center on free loopback ports,
 * then every node of the topology (built from `nodes`) through the same code path as `ra-mesh up`.
 */
export async function startTestMesh(opts: { nodes: TestNode[]; retransmitMs?: number; envelope?: Record<string, unknown> }): Promise<TestMesh> {
  const dir = await mkdtemp(join(tmpdir(), 'ra-mesh-test-'));
  const dcs = [...new Set(opts.nodes.filter((n) => n.role !== 'gateway').map((n) => n.dc))];
  const bus = await startTestBus({ dcs, dir: join(dir, 'nats') });
  try {
    const nodes = [];
    for (const n of opts.nodes) {
      const node: Record<string, unknown> = { ...n };
      if (n.role === 'edge') node.acme = { listen: `127.0.0.1:${await freePort()}`, ...(n.acme ?? {}) };
      if (n.role === 'gateway') node.http = `127.0.0.1:${await freePort()}`;
      nodes.push(node);
    }
    const yaml = stringify({
      mesh: 'test-mesh',
      stateDir: join(dir, 'state'),
      nats: { hub: bus.hubUrl, leafnodeListen: bus.leafnodeListen, dcs: bus.dcs },
      ...(opts.envelope ? { envelope: opts.envelope } : {}),
      nodes,
    });
    // On disk too, so tests can run the ra-mesh command against the same topology.
    await writeFile(join(dir, 'topology.yaml'), yaml);
    const topology = parseTopology(yaml, join(dir, 'topology.yaml'), dir);
    const mesh = await startMesh(topology, {
      nats: false,
      log: createLogger('test-mesh'),
      ...(opts.retransmitMs ? { retransmitMs: opts.retransmitMs } : {}),
    });
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
        await bus.stop();
        await rm(dir, { recursive: true, force: true });
      },
    };
  } catch (e) {
    await bus.stop();
    await rm(dir, { recursive: true, force: true });
    throw e;
  }
}

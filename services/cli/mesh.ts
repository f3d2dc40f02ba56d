import type { Topology } from '../../shared/config/index.js';
import { loadMeshKeyRing, loadOrCreateMeshNodeKey, watchMeshKeys } from '../../shared/envelope/index.js';
import { natsServerSpecs, startNatsServers, type RunningNatsServer } from '../../shared/bus/nats-server.js';
import { ensureBusCredentials } from '../../shared/bus/auth.js';
import { createLogger, type Logger } from '../../shared/logging/logger.js';
import { EdgeService } from '../edge/index.js';
import { GatewayService } from '../gateway/index.js';
import { RelayService } from '../relay/index.js';

export interface RunningMesh {
  gateway?: GatewayService;
  relays: Map<string, RelayService>;
  edges: Map<string, EdgeService>;
  /** The nats-server processes this mesh started (hub first), when it started them. */
  nats?: RunningNatsServer[];
  stop(): Promise<void>;
}

export interface StartMeshOptions {
  /** Start the hub and leaf nats-server processes of the topology (default true). */
  nats?: boolean;
  /** Run only these nodes (default: every node of the topology). */
  only?: string[];
  log?: Logger;
  retransmitMs?: number;
}

/**
 * Brings up nodes of a topology in this process: keys first, then the bus, then the gateway,
 * relays from the top down, and edges last, so every node finds its parent listening.
 * Used by `ra-mesh up` and by the test harness.
 */
export async function startMesh(topology: Topology, opts: StartMeshOptions = {}): Promise<RunningMesh> {
  const log = opts.log ?? createLogger('mesh');
  const wanted = new Set(opts.only ?? topology.nodes.map((n) => n.id));
  // Keys of every local node exist before any node starts, so each finds the others' public keys.
  for (const n of topology.nodes) if (wanted.has(n.id)) await loadOrCreateMeshNodeKey(topology, n.id);
  const keys = await loadMeshKeyRing(topology);
  const unwatchKeys = watchMeshKeys(topology, keys, log);
  const stops: Array<() => Promise<void>> = [];
  const mesh: RunningMesh = {
    relays: new Map(),
    edges: new Map(),
    stop: async () => {
      unwatchKeys();
      for (const s of stops.reverse()) await s().catch((e) => log.error({ err: e }, 'stop failed'));
      stops.length = 0;
    },
  };
  try {
    if (opts.nats !== false) {
      // Every node's NATS credentials exist (made on first start) before the servers that check them start.
      // Without our own servers (--no-nats) nothing is made: the node reads the credentials it was given
      // (they may be a read-only secret), and says which file is missing.
      const credentials = await ensureBusCredentials(topology);
      const bus = await startNatsServers(natsServerSpecs(topology, undefined, credentials), { log });
      stops.push(() => bus.stop());
      mesh.nats = bus.servers;
    }
    const depth = (id: string) => topology.pathToGateway(id).length;
    const ordered = topology.nodes.filter((n) => wanted.has(n.id)).sort((a, b) => depth(a.id) - depth(b.id));
    // A node that fails half-way through start is stopped at once (its connection, listeners and store
    // closed), so that the error ends the process instead of leaving it hanging.
    const started = async <T extends { start(): Promise<void>; stop(): Promise<void> }>(svc: T): Promise<T> => {
      try {
        await svc.start();
      } catch (e) {
        await svc.stop().catch((err) => log.error({ err }, 'stop after a failed start failed'));
        throw e;
      }
      stops.push(() => svc.stop());
      return svc;
    };
    for (const n of ordered) {
      if (n.role === 'gateway') {
        mesh.gateway = await started(await GatewayService.create({ topology, nodeId: n.id, keys }));
      } else if (n.role === 'relay') {
        mesh.relays.set(n.id, await started(await RelayService.create({ topology, nodeId: n.id, keys })));
      } else {
        const e = await EdgeService.create({ topology, nodeId: n.id, keys, ...(opts.retransmitMs ? { retransmitMs: opts.retransmitMs } : {}) });
        mesh.edges.set(n.id, await started(e));
      }
    }
  } catch (e) {
    await mesh.stop();
    throw e;
  }
  return mesh;
}

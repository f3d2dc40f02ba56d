import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  startNatsServers,
  type NatsServerSpec,
  type RunningNatsServer,
  type StartNatsServerOptions,
} from '../../shared/bus/nats-server.js';
import { freePorts } from './ports.js';

const HOST = '127.0.0.1';

export interface TestBus {
  /** Client URL of the hub. */
  hubUrl: string;
  /** host:port of the hub's leafnode listener. */
  leafnodeListen: string;
  /** Client URL of each dc's leaf server. */
  dcs: Record<string, string>;
  /** Hub first, then one leaf per dc, in the order given. */
  servers: RunningNatsServer[];
  /** Config, logs and JetStream stores. */
  dir: string;
  /** The running server of 'hub' or a dc name. */
  server(name: string): RunningNatsServer;
  stop(): Promise<void>;
}

export interface StartTestBusOptions {
  dcs: string[];
  /** Where configs, logs and stores go; a temp dir (removed on stop) when not given. */
  dir?: string;
  /** Passed to startNatsServers (bin, log, readyTimeoutMs). */
  server?: Omit<StartNatsServerOptions, 'dir'>;
}

const PORT_RACE_ATTEMPTS = 3;

/** Real nats-server processes on loopback: a hub and one leaf per dc, each with JetStream in its own domain. */
export async function startTestBus(opts: StartTestBusOptions): Promise<TestBus> {
  const created = opts.dir === undefined;
  const dir = opts.dir ?? (await mkdtemp(join(tmpdir(), 'ra-mesh-nats-')));
  try {
    for (let attempt = 1; ; attempt++) {
      const [hubPort, leafPort, ...dcPorts] = await freePorts(2 + opts.dcs.length, HOST);
      const specs: NatsServerSpec[] = [
        {
          name: 'hub',
          role: 'hub',
          host: HOST,
          port: hubPort!,
          leafnodeListen: { host: HOST, port: leafPort! },
          jetstream: { storeDir: join(dir, 'hub'), domain: 'hub' },
        },
        ...opts.dcs.map(
          (dc, i): NatsServerSpec => ({
            name: dc,
            role: 'leaf',
            host: HOST,
            port: dcPorts[i]!,
            hubLeafUrl: `nats-leaf://${HOST}:${leafPort}`,
            jetstream: { storeDir: join(dir, dc), domain: dc },
          }),
        ),
      ];
      let started: Awaited<ReturnType<typeof startNatsServers>>;
      try {
        started = await startNatsServers(specs, { ...opts.server, dir });
      } catch (e) {
        // Another process may have taken one of the ports between freePorts() and the bind: try new ones.
        if (attempt < PORT_RACE_ATTEMPTS && /address already in use/i.test((e as Error).message)) continue;
        throw e;
      }
      const byName = new Map(started.servers.map((s) => [s.spec.name, s]));
      return {
        hubUrl: byName.get('hub')!.url,
        leafnodeListen: `${HOST}:${leafPort}`,
        dcs: Object.fromEntries(opts.dcs.map((dc) => [dc, byName.get(dc)!.url])),
        servers: started.servers,
        dir,
        server(name: string) {
          const s = byName.get(name);
          if (!s) throw new Error(`no nats server "${name}" in this test bus`);
          return s;
        },
        async stop() {
          await started.stop();
          if (created) await rm(dir, { recursive: true, force: true });
        },
      };
    }
  } catch (e) {
    if (created) await rm(dir, { recursive: true, force: true });
    throw e;
  }
}

/** The `nats:` block of a topology that uses this bus. */
export function topologyNatsYaml(bus: Pick<TestBus, 'hubUrl' | 'leafnodeListen' | 'dcs'>): {
  hub: string;
  leafnodeListen: string;
  dcs: Record<string, string>;
} {
  return { hub: bus.hubUrl, leafnodeListen: bus.leafnodeListen, dcs: { ...bus.dcs } };
}

import { chmod, mkdir, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { loadTopology } from '../../../shared/config/index.js';
import { ensureBusCredentials } from '../../../shared/bus/auth.js';
import { natsServerSpecs, renderNatsConfig } from '../../../shared/bus/nats-server.js';

const USAGE = 'usage: ra-mesh nats-config <topology.yaml> [--out <dir>]\n';

/**
 * Writes the nats-server config of the hub and of each data center's leaf (with the node users, their
 * subject permissions, the leaf-link logins and TLS of the topology), creating missing credentials.
 * For operators who run nats-server themselves (then `ra-mesh up --no-nats`).
 */
export async function natsConfigCommand(args: string[]): Promise<number> {
  const { positionals, values } = parseArgs({ args, allowPositionals: true, options: { out: { type: 'string' } } });
  if (positionals.length !== 1) {
    process.stderr.write(USAGE);
    return 2;
  }
  const topology = loadTopology(positionals[0]!);
  const out = resolve(values.out ?? join(topology.stateDir(), 'nats'));
  const credentials = await ensureBusCredentials(topology);
  await mkdir(out, { recursive: true });
  const lines: string[] = [];
  for (const spec of natsServerSpecs(topology, undefined, credentials)) {
    const file = join(out, `${spec.name}.conf`);
    // Holds leaf-link passwords: owner-only.
    await writeFile(file, renderNatsConfig(spec), { mode: 0o600 });
    await chmod(file, 0o600);
    lines.push(`${file}  (${spec.role}, nats://${spec.host}:${spec.port}, JetStream domain ${spec.jetstream.domain})`);
  }
  if (credentials) {
    lines.push(`credentials in ${topology.natsCredentialsDir()}: <node>.nk (give each node only its own) and leaf-<dc>.pass`);
  } else {
    lines.push('nats.auth is none: the bus is open to anyone who reaches it');
  }
  process.stdout.write(lines.join('\n') + '\n');
  return 0;
}

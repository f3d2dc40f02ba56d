import { createHash } from 'node:crypto';
import { parseArgs } from 'node:util';
import { loadTopology } from '../../../shared/config/index.js';
import { createLogger } from '../../../shared/logging/logger.js';
import { startMesh } from '../mesh.js';

export async function upCommand(args: string[]): Promise<number> {
  const { positionals, values } = parseArgs({
    args,
    allowPositionals: true,
    options: { 'no-nats': { type: 'boolean', default: false }, only: { type: 'string' } },
  });
  if (positionals.length !== 1) {
    process.stderr.write('usage: ra-mesh up <topology.yaml> [--no-nats] [--only id,id]\n');
    return 2;
  }
  const topology = loadTopology(positionals[0]!);
  const log = createLogger('cli', { mesh: topology.config.mesh });
  const mesh = await startMesh(topology, {
    nats: !values['no-nats'],
    ...(values.only ? { only: values.only.split(',').map((s) => s.trim()) } : {}),
    log,
  });
  const lines = [`mesh ${topology.config.mesh} is up`];
  if (mesh.gateway) {
    lines.push(`  gateway ${mesh.gateway.nodeId}: CA ${mesh.gateway.cas.type}, roots ${mesh.gateway.httpUrl}/roots.pem`);
    for (const fp of mesh.gateway.rootFingerprints) lines.push(`    root SHA-256 fingerprint ${fp}`);
  }
  for (const [id, e] of mesh.edges) lines.push(`  edge ${id}: ACME directory ${e.directoryUrl} (TLS certificate: ${e.tlsCertFile})`);
  for (const [id, e] of mesh.edges) {
    const ra = e.scep?.ra.current;
    if (e.scep) lines.push(`  edge ${id}: SCEP ${e.scep.url} (${ra ? `RA certificate SHA-256 ${createHash('sha256').update(ra.cert).digest('hex')}` : 'RA certificate requested from the mesh CA; GetCACert serves it once issued'})`);
  }
  lines.push('press Ctrl-C to stop');
  process.stdout.write(lines.join('\n') + '\n');
  await new Promise<void>((resolve) => {
    const onSignal = (sig: string) => {
      log.info({ signal: sig }, 'shutting down');
      resolve();
    };
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
  });
  await mesh.stop();
  process.stdout.write('mesh stopped\n');
  return 0;
}

import { parseArgs } from 'node:util';
import { loadTopology, parseDuration } from '../../../shared/config/index.js';
import { ScepStore, type OtpView } from '../../edge/scep/scep-store.js';
import { onEdgeStore } from '../edge-store-access.js';

// `ra-mesh scep otp add|list|revoke`: the one-time challenge passwords of an edge's SCEP service
// (RFC 8894 §2.3). Works on a stopped edge (its store directly) and on a running one (its admin socket).

const USAGE = `usage:
  ra-mesh scep otp add <topology.yaml> --edge <id> [--count <n>] [--label <text>] [--ttl <duration>] [--json]
  ra-mesh scep otp list <topology.yaml> --edge <id> [--json]
  ra-mesh scep otp revoke <topology.yaml> --edge <id> --id <otp id>
`;

type Op = { kind: 'add'; count: number; label?: string; ttlMs?: number } | { kind: 'list' } | { kind: 'revoke'; id: string };

/** The op on the edge's store, or through the running edge's admin socket. */
function runOp(storeDir: string, op: Op): Promise<unknown> {
  const notFound = 'the running edge serves no SCEP (no scep block in its topology node)';
  return onEdgeStore(
    storeDir,
    async (db) => {
      const s = new ScepStore(db);
      if (op.kind === 'list') return s.listOtps();
      if (op.kind === 'add') return s.addOtps({ count: op.count, ...(op.label ? { label: op.label } : {}), ...(op.ttlMs ? { ttlMs: op.ttlMs } : {}) });
      return s.revokeOtp(op.id);
    },
    op.kind === 'list'
      ? { method: 'GET', path: '/scep/otp', notFound }
      : op.kind === 'add'
        ? { method: 'POST', path: '/scep/otp', body: { count: op.count, label: op.label, ttlMs: op.ttlMs }, notFound }
        : { method: 'POST', path: `/scep/otp/${encodeURIComponent(op.id)}/revoke`, body: {}, notFound },
  );
}

export async function scepCommand(args: string[]): Promise<number> {
  const { positionals, values } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      edge: { type: 'string' },
      count: { type: 'string' },
      label: { type: 'string' },
      ttl: { type: 'string' },
      id: { type: 'string' },
      json: { type: 'boolean', default: false },
    },
  });
  const [group, sub, file] = positionals;
  if (group !== 'otp' || !sub || !file || !values.edge || !['add', 'list', 'revoke'].includes(sub) || (sub === 'revoke' && !values.id)) {
    process.stderr.write(USAGE);
    return 2;
  }
  const count = values.count === undefined ? 1 : Number(values.count);
  if (!Number.isInteger(count) || count < 1 || count > 10_000) {
    process.stderr.write('ra-mesh: --count must be a whole number from 1 to 10000\n');
    return 2;
  }
  const topology = loadTopology(file);
  const node = topology.node(values.edge);
  if (node.role !== 'edge') throw new Error(`node "${values.edge}" is a ${node.role}, not an edge`);
  if (!node.scep) {
    process.stderr.write(`ra-mesh: edge "${values.edge}" serves no SCEP: give its node a scep block in ${file}\n`);
    return 1;
  }
  const op: Op =
    sub === 'list'
      ? { kind: 'list' }
      : sub === 'add'
        ? { kind: 'add', count, ...(values.label ? { label: values.label } : {}), ...(values.ttl ? { ttlMs: parseDuration(values.ttl) } : {}) }
        : { kind: 'revoke', id: values.id! };
  const result = await runOp(topology.storeDir(values.edge), op);
  if (values.json) {
    process.stdout.write(JSON.stringify(result, null, 2) + '\n');
  } else if (op.kind === 'add') {
    const rows = result as Array<{ id: string; password: string; expiresAt?: string }>;
    process.stdout.write(`one-time SCEP challenge passwords for edge ${values.edge} (each enrolls one device; shown only now):\n`);
    for (const r of rows) process.stdout.write(`${r.id}\t${r.password}${r.expiresAt ? `\texpires ${r.expiresAt}` : ''}\n`);
  } else {
    const rows = (Array.isArray(result) ? result : [result]) as OtpView[];
    for (const r of rows) {
      const state = r.state === 'used' ? `used ${r.usedAt} by transaction ${r.usedBy}` : r.state === 'revoked' ? `revoked ${r.revokedAt}` : r.state === 'expired' ? `expired ${r.expiresAt}` : `unused${r.expiresAt ? ` until ${r.expiresAt}` : ''}`;
      process.stdout.write(`${r.id}\t${state}\tcreated ${r.createdAt}${r.label ? `\t${r.label}` : ''}\n`);
    }
    if (rows.length === 0) process.stdout.write('no one-time passwords\n');
  }
  return 0;
}

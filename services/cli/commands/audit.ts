import { parseArgs } from 'node:util';
import { loadTopology } from '../../../shared/config/index.js';
import { auditDir, verifyAuditLog } from '../../../shared/audit/audit-log.js';

const USAGE = 'usage: ra-mesh audit verify <topology.yaml> [--gateway <id>] [--dir <audit dir>]\n';

/** `ra-mesh audit verify`: recomputes the gateway's audit hash chain; exit 0 intact, 1 broken. */
export async function auditCommand(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  const { positionals, values } = parseArgs({ args: rest, allowPositionals: true, options: { gateway: { type: 'string' }, dir: { type: 'string' } } });
  if (sub !== 'verify' || positionals.length !== 1) {
    process.stderr.write(USAGE);
    return 2;
  }
  const topology = loadTopology(positionals[0]!);
  const dir = values.dir ?? auditDir(topology, values.gateway ?? topology.gateway().id);
  const v = await verifyAuditLog(dir);
  if (v.ok) {
    const behind = v.headBehind > 0 ? ` (the head file names record ${v.records - v.headBehind}: the gateway stopped between an append and its head update, is writing, or its last head write was torn by a power cut; it brings the head up to date when it opens the log)` : '';
    process.stdout.write(`audit log ${dir}: intact, ${v.records} records, head ${v.head}${behind}\n`);
    return 0;
  }
  process.stdout.write(`audit log ${dir}: BROKEN at record ${v.badSeq}: ${v.problem} (${v.records} records verified before it)\n`);
  return 1;
}

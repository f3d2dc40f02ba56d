import { request } from 'node:http';
import { parseArgs } from 'node:util';
import { loadTopology } from '../../../shared/config/index.js';
import { NodeStore } from '../../../shared/store/index.js';
import { EabStore, type EabKeyRecord, type EabKeyView } from '../../edge/eab/eab-store.js';
import { adminSocketPath } from '../../edge/admin.js';

const USAGE = `usage:
  ra-mesh eab add <topology.yaml> --edge <id> [--key-id <id>] [--label <text>]
  ra-mesh eab list <topology.yaml> --edge <id>
  ra-mesh eab revoke <topology.yaml> --edge <id> --key-id <id>
`;

type Op = { kind: 'add'; keyId?: string; label?: string } | { kind: 'list' } | { kind: 'revoke'; keyId: string };

function isLocked(e: unknown): boolean {
  const err = e as { code?: string; cause?: { code?: string } };
  return err.code === 'LEVEL_LOCKED' || err.cause?.code === 'LEVEL_LOCKED' || (err.code === 'LEVEL_DATABASE_NOT_OPEN' && /lock/i.test(String(err.cause ?? '')));
}

/** Talks to a running edge through its admin unix socket. */
function viaSocket(socketPath: string, op: Op): Promise<unknown> {
  const [method, path, body] =
    op.kind === 'list' ? ['GET', '/eab', undefined] : op.kind === 'add' ? ['POST', '/eab', JSON.stringify({ keyId: op.keyId, label: op.label })] : ['POST', `/eab/${encodeURIComponent(op.keyId)}/revoke`, '{}'];
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, method, path, headers: body ? { 'content-type': 'application/json' } : {} }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => {
        const json = text ? JSON.parse(text) : undefined;
        if ((res.statusCode ?? 500) >= 400) reject(new Error(json?.detail ?? `admin socket answered ${res.statusCode}`));
        else resolve(json);
      });
    });
    req.on('error', (e) => reject(new Error(`the edge's store is locked by a running edge and its admin socket ${socketPath} is not reachable: ${e.message}`)));
    req.end(body);
  });
}

async function direct(storeDir: string, op: Op): Promise<unknown> {
  const db = await NodeStore.open(storeDir);
  try {
    const eab = new EabStore(db);
    if (op.kind === 'list') return await eab.list();
    if (op.kind === 'add') return await eab.add({ ...(op.keyId ? { keyId: op.keyId } : {}), ...(op.label ? { label: op.label } : {}) });
    return await eab.revoke(op.keyId);
  } finally {
    await db.close();
  }
}

export async function eabCommand(args: string[]): Promise<number> {
  const { positionals, values } = parseArgs({
    args,
    allowPositionals: true,
    options: { edge: { type: 'string' }, 'key-id': { type: 'string' }, label: { type: 'string' }, json: { type: 'boolean', default: false } },
  });
  const [sub, file] = positionals;
  if (!sub || !file || !values.edge || !['add', 'list', 'revoke'].includes(sub) || (sub === 'revoke' && !values['key-id'])) {
    process.stderr.write(USAGE);
    return 2;
  }
  const topology = loadTopology(file);
  const node = topology.node(values.edge);
  if (node.role !== 'edge') throw new Error(`node "${values.edge}" is a ${node.role}, not an edge`);
  const op: Op =
    sub === 'list' ? { kind: 'list' } : sub === 'add' ? { kind: 'add', ...(values['key-id'] ? { keyId: values['key-id'] } : {}), ...(values.label ? { label: values.label } : {}) } : { kind: 'revoke', keyId: values['key-id']! };
  const storeDir = topology.storeDir(values.edge);
  let result: unknown;
  try {
    result = await direct(storeDir, op);
  } catch (e) {
    if (!isLocked(e)) throw e;
    result = await viaSocket(adminSocketPath(storeDir), op);
  }
  if (values.json) {
    process.stdout.write(JSON.stringify(result, null, 2) + '\n');
  } else if (op.kind === 'add') {
    const r = result as EabKeyRecord;
    process.stdout.write(`EAB key for edge ${values.edge}\n  key id:   ${r.keyId}\n  HMAC key: ${r.hmacKey}\n(lego: --eab --kid ${r.keyId} --hmac ${r.hmacKey}; certbot: --eab-kid ${r.keyId} --eab-hmac-key ${r.hmacKey})\n`);
  } else {
    const rows = (Array.isArray(result) ? result : [result]) as EabKeyView[];
    for (const r of rows) {
      const state = r.revoked ? `revoked ${r.revokedAt}` : r.boundTo ? `bound to account ${r.boundTo} at ${r.boundAt}` : 'unused';
      process.stdout.write(`${r.keyId}\t${state}\tcreated ${r.createdAt}${r.label ? `\t${r.label}` : ''}\n`);
    }
    if (rows.length === 0) process.stdout.write('no EAB keys\n');
  }
  return 0;
}

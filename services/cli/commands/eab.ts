import { parseArgs } from 'node:util';
import { loadTopology } from '../../../shared/config/index.js';
import { readFile } from 'node:fs/promises';
import { parse as parseYaml } from 'yaml';
import { EabStore, parseAccountPolicy, type EabKeyRecord, type EabKeyView } from '../../edge/eab/eab-store.js';
import { onEdgeStore } from '../edge-store-access.js';

const USAGE = `usage:
  ra-mesh eab add <topology.yaml> --edge <id> [--key-id <id>] [--label <text>] [account policy]
  ra-mesh eab list <topology.yaml> --edge <id>
  ra-mesh eab revoke <topology.yaml> --edge <id> --key-id <id>

account policy (the layer of the account bound to the key, evaluated before the edge's layer):
  --policy-file <file>        YAML or JSON with the topology's policy fields (allow, deny, maxLifetime, ...)
  --allow-dns <pattern>       (repeatable) also --deny-dns, --allow-ip, --deny-ip
  --default-lifetime <d>  --max-lifetime <d>  --max-sans <n>  --allow-wildcard-names
  --rate-limit <n>/<period>   token bucket for the account, e.g. 20/1h
`;

type Op = { kind: 'add'; keyId?: string; label?: string; policy?: unknown } | { kind: 'list' } | { kind: 'revoke'; keyId: string };

/** The op on the edge's store, or through the running edge's admin socket. */
function runOp(storeDir: string, op: Op): Promise<unknown> {
  return onEdgeStore(
    storeDir,
    async (db) => {
      const eab = new EabStore(db);
      if (op.kind === 'list') return eab.list();
      if (op.kind === 'add') return eab.add({ ...(op.keyId ? { keyId: op.keyId } : {}), ...(op.label ? { label: op.label } : {}), ...(op.policy !== undefined ? { policy: op.policy } : {}) });
      return eab.revoke(op.keyId);
    },
    op.kind === 'list'
      ? { method: 'GET', path: '/eab' }
      : op.kind === 'add'
        ? { method: 'POST', path: '/eab', body: { keyId: op.keyId, label: op.label, policy: op.policy } }
        : { method: 'POST', path: `/eab/${encodeURIComponent(op.keyId)}/revoke`, body: {} },
  );
}

export async function eabCommand(args: string[]): Promise<number> {
  const { positionals, values } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      edge: { type: 'string' },
      'key-id': { type: 'string' },
      label: { type: 'string' },
      json: { type: 'boolean', default: false },
      'policy-file': { type: 'string' },
      'allow-dns': { type: 'string', multiple: true },
      'deny-dns': { type: 'string', multiple: true },
      'allow-ip': { type: 'string', multiple: true },
      'deny-ip': { type: 'string', multiple: true },
      'default-lifetime': { type: 'string' },
      'max-lifetime': { type: 'string' },
      'max-sans': { type: 'string' },
      'allow-wildcard-names': { type: 'boolean' },
      'rate-limit': { type: 'string' },
    },
  });
  const [sub, file] = positionals;
  if (!sub || !file || !values.edge || !['add', 'list', 'revoke'].includes(sub) || (sub === 'revoke' && !values['key-id'])) {
    process.stderr.write(USAGE);
    return 2;
  }
  const topology = loadTopology(file);
  const node = topology.node(values.edge);
  if (node.role !== 'edge') throw new Error(`node "${values.edge}" is a ${node.role}, not an edge`);
  const policy = sub === 'add' ? await policyFromArgs(values) : undefined;
  // Checked here too, so a bad policy is reported before the store is touched (the store checks again).
  if (policy !== undefined) parseAccountPolicy(policy);
  const op: Op =
    sub === 'list'
      ? { kind: 'list' }
      : sub === 'add'
        ? { kind: 'add', ...(values['key-id'] ? { keyId: values['key-id'] } : {}), ...(values.label ? { label: values.label } : {}), ...(policy !== undefined ? { policy } : {}) }
        : { kind: 'revoke', keyId: values['key-id']! };
  const result = await runOp(topology.storeDir(values.edge), op);
  if (values.json) {
    process.stdout.write(JSON.stringify(result, null, 2) + '\n');
  } else if (op.kind === 'add') {
    const r = result as EabKeyRecord;
    process.stdout.write(
      `EAB key for edge ${values.edge}\n  key id:   ${r.keyId}\n  HMAC key: ${r.hmacKey}\n` +
        (r.policy ? `  policy:   ${JSON.stringify(r.policy)} (layer account:${r.keyId})\n` : '') +
        `(lego: --eab --kid ${r.keyId} --hmac ${r.hmacKey}; certbot: --eab-kid ${r.keyId} --eab-hmac-key ${r.hmacKey})\n`,
    );
  } else {
    const rows = (Array.isArray(result) ? result : [result]) as EabKeyView[];
    for (const r of rows) {
      const state = r.revoked ? `revoked ${r.revokedAt}` : r.boundTo ? `bound to account ${r.boundTo} at ${r.boundAt}` : 'unused';
      process.stdout.write(`${r.keyId}\t${state}\tcreated ${r.createdAt}${r.label ? `\t${r.label}` : ''}${r.policy ? `\tpolicy ${JSON.stringify(r.policy)}` : ''}\n`);
    }
    if (rows.length === 0) process.stdout.write('no EAB keys\n');
  }
  return 0;
}

type PolicyArgs = {
  'policy-file'?: string | undefined;
  'allow-dns'?: string[] | undefined;
  'deny-dns'?: string[] | undefined;
  'allow-ip'?: string[] | undefined;
  'deny-ip'?: string[] | undefined;
  'default-lifetime'?: string | undefined;
  'max-lifetime'?: string | undefined;
  'max-sans'?: string | undefined;
  'allow-wildcard-names'?: boolean | undefined;
  'rate-limit'?: string | undefined;
};

/** The account policy of `eab add`: --policy-file, then the flags on top (undefined when none is given). */
async function policyFromArgs(v: PolicyArgs): Promise<Record<string, unknown> | undefined> {
  let p: Record<string, unknown> = {};
  let given = false;
  if (v['policy-file']) {
    const doc: unknown = parseYaml(await readFile(v['policy-file'], 'utf8'));
    if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) throw new Error(`${v['policy-file']}: an account policy is a mapping of policy fields (allow, deny, maxLifetime, ...)`);
    p = doc as Record<string, unknown>;
    given = true;
  }
  const rules = (kind: 'allow' | 'deny', type: 'dns' | 'ip', list: string[] | undefined) => {
    if (!list?.length) return;
    const block = ((p[kind] ??= {}) as Record<string, string[]>);
    block[type] = [...(block[type] ?? []), ...list];
    given = true;
  };
  rules('allow', 'dns', v['allow-dns']);
  rules('deny', 'dns', v['deny-dns']);
  rules('allow', 'ip', v['allow-ip']);
  rules('deny', 'ip', v['deny-ip']);
  const set = (k: string, value: unknown) => {
    if (value === undefined) return;
    p[k] = value;
    given = true;
  };
  set('defaultLifetime', v['default-lifetime']);
  set('maxLifetime', v['max-lifetime']);
  set('maxSans', v['max-sans'] === undefined ? undefined : Number(v['max-sans']));
  set('allowWildcardNames', v['allow-wildcard-names']);
  if (v['rate-limit'] !== undefined) {
    const m = /^(\d+)\/(\S+)$/.exec(v['rate-limit']);
    if (!m) throw new Error(`--rate-limit ${v['rate-limit']}: expected <requests>/<period>, e.g. 20/1h`);
    p.rateLimits = { ...((p.rateLimits as object | undefined) ?? {}), account: { limit: Number(m[1]), per: m[2] } };
    given = true;
  }
  return given ? p : undefined;
}

/** The EAB keys of an edge (without HMAC keys): from its store, or through its admin socket while it runs. */
export async function listEabKeys(storeDir: string): Promise<EabKeyView[]> {
  return (await runOp(storeDir, { kind: 'list' })) as EabKeyView[];
}

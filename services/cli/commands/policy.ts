import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { parse as parseYaml } from 'yaml';
import { loadTopology, parseDuration, DURATION_RE } from '../../../shared/config/index.js';
import { parseCsr } from '../../../shared/pki/index.js';
import { explainRequest, formatExplanation, parseNameArg, PolicyLayer, type ExplainLayer, type PolicyName } from '../../../shared/policy/index.js';
import { parseAccountPolicy } from '../../edge/eab/eab-store.js';
import { listEabKeys } from './eab.js';

const USAGE = `usage:
  ra-mesh policy explain --topology <topology.yaml> --edge <id> [options] <name>... | <csr.pem>

Prints, layer by layer (account -> edge -> relays -> gateway), what each rule of the policy decides
for the names (as a newOrder would carry them) or for a CSR (as finalize judges it). Names may be typed
(dns:, ip:, email:, uri:, cn:); untyped ones are an IP address, a URI (scheme://), an email (with @) or
a DNS name. Exit status 0 when every layer allows, 1 when one refuses.

options:
  --eab-key <id>              include the account layer of this EAB key of the edge
  --account-policy <file>     include an account layer from a policy file (YAML or JSON)
  --not-before <time|dur>     requested notBefore (RFC 3339, or a duration from now like 1h)
  --not-after <time|dur>      requested notAfter (RFC 3339, or a duration from now like 48h)
  --json                      the explanation as JSON
`;

function timeArg(v: string | undefined, now: number, what: string): string | null {
  if (v === undefined) return null;
  if (DURATION_RE.test(v)) return new Date(now + parseDuration(v)).toISOString();
  const t = Date.parse(v);
  if (Number.isNaN(t)) throw new Error(`${what} ${v}: expected an RFC 3339 time or a duration like 48h`);
  return new Date(t).toISOString();
}

export async function policyCommand(args: string[]): Promise<number> {
  const { positionals, values } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      topology: { type: 'string' },
      edge: { type: 'string' },
      'eab-key': { type: 'string' },
      'account-policy': { type: 'string' },
      'not-before': { type: 'string' },
      'not-after': { type: 'string' },
      json: { type: 'boolean', default: false },
    },
  });
  const [sub, ...inputs] = positionals;
  if (sub !== 'explain' || !values.topology || !values.edge || inputs.length === 0) {
    process.stderr.write(USAGE);
    return 2;
  }
  const topology = loadTopology(values.topology);
  const edge = topology.node(values.edge);
  if (edge.role !== 'edge') throw new Error(`node "${values.edge}" is a ${edge.role}, not an edge`);

  const layers: ExplainLayer[] = [];
  if (values['eab-key'] && values['account-policy']) throw new Error('give --eab-key or --account-policy, not both');
  if (values['eab-key']) {
    const key = (await listEabKeys(topology.storeDir(edge.id))).find((k) => k.keyId === values['eab-key']);
    if (!key) throw new Error(`edge ${edge.id} has no EAB key "${values['eab-key']}"`);
    if (key.policy) layers.push({ layer: new PolicyLayer(`account:${key.keyId}`, key.policy), role: 'account' });
  } else if (values['account-policy']) {
    const policy = parseAccountPolicy(parseYaml(await readFile(values['account-policy'], 'utf8')));
    layers.push({ layer: new PolicyLayer('account', policy), role: 'account' });
  }
  for (const n of topology.layersFor(edge.id)) layers.push({ layer: new PolicyLayer(n.id, n.policy), role: n.role });

  const now = Date.now();
  const requested = { notBefore: timeArg(values['not-before'], now, '--not-before'), notAfter: timeArg(values['not-after'], now, '--not-after') };
  const csrFile = inputs.length === 1 && existsSync(inputs[0]!) ? inputs[0]! : undefined;
  let head: string;
  let explanation;
  if (csrFile) {
    const csr = await parseCsr(await readFile(csrFile), { otherNames: true });
    const names = [...csr.dnsNames, ...csr.ipAddresses, ...csr.emailAddresses, ...csr.uris];
    head = `policy for a CSR at edge ${edge.id}: ${csrFile} (${csr.keyDescription}, ${csr.signatureAlgorithm}; CN ${csr.commonName ?? '-'}; SANs ${names.join(', ') || '-'})`;
    explanation = explainRequest(layers, { csr, requested }, now);
  } else {
    const names: PolicyName[] = inputs.map(parseNameArg);
    head = `policy for ${names.map((n) => `${n.type} ${n.value}`).join(', ')} at edge ${edge.id}`;
    explanation = explainRequest(layers, { names, requested }, now);
  }
  if (values.json) process.stdout.write(JSON.stringify(explanation, null, 2) + '\n');
  else process.stdout.write(formatExplanation(explanation, head));
  return explanation.allowed ? 0 : 1;
}

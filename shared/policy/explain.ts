import { isIP } from 'node:net';
import type { ProblemDocument } from '../errors/index.js';
import { toRaError } from '../errors/index.js';
import type { CsrInfo } from '../pki/index.js';
import { refusalOf, type Check, type PolicyLayer } from './layer.js';
import { resolveValidity, type RequestedValidity } from './lifetime.js';
import { describeRateRule, RATE_SCOPES } from './rate-limit.js';
import { NAME_TYPES, type PolicyName } from './names.js';

// `ra-mesh policy explain`: the same checks enforcement makes, layer by layer, with what each rule decided.

export interface ExplainLayer {
  layer: PolicyLayer;
  role: 'account' | 'edge' | 'relay' | 'gateway';
}

export interface ExplainInput {
  /** Names to judge as newOrder identifiers would be (dns, ip) or CSR names (email, uri, cn). */
  names?: PolicyName[];
  /** A CSR: judged as finalize judges it (key, signature, extensions, every SAN and the CN). */
  csr?: CsrInfo;
  requested?: RequestedValidity;
}

export interface LayerReport {
  layer: string;
  role: string;
  checks: Check[];
  /** The layer's lifetime rules, e.g. "defaultLifetime 24h". */
  lifetime: string[];
  /** The layer's rate limits (enforced by the running node; not evaluated offline). */
  rateLimits: string[];
}

export interface Explanation {
  layers: LayerReport[];
  lifetime: { allowed: boolean; text: string; lifetimeMs?: number };
  allowed: boolean;
  /** The problem a client would get (RFC 8555 §6.7), when refused. */
  problem?: ProblemDocument;
  notes: string[];
}

/** A command-line name: "dns:x", "ip:x", "email:x", "uri:x", "cn:x", or untyped (IP, URI, email, else DNS). */
export function parseNameArg(arg: string): PolicyName {
  const m = /^([a-z]+):(?!\/\/)(.*)$/.exec(arg);
  if (m && (NAME_TYPES as readonly string[]).includes(m[1]!)) return { type: m[1]!, value: m[2]! };
  if (isIP(arg) !== 0) return { type: 'ip', value: arg };
  if (/^[A-Za-z][A-Za-z0-9+.-]*:\/\//.test(arg)) return { type: 'uri', value: arg };
  if (arg.includes('@')) return { type: 'email', value: arg };
  return { type: 'dns', value: arg };
}

export function explainRequest(layers: ExplainLayer[], input: ExplainInput, now = Date.now()): Explanation {
  const notes: string[] = [];
  const reports: LayerReport[] = layers.map(({ layer, role }) => {
    const p = layer.policy;
    const checks = input.csr ? layer.checkCsr(input.csr) : layer.checkOrder(input.names ?? []);
    checks.push(...layer.checkRequested(input.requested, now));
    return {
      layer: layer.node,
      role,
      checks,
      lifetime: [
        ...(p.defaultLifetime ? [`defaultLifetime ${p.defaultLifetime}`] : []),
        ...(p.minLifetime ? [`minLifetime ${p.minLifetime}`] : []),
        ...(p.maxLifetime ? [`maxLifetime ${p.maxLifetime}`] : []),
      ],
      rateLimits: RATE_SCOPES.filter((s) => p.rateLimits?.[s]).map((s) => `${s}: ${describeRateRule(p.rateLimits![s]!)}`),
    };
  });
  let lifetime: Explanation['lifetime'];
  try {
    const v = resolveValidity(
      layers.map(({ layer }) => ({ name: layer.node, ...layer.policy })),
      input.requested,
      now,
    );
    lifetime = { allowed: true, text: v.explanation, lifetimeMs: v.lifetimeMs };
  } catch (e) {
    lifetime = { allowed: false, text: toRaError(e).detail };
  }
  const refusal = refusalOf(reports.flatMap((r) => r.checks));
  const problem = refusal?.toProblem() ?? (lifetime.allowed ? undefined : { type: 'urn:ietf:params:acme:error:rejectedIdentifier', detail: lifetime.text, status: 400 });
  if (input.csr && input.csr.emailAddresses.length + input.csr.uris.length > 0) {
    notes.push('an ACME order cannot carry email or URI names: the edge refuses such a CSR at finalize (badCSR) even where the policy allows them');
  }
  return { layers: reports, lifetime, allowed: problem === undefined, ...(problem ? { problem } : {}), notes };
}

/** The explanation as text, one block per layer in evaluation order. */
export function formatExplanation(e: Explanation, head: string): string {
  const lines = [head, ''];
  e.layers.forEach((r, i) => {
    lines.push(`${i + 1}. ${r.layer} (${r.role})`);
    const width = Math.max(0, ...r.checks.map((c) => c.subject.length));
    if (r.checks.length === 0) lines.push('   (no rule applies)');
    for (const c of r.checks) lines.push(`   ${c.allowed ? 'allow ' : 'REFUSE'}  ${c.subject.padEnd(width)}  ${c.rule}`);
    if (r.lifetime.length) lines.push(`   lifetime: ${r.lifetime.join(', ')}`);
    if (r.rateLimits.length) lines.push(`   rate limits (counted by the running node, not evaluated here): ${r.rateLimits.join('; ')}`);
  });
  lines.push('');
  lines.push(`lifetime: ${e.lifetime.allowed ? e.lifetime.text : `REFUSED: ${e.lifetime.text}`}`);
  for (const n of e.notes) lines.push(`note: ${n}`);
  if (e.problem) {
    const short = e.problem.type.replace('urn:ietf:params:acme:error:', '');
    lines.push(`result: REFUSED (${short}): ${e.problem.detail}`);
    for (const s of e.problem.subproblems ?? []) lines.push(`  - ${s.identifier ? `${s.identifier.type} ${s.identifier.value}: ` : ''}${s.detail}`);
  } else {
    lines.push('result: allowed by every layer');
  }
  return lines.join('\n') + '\n';
}

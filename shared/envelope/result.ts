import type { Topology } from '../config/index.js';
import { RaError, type ProblemDocument } from '../errors/index.js';
import { clockSkewMs, type CrlReason, type HopRecord } from './envelope.js';
import { checkSize, checkVersion, rejection, signJson, verifyLayer } from './jws.js';
import type { KeyRing, NodeKey } from './node-keys.js';
import { describeIssues, resultPayloadSchema } from './schemas.js';

// Results travel down to the origin edge: the certificate chain or a problem document. The gateway
// signs them; a relay that refuses a request by its own layer signs the refusal itself and sends it
// straight back, so the signer is any node above the edge on its path, and only the gateway may
// sign a 'valid' result. A distinct typ keeps results and envelopes from being taken for each other.

export const RESULT_TYP = 'ra-mesh-result+jws';

export interface ResultPayload {
  v: 1;
  /** The envelope id. */
  id: string;
  /** The origin edge. */
  edge: string;
  /** Absent: the answer to an issue envelope; 'revoke': the answer to a revocation. */
  kind?: 'revoke';
  status: 'valid' | 'invalid';
  /** PEM chain (status valid, issue). */
  certificate?: string;
  /** What the CA revoked (status valid, kind revoke). */
  revocation?: { serial: string; reason: CrlReason; revokedAt: string };
  /** Why not (status invalid). */
  problem?: ProblemDocument;
  hops: HopRecord[];
  /** The signer of the result: the gateway, or the relay that refused. */
  gateway: { node: string; recvAt: number; sentAt: number };
  /** Seconds. */
  iat: number;
}

function refuse(detail: string): never {
  throw new RaError('serverInternal', { reason: 'malformed', detail: `refusing to sign a result: ${detail}` });
}

/** Signs a result; `gateway.node` must be the key's kid. */
export async function signResult(payload: ResultPayload, key: NodeKey): Promise<string> {
  const res = resultPayloadSchema.safeParse(payload);
  if (!res.success) refuse(describeIssues(res.error));
  if (payload.gateway.node !== key.kid) refuse(`gateway.node "${payload.gateway.node}" is not the signer "${key.kid}"`);
  return signJson(res.data, key, RESULT_TYP);
}

export interface VerifyResultOptions {
  topology: Topology;
  /** The verifying edge: the result must be addressed to it. */
  edge: string;
  keys: KeyRing;
  /** ms epoch, for tests. */
  now?: number;
  /** Default 30000. */
  clockSkewMs?: number;
}

/**
 * Verifies a result as received by `edge`: size, alg, typ, kid, signature as for envelopes; the
 * signer must be above the edge on its topology path ('wrong-parent'), and the gateway itself for a
 * 'valid' result; `edge` must be this edge and `gateway.node` the signer ('path'). Results do not
 * expire (they may arrive hours later), but an `iat` beyond the clock skew is 'future'.
 */
export async function verifyResult(jws: string, opts: VerifyResultOptions): Promise<ResultPayload> {
  const { topology, edge, keys } = opts;
  const now = opts.now ?? Date.now();
  const skew = opts.clockSkewMs ?? clockSkewMs(opts.topology);
  const what = 'result';
  checkSize(jws, topology.config.envelope.maxBytes, what);
  const { kid, payload } = await verifyLayer(jws, { topology, keys, typ: RESULT_TYP, what });
  const upstream = topology.has(edge) ? topology.pathToGateway(edge).slice(1) : [];
  if (!upstream.includes(kid)) throw rejection('wrong-parent', `${what}: signer "${kid}" is not above "${edge}" in the topology`);
  checkVersion(payload, what);
  const res = resultPayloadSchema.safeParse(payload);
  if (!res.success) throw rejection('malformed', `${what}: ${describeIssues(res.error)}`);
  const result = res.data as ResultPayload;
  if (result.edge !== edge) throw rejection('path', `${what}: addressed to "${result.edge}", not "${edge}"`);
  if (result.gateway.node !== kid) throw rejection('path', `${what}: gateway.node "${result.gateway.node}" but "${kid}" signed it`);
  const gateway = topology.gateway().id;
  if (result.status === 'valid' && kid !== gateway) {
    throw rejection('wrong-parent', `${what}: a certificate signed by "${kid}"; only the gateway "${gateway}" issues`);
  }
  // Relays do not decide revocations (their policy layers do not apply): only the gateway answers them.
  if (result.kind === 'revoke' && kid !== gateway) {
    throw rejection('wrong-parent', `${what}: a revocation answer signed by "${kid}"; only the gateway "${gateway}" answers revocations`);
  }
  if (result.iat * 1000 > now + skew) throw rejection('future', `${what} is dated in the future (${new Date(result.iat * 1000).toISOString()})`);
  return result;
}

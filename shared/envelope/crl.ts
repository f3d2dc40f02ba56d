import type { Topology } from '../config/index.js';
import { RaError } from '../errors/index.js';
import { clockSkewMs } from './envelope.js';
import { checkSize, checkVersion, rejection, signJson, verifyLayer } from './jws.js';
import type { KeyRing, NodeKey } from './node-keys.js';
import { crlMessageSchema, describeIssues } from './schemas.js';

// The gateway publishes its CA's current CRL down to every edge (edges in isolated segments cannot
// reach the gateway's HTTP server), signed like results but with its own typ so that a CRL message
// is never taken for a result or an envelope. Edges keep the one with the highest CRL number.

export const CRL_TYP = 'ra-mesh-crl+jws';

export interface CrlMessage {
  v: 1;
  kind: 'crl';
  gateway: string;
  number: number;
  /** Seconds. */
  thisUpdate: number;
  /** Seconds. */
  nextUpdate: number;
  /** base64url DER of the CRL. */
  crl: string;
  /** Seconds. */
  iat: number;
}

/** Signs a CRL message; only the gateway does, and `gateway` must be the key's kid. */
export async function signCrlMessage(msg: CrlMessage, key: NodeKey): Promise<string> {
  const res = crlMessageSchema.safeParse(msg);
  if (!res.success) throw new RaError('serverInternal', { reason: 'malformed', detail: `refusing to sign a CRL message: ${describeIssues(res.error)}` });
  if (msg.gateway !== key.kid) throw new RaError('serverInternal', { reason: 'malformed', detail: `refusing to sign a CRL message: gateway "${msg.gateway}" is not the signer "${key.kid}"` });
  return signJson(res.data, key, CRL_TYP);
}

/**
 * Verifies a CRL message: size, alg, typ, kid and signature as for envelopes; the signer must be the
 * topology's gateway ('wrong-parent') and named in `gateway` ('path'); `iat` beyond the skew is 'future'.
 */
export async function verifyCrlMessage(jws: string, opts: { topology: Topology; keys: KeyRing; now?: number; clockSkewMs?: number }): Promise<CrlMessage> {
  const what = 'CRL message';
  const now = opts.now ?? Date.now();
  const skew = opts.clockSkewMs ?? clockSkewMs(opts.topology);
  checkSize(jws, Math.max(opts.topology.config.envelope.maxBytes, 1_048_576), what);
  const { kid, payload } = await verifyLayer(jws, { topology: opts.topology, keys: opts.keys, typ: CRL_TYP, what });
  const gateway = opts.topology.gateway().id;
  if (kid !== gateway) throw rejection('wrong-parent', `${what}: signed by "${kid}"; only the gateway "${gateway}" publishes CRLs`);
  checkVersion(payload, what);
  const res = crlMessageSchema.safeParse(payload);
  if (!res.success) throw rejection('malformed', `${what}: ${describeIssues(res.error)}`);
  if (res.data.gateway !== kid) throw rejection('path', `${what}: gateway "${res.data.gateway}" but "${kid}" signed it`);
  if (res.data.iat * 1000 > now + skew) throw rejection('future', `${what} is dated in the future`);
  return res.data as CrlMessage;
}

/** The `typ` of a compact JWS header, without verifying anything (to route a message to its verifier). */
export function peekTyp(jws: string): string | undefined {
  try {
    const h = JSON.parse(Buffer.from(jws.slice(0, jws.indexOf('.')), 'base64url').toString('utf8')) as { typ?: unknown };
    return typeof h.typ === 'string' ? h.typ : undefined;
  } catch {
    return undefined;
  }
}

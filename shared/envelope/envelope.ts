import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { parseDuration, type Topology } from '../config/index.js';
import { RaError } from '../errors/index.js';
import { checkSize, checkVersion, rejection, signJson, verifyLayer } from './jws.js';
import type { KeyRing, NodeKey } from './node-keys.js';
import type { ReplayGuard } from './replay-guard.js';
import { CRL_REASONS, describeIssues, edgePayloadSchema, relayPayloadSchema, revokePayloadSchema } from './schemas.js';

// The signed CSR envelope, version 1. The edge signs an EdgePayload; each relay wraps the JWS it
// received in a RelayPayload of its own (nested JWS, one hop record per relay). Verification peels
// the layers outer to inner and checks the signers against the topology path edge -> ... -> verifier.

export const ENVELOPE_TYP = 'ra-mesh+jws';

export interface ValidationRecord {
  /**
   * The challenge that validated the name; 'renewal': granted by `renewalOf` (renewal with the old key);
   * 'scep-challenge': a SCEP device's challenge password (RFC 8894 §2.3); 'scep-ra': the edge's own
   * SCEP RA certificate, for the name its topology node gives as scep.raName.
   */
  method: 'http-01' | 'dns-01' | 'tls-alpn-01' | 'renewal' | 'scep-challenge' | 'scep-ra';
  /** ISO time the challenge was validated (the renewal was granted). */
  at: string;
  /**
   * The address validation reached; "serial:<hex>" of the renewed certificate for 'renewal'; for
   * 'scep-challenge' which password ("segment" or "otp:<id>"); "node:<edge>" for 'scep-ra'.
   */
  from?: string;
}

export interface EnvelopeIdentifier {
  type: 'dns' | 'ip';
  value: string;
  validation?: ValidationRecord;
}

export interface EdgePayload {
  v: 1;
  kind: 'issue';
  /** uuid: idempotency key, also the CAS requestId. */
  id: string;
  /** Seconds. */
  iat: number;
  /** Seconds. */
  exp: number;
  nonce: string;
  origin: { node: string; segment?: string; dc: string };
  /** base64url DER. */
  csr: string;
  identifiers: EnvelopeIdentifier[];
  /**
   * `lifetime`: the lifetime rules (durations) of the account layer, the policy bound to the account's
   * EAB key; absent when there is none. The gateway resolves the certificate lifetime from every layer.
   */
  account: { id: string; eab: string | null; jwkThumbprint: string; lifetime?: { default?: string; min?: string; max?: string } };
  requested: { notBefore: string | null; notAfter: string | null };
  /**
   * base64url DER of the certificate this request renews with its key (names validated by method
   * 'renewal'); every hop checks its renewAfterExpiry window, the gateway that it issued it. Else null.
   */
  renewalOf: string | null;
}

/** An RFC 5280 §5.3.1 CRLReason code (see CRL_REASONS in schemas.ts). */
export type CrlReason = (typeof CRL_REASONS)[number];

/** How the edge established that the ACME requester may revoke the certificate (RFC 8555 §7.6). */
export type RevokeAuthorization = 'issuer-account' | 'authorizations' | 'certificate-key';

/**
 * A revocation request, signed by the edge that requested the certificate. Travels up exactly like
 * an issue envelope (relays verify, countersign and forward it; their policy layers do not apply).
 */
export interface RevokePayload {
  v: 1;
  kind: 'revoke';
  /** uuid: idempotency key, also the CAS requestId. */
  id: string;
  /** Seconds. */
  iat: number;
  /** Seconds. */
  exp: number;
  nonce: string;
  origin: { node: string; segment?: string; dc: string };
  /** Serial of the certificate, lower-case hex without leading zero bytes. */
  serial: string;
  reason: CrlReason;
  /** Who asked: the ACME account (null when the request was signed by the certificate key) and the JWK thumbprint. */
  requester: { method: RevokeAuthorization; account: string | null; jwkThumbprint: string };
}

/** Any payload an edge signs: an issue request or a revocation. */
export type AnyEdgePayload = EdgePayload | RevokePayload;

export interface HopRecord {
  node: string;
  /** ms epoch. */
  recvAt: number;
  /** ms epoch. */
  sentAt: number;
  /** Layer name + digest. */
  policy: string;
  decision: 'allow';
}

export interface RelayPayload {
  v: 1;
  /** The JWS the relay received. */
  inner: string;
  hop: HopRecord;
  /** Seconds. */
  iat: number;
  /** Seconds. */
  exp: number;
}

export type NewEdgePayloadInput = Omit<EdgePayload, 'v' | 'kind' | 'id' | 'iat' | 'exp' | 'nonce'> & {
  ttlMs: number;
  id?: string;
  /** ms epoch, for tests. */
  now?: number;
};

/** Fills v, kind, id (random uuid unless given), iat, exp (iat + ttl) and a 16-byte random nonce. */
export function newEdgePayload(p: NewEdgePayloadInput): EdgePayload {
  const now = p.now ?? Date.now();
  return {
    v: 1,
    kind: 'issue',
    id: p.id ?? randomUUID(),
    iat: Math.floor(now / 1000),
    exp: Math.floor((now + p.ttlMs) / 1000),
    nonce: randomBytes(16).toString('base64url'),
    origin: p.origin,
    csr: p.csr,
    identifiers: p.identifiers,
    account: p.account,
    requested: p.requested,
    renewalOf: p.renewalOf,
  };
}

export type NewRevokePayloadInput = Omit<RevokePayload, 'v' | 'kind' | 'id' | 'iat' | 'exp' | 'nonce'> & {
  ttlMs: number;
  id?: string;
  /** ms epoch, for tests. */
  now?: number;
};

/** Fills v, kind 'revoke', id (random uuid unless given), iat, exp (iat + ttl) and a 16-byte random nonce. */
export function newRevokePayload(p: NewRevokePayloadInput): RevokePayload {
  const now = p.now ?? Date.now();
  return {
    v: 1,
    kind: 'revoke',
    id: p.id ?? randomUUID(),
    iat: Math.floor(now / 1000),
    exp: Math.floor((now + p.ttlMs) / 1000),
    nonce: randomBytes(16).toString('base64url'),
    origin: p.origin,
    serial: p.serial,
    reason: p.reason,
    requester: p.requester,
  };
}

function refuseToSign(what: string, detail: string): never {
  throw new RaError('serverInternal', { reason: 'malformed', detail: `refusing to sign ${what}: ${detail}` });
}

/** Signs the edge's payload (issue or revoke). The payload must be well formed and `origin.node` must be the key's kid. */
export async function signEdgeEnvelope(payload: AnyEdgePayload, key: NodeKey): Promise<string> {
  const res = (payload.kind === 'revoke' ? revokePayloadSchema : edgePayloadSchema).safeParse(payload);
  if (!res.success) refuseToSign('an edge envelope', describeIssues(res.error));
  if (payload.origin.node !== key.kid) refuseToSign('an edge envelope', `origin.node "${payload.origin.node}" is not the signer "${key.kid}"`);
  return signJson(res.data, key, ENVELOPE_TYP);
}

/** Wraps and countersigns a received envelope; `hop.sentAt` is the signing time. `hop.node` must be the key's kid. */
export async function wrapEnvelope(
  inner: string,
  hop: Omit<HopRecord, 'sentAt'>,
  key: NodeKey,
  opts: { ttlMs: number; now?: number },
): Promise<string> {
  const now = opts.now ?? Date.now();
  const payload: RelayPayload = {
    v: 1,
    inner,
    hop: { node: hop.node, recvAt: hop.recvAt, sentAt: now, policy: hop.policy, decision: hop.decision },
    iat: Math.floor(now / 1000),
    exp: Math.floor((now + opts.ttlMs) / 1000),
  };
  const res = relayPayloadSchema.safeParse(payload);
  if (!res.success) refuseToSign('a relay layer', describeIssues(res.error));
  if (hop.node !== key.kid) refuseToSign('a relay layer', `hop.node "${hop.node}" is not the signer "${key.kid}"`);
  return signJson(res.data, key, ENVELOPE_TYP);
}

export interface VerifiedEnvelope<P extends AnyEdgePayload = AnyEdgePayload> {
  /** The edge's payload: narrow on `payload.kind`. */
  payload: P;
  /** Signers from the edge up to the outermost layer, e.g. ['edge-a', 'relay-1', 'relay-2']. */
  path: string[];
  /** Relay hop records in path order (the edge has none). */
  hops: HopRecord[];
  /** base64url SHA-256 of the edge (innermost) JWS: identifies the request's content. */
  digest: string;
  /** True when the ReplayGuard saw this envelope id with the same digest before. */
  redelivery: boolean;
}

export interface VerifyOptions {
  topology: Topology;
  /** Id of the verifying node: the outermost signer must be its topology child. */
  verifier: string;
  keys: KeyRing;
  replay?: ReplayGuard;
  /** ms epoch, for tests. */
  now?: number;
  /** Default 30000. */
  clockSkewMs?: number;
}

/** The tolerated clock difference between nodes: the topology's envelope.clockSkew. */
export function clockSkewMs(topology: Topology): number {
  return parseDuration(topology.config.envelope.clockSkew);
}

const article = (role: string) => (role === 'edge' ? 'an edge' : `a ${role}`);

function checkTimes(p: { iat: number; exp: number }, now: number, skewMs: number, what: string): void {
  if (p.exp * 1000 < now - skewMs) throw rejection('expired', `${what} expired at ${new Date(p.exp * 1000).toISOString()}`);
  if (p.iat * 1000 > now + skewMs) throw rejection('future', `${what} is dated in the future (${new Date(p.iat * 1000).toISOString()})`);
}

/**
 * Verifies an envelope as received by `verifier`, layer by layer from the outside in:
 * size (before any parsing), then per layer alg, typ, kid, signature, the signer's place in the
 * topology (outermost: a child of the verifier, else 'wrong-parent'; inner: a child of the layer
 * outside it, else 'path'), version, shape, hop/origin node = signer, expiry and issue time.
 * The ReplayGuard is asked last, once everything else has passed.
 */
export async function verifyEnvelope(jws: string, opts: VerifyOptions): Promise<VerifiedEnvelope> {
  const { topology, verifier, keys } = opts;
  const now = opts.now ?? Date.now();
  const skew = opts.clockSkewMs ?? clockSkewMs(topology);
  checkSize(jws, topology.config.envelope.maxBytes, 'envelope');

  const signers: string[] = []; // outer to inner
  const hops: HopRecord[] = []; // outer to inner
  let current = jws;
  let outside: string | undefined;
  for (let depth = 1; ; depth++) {
    const what = depth === 1 ? 'envelope' : `envelope layer ${depth}`;
    if (depth > topology.nodes.length) throw rejection('path', `${what}: more layers than the topology has nodes`);
    const { kid, payload } = await verifyLayer(current, { topology, keys, typ: ENVELOPE_TYP, what });
    const node = topology.node(kid);
    if (outside === undefined) {
      if (node.parent !== verifier) throw rejection('wrong-parent', `${what}: signer "${kid}" is not a child of "${verifier}"`);
    } else if (node.parent !== outside) {
      throw rejection('path', `${what}: signer "${kid}" is not a child of "${outside}", which wrapped it`);
    }
    checkVersion(payload, what);

    if ('inner' in payload) {
      if (node.role !== 'relay') throw rejection('path', `${what}: "${kid}" is ${article(node.role)}; only relays wrap envelopes`);
      const res = relayPayloadSchema.safeParse(payload);
      if (!res.success) throw rejection('malformed', `${what}: ${describeIssues(res.error)}`);
      const layer = res.data;
      if (layer.hop.node !== kid) throw rejection('path', `${what}: hop record names "${layer.hop.node}" but "${kid}" signed it`);
      checkTimes(layer, now, skew, what);
      signers.push(kid);
      hops.push(layer.hop);
      outside = kid;
      current = layer.inner;
      continue;
    }

    if (node.role !== 'edge') throw rejection('path', `${what}: the innermost signer "${kid}" is ${article(node.role)}, not an edge`);
    // The kind selects the shape; an unknown kind fails the issue schema's literal ('malformed').
    const res = (payload.kind === 'revoke' ? revokePayloadSchema : edgePayloadSchema).safeParse(payload);
    if (!res.success) throw rejection('malformed', `${what}: ${describeIssues(res.error)}`);
    const edge: AnyEdgePayload = res.data;
    if (edge.origin.node !== kid) throw rejection('path', `${what}: origin.node "${edge.origin.node}" but "${kid}" signed it`);
    checkTimes(edge, now, skew, what);
    signers.push(kid);

    const digest = contentDigest(edge);
    const redelivery = opts.replay ? opts.replay.check(edge.id, edge.nonce, digest, { expiresAt: edge.exp * 1000 + skew, now }) === 'redelivery' : false;
    return { payload: edge, path: signers.reverse(), hops: hops.reverse(), digest, redelivery };
  }
}

/**
 * Digest of what an envelope asks for: the edge payload without its per-signature fields (iat, exp,
 * nonce). An edge that re-signs an unanswered request (same id, same content, fresh times and nonce)
 * therefore presents a redelivery, not a replay; the same id with other content is a replay.
 */
export function contentDigest(p: AnyEdgePayload): string {
  const { iat: _iat, exp: _exp, nonce: _nonce, ...content } = p;
  return createHash('sha256').update(canonicalJson(content), 'utf8').digest('base64url');
}

/**
 * JSON with object keys sorted and undefined members left out (arrays as they are). Digests of this
 * form are stored (the gateway's idempotency records): the output must never change for the same data.
 * Written with loops rather than map/filter/join: it runs for every envelope at every hop.
 */
function canonicalJson(v: unknown): string {
  if (v === null || typeof v !== 'object') return JSON.stringify(v);
  if (Array.isArray(v)) {
    let out = '[';
    for (let i = 0; i < v.length; i++) {
      if (i > 0) out += ',';
      // As Array.prototype.join: an undefined element is written as nothing.
      out += v[i] === undefined ? '' : canonicalJson(v[i]);
    }
    return `${out}]`;
  }
  const o = v as Record<string, unknown>;
  const keys = Object.keys(o).sort();
  let out = '{';
  let first = true;
  for (const k of keys) {
    const x = o[k];
    if (x === undefined) continue;
    if (!first) out += ',';
    first = false;
    out += `${JSON.stringify(k)}:${canonicalJson(x)}`;
  }
  return `${out}}`;
}

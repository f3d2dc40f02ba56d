import { createHash, randomBytes, randomUUID } from 'node:crypto';
import type { z } from 'zod';
import { parseDuration, type Topology } from '../config/index.js';
import { RaError } from '../errors/index.js';
import { checkSize, checkVersion, rejection, signJson, verifyLayer } from './jws.js';
import type { KeyRing, NodeKey } from './node-keys.js';
import type { ReplayGuard } from './replay-guard.js';
import { bundlePayloadSchema, CRL_REASONS, describeIssues, edgePayloadSchema, relayPayloadSchema, revokePayloadSchema } from './schemas.js';

// The signed CSR envelope, version 1. The edge signs an EdgePayload; each relay wraps the JWS it
// received in a RelayPayload of its own (nested JWS, one hop record per relay), or several JWS it
// received in one BundlePayload (a tree: one countersignature and one hop record for all of them).
// Verification peels the layers outer to inner and checks every signer against the topology path
// edge -> ... -> verifier; each request of a bundle is verified, and accepted or rejected, on its own.

export const ENVELOPE_TYP = 'ra-mesh+jws';
/** The `typ` of a bundle layer: its size bound (envelope.bundle.maxBytes) is known before any parsing. */
export const BUNDLE_TYP = 'ra-mesh-bundle+jws';

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

/**
 * A relay's bundle layer: what it received, each JWS as it came (edge envelope, relay layer or bundle),
 * under one countersignature. Its hop record stands for every request inside.
 */
export interface BundlePayload {
  v: 1;
  bundle: string[];
  /** Requests inside that this relay refused or rejected (it answered their edge): not handled above. */
  exclude?: string[];
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
  return signRelayLayer({ inner }, hop, key, opts, relayPayloadSchema, 'a relay layer', ENVELOPE_TYP);
}

/** Countersigns several received envelopes as one bundle layer; `hop.sentAt` is the signing time. */
export async function bundleEnvelopes(
  items: string[],
  hop: Omit<HopRecord, 'sentAt'>,
  key: NodeKey,
  opts: { ttlMs: number; exclude?: string[]; now?: number },
): Promise<string> {
  const body = { bundle: items, ...(opts.exclude?.length ? { exclude: opts.exclude } : {}) };
  return signRelayLayer(body, hop, key, opts, bundlePayloadSchema, 'a bundle layer', BUNDLE_TYP);
}

/** A relay's layer (wrap or bundle): `body`, its hop record signed now, iat and exp; checked against `schema` first. */
async function signRelayLayer(
  body: Record<string, unknown>,
  hop: Omit<HopRecord, 'sentAt'>,
  key: NodeKey,
  opts: { ttlMs: number; now?: number },
  schema: typeof relayPayloadSchema | typeof bundlePayloadSchema,
  what: string,
  typ: string,
): Promise<string> {
  const now = opts.now ?? Date.now();
  const res = schema.safeParse({
    v: 1,
    ...body,
    hop: { node: hop.node, recvAt: hop.recvAt, sentAt: now, policy: hop.policy, decision: hop.decision },
    iat: Math.floor(now / 1000),
    exp: Math.floor((now + opts.ttlMs) / 1000),
  });
  if (!res.success) refuseToSign(what, describeIssues(res.error));
  if (hop.node !== key.kid) refuseToSign(what, `hop.node "${hop.node}" is not the signer "${key.kid}"`);
  return signJson(res.data, key, typ);
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
  // Asked on every verification: parsed once per topology (its config is frozen).
  let ms = SKEW_OF.get(topology);
  if (ms === undefined) SKEW_OF.set(topology, (ms = parseDuration(topology.config.envelope.clockSkew)));
  return ms;
}
const SKEW_OF = new WeakMap<Topology, number>();

const article = (role: string) => (role === 'edge' ? 'an edge' : `a ${role}`);

function checkTimes(p: { iat: number; exp: number }, now: number, skewMs: number, what: string): void {
  if (p.exp * 1000 < now - skewMs) throw rejection('expired', `${what} expired at ${new Date(p.exp * 1000).toISOString()}`);
  if (p.iat * 1000 > now + skewMs) throw rejection('future', `${what} is dated in the future (${new Date(p.iat * 1000).toISOString()})`);
}

/** A request inside a bundle that did not verify: refused alone, the rest of the bundle stands. */
export interface RejectedRequest {
  error: RaError;
  /** The request's id, when its edge payload was read before the check that failed. */
  id?: string;
}

/** What one message carried: a lone envelope, or the requests of a bundle tree. */
export interface VerifiedMessage {
  /** The requests that verified, in the order they were packed. */
  envelopes: VerifiedEnvelope[];
  /** Requests of a bundle that did not verify (a lone envelope that fails throws instead). */
  rejected: RejectedRequest[];
  /** Ids a relay below excluded (it refused or rejected them and answered their edge). */
  excluded: string[];
  /** True when the message holds a bundle layer. */
  bundled: boolean;
}

interface Walk {
  opts: VerifyOptions;
  now: number;
  skew: number;
  maxBytes: number;
  bundleMaxBytes: number;
  out: VerifiedMessage;
}

/** The signers and hop records outside the layer being read, outer to inner. */
interface Outside {
  signers: string[];
  hops: HopRecord[];
  exclude: ReadonlySet<string>;
}

const ids = new WeakMap<object, string>();

/**
 * Verifies a message as received by `verifier`, layer by layer from the outside in: size (before any
 * parsing), then per layer alg, typ, kid, signature, the signer's place in the topology (outermost: a
 * child of the verifier, else 'wrong-parent'; inner: a child of the layer outside it, else 'path'),
 * version, shape, hop/origin node = signer, expiry and issue time. The ReplayGuard is asked last for
 * each request, once everything else on its path has passed. A failure outside every bundle (or in
 * the outermost layer) throws: the whole message is refused. Inside a bundle each item stands alone.
 */
export async function verifyMessage(jws: string, opts: VerifyOptions): Promise<VerifiedMessage> {
  const env = opts.topology.config.envelope;
  const w: Walk = {
    opts,
    now: opts.now ?? Date.now(),
    skew: opts.clockSkewMs ?? clockSkewMs(opts.topology),
    maxBytes: env.maxBytes,
    bundleMaxBytes: env.bundle.maxBytes,
    out: { envelopes: [], rejected: [], excluded: [], bundled: false },
  };
  await walk(jws, w, { signers: [], hops: [], exclude: new Set() });
  return w.out;
}

/** The `typ` of a compact JWS's header, read without checking anything else (undefined if unreadable). */
function peekTyp(jws: unknown): unknown {
  if (typeof jws !== 'string') return undefined;
  const dot = jws.indexOf('.');
  if (dot <= 0 || dot > 1024) return undefined;
  try {
    return (JSON.parse(Buffer.from(jws.slice(0, dot), 'base64url').toString('utf8')) as { typ?: unknown })?.typ;
  } catch {
    return undefined;
  }
}

async function walk(current: string, w: Walk, outside: Outside): Promise<void> {
  const { topology, verifier, keys } = w.opts;
  const depth = outside.signers.length + 1;
  const what = depth === 1 ? 'envelope' : `envelope layer ${depth}`;
  // The size bound before any parsing: a bundle's (its typ says so, and its signature must agree), else an envelope's.
  const bundled = peekTyp(current) === BUNDLE_TYP;
  checkSize(current, bundled ? w.bundleMaxBytes : w.maxBytes, what);
  if (depth > topology.nodes.length) throw rejection('path', `${what}: more layers than the topology has nodes`);
  const { kid, payload } = await verifyLayer(current, { topology, keys, typ: bundled ? BUNDLE_TYP : ENVELOPE_TYP, what });
  const node = topology.node(kid);
  const wrapper = outside.signers.at(-1);
  if (wrapper === undefined) {
    if (node.parent !== verifier) throw rejection('wrong-parent', `${what}: signer "${kid}" is not a child of "${verifier}"`);
  } else if (node.parent !== wrapper) {
    throw rejection('path', `${what}: signer "${kid}" is not a child of "${wrapper}", which wrapped it`);
  }
  checkVersion(payload, what);

  if (bundled) {
    const layer = relayLayer(bundlePayloadSchema, payload, node.role, kid, what, w, 'bundle');
    if (layer.bundle.length > topology.config.envelope.bundle.maxEnvelopes) {
      throw rejection('oversize', `${what}: ${layer.bundle.length} envelopes in one bundle (at most ${topology.config.envelope.bundle.maxEnvelopes})`);
    }
    w.out.bundled = true;
    const exclude = layer.exclude?.length ? new Set([...outside.exclude, ...layer.exclude]) : outside.exclude;
    const inner: Outside = { signers: [...outside.signers, kid], hops: [...outside.hops, layer.hop], exclude };
    // Items one after another: the replay guard sees them in order (a second copy of an id in one
    // bundle is a redelivery, or a replay when its content differs).
    for (const item of layer.bundle) {
      try {
        await walk(item, w, inner);
      } catch (e) {
        const error = toRejection(e);
        const id = ids.get(error);
        w.out.rejected.push({ error, ...(id ? { id } : {}) });
      }
    }
    return;
  }
  if ('bundle' in payload) throw rejection('malformed', `${what}: a bundle layer whose typ is not ${BUNDLE_TYP}`);
  if ('inner' in payload) {
    const layer = relayLayer(relayPayloadSchema, payload, node.role, kid, what, w, 'wrap');
    return walk(layer.inner, w, { signers: [...outside.signers, kid], hops: [...outside.hops, layer.hop], exclude: outside.exclude });
  }

  if (node.role !== 'edge') throw rejection('path', `${what}: the innermost signer "${kid}" is ${article(node.role)}, not an edge`);
  // The kind selects the shape; an unknown kind fails the issue schema's literal ('malformed').
  const res = (payload.kind === 'revoke' ? revokePayloadSchema : edgePayloadSchema).safeParse(payload);
  if (!res.success) throw rejection('malformed', `${what}: ${describeIssues(res.error)}`);
  const edge: AnyEdgePayload = res.data;
  if (outside.exclude.has(edge.id)) {
    w.out.excluded.push(edge.id);
    return;
  }
  try {
    if (edge.origin.node !== kid) throw rejection('path', `${what}: origin.node "${edge.origin.node}" but "${kid}" signed it`);
    checkTimes(edge, w.now, w.skew, what);
    const digest = contentDigest(edge);
    const replay = w.opts.replay;
    const redelivery = replay ? replay.check(edge.id, edge.nonce, digest, { expiresAt: edge.exp * 1000 + w.skew, now: w.now }) === 'redelivery' : false;
    const path = [...outside.signers, kid].reverse();
    w.out.envelopes.push({ payload: edge, path, hops: [...outside.hops].reverse(), digest, redelivery });
  } catch (e) {
    const error = toRejection(e);
    ids.set(error, edge.id);
    throw error;
  }
}

/** A relay's layer (wrap or bundle): signed by a relay, of the schema's shape, its hop record the signer's, in time. */
function relayLayer<T extends { hop: HopRecord; iat: number; exp: number }>(
  schema: z.ZodType<T>,
  payload: Record<string, unknown>,
  role: string,
  kid: string,
  what: string,
  w: Walk,
  verb: 'wrap' | 'bundle',
): T {
  if (role !== 'relay') throw rejection('path', `${what}: "${kid}" is ${article(role)}; only relays ${verb} envelopes`);
  const res = schema.safeParse(payload);
  if (!res.success) throw rejection('malformed', `${what}: ${describeIssues(res.error)}`);
  const layer = res.data;
  if (layer.hop.node !== kid) throw rejection('path', `${what}: hop record names "${layer.hop.node}" but "${kid}" signed it`);
  checkTimes(layer, w.now, w.skew, what);
  return layer;
}

function toRejection(e: unknown): RaError {
  return e instanceof RaError ? e : rejection('malformed', (e as Error)?.message ?? String(e), e);
}

/**
 * Verifies a lone envelope (no bundle layer) as received by `verifier`: verifyMessage's checks, and
 * any failure throws. Returns the one request.
 */
export async function verifyEnvelope(jws: string, opts: VerifyOptions): Promise<VerifiedEnvelope> {
  const msg = await verifyMessage(jws, opts);
  if (msg.bundled) throw rejection('malformed', 'a bundle where a lone envelope was expected');
  return msg.envelopes[0]!;
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

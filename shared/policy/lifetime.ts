import { RaError } from '../errors/index.js';
import { parseDuration } from '../config/duration.js';

// Certificate lifetime from the layers a request passes (account -> edge -> relays -> gateway).
//
// RFC 8555 §7.4: a client may request notBefore/notAfter; the server "MUST return an error if it
// cannot fulfill the request as specified, and it MUST NOT issue a certificate with contents other
// than those requested". So a requested validity is honoured exactly when every layer's minLifetime
// and maxLifetime allow it, and refused (naming the layer and the rule) when one does not. Without a
// request, the lifetime is the first defaultLifetime in evaluation order (else 24h), raised to the
// largest minLifetime and capped by the smallest maxLifetime.

export const DEFAULT_LIFETIME_MS = 24 * 3_600_000;

/** A lifetime as operators write it in policies: hours when whole, else minutes, else seconds. */
function formatDuration(ms: number): string {
  for (const [u, f] of [['h', 3_600_000], ['m', 60_000], ['s', 1000]] as const) if (ms % f === 0 && ms >= f) return `${ms / f}${u}`;
  return `${ms}ms`;
}

/** The lifetime rules of one layer, with its name. */
export interface LifetimeLayer {
  name: string;
  defaultLifetime?: string | undefined;
  minLifetime?: string | undefined;
  maxLifetime?: string | undefined;
}

/** RFC 8555 §7.4 newOrder notBefore/notAfter (RFC 3339 strings), as the envelope carries them. */
export interface RequestedValidity {
  notBefore: string | null;
  notAfter: string | null;
}

export interface LifetimeCheck {
  layer: string;
  allowed: boolean;
  rule: string;
}

/** The requested lifetime in ms (notAfter - (notBefore or now)), or undefined when none is requested. */
export function requestedLifetimeMs(req: RequestedValidity | undefined, now = Date.now()): number | undefined {
  if (!req?.notAfter) return undefined;
  const start = req.notBefore ? Date.parse(req.notBefore) : now;
  return Date.parse(req.notAfter) - start;
}

/** One layer's verdict on a requested validity (nothing to say when none is requested). */
export function checkRequestedLifetime(layer: LifetimeLayer, req: RequestedValidity | undefined, now = Date.now()): LifetimeCheck[] {
  const ms = requestedLifetimeMs(req, now);
  if (ms === undefined) return [];
  if (!Number.isFinite(ms) || ms <= 0) {
    return [{ layer: layer.name, allowed: false, rule: `the requested notAfter ${req!.notAfter} is not after ${req!.notBefore ? `notBefore ${req!.notBefore}` : 'now'}` }];
  }
  const out: LifetimeCheck[] = [];
  const asked = formatDuration(Math.round(ms / 1000) * 1000);
  if (layer.maxLifetime !== undefined) {
    const ok = ms <= parseDuration(layer.maxLifetime);
    out.push({ layer: layer.name, allowed: ok, rule: `maxLifetime ${layer.maxLifetime} (requested ${asked})` });
  }
  if (layer.minLifetime !== undefined) {
    const ok = ms >= parseDuration(layer.minLifetime);
    out.push({ layer: layer.name, allowed: ok, rule: `minLifetime ${layer.minLifetime} (requested ${asked})` });
  }
  return out;
}

function lifetimeRefusal(checks: LifetimeCheck[]): RaError {
  return new RaError('rejectedIdentifier', {
    detail: checks.map((c) => `policy layer ${c.layer} refused the requested validity: ${c.rule}`).join('; '),
    reason: 'policy',
  });
}

/** Throws rejectedIdentifier when a layer refuses the requested validity (RFC 8555 §7.4). */
export function enforceRequestedLifetime(layers: LifetimeLayer[], req: RequestedValidity | undefined, now = Date.now()): void {
  const refused = layers.flatMap((l) => checkRequestedLifetime(l, req, now)).filter((c) => !c.allowed);
  if (refused.length > 0) throw lifetimeRefusal(refused);
}

export interface ResolvedValidity {
  lifetimeMs: number;
  notBefore?: Date;
  /** How the lifetime came about, for logs and `ra-mesh policy explain`. */
  explanation: string;
}

/**
 * The validity a certificate gets after every layer (in evaluation order): the requested one when
 * every layer allows it (else rejectedIdentifier naming the layer), otherwise the default clamped
 * into [largest minLifetime, smallest maxLifetime] (rejectedIdentifier when that range is empty).
 */
export function resolveValidity(layers: LifetimeLayer[], req?: RequestedValidity, now = Date.now()): ResolvedValidity {
  const notBefore = req?.notBefore ? new Date(req.notBefore) : undefined;
  const requested = requestedLifetimeMs(req, now);
  if (requested !== undefined) {
    enforceRequestedLifetime(layers, req, now);
    return { lifetimeMs: requested, ...(notBefore ? { notBefore } : {}), explanation: `requested ${formatDuration(Math.round(requested / 1000) * 1000)}, allowed by every layer` };
  }
  const def = layers.find((l) => l.defaultLifetime !== undefined);
  let ms = def ? parseDuration(def.defaultLifetime!) : DEFAULT_LIFETIME_MS;
  const steps = [def ? `defaultLifetime ${def.defaultLifetime} of ${def.name}` : `${formatDuration(DEFAULT_LIFETIME_MS)} (no layer sets defaultLifetime)`];
  let lo: LifetimeLayer | undefined;
  let hi: LifetimeLayer | undefined;
  for (const l of layers) {
    if (l.minLifetime !== undefined && (!lo || parseDuration(l.minLifetime) > parseDuration(lo.minLifetime!))) lo = l;
    if (l.maxLifetime !== undefined && (!hi || parseDuration(l.maxLifetime) < parseDuration(hi.maxLifetime!))) hi = l;
  }
  if (lo && hi && parseDuration(lo.minLifetime!) > parseDuration(hi.maxLifetime!)) {
    throw new RaError('rejectedIdentifier', {
      detail: `no certificate lifetime satisfies every policy layer: minLifetime ${lo.minLifetime} of ${lo.name} is longer than maxLifetime ${hi.maxLifetime} of ${hi.name}`,
      reason: 'policy',
    });
  }
  if (lo && ms < parseDuration(lo.minLifetime!)) {
    ms = parseDuration(lo.minLifetime!);
    steps.push(`raised to minLifetime ${lo.minLifetime} of ${lo.name}`);
  }
  if (hi && ms > parseDuration(hi.maxLifetime!)) {
    ms = parseDuration(hi.maxLifetime!);
    steps.push(`capped by maxLifetime ${hi.maxLifetime} of ${hi.name}`);
  }
  return { lifetimeMs: ms, ...(notBefore ? { notBefore } : {}), explanation: `${formatDuration(ms)}: ${steps.join(', ')}` };
}

/**
 * The lifetime a certificate gets after every layer, in ms: a requested one (refused outside any
 * layer's bounds), or the first defaultLifetime (else 24h) clamped by every minLifetime/maxLifetime.
 */
export function resolveLifetime(
  layers: Array<Partial<Record<'name' | 'defaultLifetime' | 'minLifetime' | 'maxLifetime', string>> & { [other: string]: unknown }>,
  requestedMs?: number,
  now = Date.now(),
): number {
  const named = layers.map((l, i) => ({ ...l, name: l.name ?? `layer ${i + 1}` }));
  const req = requestedMs === undefined ? undefined : { notBefore: new Date(now).toISOString(), notAfter: new Date(now + requestedMs).toISOString() };
  return resolveValidity(named, req, now).lifetimeMs;
}

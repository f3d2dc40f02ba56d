import { randomBytes, randomUUID } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { RaError } from '../../../shared/errors/index.js';
import { parseDuration } from '../../../shared/config/index.js';
import type { AcmeContext } from './context.js';
import { orderUrl } from './context.js';
import { normalizeIdentifiers } from './identifiers.js';
import { admitOrderAtEdge, enforceOrderAtEdge, rateLimitOf, type EdgeLayers } from '../../../shared/policy/index.js';
import { findReplaced, renewalAllowed } from './renewal.js';
import { requireOwner, requirePostAsGet, verifyAcmeRequest } from './jws.js';
import type { AuthzRecord, ChallengeRecord, ChallengeType, OrderRecord } from './records.js';
import { orderView } from './views.js';

const AUTHZ_LIFETIME_MS = 7 * 86_400_000;

function parseTime(v: unknown, field: string): string | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'string' || Number.isNaN(Date.parse(v))) throw new RaError('malformed', { detail: `${field} must be an RFC 3339 date-time` });
  return new Date(v).toISOString();
}

/**
 * Brings an order's status up to date with its authorizations and expiry (RFC 8555 §7.1.6):
 * pending -> ready once every authz is valid; pending -> invalid when one is invalid or the order expired.
 */
export async function refreshOrder(ctx: AcmeContext, order: OrderRecord): Promise<OrderRecord> {
  const now = Date.now();
  if ((order.status === 'pending' || order.status === 'ready') && Date.parse(order.expires) <= now) {
    order.status = 'invalid';
    order.error = new RaError('malformed', { detail: 'the order expired before it was finalized' }).toProblem();
    await ctx.store.orders.put(order.id, order);
    return order;
  }
  if (order.status !== 'pending') return order;
  const authzs = await Promise.all(order.authzIds.map((id) => ctx.store.authzs.get(id)));
  const statuses = authzs.map((a) => (a && Date.parse(a.expires) <= now && a.status === 'pending' ? 'expired' : a?.status));
  let next: OrderRecord['status'] = order.status;
  if (statuses.some((s) => s !== 'valid' && s !== 'pending')) next = 'invalid';
  else if (statuses.every((s) => s === 'valid')) next = 'ready';
  if (next !== order.status) {
    order.status = next;
    if (next === 'invalid') {
      const failed = authzs.find((a) => a && a.status !== 'valid' && a.status !== 'pending');
      order.error = new RaError('unauthorized', {
        detail: `authorization for ${failed?.identifier.value ?? 'an identifier'} is ${failed?.status ?? 'expired'}`,
      }).toProblem();
    }
    await ctx.store.orders.put(order.id, order);
  }
  return order;
}

/** The challenges offered for one identifier (RFC 8555 §8, RFC 8737, RFC 8738). */
export function challengeTypesFor(ctx: AcmeContext, identifierType: string, wildcard: boolean): ChallengeType[] {
  return ctx.challengeTypes.filter((t) => {
    // RFC 8555 §7.1.3 / §8.4: wildcard names can only be validated with dns-01.
    if (wildcard) return t === 'dns-01';
    // RFC 8738 §7: dns-01 is not applicable to IP identifiers.
    if (identifierType === 'ip') return t !== 'dns-01';
    return true;
  });
}

export function registerOrder(app: FastifyInstance, ctx: AcmeContext): void {
  // RFC 8555 §7.4: newOrder.
  app.post(ctx.paths.newOrder, async (req, reply) => {
    const r = await verifyAcmeRequest<{ identifiers?: unknown; notBefore?: unknown; notAfter?: unknown; replaces?: unknown }>(ctx, req, { key: 'kid' });
    if (!r.payload) throw new RaError('malformed', { detail: 'newOrder needs a payload with identifiers' });
    const identifiers = normalizeIdentifiers(r.payload.identifiers);
    const notBefore = parseTime(r.payload.notBefore, 'notBefore');
    const notAfter = parseTime(r.payload.notAfter, 'notAfter');
    if (notBefore && notAfter && Date.parse(notAfter) <= Date.parse(notBefore)) {
      throw new RaError('malformed', { detail: 'notAfter must be later than notBefore' });
    }
    const now = Date.now();
    if (notAfter && Date.parse(notAfter) <= now) throw new RaError('malformed', { detail: 'notAfter must be in the future' });
    // Every layer this edge can see is checked now, in evaluation order (the account layer bound to the
    // account's EAB key, this edge, each relay, the gateway), so a client is refused early; each
    // upstream hop enforces its own layer again when the envelope reaches it.
    const layers: EdgeLayers = { account: await ctx.eab.policyLayer(r.account!.eabKeyId), path: ctx.layers };
    enforceOrderAtEdge(layers, identifiers, { notBefore: notBefore ?? null, notAfter: notAfter ?? null }, now);
    // RFC 9773 §5: the certificate this order replaces; possibly a renewal with the old key (renewal.ts).
    const replaced = r.payload.replaces === undefined ? undefined : await findReplaced(ctx, r.payload.replaces, r.account!.id);
    const renewal = replaced !== undefined && renewalAllowed(ctx, replaced, identifiers);

    const wildcardOk = ctx.challengeTypes.includes('dns-01');
    const noChallenge = renewal ? [] : identifiers.filter((i) => challengeTypesFor(ctx, i.type, i.value.startsWith('*.')).length === 0);
    if (noChallenge.length > 0) {
      throw new RaError('rejectedIdentifier', {
        detail: `this edge offers no challenge type that can validate ${noChallenge.map((i) => i.value).join(', ')}`,
        subproblems: noChallenge.map((i) => ({
          type: 'rejectedIdentifier' as const,
          identifier: i,
          detail: i.value.startsWith('*.') && !wildcardOk ? 'wildcard names need dns-01, which this edge does not offer' : 'no applicable challenge type',
        })),
      });
    }

    // Rate limits last, so an order refused above takes no token: what an upstream layer reported of
    // its limits, then the account layer's and this edge's own buckets (RFC 8555 §6.7 rateLimited, 429).
    admitOrderAtEdge(layers, { account: r.account!.id, identifiers, edge: ctx.nodeId }, now);

    const orderLifetime = parseDuration(ctx.acme.orderLifetime);
    const authzs: AuthzRecord[] = [];
    const challenges: ChallengeRecord[] = [];
    for (const ident of identifiers) {
      const wildcard = ident.value.startsWith('*.');
      const authz: AuthzRecord = {
        id: randomUUID(),
        accountId: r.account!.id,
        // RFC 8555 §7.1.4: the authz identifier of a wildcard order names the base domain.
        identifier: wildcard ? { type: 'dns', value: ident.value.slice(2) } : ident,
        status: renewal ? 'valid' : 'pending',
        expires: new Date(now + Math.min(AUTHZ_LIFETIME_MS, orderLifetime)).toISOString(),
        wildcard,
        challengeIds: [],
        ...(renewal ? { renewal: { serial: replaced!.facts.serial, at: new Date(now).toISOString() } } : {}),
      };
      for (const type of renewal ? [] : challengeTypesFor(ctx, ident.type, wildcard)) {
        const ch: ChallengeRecord = {
          id: randomUUID(),
          authzId: authz.id,
          accountId: authz.accountId,
          type,
          // RFC 8555 §8.1: tokens carry at least 128 bits of entropy, base64url.
          token: randomBytes(32).toString('base64url'),
          status: 'pending',
        };
        authz.challengeIds.push(ch.id);
        challenges.push(ch);
      }
      authzs.push(authz);
    }
    const order: OrderRecord = {
      id: randomUUID(),
      accountId: r.account!.id,
      // RFC 8555 §7.1.6: an order whose authorizations are all valid is ready.
      status: renewal ? 'ready' : 'pending',
      expires: new Date(now + orderLifetime).toISOString(),
      identifiers,
      ...(notBefore ? { notBefore } : {}),
      ...(notAfter ? { notAfter } : {}),
      authzIds: authzs.map((a) => a.id),
      createdAt: new Date(now).toISOString(),
      ...(replaced ? { replaces: { certId: r.payload.replaces as string, certificateId: replaced.cert.id, serial: replaced.facts.serial, renewal } } : {}),
    };
    await ctx.store.db.batch([
      ...authzs.map((a) => ({ coll: ctx.store.authzs as never, type: 'put' as const, key: a.id, value: a })),
      ...challenges.map((c) => ({ coll: ctx.store.challenges as never, type: 'put' as const, key: c.id, value: c })),
      { coll: ctx.store.orders as never, type: 'put', key: order.id, value: order },
      { coll: ctx.store.accountOrders as never, type: 'put', key: `${order.accountId}/${order.id}`, value: order.id },
    ]);
    ctx.log.info({ order: order.id, account: order.accountId, identifiers: identifiers.map((i) => i.value), ...(replaced ? { replaces: replaced.facts.serial, renewal } : {}) }, 'order created');
    return reply.code(201).header('Location', orderUrl(ctx, order.id)).send(orderView(ctx, order));
  });

  // RFC 8555 §7.4: POST-as-GET of an order.
  app.post(`${ctx.paths.order}:id`, async (req, reply) => {
    const { id } = req.params as { id: string };
    const r = await verifyAcmeRequest(ctx, req, { key: 'kid' });
    requirePostAsGet(r);
    const order = await ctx.store.orders.get(id);
    if (!order) throw new RaError('notFound', { detail: 'no such order' });
    requireOwner(r, order.accountId);
    const fresh = await ctx.locks.run(`order:${id}`, async () => refreshOrder(ctx, (await ctx.store.orders.get(id))!));
    // RFC 8555 §7.4: while the order is processing, Retry-After tells the client when to poll again.
    if (fresh.status === 'processing') reply.header('Retry-After', String(ctx.acme.retryAfter));
    // RFC 8555 §6.7 rateLimited from an upstream layer: its Retry-After (RFC 9110 §10.2.3) goes with the invalid order.
    const limited = fresh.status === 'invalid' ? rateLimitOf(fresh.error) : undefined;
    if (limited) reply.header('Retry-After', String(Math.max(1, limited.retryAfter)));
    return reply.code(200).send(orderView(ctx, fresh));
  });
}

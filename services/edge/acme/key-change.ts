import type { FastifyInstance } from 'fastify';
import { calculateJwkThumbprint, flattenedVerify, importJWK, type JWK } from 'jose';
import { RaError } from '../../../shared/errors/index.js';
import type { AcmeContext } from './context.js';
import { accountUrl } from './context.js';
import { ACCOUNT_ALGS, parseFlattenedJws, verifyAcmeRequest } from './jws.js';

export function registerKeyChange(app: FastifyInstance, ctx: AcmeContext): void {
  // RFC 8555 §7.3.5: account key rollover. The outer JWS is signed by the current key (kid), its
  // payload is an inner JWS signed by the new key (jwk) over {account, oldKey}.
  app.post(ctx.paths.keyChange, async (req, reply) => {
    const outer = await verifyAcmeRequest<Record<string, unknown>>(ctx, req, { key: 'kid' });
    const { jws: inner, header } = parseFlattenedJws(outer.payload, 'inner JWS (keyChange payload)');
    // RFC 8555 §7.3.5: the inner JWS has a "jwk" (the new key), the same "url", and no "nonce".
    if (typeof header.alg !== 'string' || !(ACCOUNT_ALGS as readonly string[]).includes(header.alg)) {
      throw new RaError('badSignatureAlgorithm', { detail: 'inner JWS algorithm is not supported', algorithms: [...ACCOUNT_ALGS] });
    }
    if (typeof header.jwk !== 'object' || header.jwk === null || 'kid' in header) {
      throw new RaError('malformed', { detail: 'inner JWS must carry the new key in "jwk" and no "kid"' });
    }
    if ('nonce' in header) throw new RaError('malformed', { detail: 'inner JWS must not have a nonce' });
    if (header.url !== outer.protectedHeader.url) throw new RaError('malformed', { detail: 'inner and outer JWS url differ' });
    const newJwk = header.jwk as JWK;
    if ('d' in newJwk) throw new RaError('badPublicKey', { detail: 'new key must be a public key' });
    let payload: { account?: unknown; oldKey?: unknown };
    try {
      const key = await importJWK(newJwk, header.alg);
      const res = await flattenedVerify(inner, key, { algorithms: [...ACCOUNT_ALGS] });
      payload = JSON.parse(Buffer.from(res.payload).toString('utf8'));
    } catch (e) {
      throw new RaError('malformed', { detail: 'inner JWS signature verification failed', cause: e });
    }
    const acct = outer.account!;
    if (payload.account !== accountUrl(ctx, acct.id)) throw new RaError('malformed', { detail: 'inner payload "account" is not the signing account' });
    if (typeof payload.oldKey !== 'object' || payload.oldKey === null || (await calculateJwkThumbprint(payload.oldKey as JWK)) !== acct.thumbprint) {
      throw new RaError('malformed', { detail: 'inner payload "oldKey" is not the current account key' });
    }
    const newThumb = await calculateJwkThumbprint(newJwk);
    return ctx.locks.run(`thumb:${newThumb}`, async () => {
      const holder = await ctx.store.accountByThumbprint.get(newThumb);
      // RFC 8555 §7.3.5: a new key already bound to an account is 409 Conflict with that account's URL.
      if (holder) {
        reply.header('Location', accountUrl(ctx, holder));
        throw new RaError('malformed', { detail: 'the new key is already in use by an account', status: 409 });
      }
      const updated = { ...acct, jwk: newJwk, thumbprint: newThumb };
      await ctx.store.db.batch([
        { coll: ctx.store.accounts as never, type: 'put', key: acct.id, value: updated },
        { coll: ctx.store.accountByThumbprint as never, type: 'del', key: acct.thumbprint },
        { coll: ctx.store.accountByThumbprint as never, type: 'put', key: newThumb, value: acct.id },
      ]);
      ctx.log.info({ account: acct.id }, 'account key rolled over');
      return reply.code(200).send({ status: updated.status, contact: updated.contact, orders: accountUrl(ctx, acct.id) + '/orders' });
    });
  });
}

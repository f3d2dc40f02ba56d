import { randomUUID } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { RaError } from '../../../shared/errors/index.js';
import type { AcmeContext } from './context.js';
import { accountUrl, orderUrl, url } from './context.js';
import { decodeProtectedHeader, type JWK } from 'jose';
import { verifyExternalAccountBinding } from '../eab/verify-eab.js';
import { requireOwner, verifyAcmeRequest } from './jws.js';
import type { AccountRecord } from './records.js';
import { accountView } from './views.js';

interface NewAccountPayload {
  contact?: unknown;
  termsOfServiceAgreed?: unknown;
  onlyReturnExisting?: unknown;
  externalAccountBinding?: unknown;
}

const EMAIL_RE = /^[^@\s<>,;:"()[\]\\]+@[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+$/i;

/** RFC 8555 §7.3: contact URLs; this server supports mailto: with one address and no hfields. */
export function validateContacts(contact: unknown): string[] {
  if (contact === undefined) return [];
  if (!Array.isArray(contact)) throw new RaError('malformed', { detail: 'contact must be an array of URLs' });
  if (contact.length > 10) throw new RaError('invalidContact', { detail: 'at most 10 contact URLs' });
  return contact.map((c) => {
    if (typeof c !== 'string') throw new RaError('invalidContact', { detail: 'contact entries must be strings' });
    if (!c.startsWith('mailto:')) throw new RaError('unsupportedContact', { detail: `contact ${JSON.stringify(c)}: only mailto: URLs are supported` });
    const addr = c.slice('mailto:'.length);
    if (addr.includes('?') || addr.includes(',') || !EMAIL_RE.test(addr)) {
      throw new RaError('invalidContact', { detail: `contact ${JSON.stringify(c)} is not a single valid email address` });
    }
    return c;
  });
}

function newAccountRecord(jwk: JWK, thumbprint: string, contact: string[], tos: boolean, eabKeyId: string | null): AccountRecord {
  return { id: randomUUID(), status: 'valid', jwk, thumbprint, contact, termsOfServiceAgreed: tos, eabKeyId, createdAt: new Date().toISOString() };
}

function accountWrites(ctx: AcmeContext, acct: AccountRecord) {
  return [
    { coll: ctx.store.accounts as never, type: 'put' as const, key: acct.id, value: acct },
    { coll: ctx.store.accountByThumbprint as never, type: 'put' as const, key: acct.thumbprint, value: acct.id },
  ];
}

/** The kid of an EAB JWS, to serialise binding per key (full checks happen in verifyExternalAccountBinding). */
async function peekEabKeyId(eab: unknown): Promise<string> {
  try {
    const kid = decodeProtectedHeader(eab as { protected: string }).kid;
    if (typeof kid === 'string') return kid;
  } catch {
    // fall through
  }
  throw new RaError('malformed', { detail: 'externalAccountBinding must be a flattened JWS with the EAB key id as kid' });
}

export function registerAccount(app: FastifyInstance, ctx: AcmeContext): void {
  // RFC 8555 §7.3: newAccount, signed with the account key in "jwk".
  app.post(ctx.paths.newAccount, async (req, reply) => {
    const r = await verifyAcmeRequest<NewAccountPayload>(ctx, req, { key: 'jwk' });
    const p = r.payload ?? {};
    return ctx.locks.run(`thumb:${r.thumbprint}`, async () => {
      const existingId = await ctx.store.accountByThumbprint.get(r.thumbprint);
      if (existingId) {
        const existing = (await ctx.store.accounts.get(existingId))!;
        // RFC 8555 §7.3.6: a deactivated account is refused, also when looked up by its key.
        if (existing.status !== 'valid') throw new RaError('unauthorized', { detail: `account is ${existing.status}` });
        // RFC 8555 §7.3.1: an existing key returns 200 with the account URL in Location.
        return reply.code(200).header('Location', accountUrl(ctx, existing.id)).send(accountView(ctx, existing));
      }
      // RFC 8555 §7.3.1: onlyReturnExisting with an unknown key is accountDoesNotExist.
      if (p.onlyReturnExisting === true) throw new RaError('accountDoesNotExist', { detail: 'no account exists for this key' });
      const contact = validateContacts(p.contact);
      // RFC 8555 §7.3.3: when the server has terms of service the client must agree to them.
      if (ctx.acme.termsOfService && p.termsOfServiceAgreed !== true) {
        throw new RaError('userActionRequired', { detail: `agree to the terms of service at ${ctx.acme.termsOfService}` });
      }
      // RFC 8555 §7.3.4: external account binding (an edge with eab "off" ignores one sent anyway).
      if (ctx.acme.eab === 'required' && p.externalAccountBinding === undefined) throw new RaError('externalAccountRequired');
      if (p.externalAccountBinding !== undefined && ctx.acme.eab !== 'off') {
        const eabKeyId = await peekEabKeyId(p.externalAccountBinding);
        return ctx.locks.run(`eab:${eabKeyId}`, async () => {
          const rec = await verifyExternalAccountBinding(p.externalAccountBinding, { store: ctx.eab, newAccountUrl: url(ctx, ctx.paths.newAccount), accountJwk: r.jwk });
          const acct = newAccountRecord(r.jwk, r.thumbprint, contact, p.termsOfServiceAgreed === true, rec.keyId);
          await ctx.store.db.batch([
            ...accountWrites(ctx, acct),
            { coll: ctx.eab.keys as never, type: 'put', key: rec.keyId, value: { ...rec, boundTo: acct.id, boundAt: acct.createdAt } },
          ]);
          ctx.log.info({ account: acct.id, eab: rec.keyId }, 'account created with external account binding');
          return reply.code(201).header('Location', accountUrl(ctx, acct.id)).send(accountView(ctx, acct));
        });
      }
      const acct = newAccountRecord(r.jwk, r.thumbprint, contact, p.termsOfServiceAgreed === true, null);
      await ctx.store.db.batch(accountWrites(ctx, acct));
      ctx.log.info({ account: acct.id }, 'account created');
      return reply.code(201).header('Location', accountUrl(ctx, acct.id)).send(accountView(ctx, acct));
    });
  });

  // RFC 8555 §7.3.2 (update), §7.3.6 (deactivation), POST-as-GET of the account.
  app.post(`${ctx.paths.account}:id`, async (req, reply) => {
    const { id } = req.params as { id: string };
    const r = await verifyAcmeRequest<{ contact?: unknown; status?: unknown; termsOfServiceAgreed?: unknown }>(ctx, req, {
      key: 'kid',
      requireValidAccount: true,
    });
    requireOwner(r, id);
    return ctx.locks.run(`acct:${id}`, async () => {
      const acct = (await ctx.store.accounts.get(id))!;
      const p = r.payload;
      if (p !== undefined) {
        if (p.status !== undefined) {
          if (p.status !== 'deactivated') throw new RaError('malformed', { detail: 'the only status a client may set is "deactivated"' });
          acct.status = 'deactivated';
        }
        if (p.contact !== undefined) acct.contact = validateContacts(p.contact);
        if (p.termsOfServiceAgreed === true) acct.termsOfServiceAgreed = true;
        await ctx.store.accounts.put(id, acct);
      }
      return reply.code(200).header('Location', accountUrl(ctx, id)).send(accountView(ctx, acct));
    });
  });

  // RFC 8555 §7.1.2.1: the orders list of an account.
  app.post(`${ctx.paths.account}:id/orders`, async (req, reply) => {
    const { id } = req.params as { id: string };
    const r = await verifyAcmeRequest(ctx, req, { key: 'kid' });
    requireOwner(r, id);
    const ids = await ctx.store.accountOrders.values({ prefix: `${id}/` });
    return reply.code(200).send({ orders: ids.map((o) => orderUrl(ctx, o)) });
  });
}

import type { FastifyInstance } from 'fastify';
import type { AcmeContext } from './context.js';
import { url } from './context.js';

export function registerDirectory(app: FastifyInstance, ctx: AcmeContext): void {
  // RFC 8555 §7.1.1: the directory names every resource and carries optional meta.
  app.get(ctx.paths.directory, async () => ({
    newNonce: url(ctx, ctx.paths.newNonce),
    newAccount: url(ctx, ctx.paths.newAccount),
    newOrder: url(ctx, ctx.paths.newOrder),
    revokeCert: url(ctx, ctx.paths.revokeCert),
    keyChange: url(ctx, ctx.paths.keyChange),
    // RFC 9773 §3: the renewalInfo resource.
    renewalInfo: url(ctx, ctx.paths.renewalInfo),
    meta: {
      ...(ctx.acme.termsOfService ? { termsOfService: ctx.acme.termsOfService } : {}),
      ...(ctx.acme.website ? { website: ctx.acme.website } : {}),
      ...(ctx.acme.caaIdentities ? { caaIdentities: ctx.acme.caaIdentities } : {}),
      externalAccountRequired: ctx.acme.eab === 'required',
    },
  }));
}

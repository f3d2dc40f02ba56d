import type { FastifyInstance } from 'fastify';
import { RaError } from '../../../shared/errors/index.js';
import type { AcmeContext } from './context.js';
import { requireOwner, verifyAcmeRequest } from './jws.js';
import type { AuthzRecord, ChallengeRecord } from './records.js';
import { authzView } from './views.js';

export async function loadAuthz(ctx: AcmeContext, id: string): Promise<{ authz: AuthzRecord; challenges: ChallengeRecord[] }> {
  const authz = await ctx.store.authzs.get(id);
  if (!authz) throw new RaError('notFound', { detail: 'no such authorization' });
  // RFC 8555 §7.1.6: a pending authorization past its expiry is expired.
  if (authz.status === 'pending' && Date.parse(authz.expires) <= Date.now()) authz.status = 'expired';
  const challenges = (await Promise.all(authz.challengeIds.map((c) => ctx.store.challenges.get(c)))).filter(
    (c): c is ChallengeRecord => c !== undefined,
  );
  return { authz, challenges };
}

export function registerAuthz(app: FastifyInstance, ctx: AcmeContext): void {
  // RFC 8555 §7.5 (POST-as-GET) and §7.5.2 (deactivation).
  app.post(`${ctx.paths.authz}:id`, async (req, reply) => {
    const { id } = req.params as { id: string };
    const r = await verifyAcmeRequest<{ status?: unknown }>(ctx, req, { key: 'kid' });
    return ctx.locks.run(`authz:${id}`, async () => {
      const { authz, challenges } = await loadAuthz(ctx, id);
      requireOwner(r, authz.accountId);
      if (r.payload !== undefined) {
        // RFC 8555 §7.5.2: the only update is {"status": "deactivated"}, from pending or valid.
        if (r.payload.status !== 'deactivated') throw new RaError('malformed', { detail: 'the only authorization update is status "deactivated"' });
        if (authz.status !== 'pending' && authz.status !== 'valid') {
          throw new RaError('malformed', { detail: `an authorization that is ${authz.status} cannot be deactivated` });
        }
        authz.status = 'deactivated';
        await ctx.store.authzs.put(authz.id, authz);
      }
      return reply.code(200).send(authzView(ctx, authz, challenges));
    });
  });
}

import type { FastifyInstance } from 'fastify';
import { parseDuration } from '../../../shared/config/index.js';
import { RaError, toRaError } from '../../../shared/errors/index.js';
import type { AcmeContext } from './context.js';
import { authzUrl } from './context.js';
import { requireOwner, verifyAcmeRequest } from './jws.js';
import type { ChallengeRecord } from './records.js';
import { challengeView } from './views.js';

/** RFC 8555 §8.1: keyAuthorization = token || '.' || base64url(JWK thumbprint). */
export function keyAuthorization(token: string, thumbprint: string): string {
  return `${token}.${thumbprint}`;
}

/** Runs the validation of one challenge and records the outcome in challenge and authz. */
async function validate(ctx: AcmeContext, ch: ChallengeRecord, thumbprint: string): Promise<void> {
  const authz = (await ctx.store.authzs.get(ch.authzId))!;
  const validator = ctx.validators[ch.type];
  const log = ctx.log.child({ challenge: ch.id, type: ch.type, identifier: authz.identifier.value });
  let outcome: { from?: string } | undefined;
  let error: RaError | undefined;
  try {
    if (!validator) throw new RaError('serverInternal', { detail: `no validator for ${ch.type}` });
    outcome = await validator({ identifier: authz.identifier, token: ch.token, keyAuthorization: keyAuthorization(ch.token, thumbprint) });
  } catch (e) {
    error = toRaError(e);
    if (error.type === 'serverInternal') log.error({ err: e }, 'validation failed internally');
  }
  await ctx.locks.run(`authz:${authz.id}`, async () => {
    const a = (await ctx.store.authzs.get(authz.id))!;
    const c = (await ctx.store.challenges.get(ch.id))!;
    if (error) {
      c.status = 'invalid';
      c.error = error.toProblem();
      // RFC 8555 §7.1.6: one invalid challenge makes the authorization invalid.
      if (a.status === 'pending') a.status = 'invalid';
      log.info({ problem: error.type, detail: error.detail }, 'challenge invalid');
    } else {
      c.status = 'valid';
      c.validated = new Date().toISOString();
      if (outcome?.from) c.validationFrom = outcome.from;
      if (a.status === 'pending') a.status = 'valid';
      log.info({ from: outcome?.from }, 'challenge valid');
    }
    await ctx.store.db.batch([
      { coll: ctx.store.challenges as never, type: 'put', key: c.id, value: c },
      { coll: ctx.store.authzs as never, type: 'put', key: a.id, value: a },
    ]);
  });
}

export function registerChallenge(app: FastifyInstance, ctx: AcmeContext): void {
  // RFC 8555 §7.5.1: a POST with "{}" asks the server to validate; POST-as-GET reads the challenge.
  app.post(`${ctx.paths.challenge}:id`, async (req, reply) => {
    const { id } = req.params as { id: string };
    const r = await verifyAcmeRequest<Record<string, unknown>>(ctx, req, { key: 'kid' });
    let validation: Promise<void> | undefined;
    const result = await ctx.locks.run(`authz-chall:${id}`, async () => {
      const ch = await ctx.store.challenges.get(id);
      if (!ch) throw new RaError('notFound', { detail: 'no such challenge' });
      requireOwner(r, ch.accountId);
      if (r.payload !== undefined && ch.status === 'pending') {
        if (typeof r.payload !== 'object' || r.payload === null || Array.isArray(r.payload)) {
          throw new RaError('malformed', { detail: 'challenge response must be a JSON object' });
        }
        const authz = (await ctx.store.authzs.get(ch.authzId))!;
        if (authz.status !== 'pending') {
          throw new RaError('malformed', { detail: `the authorization is ${authz.status}; its challenges can no longer be answered` });
        }
        ch.status = 'processing';
        await ctx.store.challenges.put(ch.id, ch);
        // Validation runs on its own, outside this lock; it records its outcome in challenge and authz.
        validation = new Promise<void>((resolve) =>
          setImmediate(() => {
            validate(ctx, ch, r.thumbprint)
              .catch((e) => ctx.log.error({ err: e, challenge: ch.id }, 'validation crashed'))
              .finally(resolve);
          }),
        );
      }
      return ch;
    });
    // RFC 8555 §7.5.1: the response is the challenge as it stands; the client polls the authorization
    // while it is "processing". Validating inside the segment takes milliseconds, so the answer is held
    // up to acme.challengeWait for the outcome (as step-ca validates within the request): a client that
    // reads the status skips a poll. A slow validation goes on after the answer ("processing").
    let now = result;
    const wait = parseDuration(ctx.acme.challengeWait);
    if (validation && wait > 0) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([validation, new Promise<void>((res) => (timer = setTimeout(res, wait)))]);
      clearTimeout(timer);
      now = (await ctx.store.challenges.get(id)) ?? result;
    }
    // RFC 8555 §7.5.1: Link rel="up" points at the authorization.
    reply.header('Link', `<${authzUrl(ctx, now.authzId)}>;rel="up"`);
    if (now.status === 'processing') reply.header('Retry-After', '1');
    return reply.code(200).send(challengeView(ctx, now));
  });
}

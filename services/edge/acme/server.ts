import Fastify, { type FastifyInstance } from 'fastify';
import { RaError, toRaError } from '../../../shared/errors/index.js';
import type { NodeMetrics } from '../../../shared/metrics/node-metrics.js';
import { registerAccount } from './account.js';
import { registerAuthz } from './authz.js';
import { registerCertificate } from './certificate.js';
import { registerChallenge } from './challenge.js';
import type { AcmeContext } from './context.js';
import { url } from './context.js';
import { registerDirectory } from './directory.js';
import { registerFinalize } from './finalize.js';
import { registerKeyChange } from './key-change.js';
import { registerNonce } from './nonce.js';
import { registerOrder } from './order.js';
import { registerRenewalInfo } from './renewal.js';
import { registerRevoke } from './revoke.js';

/** Largest ACME request body accepted (a CSR with many names fits well below). */
export const MAX_BODY_BYTES = 64 * 1024;

/**
 * How a request's error is logged. An unexpected failure (any exception that is not an RaError, or an
 * RaError wrapping a cause) is an internal error: level error, with the cause and its stack. A
 * serverInternal this server or the mesh chose to answer, with a detail that says why (a revocation
 * whose answer did not arrive within acme.revokeWait, the CA's own refusal), is an operating condition
 * and not a defect: level warn, the detail only. Every other problem is the client's: level debug.
 */
export function problemLogLevel(thrown: unknown, e: RaError): 'error' | 'warn' | 'debug' {
  if (e.type !== 'serverInternal') return 'debug';
  return thrown instanceof RaError && e.cause === undefined ? 'warn' : 'error';
}

/**
 * The edge's ACME server (RFC 8555). Only the edge renders problem documents; every error that
 * reaches the handler becomes one, internal causes are logged and never sent.
 */
export function buildAcmeServer(ctx: AcmeContext, tls?: { cert: string; key: string }, metrics?: NodeMetrics): FastifyInstance {
  const app = Fastify({
    ...(tls ? { https: { cert: tls.cert, key: tls.key } } : {}),
    bodyLimit: MAX_BODY_BYTES,
    logger: false,
    return503OnClosing: true,
  }) as unknown as FastifyInstance;

  // RFC 8555 §6.2: requests are application/jose+json; anything else is 415.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('application/jose+json', { parseAs: 'string' }, (_req, body, done) => {
    try {
      done(null, JSON.parse(body as string));
    } catch {
      done(new RaError('malformed', { detail: 'request body is not JSON' }), undefined);
    }
  });
  app.addContentTypeParser('*', (_req, _payload, done) => {
    done(new RaError('malformed', { detail: 'Content-Type must be application/jose+json', status: 415 }), undefined);
  });

  // ramesh_acme_requests_total{endpoint,method,status}: the route pattern (/acme/order/:id), never the raw URL.
  if (metrics) {
    app.addHook('onResponse', async (req, reply) => {
      metrics.acmeRequest(req.routeOptions.url ?? 'unmatched', req.method, reply.statusCode, reply.elapsedTime);
    });
  }

  app.addHook('onSend', async (req, reply, payload) => {
    // RFC 8555 §6.5: a fresh nonce on every response (GET/HEAD newNonce included, errors too).
    reply.header('Replay-Nonce', ctx.nonces.issue());
    // RFC 8555 §7.1: every response links the directory with rel="index".
    if (req.url !== ctx.paths.directory) {
      const index = `<${url(ctx, ctx.paths.directory)}>;rel="index"`;
      const prev = reply.getHeader('Link');
      reply.header('Link', prev === undefined ? index : ([] as string[]).concat(prev as string | string[], index));
    }
    return payload;
  });

  app.setErrorHandler(async (err, req, reply) => {
    let e: RaError;
    const code = (err as { code?: string }).code;
    if (err instanceof RaError) e = err;
    else if (code === 'FST_ERR_CTP_BODY_TOO_LARGE') e = new RaError('malformed', { detail: `request body exceeds ${MAX_BODY_BYTES} bytes`, status: 413 });
    else if (code === 'FST_ERR_CTP_EMPTY_JSON_BODY' || code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') e = new RaError('malformed', { detail: (err as Error).message, status: 415 });
    else e = toRaError(err);
    const level = problemLogLevel(err, e);
    if (level === 'error') ctx.log.error({ err: e.cause ?? err, url: req.url }, 'internal error');
    else ctx.log[level]({ problem: e.type, detail: e.detail, url: req.url }, level === 'warn' ? 'request answered serverInternal' : 'request refused');
    for (const [k, v] of Object.entries(e.headers)) reply.header(k, v);
    return reply.code(e.status).type('application/problem+json').send(e.toProblem());
  });

  app.setNotFoundHandler(async (req, reply) => {
    const e = new RaError('notFound', { detail: `no resource at ${req.method} ${req.url}` });
    return reply.code(e.status).type('application/problem+json').send(e.toProblem());
  });

  registerDirectory(app, ctx);
  registerNonce(app, ctx);
  registerAccount(app, ctx);
  registerOrder(app, ctx);
  registerAuthz(app, ctx);
  registerChallenge(app, ctx);
  registerFinalize(app, ctx);
  registerCertificate(app, ctx);
  registerRevoke(app, ctx);
  registerKeyChange(app, ctx);
  registerRenewalInfo(app, ctx);
  return app;
}

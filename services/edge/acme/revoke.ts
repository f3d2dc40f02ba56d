import type { FastifyInstance } from 'fastify';
import { RaError } from '../../../shared/errors/index.js';
import type { AcmeContext } from './context.js';
import { verifyAcmeRequest } from './jws.js';

export function registerRevoke(app: FastifyInstance, ctx: AcmeContext): void {
  // RFC 8555 §7.6: revokeCert, signed by the account key (kid) or the certificate key (jwk).
  // Revocation travels up the mesh to the CA service; until that path exists the edge answers with
  // a problem document rather than pretending the certificate was revoked.
  app.post(ctx.paths.revokeCert, async (req) => {
    await verifyAcmeRequest(ctx, req, { key: 'either' });
    throw new RaError('unauthorized', { detail: 'revocation through the mesh is not available on this edge yet' });
  });
}

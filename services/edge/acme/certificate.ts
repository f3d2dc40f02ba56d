import type { FastifyInstance } from 'fastify';
import { RaError } from '../../../shared/errors/index.js';
import type { AcmeContext } from './context.js';
import { requireOwner, requirePostAsGet, verifyAcmeRequest } from './jws.js';

export function registerCertificate(app: FastifyInstance, ctx: AcmeContext): void {
  // RFC 8555 §7.4.2: certificate download, POST-as-GET, as application/pem-certificate-chain.
  app.post(`${ctx.paths.certificate}:id`, async (req, reply) => {
    const { id } = req.params as { id: string };
    const r = await verifyAcmeRequest(ctx, req, { key: 'kid' });
    requirePostAsGet(r);
    const cert = await ctx.store.certificates.get(id);
    if (!cert) throw new RaError('notFound', { detail: 'no such certificate' });
    requireOwner(r, cert.accountId);
    // RFC 8555 §7.4.2: no Link rel="up" here: that is for formats holding a single certificate, and the
    // PEM chain holds the issuer already (Caddy's client follows rel="up" and would append it twice).
    return reply.code(200).type('application/pem-certificate-chain').send(cert.chainPem);
  });
}

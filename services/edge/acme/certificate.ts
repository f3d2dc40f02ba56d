import type { FastifyInstance } from 'fastify';
import { RaError } from '../../../shared/errors/index.js';
import { pemToDer } from '../../../shared/pki/index.js';
import type { AcmeContext } from './context.js';
import { certificateUrl } from './context.js';
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
    // Link rel="up": the issuer of the leaf (the next certificate of the chain), as a DER download.
    if (pemToDer(cert.chainPem, 'CERTIFICATE').length > 1) reply.header('Link', `<${certificateUrl(ctx, id)}/issuer>;rel="up"`);
    return reply.code(200).type('application/pem-certificate-chain').send(cert.chainPem);
  });

  // The issuer certificate of a certificate (rel="up" above): public, as application/pkix-cert (RFC 2585 §4.1).
  app.get(`${ctx.paths.certificate}:id/issuer`, async (req, reply) => {
    const { id } = req.params as { id: string };
    const cert = await ctx.store.certificates.get(id);
    const issuer = cert ? pemToDer(cert.chainPem, 'CERTIFICATE')[1] : undefined;
    if (!issuer) throw new RaError('notFound', { detail: 'no such issuer certificate' });
    return reply.code(200).type('application/pkix-cert').send(Buffer.from(issuer));
  });
}

import type { FastifyInstance } from 'fastify';
import { parseDuration } from '../../../shared/config/index.js';
import { RaError } from '../../../shared/errors/index.js';
import { certificateFacts, csrNames, leafDer, parseCsr } from '../../../shared/pki/index.js';
import type { AcmeContext } from './context.js';
import { orderUrl } from './context.js';
import { identifierKey } from './identifiers.js';
import { enforceCsrAtEdge } from '../../../shared/policy/index.js';
import { requireOwner, verifyAcmeRequest } from './jws.js';
import { refreshOrder } from './order.js';
import { orderView } from './views.js';

export function registerFinalize(app: FastifyInstance, ctx: AcmeContext): void {
  // RFC 8555 §7.4: finalize with a CSR; the order goes to "processing" while the envelope travels the mesh.
  app.post(`${ctx.paths.order}:id/finalize`, async (req, reply) => {
    const { id } = req.params as { id: string };
    const r = await verifyAcmeRequest<{ csr?: unknown }>(ctx, req, { key: 'kid' });
    const order = await ctx.locks.run(`order:${id}`, async () => {
      const stored = await ctx.store.orders.get(id);
      if (!stored) throw new RaError('notFound', { detail: 'no such order' });
      requireOwner(r, stored.accountId);
      const o = await refreshOrder(ctx, stored);
      // RFC 8555 §7.4: finalizing an order that is not "ready" is orderNotReady.
      if (o.status !== 'ready') throw new RaError('orderNotReady', { detail: `the order is ${o.status}, not ready` });
      if (typeof r.payload?.csr !== 'string' || !/^[A-Za-z0-9_-]+$/.test(r.payload.csr)) {
        throw new RaError('malformed', { detail: 'finalize needs "csr": the base64url DER of a PKCS#10 request' });
      }
      const csr = await parseCsr(Buffer.from(r.payload.csr as string, 'base64url'), { otherNames: true });
      // RFC 8555 §7.4: the CSR must name exactly the identifiers of the order.
      const want = new Set(o.identifiers.map(identifierKey));
      const got = new Set(csrNames(csr).map(identifierKey));
      const extra = [...got].filter((k) => !want.has(k));
      const missing = [...want].filter((k) => !got.has(k));
      if (extra.length > 0 || missing.length > 0) {
        throw new RaError('badCSR', {
          detail:
            'the CSR must name exactly the identifiers of the order' +
            (extra.length ? `; not in the order: ${extra.map((k) => k.slice(k.indexOf(':') + 1)).join(', ')}` : '') +
            (missing.length ? `; missing from the CSR: ${missing.map((k) => k.slice(k.indexOf(':') + 1)).join(', ')}` : ''),
        });
      }
      // Every layer this edge can see judges the CSR (key, signature algorithm, extensions, maxSans, every
      // SAN and the subject CN), account layer first; each upstream hop judges it again by its own layer.
      enforceCsrAtEdge({ account: await ctx.eab.policyLayer(r.account!.eabKeyId), path: ctx.layers }, csr);
      // RFC 8555 §7.4: only names the order validated; email and URI names are no ACME identifiers here.
      const other = [...csr.emailAddresses, ...csr.uris];
      if (other.length > 0) {
        throw new RaError('badCSR', { detail: `the CSR asks for names that are not identifiers of the order: ${other.join(', ')}` });
      }
      if (o.replaces?.renewal) {
        // Renewal with the old key: the CSR, signed with it, proves possession (renewal.ts).
        const old = await ctx.store.certificates.get(o.replaces.certificateId);
        const oldKey = old ? certificateFacts(leafDer(old.chainPem)).spki : undefined;
        if (!oldKey || !Buffer.from(oldKey).equals(Buffer.from(csr.publicKeySpki))) {
          throw new RaError('badCSR', { detail: 'this order renews a certificate without new validation: its CSR must carry (and be signed with) the key of the certificate it replaces' });
        }
      }
      o.status = 'processing';
      o.finalizedAt = new Date().toISOString();
      await ctx.submit(o, csr.der);
      return o;
    });
    // RFC 8555 §7.4 lets the server answer finalize with the order in any state: the answer is held up
    // to acme.finalizeWait for the certificate (as Boulder's synchronous finalize does), so a client
    // usually gets "valid" here and skips polling. The order is already durably processing and its
    // envelope on its way: nothing depends on this wait.
    let now = order;
    const wait = parseDuration(ctx.acme.finalizeWait);
    if (wait > 0) {
      await ctx.awaitOrder(order.id, wait);
      now = (await ctx.store.orders.get(order.id)) ?? order;
    }
    // RFC 8555 §7.4: while processing, Retry-After says when to poll the order again.
    if (now.status === 'processing') reply.header('Retry-After', String(ctx.acme.retryAfter));
    return reply.code(200).header('Location', orderUrl(ctx, now.id)).send(orderView(ctx, now));
  });
}

import type { FastifyInstance } from 'fastify';
import { RaError, type Identifier } from '../../../shared/errors/index.js';
import { authorityKeyId, certificateFacts, leafDer, parseAriCertId, type CertificateFacts } from '../../../shared/pki/index.js';
import type { AcmeContext } from './context.js';
import { url } from './context.js';
import { identifierKey } from './identifiers.js';
import type { CertificateRecord } from './records.js';

// RFC 9773 (ACME Renewal Information): renewalInfo, and newOrder "replaces". On top of it, ra-mesh's
// renewal with the old key: when the edge's policy layer sets renewAfterExpiry, an order that replaces
// a certificate of the same account, for names that certificate holds, gets authorizations that are
// valid at once (RFC 8555 §7.1.3 lets a server create authorizations in the valid state) instead of
// challenges, while now <= notAfter + renewAfterExpiry (the shortest window of the layers that set one);
// its CSR must then carry the old certificate's key (the CSR signature proves possession), and every
// hop upstream checks its own window again. Outside the window the order needs challenges as usual.

export interface ReplacedCertificate {
  cert: CertificateRecord;
  facts: CertificateFacts;
}

/** RFC 9773 §5: the certificate an order's `replaces` names; malformed when unknown here or not the account's. */
export async function findReplaced(ctx: AcmeContext, certId: unknown, accountId: string): Promise<ReplacedCertificate> {
  const parsed = typeof certId === 'string' ? parseAriCertId(certId) : undefined;
  if (!parsed) throw new RaError('malformed', { detail: '"replaces" must be an ARI certificate identifier: base64url(AKI) "." base64url(serial) (RFC 9773 §4.1)' });
  const cert = await lookup(ctx, parsed.aki, parsed.serial);
  if (!cert) throw new RaError('malformed', { detail: '"replaces" names a certificate this edge did not issue' });
  // RFC 9773 §5: the replaced certificate and the new order belong to the same account.
  if (cert.accountId !== accountId) throw new RaError('malformed', { detail: '"replaces" names a certificate of another account' });
  // RFC 9773 §5: a certificate already replaced by another finalized order is alreadyReplaced.
  if (cert.replacedBy) throw new RaError('alreadyReplaced', { detail: `the certificate was already replaced by order ${cert.replacedBy}` });
  return { cert, facts: certificateFacts(leafDer(cert.chainPem)) };
}

/**
 * Whether the order's names may be authorized by the replaced certificate instead of challenges:
 * the edge offers renewal (its layer sets renewAfterExpiry), the certificate is not revoked, it holds
 * every name of the order, and every layer's window is still open.
 */
export function renewalAllowed(ctx: AcmeContext, old: ReplacedCertificate, identifiers: Identifier[], now = Date.now()): boolean {
  const own = ctx.layers[0]!;
  if (own.policy.renewAfterExpiry === undefined || old.cert.revocation) return false;
  const held = new Set(old.facts.identifiers.map(identifierKey));
  if (!identifiers.every((i) => held.has(identifierKey(i)))) return false;
  try {
    for (const layer of ctx.layers) layer.enforceRenewalWindow(old.facts.notAfter, now);
  } catch {
    return false;
  }
  return true;
}

async function lookup(ctx: AcmeContext, aki: string, serial: string): Promise<CertificateRecord | undefined> {
  const id = await ctx.store.certBySerial.get(serial);
  const cert = id ? await ctx.store.certificates.get(id) : undefined;
  // The serial is only unique per issuer: the AKI must match too.
  if (!cert || authorityKeyId(leafDer(cert.chainPem)) !== aki.toLowerCase()) return undefined;
  return cert;
}

/** Seconds clients wait before asking renewalInfo again (RFC 9773 §4.3: Retry-After). */
function retryAfterSeconds(lifetimeMs: number): number {
  return Math.max(60, Math.min(6 * 3600, Math.floor(lifetimeMs / 10 / 1000)));
}

export function registerRenewalInfo(app: FastifyInstance, ctx: AcmeContext): void {
  // RFC 9773 §4.2: GET renewalInfo/<certID>, unauthenticated, answers the suggested renewal window.
  app.get(`${ctx.paths.renewalInfo}:certId`, async (req, reply) => {
    const { certId } = req.params as { certId: string };
    const parsed = parseAriCertId(certId);
    if (!parsed) throw new RaError('malformed', { detail: 'not an ARI certificate identifier (RFC 9773 §4.1)' });
    const cert = await lookup(ctx, parsed.aki, parsed.serial);
    if (!cert) throw new RaError('notFound', { detail: 'no certificate with this identifier was issued through this edge' });
    const { notBefore, notAfter } = certificateFacts(leafDer(cert.chainPem));
    const lifetime = notAfter.getTime() - notBefore.getTime();
    const now = Date.now();
    // The last third of the lifetime; a revoked or expired certificate gets a window in the past
    // (RFC 9773 §4.2: renew at once).
    const window =
      cert.revocation || notAfter.getTime() <= now
        ? { start: new Date(now - 2 * 3_600_000), end: new Date(now - 3_600_000) }
        : { start: new Date(notAfter.getTime() - lifetime / 3), end: new Date(notAfter.getTime() - lifetime / 6) };
    reply.header('Retry-After', String(retryAfterSeconds(lifetime)));
    return reply.code(200).send({ suggestedWindow: { start: window.start.toISOString(), end: window.end.toISOString() } });
  });
}

export const renewalInfoUrl = (ctx: AcmeContext) => url(ctx, ctx.paths.renewalInfo);

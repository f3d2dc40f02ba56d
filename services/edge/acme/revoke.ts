import { createPublicKey } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { calculateJwkThumbprint, type JWK } from 'jose';
import { RaError } from '../../../shared/errors/index.js';
import { x509 } from '../../../shared/pki/index.js';
import type { CrlReason, RevokeAuthorization } from '../../../shared/envelope/index.js';
import type { AcmeContext } from './context.js';
import { verifyAcmeRequest } from './jws.js';
import type { AccountRecord, CertificateRecord } from './records.js';

/**
 * RFC 5280 §5.3.1 reason codes this edge accepts in revokeCert (RFC 8555 §7.6: the server MAY
 * disallow a subset): unspecified (0), keyCompromise (1), affiliationChanged (3), superseded (4),
 * cessationOfOperation (5), privilegeWithdrawn (9). Refused: 7 (unused in RFC 5280), certificateHold
 * (6: revocation here is final, there is no un-hold), removeFromCRL (8: only meaningful in delta
 * CRLs), cACompromise (2) and aACompromise (10) (statements about authorities, not a subscriber's
 * certificate), and anything outside 0..10.
 */
export const ALLOWED_REVOCATION_REASONS: ReadonlySet<number> = new Set<CrlReason>([0, 1, 3, 4, 5, 9]);

async function spkiThumbprint(cert: x509.X509Certificate): Promise<string | undefined> {
  try {
    const jwk = createPublicKey({ key: Buffer.from(cert.publicKey.rawData), format: 'der', type: 'spki' }).export({ format: 'jwk' });
    return await calculateJwkThumbprint(jwk as JWK, 'sha256');
  } catch {
    return undefined;
  }
}

/** RFC 8555 §7.6: whether `account` holds valid, unexpired authorizations for every identifier of the certificate. */
async function holdsAuthorizations(ctx: AcmeContext, account: AccountRecord, cert: CertificateRecord): Promise<boolean> {
  const idents = cert.identifiers ?? [];
  if (idents.length === 0) return false;
  const now = Date.now();
  const held = new Set<string>();
  for (const orderId of await ctx.store.accountOrders.values({ prefix: `${account.id}/` })) {
    const order = await ctx.store.orders.get(orderId);
    for (const authzId of order?.authzIds ?? []) {
      const a = await ctx.store.authzs.get(authzId);
      if (!a || a.accountId !== account.id || a.status !== 'valid' || Date.parse(a.expires) <= now) continue;
      // RFC 8555 §7.1.4: a wildcard order's authorization names the base domain, flagged wildcard.
      held.add(`${a.identifier.type}:${a.wildcard ? '*.' : ''}${a.identifier.value.toLowerCase()}`);
    }
  }
  return idents.every((i) => held.has(`${i.type}:${i.value.toLowerCase()}`));
}

export function registerRevoke(app: FastifyInstance, ctx: AcmeContext): void {
  // RFC 8555 §7.6: revokeCert, signed by an account key (kid) or by the certificate's own key (jwk).
  app.post(ctx.paths.revokeCert, async (req, reply) => {
    const r = await verifyAcmeRequest<{ certificate?: unknown; reason?: unknown }>(ctx, req, { key: 'either' });
    const body = r.payload;
    if (!body || typeof body !== 'object' || typeof body.certificate !== 'string' || !/^[A-Za-z0-9_-]+$/.test(body.certificate)) {
      throw new RaError('malformed', { detail: 'revokeCert needs "certificate": the base64url DER of the certificate' });
    }
    // RFC 8555 §7.6: reason is optional (0 when absent); a code the server does not accept is badRevocationReason.
    const reason = body.reason ?? 0;
    if (typeof reason !== 'number' || !ALLOWED_REVOCATION_REASONS.has(reason)) {
      throw new RaError('badRevocationReason', {
        detail: `revocation reason ${JSON.stringify(reason)} is not accepted; allowed: ${[...ALLOWED_REVOCATION_REASONS].join(', ')} (RFC 5280 §5.3.1)`,
      });
    }
    const der = new Uint8Array(Buffer.from(body.certificate, 'base64url'));
    let parsed: x509.X509Certificate;
    try {
      parsed = new x509.X509Certificate(der);
    } catch {
      throw new RaError('malformed', { detail: '"certificate" is not a DER X.509 certificate' });
    }
    const cert = await ctx.findCertificate(der);
    // As Pebble: a certificate this server did not issue is malformed ("unable to find").
    if (!cert) throw new RaError('malformed', { detail: 'unable to find the specified certificate: it was not issued through this edge' });

    // RFC 8555 §7.6: authorized are the account that ordered the certificate, an account holding
    // authorizations for all of its identifiers, and the holder of the certificate's private key.
    let method: RevokeAuthorization;
    if (r.account) {
      if (r.account.id === cert.accountId) method = 'issuer-account';
      else if (await holdsAuthorizations(ctx, r.account, cert)) method = 'authorizations';
      else throw new RaError('unauthorized', { detail: 'the account neither ordered this certificate nor holds authorizations for all of its identifiers' });
    } else {
      const certKey = await spkiThumbprint(parsed);
      if (certKey === undefined || certKey !== r.thumbprint) {
        throw new RaError('unauthorized', { detail: 'the JWK of the request is not the public key of the certificate to revoke' });
      }
      method = 'certificate-key';
    }
    await ctx.revoke({
      certificate: cert,
      reason: reason as CrlReason,
      requester: { method, account: r.account?.id ?? null, jwkThumbprint: r.thumbprint },
    });
    // RFC 8555 §7.6: 200 OK once the certificate is revoked.
    return reply.code(200).send();
  });

  // The latest CRL the gateway published to this edge (DER, RFC 2585 §4.2 media type).
  app.get('/crl', async (_req, reply) => {
    const crl = await ctx.store.crl.get('current');
    if (!crl) throw new RaError('notFound', { detail: 'no CRL has reached this edge yet' });
    return reply.code(200).type('application/pkix-crl').header('cache-control', 'no-cache').send(Buffer.from(crl.der, 'base64url'));
  });
}

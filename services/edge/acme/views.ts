import type { AcmeContext } from './context.js';
import { accountUrl, authzUrl, certificateUrl, challengeUrl, finalizeUrl } from './context.js';
import type { AccountRecord, AuthzRecord, ChallengeRecord, OrderRecord } from './records.js';

// JSON views of ACME resources exactly as RFC 8555 §7.1.2–§7.1.5 define them.

export function accountView(ctx: AcmeContext, a: AccountRecord) {
  return {
    status: a.status,
    contact: a.contact,
    termsOfServiceAgreed: a.termsOfServiceAgreed,
    orders: accountUrl(ctx, a.id) + '/orders',
  };
}

export function orderView(ctx: AcmeContext, o: OrderRecord) {
  return {
    status: o.status,
    expires: o.expires,
    identifiers: o.identifiers,
    ...(o.notBefore ? { notBefore: o.notBefore } : {}),
    ...(o.notAfter ? { notAfter: o.notAfter } : {}),
    authorizations: o.authzIds.map((id) => authzUrl(ctx, id)),
    finalize: finalizeUrl(ctx, o.id),
    ...(o.certificateId ? { certificate: certificateUrl(ctx, o.certificateId) } : {}),
    ...(o.error ? { error: o.error } : {}),
    // RFC 9773 §5: the order names the certificate it replaces.
    ...(o.replaces ? { replaces: o.replaces.certId } : {}),
  };
}

export function challengeView(ctx: AcmeContext, c: ChallengeRecord) {
  return {
    type: c.type,
    url: challengeUrl(ctx, c.id),
    status: c.status,
    token: c.token,
    ...(c.validated ? { validated: c.validated } : {}),
    ...(c.error ? { error: c.error } : {}),
  };
}

export function authzView(ctx: AcmeContext, a: AuthzRecord, challenges: ChallengeRecord[]) {
  return {
    identifier: a.identifier,
    status: a.status,
    expires: a.expires,
    challenges: challenges.map((c) => challengeView(ctx, c)),
    // RFC 8555 §7.1.4: wildcard is true for an authz created for a wildcard order identifier.
    ...(a.wildcard ? { wildcard: true } : {}),
  };
}

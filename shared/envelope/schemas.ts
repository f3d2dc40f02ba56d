import { z } from 'zod';
import { DURATION_RE } from '../config/duration.js';
import type { CrlMessage } from './crl.js';
import type { BundlePayload, EdgePayload, HopRecord, RelayPayload, RevokePayload } from './envelope.js';
import type { ResultPayload } from './result.js';

// Shapes of everything signed on the mesh. Signed payloads are strict: an unknown member is a
// different format (bump `v`), never silently dropped. Problem documents stay open (RFC 7807 allows
// extension members).

/**
 * RFC 5280 §5.3.1 CRLReason codes a revocation may carry (7 is unused in RFC 5280 and never valid).
 * Which of them an edge accepts from ACME clients is the edge's decision (see services/edge/acme/revoke.ts).
 */
export const CRL_REASONS = [0, 1, 2, 3, 4, 5, 6, 8, 9, 10] as const;

const nodeId = z.string().regex(/^[a-z0-9][a-z0-9-]{0,62}$/, 'a node id');
const base64url = z.string().regex(/^[A-Za-z0-9_-]+$/, 'base64url');
const seconds = z.int().min(0);
const millis = z.int().min(0);
const duration = z.string().regex(DURATION_RE, 'a duration like 90s, 15m, 24h or 7d');

export const jwsHeaderSchema = z.strictObject({
  alg: z.enum(['EdDSA', 'ES256']),
  kid: nodeId,
  typ: z.string(),
});

export const validationRecordSchema = z.strictObject({
  // 'scep-challenge' and 'scep-ra' are accepted only from edges whose topology node has a scep block
  // (checked by every relay and the gateway: validation-methods.ts).
  method: z.enum(['http-01', 'dns-01', 'tls-alpn-01', 'renewal', 'scep-challenge', 'scep-ra']),
  at: z.string().min(1).max(64),
  from: z.string().min(1).max(300).optional(),
});

export const envelopeIdentifierSchema = z.strictObject({
  type: z.enum(['dns', 'ip']),
  value: z.string().min(1).max(253),
  validation: validationRecordSchema.optional(),
});

export const edgePayloadSchema = z
  .strictObject({
    v: z.literal(1),
    kind: z.literal('issue'),
    id: z.guid(),
    iat: seconds,
    exp: seconds,
    nonce: base64url.min(16).max(128),
    origin: z.strictObject({ node: nodeId, segment: z.string().min(1).optional(), dc: z.string().min(1) }),
    csr: base64url,
    identifiers: z.array(envelopeIdentifierSchema).min(1).max(1000),
    account: z.strictObject({
      id: z.string().min(1),
      eab: z.string().min(1).nullable(),
      jwkThumbprint: z.string().min(1),
      // The account layer's lifetime rules (policy bound to the EAB key), for the gateway's lifetime.
      lifetime: z.strictObject({ default: duration.optional(), min: duration.optional(), max: duration.optional() }).optional(),
    }),
    requested: z.strictObject({ notBefore: z.string().min(1).nullable(), notAfter: z.string().min(1).nullable() }),
    renewalOf: base64url.nullable(),
  })
  .refine((p) => p.exp > p.iat, { message: 'exp must be after iat', path: ['exp'] });

export const revokePayloadSchema = z
  .strictObject({
    v: z.literal(1),
    kind: z.literal('revoke'),
    id: z.guid(),
    iat: seconds,
    exp: seconds,
    nonce: base64url.min(16).max(128),
    origin: z.strictObject({ node: nodeId, segment: z.string().min(1).optional(), dc: z.string().min(1) }),
    // RFC 5280 §4.1.2.2: at most 20 octets; lower-case hex, no leading zero byte.
    serial: z.string().regex(/^(?!00)[0-9a-f]{2,40}$/, 'a lower-case hex serial of at most 20 bytes'),
    reason: z.literal(CRL_REASONS),
    requester: z.strictObject({
      method: z.enum(['issuer-account', 'authorizations', 'certificate-key']),
      account: z.string().min(1).nullable(),
      jwkThumbprint: z.string().min(1),
    }),
  })
  .refine((p) => p.exp > p.iat, { message: 'exp must be after iat', path: ['exp'] })
  .refine((p) => (p.requester.method === 'certificate-key') === (p.requester.account === null), {
    message: 'requester.account is null exactly when the certificate key signed the request',
    path: ['requester', 'account'],
  });

export const hopRecordSchema = z.strictObject({
  node: nodeId,
  recvAt: millis,
  sentAt: millis,
  policy: z.string().min(1).max(512),
  decision: z.literal('allow'),
});

export const relayPayloadSchema = z
  .strictObject({
    v: z.literal(1),
    inner: z.string().min(1),
    hop: hopRecordSchema,
    iat: seconds,
    exp: seconds,
  })
  .refine((p) => p.exp > p.iat, { message: 'exp must be after iat', path: ['exp'] });

/**
 * A relay's bundle layer: several envelopes it received (each as it arrived: an edge JWS, a relay layer
 * or a child's bundle) under one countersignature and one hop record. `exclude`: ids of requests inside
 * it that this relay refused or rejected (already answered to their edge): no node above handles them.
 */
export const bundlePayloadSchema = z
  .strictObject({
    v: z.literal(1),
    bundle: z.array(z.string().min(1)).min(1).max(4096),
    exclude: z.array(z.guid()).max(4096).optional(),
    hop: hopRecordSchema,
    iat: seconds,
    exp: seconds,
  })
  .refine((p) => p.exp > p.iat, { message: 'exp must be after iat', path: ['exp'] });

const problemIdentifierSchema = z.looseObject({ type: z.string(), value: z.string() });

export const problemDocumentSchema = z.looseObject({
  type: z.string().min(1),
  detail: z.string(),
  status: z.int(),
  subproblems: z.array(z.looseObject({ type: z.string().min(1), detail: z.string(), identifier: problemIdentifierSchema.optional() })).optional(),
});

export const resultPayloadSchema = z
  .strictObject({
    v: z.literal(1),
    id: z.guid(),
    edge: nodeId,
    // Absent for the answer to an issue envelope (format unchanged), 'revoke' for a revocation's.
    kind: z.literal('revoke').optional(),
    status: z.enum(['valid', 'invalid']),
    certificate: z.string().min(1).optional(),
    revocation: z
      .strictObject({
        serial: z.string().regex(/^[0-9a-f]{2,40}$/, 'a lower-case hex serial'),
        reason: z.literal(CRL_REASONS),
        revokedAt: z.string().min(1).max(64),
      })
      .optional(),
    problem: problemDocumentSchema.optional(),
    hops: z.array(hopRecordSchema),
    gateway: z.strictObject({ node: nodeId, recvAt: millis, sentAt: millis }),
    iat: seconds,
  })
  .superRefine((p, ctx) => {
    const revoke = p.kind === 'revoke';
    if (p.status === 'valid' && !revoke && (p.certificate === undefined || p.problem !== undefined || p.revocation !== undefined)) {
      ctx.addIssue({ code: 'custom', path: ['certificate'], message: 'a valid result carries a certificate and no problem' });
    }
    if (p.status === 'valid' && revoke && (p.revocation === undefined || p.problem !== undefined || p.certificate !== undefined)) {
      ctx.addIssue({ code: 'custom', path: ['revocation'], message: 'a valid revoke result carries a revocation and no certificate or problem' });
    }
    if (p.status === 'invalid' && (p.problem === undefined || p.certificate !== undefined || p.revocation !== undefined)) {
      ctx.addIssue({ code: 'custom', path: ['problem'], message: 'an invalid result carries a problem and no certificate' });
    }
  });

export const crlMessageSchema = z
  .strictObject({
    v: z.literal(1),
    kind: z.literal('crl'),
    /** The gateway that signed the message (and whose CA signed the CRL). */
    gateway: nodeId,
    /** The CRL's cRLNumber (RFC 5280 §5.2.3): edges keep the highest. */
    number: z.int().min(1),
    thisUpdate: seconds,
    nextUpdate: seconds,
    /** The CRL, base64url DER. */
    crl: base64url,
    iat: seconds,
  })
  .refine((p) => p.nextUpdate > p.thisUpdate, { message: 'nextUpdate must be after thisUpdate', path: ['nextUpdate'] });

/** One line naming the first few issues of a failed parse (for RaError details and logs). */
export function describeIssues(error: z.ZodError, max = 3): string {
  const parts = error.issues.slice(0, max).map((i) => `${i.path.length ? i.path.map(String).join('.') : '(root)'}: ${i.message}`);
  if (error.issues.length > max) parts.push(`and ${error.issues.length - max} more`);
  return parts.join('; ');
}

// The schemas and the public interfaces must describe the same data.
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const schemasMatchTypes: [
  Same<z.output<typeof edgePayloadSchema>, EdgePayload>,
  Same<z.output<typeof hopRecordSchema>, HopRecord>,
  Same<z.output<typeof relayPayloadSchema>, RelayPayload>,
  [z.output<typeof resultPayloadSchema>] extends [ResultPayload] ? true : false,
  Same<z.output<typeof revokePayloadSchema>, RevokePayload>,
  Same<z.output<typeof crlMessageSchema>, CrlMessage>,
  Same<z.output<typeof bundlePayloadSchema>, BundlePayload>,
] = [true, true, true, true, true, true, true];
void schemasMatchTypes;

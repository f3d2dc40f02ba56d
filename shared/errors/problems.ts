// The one table of RFC 8555 problem types (§6.7), with HTTP status and default detail.
// After pebble acme/problems.go and step-ca acme/errors.go. Only the edge renders these as
// problem documents (RFC 7807); every other node carries them as data.

export const ACME_ERROR_NS = 'urn:ietf:params:acme:error:';

export const PROBLEMS = {
  accountDoesNotExist: { status: 400, detail: 'The request specified an account that does not exist' },
  alreadyRevoked: { status: 400, detail: 'The certificate has already been revoked' },
  // RFC 9773 §7.4: newOrder "replaces" a certificate another order already replaced.
  alreadyReplaced: { status: 409, detail: 'The request specified a predecessor certificate which has already been marked as replaced' },
  badCSR: { status: 400, detail: 'The CSR is unacceptable' },
  badNonce: { status: 400, detail: 'The client sent an unacceptable anti-replay nonce' },
  badPublicKey: { status: 400, detail: 'The JWS was signed by a public key the server does not support' },
  badRevocationReason: { status: 400, detail: 'The revocation reason provided is not allowed by the server' },
  badSignatureAlgorithm: { status: 400, detail: 'The JWS was signed with an algorithm the server does not support' },
  caa: { status: 403, detail: 'Certification Authority Authorization (CAA) records forbid the CA from issuing' },
  compound: { status: 400, detail: 'Specific error conditions are indicated in the "subproblems" array' },
  connection: { status: 400, detail: 'The server could not connect to validation target' },
  dns: { status: 400, detail: 'There was a problem with a DNS query during identifier validation' },
  externalAccountRequired: { status: 401, detail: 'The request must include a value for the "externalAccountBinding" field' },
  incorrectResponse: { status: 403, detail: 'Response received did not match the challenge requirements' },
  invalidContact: { status: 400, detail: 'A contact URL for an account was invalid' },
  malformed: { status: 400, detail: 'The request message was malformed' },
  orderNotReady: { status: 403, detail: 'The request attempted to finalize an order that is not ready to be finalized' },
  rateLimited: { status: 429, detail: 'The request exceeds a rate limit' },
  rejectedIdentifier: { status: 400, detail: 'The server will not issue certificates for the identifier' },
  serverInternal: { status: 500, detail: 'The server experienced an internal error' },
  tls: { status: 400, detail: 'The server received a TLS error during validation' },
  unauthorized: { status: 403, detail: 'The client lacks sufficient authorization' },
  unsupportedContact: { status: 400, detail: 'A contact URL for an account used an unsupported protocol scheme' },
  unsupportedIdentifier: { status: 400, detail: 'An identifier is of an unsupported type' },
  userActionRequired: { status: 403, detail: 'Visit the "instance" URL and take actions specified there' },
  // Not a problem type of RFC 8555, but the conventional 404/405 answers of an ACME server.
  notFound: { status: 404, detail: 'The requested resource does not exist' },
  methodNotAllowed: { status: 405, detail: 'The method is not allowed for this resource' },
} as const satisfies Record<string, { status: number; detail: string }>;

export type ProblemType = keyof typeof PROBLEMS;

export interface Identifier {
  type: string;
  value: string;
}

/** RFC 8555 §6.7.1 subproblem: a problem about one identifier. */
export interface SubProblem {
  type: string;
  detail: string;
  identifier?: Identifier;
}

/** RFC 7807 / RFC 8555 §6.7 problem document as it travels the mesh and reaches the client. */
export interface ProblemDocument {
  type: string;
  detail: string;
  status: number;
  subproblems?: SubProblem[];
  /** RFC 8555 §6.2: the accepted "alg" values, on badSignatureAlgorithm. */
  algorithms?: string[];
}

export function problemUrn(type: ProblemType): string {
  return ACME_ERROR_NS + type;
}

export function isProblemType(v: string): v is ProblemType {
  return Object.prototype.hasOwnProperty.call(PROBLEMS, v);
}

import type { Identifier } from '../../../shared/errors/index.js';

export interface ValidationInput {
  identifier: Identifier;
  token: string;
  keyAuthorization: string;
}

export interface ValidationOutcome {
  /** The address the validator reached, recorded in the envelope as provenance. */
  from?: string;
}

/** Validates one challenge type; throws RaError (connection, dns, incorrectResponse, tls, ...) on failure. */
export type Validator = (input: ValidationInput) => Promise<ValidationOutcome>;

export type Validators = Partial<Record<'http-01' | 'dns-01' | 'tls-alpn-01', Validator>>;

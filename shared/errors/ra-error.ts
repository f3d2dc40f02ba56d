import { PROBLEMS, problemUrn, type Identifier, type ProblemDocument, type ProblemType, type SubProblem, ACME_ERROR_NS, isProblemType } from './problems.js';

export interface RaErrorOptions {
  detail?: string;
  subproblems?: Array<{ type: ProblemType; detail: string; identifier?: Identifier }>;
  /** Internal cause: logged, never sent to a client. */
  cause?: unknown;
  /** Extra response headers the edge should send with the problem (e.g. Retry-After). */
  headers?: Record<string, string>;
  /** Machine-readable reason for logs and metrics (e.g. envelope rejection rule "expired"). */
  reason?: string;
  /** HTTP status when the RFC asks for another than the table's (e.g. 409 on key change, 415, 413). */
  status?: number;
  /** RFC 8555 §6.2: a badSignatureAlgorithm problem lists the algorithms the server accepts. */
  algorithms?: string[];
}

/**
 * The one internal error type of ra-mesh. Every refusal, on any node, is an RaError carrying an
 * RFC 8555 problem type; only the edge renders it as a problem document (`toProblem`).
 */
export class RaError extends Error {
  readonly type: ProblemType;
  readonly status: number;
  readonly detail: string;
  readonly subproblems: SubProblem[];
  readonly headers: Record<string, string>;
  readonly reason: string | undefined;
  readonly algorithms: string[] | undefined;

  constructor(type: ProblemType, opts: RaErrorOptions = {}) {
    const detail = opts.detail ?? PROBLEMS[type].detail;
    super(`${type}: ${detail}`, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'RaError';
    this.type = type;
    this.status = opts.status ?? PROBLEMS[type].status;
    this.detail = detail;
    this.subproblems = (opts.subproblems ?? []).map((s) => ({
      type: problemUrn(s.type),
      detail: s.detail,
      ...(s.identifier ? { identifier: s.identifier } : {}),
    }));
    this.headers = opts.headers ?? {};
    this.reason = opts.reason;
    this.algorithms = opts.algorithms;
  }

  toProblem(): ProblemDocument {
    const p: ProblemDocument = { type: problemUrn(this.type), detail: this.detail, status: this.status };
    if (this.subproblems.length > 0) p.subproblems = this.subproblems;
    if (this.algorithms) p.algorithms = this.algorithms;
    return p;
  }

  /** Rebuild an RaError from a problem document received over the bus (e.g. a refusal upstream). */
  static fromProblem(p: ProblemDocument): RaError {
    const short = p.type.startsWith(ACME_ERROR_NS) ? p.type.slice(ACME_ERROR_NS.length) : p.type;
    const type: ProblemType = isProblemType(short) ? short : 'serverInternal';
    const err = new RaError(type, { detail: p.detail });
    (err as { subproblems: SubProblem[] }).subproblems = p.subproblems ?? [];
    return err;
  }
}

/** Any thrown value as an RaError; unknown errors become serverInternal with the cause kept for logs. */
export function toRaError(e: unknown): RaError {
  if (e instanceof RaError) return e;
  return new RaError('serverInternal', { cause: e });
}

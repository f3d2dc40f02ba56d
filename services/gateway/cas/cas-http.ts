// The one HTTP client of the remote CA services (step-ca, Vault, Google CAS): timeouts, bounded retries
// with backoff, and the rules that keep a retry from issuing a second certificate.
//
// A failure is one of three kinds:
// - not sent: the request never reached the CA (connection refused, name not found, TLS handshake
//   failed, 429 or 502/503/504 from a proxy or an overloaded CA). Always safe to retry.
// - ambiguous: the request may have reached the CA and nobody knows what it did (timeout, connection
//   reset after the body went out, a 500). Retried only when the call is idempotent at the CA (Google
//   CAS with requestId, revoke by serial); otherwise reported at once, never repeated.
// - answered: the CA gave a definite 4xx answer. Never retried (429 excepted); the backend maps it.
//
// After the retries, a not-sent failure is transient (serverInternal, reason `cas-unavailable`: the
// gateway leaves the envelope on its queue and JetStream delivers it again later); an ambiguous failure
// of a non-idempotent call is final (reason `cas-outcome-unknown`: the client gets a problem document
// and the request is never sent to the CA again).

import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { RaError } from '../../../shared/errors/index.js';
import type { Logger } from '../../../shared/logging/logger.js';

/** serverInternal reasons the gateway stores as the final answer instead of retrying the envelope. */
export const CAS_FINAL_REASONS: ReadonlySet<string> = new Set(['cas-outcome-unknown', 'cas-credentials', 'cas-config', 'cas-refused']);

/** Whether an error from a CA service is final for this request (answer the client) rather than transient (retry later). */
export function isFinalCasError(e: RaError): boolean {
  return e.type !== 'serverInternal' || (e.reason !== undefined && CAS_FINAL_REASONS.has(e.reason));
}

export interface CasHttpOptions {
  /** The CA service's name for details and logs, e.g. "step-ca". */
  service: string;
  timeoutMs: number;
  /** PEM bundle trusted for the server's TLS certificate (default: Node's store). */
  ca?: string | Buffer;
  /**
   * Do not verify the server's TLS certificate. Only for a bootstrap call whose answer the caller
   * verifies itself against a pinned hash (step-ca's GET /root/<fingerprint>, as `step ca bootstrap`).
   */
  tlsInsecure?: boolean;
  /** Attempts per call for retryable failures (default 3). */
  attempts?: number;
  /** First backoff delay in ms, doubled per attempt, with jitter (default 250). */
  backoffMs?: number;
  log?: Logger;
}

export interface CasHttpRequest {
  method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  url: string;
  headers?: Record<string, string>;
  /** A JSON body (content-type application/json). */
  json?: unknown;
  /** A form body (application/x-www-form-urlencoded), e.g. an OAuth token request. */
  form?: Record<string, string>;
  /** The CA does the same thing however often it gets this request: ambiguous failures may be retried. */
  idempotent: boolean;
  /** What the call does, for details and logs, e.g. "sign". */
  what: string;
}

export interface CasHttpResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
  /** The body parsed as JSON; RaError serverInternal when it is not JSON. */
  json<T = unknown>(): T;
}

type Failure = { kind: 'not-sent' | 'ambiguous'; cause: unknown; status?: number };

const NOT_SENT_CODES = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'ECONNABORTED']);

export class CasHttpClient {
  constructor(private readonly opts: CasHttpOptions) {}

  get service(): string {
    return this.opts.service;
  }

  /**
   * One call with retries. Resolves with every HTTP answer the retry rules do not consume (2xx, 4xx
   * and, for idempotent calls, a final 5xx is thrown); throws RaError for transport failures.
   */
  async request(req: CasHttpRequest): Promise<CasHttpResponse> {
    const attempts = Math.max(1, this.opts.attempts ?? 3);
    const backoff = this.opts.backoffMs ?? 250;
    let last: Failure | undefined;
    for (let i = 0; i < attempts; i++) {
      if (i > 0) await sleep(backoff * 2 ** (i - 1) * (0.75 + Math.random() * 0.5));
      let res: CasHttpResponse;
      try {
        res = await this.once(req);
      } catch (e) {
        last = classify(e);
        if (last.kind === 'ambiguous' && !req.idempotent) break;
        this.opts.log?.warn({ err: e, cas: this.opts.service, call: req.what, attempt: i + 1 }, 'CA service call failed; retrying');
        continue;
      }
      if (res.status === 502 || res.status === 503 || res.status === 504 || res.status === 429) {
        last = { kind: 'not-sent', cause: new Error(`HTTP ${res.status}`), status: res.status };
      } else if (res.status >= 500) {
        last = { kind: 'ambiguous', cause: new Error(`HTTP ${res.status}: ${res.body.toString('utf8').slice(0, 300)}`), status: res.status };
        if (!req.idempotent) break;
      } else {
        return res;
      }
      this.opts.log?.warn({ cas: this.opts.service, call: req.what, status: res.status, attempt: i + 1 }, 'CA service answered with a transient error; retrying');
    }
    const f = last!;
    const status = f.status ? ` (HTTP ${f.status})` : '';
    if (f.kind === 'ambiguous' && !req.idempotent) {
      throw new RaError('serverInternal', {
        reason: 'cas-outcome-unknown',
        detail:
          `the CA service (${this.opts.service}) did not complete the ${req.what} call${status} and its outcome is unknown; ` +
          'it is not repeated, so that no second certificate is issued: start a new order',
        cause: f.cause,
      });
    }
    throw new RaError('serverInternal', {
      reason: 'cas-unavailable',
      detail: `the CA service (${this.opts.service}) is unavailable${status}; the request stays queued and is retried`,
      cause: f.cause,
    });
  }

  private once(req: CasHttpRequest): Promise<CasHttpResponse> {
    const url = new URL(req.url);
    const headers: Record<string, string> = { accept: 'application/json', ...req.headers };
    let body: Buffer | undefined;
    if (req.json !== undefined) {
      body = Buffer.from(JSON.stringify(req.json), 'utf8');
      headers['content-type'] = 'application/json';
    } else if (req.form) {
      body = Buffer.from(new URLSearchParams(req.form).toString(), 'utf8');
      headers['content-type'] = 'application/x-www-form-urlencoded';
    }
    if (body) headers['content-length'] = String(body.length);
    const https = url.protocol === 'https:';
    return new Promise((resolve, reject) => {
      let sent = false;
      const r = (https ? httpsRequest : httpRequest)(
        url,
        {
          method: req.method,
          headers,
          timeout: this.opts.timeoutMs,
          ...(https && this.opts.ca ? { ca: this.opts.ca } : {}),
          ...(https && this.opts.tlsInsecure ? { rejectUnauthorized: false } : {}),
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (d: Buffer) => chunks.push(d));
          res.on('error', (e) => reject(Object.assign(e, { sent: true })));
          res.on('end', () => {
            const buf = Buffer.concat(chunks);
            const service = this.opts.service;
            resolve({
              status: res.statusCode ?? 0,
              headers: res.headers,
              body: buf,
              json<T>(): T {
                try {
                  return JSON.parse(buf.toString('utf8')) as T;
                } catch (e) {
                  throw new RaError('serverInternal', { reason: 'cas-outcome-unknown', detail: `the CA service (${service}) sent an answer that is not JSON`, cause: e });
                }
              },
            });
          });
        },
      );
      const deadline = setTimeout(() => r.destroy(Object.assign(new Error(`timeout after ${this.opts.timeoutMs} ms`), { code: 'ETIMEDOUT', sent })), this.opts.timeoutMs);
      r.on('close', () => clearTimeout(deadline));
      r.on('timeout', () => r.destroy(Object.assign(new Error(`socket idle for ${this.opts.timeoutMs} ms`), { code: 'ETIMEDOUT', sent })));
      r.on('error', (e) => reject(Object.assign(e, { sent: (e as { sent?: boolean }).sent ?? sent })));
      // From the moment the connection stands the request may reach the CA: a failure after it is ambiguous.
      r.on('socket', (sock) => {
        // A kept-alive socket is connected already; a new one once TCP (and TLS) stand.
        if (!(sock as import('node:net').Socket).connecting) sent = true;
        else sock.once(https ? 'secureConnect' : 'connect', () => (sent = true));
      });
      r.end(body);
    });
  }
}

function classify(e: unknown): Failure {
  const err = e as { code?: string; sent?: boolean };
  if (err.sent === false || (err.code !== undefined && NOT_SENT_CODES.has(err.code))) return { kind: 'not-sent', cause: e };
  return { kind: 'ambiguous', cause: e };
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * The problem a definite 4xx answer of a CA service becomes. `message` is the CA's own explanation
 * (a policy refusal the client should read); credentials and configuration failures say only what to check.
 */
export function casAnswerError(service: string, what: string, status: number, message: string | undefined): RaError {
  const said = message ? `: ${message.slice(0, 300)}` : '';
  if (status === 401) {
    return new RaError('serverInternal', { reason: 'cas-credentials', detail: `the CA service (${service}) refused the gateway's credentials for ${what}; the operator must check them` });
  }
  if (status === 404) {
    return new RaError('serverInternal', { reason: 'cas-config', detail: `the CA service (${service}) has no such resource for ${what} (HTTP 404); the operator must check the gateway's cas settings` });
  }
  if (status === 403) return new RaError('unauthorized', { detail: `the CA service (${service}) refused the ${what} request${said}` });
  if (status === 400 || status === 422) return new RaError('badCSR', { detail: `the CA service (${service}) rejected the ${what} request${said}` });
  return new RaError('serverInternal', { reason: 'cas-refused', detail: `the CA service (${service}) refused the ${what} request (HTTP ${status})${said}` });
}

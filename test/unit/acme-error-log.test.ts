import assert from 'node:assert/strict';
import { test } from 'node:test';
import { RaError, toRaError } from '../../shared/errors/index.js';
import { problemLogLevel } from '../../services/edge/acme/server.js';

// How the edge's ACME error handler logs what it answers: a defect at level error with its cause, a
// serverInternal the edge chose to answer (it says why in its detail) at warn, a client's problem at debug.

const cases: Array<[string, () => unknown, 'error' | 'warn' | 'debug']> = [
  ['ok/a revocation whose answer did not arrive in time is warn', () => new RaError('serverInternal', { detail: 'the revocation was accepted and sent to the CA, but its answer did not arrive within 5 s' }), 'warn'],
  ['ok/the CA refusal relayed by the mesh is warn', () => RaError.fromProblem({ type: 'urn:ietf:params:acme:error:serverInternal', detail: 'the CA service is unavailable', status: 500 }), 'warn'],
  ['ok/a client problem is debug', () => new RaError('malformed', { detail: 'request body is not JSON' }), 'debug'],
  ['ok/a problem type the mesh does not know becomes serverInternal, warn', () => RaError.fromProblem({ type: 'urn:example:other', detail: 'x', status: 500 }), 'warn'],
  ['fail/an exception that is not an RaError is an internal error', () => new TypeError('cannot read properties of undefined'), 'error'],
  ['fail/a serverInternal wrapping a cause is an internal error', () => new RaError('serverInternal', { detail: 'store write failed', cause: new Error('EIO') }), 'error'],
];
for (const [name, make, want] of cases) {
  test(name, () => {
    const thrown = make();
    assert.equal(problemLogLevel(thrown, toRaError(thrown)), want);
  });
}

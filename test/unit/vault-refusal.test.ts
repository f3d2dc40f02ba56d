import assert from 'node:assert/strict';
import { test } from 'node:test';
import { vaultNameRefusal } from '../../services/gateway/cas/vault-cas.js';

// Vault's pki sign endpoint refuses names with a 400 and a message (builtin/logical/pki cert_util.go);
// the gateway turns those into RFC 8555 §6.7 rejectedIdentifier, naming the identifier when it can.

const req = { dnsNames: ['a.corp.example', 'b.corp.example'], ipAddresses: ['10.0.0.7'] };
const P = 'urn:ietf:params:acme:error:';

const cases: Array<[string, string, Array<[string, string]> | null]> = [
  ['ok/common name refused', 'common name a.corp.example not allowed by this role', [['dns', 'a.corp.example']]],
  ['ok/subject alternate name refused', 'subject alternate name b.corp.example not allowed by this role', [['dns', 'b.corp.example']]],
  ['ok/an IP SAN refused by name', 'subject alternate name 10.0.0.7 not allowed by this role', [['ip', '10.0.0.7']]],
  ['ok/IP SANs refused by the role', 'IP Subject Alternative Names are not allowed in this role, but was provided [10.0.0.7]', [['ip', '10.0.0.7']]],
  ['ok/a refused name the request does not hold: no subproblem', 'common name c.corp.example not allowed by this role', []],
  ['fail/another 400 is not a name refusal (left to badCSR)', 'the CSR could not be parsed', null],
];

for (const [name, message, ids] of cases) {
  test(name, () => {
    const e = vaultNameRefusal(message, req);
    if (ids === null) return assert.equal(e, undefined);
    assert.ok(e);
    const p = e.toProblem();
    assert.equal(p.type, `${P}rejectedIdentifier`);
    assert.match(p.detail, new RegExp(message.slice(0, 20).replace(/[.[\]]/g, '\\$&')));
    assert.deepEqual((p.subproblems ?? []).map((s) => [s.type, s.identifier?.type, s.identifier?.value]), ids.map(([t, v]) => [`${P}rejectedIdentifier`, t, v]));
  });
}

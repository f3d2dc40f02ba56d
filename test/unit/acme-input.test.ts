import assert from 'node:assert/strict';
import { test } from 'node:test';
import { RaError } from '../../shared/errors/index.js';
import { normalizeIdentifiers } from '../../services/edge/acme/identifiers.js';
import { validateContacts } from '../../services/edge/acme/account.js';

const okIdentifiers: Array<[string, unknown, Array<{ type: string; value: string }>]> = [
  ['ok/dns lower-cased, trailing dot dropped', [{ type: 'dns', value: 'WWW.Example.TEST.' }], [{ type: 'dns', value: 'www.example.test' }]],
  ['ok/idn to a-label', [{ type: 'dns', value: 'bücher.example.test' }], [{ type: 'dns', value: 'xn--bcher-kva.example.test' }]],
  ['ok/wildcard', [{ type: 'dns', value: '*.example.test' }], [{ type: 'dns', value: '*.example.test' }]],
  ['ok/duplicates removed', [{ type: 'dns', value: 'a.example.test' }, { type: 'dns', value: 'A.example.test' }], [{ type: 'dns', value: 'a.example.test' }]],
  ['ok/ipv4 (RFC 8738)', [{ type: 'ip', value: '10.0.0.1' }], [{ type: 'ip', value: '10.0.0.1' }]],
  ['ok/ipv6 canonical', [{ type: 'ip', value: '2001:DB8:0:0:0:0:0:1' }], [{ type: 'ip', value: '2001:db8::1' }]],
];
for (const [name, input, want] of okIdentifiers) {
  test(name, () => assert.deepEqual(normalizeIdentifiers(input), want));
}

const badIdentifiers: Array<[string, unknown, string]> = [
  ['fail/empty list', [], 'malformed'],
  ['fail/not a list', 'a.example.test', 'malformed'],
  ['fail/unknown type', [{ type: 'email', value: 'a@example.test' }], 'unsupportedIdentifier'],
  ['fail/bad dns label', [{ type: 'dns', value: 'a_b.example.test' }], 'rejectedIdentifier'],
  ['fail/wildcard not leftmost', [{ type: 'dns', value: 'a.*.example.test' }], 'rejectedIdentifier'],
  ['fail/numeric tld', [{ type: 'dns', value: '10.0.0.1' }], 'rejectedIdentifier'],
  ['fail/bad ip', [{ type: 'ip', value: '300.1.1.1' }], 'malformed'],
  ['fail/two bad is compound', [{ type: 'ip', value: 'x' }, { type: 'dns', value: '-a.test' }], 'compound'],
];
for (const [name, input, type] of badIdentifiers) {
  test(name, () =>
    assert.throws(() => normalizeIdentifiers(input), (e: unknown) => e instanceof RaError && e.type === type),
  );
}

test('fail/compound lists one subproblem per identifier', () => {
  try {
    normalizeIdentifiers([{ type: 'ip', value: 'x' }, { type: 'dns', value: '-a.test' }]);
    assert.fail('should throw');
  } catch (e) {
    assert.ok(e instanceof RaError);
    const p = e.toProblem();
    assert.equal(p.subproblems?.length, 2);
    assert.deepEqual(p.subproblems?.map((s) => s.identifier?.value), ['x', '-a.test']);
    assert.equal(p.subproblems?.[0]?.type, 'urn:ietf:params:acme:error:malformed');
  }
});

const contacts: Array<[string, unknown, string | null]> = [
  ['ok/mailto', ['mailto:ops@example.test'], null],
  ['ok/none', undefined, null],
  ['fail/not mailto', ['tel:+1555'], 'unsupportedContact'],
  ['fail/two addresses', ['mailto:a@example.test,b@example.test'], 'invalidContact'],
  ['fail/hfields', ['mailto:a@example.test?subject=x'], 'invalidContact'],
  ['fail/no domain', ['mailto:a@'], 'invalidContact'],
  ['fail/not array', 'mailto:a@example.test', 'malformed'],
];
for (const [name, input, type] of contacts) {
  test(`${name} (contact)`, () => {
    if (type === null) assert.deepEqual(validateContacts(input), input ?? []);
    else assert.throws(() => validateContacts(input), (e: unknown) => e instanceof RaError && e.type === type);
  });
}

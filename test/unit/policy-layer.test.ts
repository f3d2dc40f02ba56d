import assert from 'node:assert/strict';
import { test } from 'node:test';
import { RaError } from '../../shared/errors/index.js';
import { PolicyLayer, resolveLifetime } from '../../shared/policy/index.js';

const layer = new PolicyLayer('relay-x', {
  allow: { dns: ['*.corp.test', 'corp.test'], ip: ['10.0.0.0/8', '2001:db8::/32'] },
  deny: { dns: ['pci.corp.test'], ip: ['10.9.9.9'] },
  allowWildcardNames: false,
});

const cases: Array<[string, { type: string; value: string }, boolean, RegExp]> = [
  ['ok/one label under *.corp.test', { type: 'dns', value: 'a.corp.test' }, true, /allow\.dns "\*\.corp\.test"/],
  ['ok/exact apex', { type: 'dns', value: 'corp.test' }, true, /allow\.dns "corp\.test"/],
  ['ok/case-insensitive', { type: 'dns', value: 'A.CORP.TEST' }, true, /allow/],
  ['ok/ip in cidr', { type: 'ip', value: '10.1.2.3' }, true, /allow\.ip/],
  ['ok/ipv6 in cidr', { type: 'ip', value: '2001:db8::5' }, true, /allow\.ip/],
  ['fail/two labels below', { type: 'dns', value: 'a.b.corp.test' }, false, /no rule matches/],
  ['fail/other domain', { type: 'dns', value: 'a.other.test' }, false, /no rule matches/],
  ['fail/deny wins', { type: 'dns', value: 'pci.corp.test' }, false, /deny\.dns "pci\.corp\.test"/],
  ['fail/wildcard not allowed', { type: 'dns', value: '*.corp.test' }, false, /allowWildcardNames/],
  ['fail/ip outside', { type: 'ip', value: '192.168.1.1' }, false, /allow\.ip \(no rule/],
  ['fail/ip denied', { type: 'ip', value: '10.9.9.9' }, false, /deny\.ip/],
  ['fail/suffix trick', { type: 'dns', value: 'evilcorp.test' }, false, /no rule matches/],
];
for (const [name, id, allowed, rule] of cases) {
  test(name, () => {
    const d = layer.decide(id);
    assert.equal(d.allowed, allowed);
    assert.match(d.rule, rule);
  });
}

test('fail/enforce names the layer and rule per identifier', () => {
  try {
    layer.enforce([{ type: 'dns', value: 'a.corp.test' }, { type: 'dns', value: 'pci.corp.test' }]);
    assert.fail('should throw');
  } catch (e) {
    assert.ok(e instanceof RaError);
    assert.equal(e.type, 'rejectedIdentifier');
    assert.equal(e.subproblems.length, 1);
    assert.equal(e.subproblems[0]!.identifier?.value, 'pci.corp.test');
    assert.match(e.subproblems[0]!.detail, /relay-x: deny\.dns/);
  }
});

test('ok/lifetime: default from the innermost layer, capped by every maxLifetime', () => {
  assert.equal(resolveLifetime([{ allowWildcardNames: false, defaultLifetime: '12h' }, { allowWildcardNames: false, maxLifetime: '6h' }]), 6 * 3_600_000);
  assert.equal(resolveLifetime([{ allowWildcardNames: false }]), 24 * 3_600_000);
  assert.equal(resolveLifetime([{ allowWildcardNames: false, maxLifetime: '720h' }], 3_600_000), 3_600_000);
  assert.throws(() => resolveLifetime([{ allowWildcardNames: false, minLifetime: '1h' }], 60_000), RaError);
});

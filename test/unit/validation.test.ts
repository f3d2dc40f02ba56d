import assert from 'node:assert/strict';
import { test } from 'node:test';
import { reverseName } from '../../services/edge/validation/tls-alpn-01.js';

const cases: Array<[string, string, string]> = [
  ['ok/ipv4 reverse name', '192.0.2.5', '5.2.0.192.in-addr.arpa'],
  ['ok/ipv6 reverse name', '2001:db8::1', '1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa'],
  ['ok/ipv6 loopback', '::1', '1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa'],
];
for (const [name, ip, want] of cases) test(name, () => assert.equal(reverseName(ip), want));

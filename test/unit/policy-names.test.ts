import assert from 'node:assert/strict';
import { test } from 'node:test';
import { policySchema } from '../../shared/config/index.js';
import { PolicyLayer, type LayerPolicy, type PolicyName } from '../../shared/policy/index.js';

// The name rules of one policy layer, table-driven. Cases marked "step-ca:" mirror a case of
// smallstep/certificates policy/engine_test.go (TestNamePolicyEngine_X509_AllAllowed and the match*
// tests) with the same constraint and name, and expect the same verdict; where ra-mesh deliberately
// differs the case says so ("stricter than step-ca").

type Case = [name: string, policy: LayerPolicy, subject: PolicyName, allowed: boolean, rule: RegExp];

const dns = (value: string): PolicyName => ({ type: 'dns', value });
const ip = (value: string): PolicyName => ({ type: 'ip', value });
const email = (value: string): PolicyName => ({ type: 'email', value });
const uri = (value: string): PolicyName => ({ type: 'uri', value });
const cn = (value: string): PolicyName => ({ type: 'cn', value });

const cases: Case[] = [
  // --- dns: allow ---
  ['ok/dns one label under *.local (step-ca: ok/dns-permitted)', { allow: { dns: ['*.local'] } }, dns('example.local'), true, /allow\.dns "\*\.local"/],
  ['fail/dns other domain (step-ca: fail/dns-permitted)', { allow: { dns: ['*.local'] } }, dns('www.example.com'), false, /allow\.dns \(no rule matches\)/],
  ['fail/dns *.local does not match the apex (step-ca: fail/dns-permitted-no-label)', { allow: { dns: ['*.local'] } }, dns('local'), false, /no rule matches/],
  ['fail/dns *.local does not match two labels (step-ca: fail/dns-permitted-wildcard-multiple-subdomains)', { allow: { dns: ['*.local'] } }, dns('sub.example.local'), false, /no rule matches/],
  ['fail/dns exact host rule, other host (step-ca: fail/dns-permitted-single-host)', { allow: { dns: ['host.local'] } }, dns('differenthost.local'), false, /no rule matches/],
  ['ok/dns exact host rule (step-ca: ok/specific-domain)', { allow: { dns: ['www.example.com'] } }, dns('www.example.com'), true, /allow\.dns "www\.example\.com"/],
  ['ok/dns case-insensitive (step-ca: ok/different-case)', { allow: { dns: ['www.example.com'] } }, dns('WWW.EXAMPLE.com'), true, /allow/],
  ['ok/dns rule written in upper case', { allow: { dns: ['*.CORP.Test'] } }, dns('a.corp.test'), true, /allow/],
  ['fail/dns empty label (step-ca: fail/dns-permitted-empty-label)', { allow: { dns: ['*.local'] } }, dns('www..local'), false, /not a DNS name/],
  ['fail/dns leading dot (step-ca: fail/dns-permitted-dot-domain)', { allow: { dns: ['*.local'] } }, dns('.local'), false, /not a DNS name/],
  ['fail/dns asterisk inside a label (step-ca: fail/asterisk-in-domain)', { allow: { dns: ['*.com'] } }, dns('e*ample.com'), false, /not a DNS name/],
  ['fail/dns asterisk label not leftmost (step-ca: fail/asterisk-label)', { allow: { dns: ['*.local'] }, allowWildcardNames: true }, dns('example.*.local'), false, /not a DNS name/],
  ['fail/dns suffix without the dot does not match', { allow: { dns: ['*.corp.test'] } }, dns('evilcorp.test'), false, /no rule matches/],
  ['fail/dns rule is not a suffix match', { allow: { dns: ['corp.test'] } }, dns('a.corp.test'), false, /no rule matches/],
  ['ok/dns several allow rules, second matches (step-ca: ok/dns-permitted-combined)', { allow: { dns: ['*.local', 'host.example.com'] } }, dns('host.example.com'), true, /allow\.dns "host\.example\.com"/],
  ['fail/dns absolute name with a trailing dot cannot be compared (as step-ca: empty label)', { allow: { dns: ['a.corp.test'] } }, dns('a.corp.test.'), false, /not a DNS name/],
  // --- dns: IDN, compared as A-labels ---
  ['ok/dns IDN name in U-labels matches an A-label rule (step-ca: ok/idna-internationalized-domain-name-punycode)', { allow: { dns: ['*.xn--fsq.jp'] } }, dns('JP納豆.例.jp'), true, /allow/],
  ['ok/dns IDN rule in U-labels matches the A-label name (stricter than step-ca: its constraints are not converted)', { allow: { dns: ['*.例.jp'] } }, dns('xn--jp-cd2fp15c.xn--fsq.jp'), true, /allow/],
  ['fail/dns IDN deny rule in U-labels refuses the A-label name', { deny: { dns: ['bücher.corp.test'] } }, dns('xn--bcher-kva.corp.test'), false, /deny\.dns "bücher\.corp\.test"/],
  ['fail/dns fullwidth letters map onto a denied name (UTS 46)', { deny: { dns: ['pci.corp.test'] } }, dns('ＰＣＩ.corp.test'), false, /deny\.dns/],
  ['fail/dns a label that is no valid IDN cannot be compared', { allow: { dns: ['*.corp.test'] } }, dns('xn--zz.corp.test'), false, /not a DNS name/],
  // --- dns: deny ---
  ['fail/dns deny one label (step-ca: fail/dns-excluded)', { deny: { dns: ['*.example.com'] } }, dns('www.example.com'), false, /deny\.dns "\*\.example\.com"/],
  ['fail/dns deny exact host (step-ca: fail/dns-excluded-single-host)', { deny: { dns: ['host.example.com'] } }, dns('host.example.com'), false, /deny\.dns "host\.example\.com"/],
  ['ok/dns deny elsewhere (step-ca: ok/dns-excluded)', { deny: { dns: ['*.notlocal'] } }, dns('example.local'), true, /no deny\.dns rule matches/],
  ['fail/dns deny wins over allow (step-ca: fail/combined-simple-all-badhost.local)', { allow: { dns: ['*.local'] }, deny: { dns: ['badhost.local'] } }, dns('badhost.local'), false, /deny\.dns "badhost\.local"/],
  ['ok/dns allowed next to a deny rule', { allow: { dns: ['*.local'] }, deny: { dns: ['badhost.local'] } }, dns('goodhost.local'), true, /allow\.dns "\*\.local"/],
  ['ok/dns deny *.x does not reach two labels down', { deny: { dns: ['*.pci.corp.test'] } }, dns('a.b.pci.corp.test'), true, /no deny/],
  // --- dns: wildcard requests ---
  ['fail/dns wildcard request without allowWildcardNames (step-ca: fail/dns-permitted-wildcard-literal)', { allow: { dns: ['*.local'] } }, dns('*.local'), false, /allowWildcardNames is false/],
  ['fail/dns wildcard request needs allowWildcardNames also without rules (stricter than step-ca)', {}, dns('*.corp.test'), false, /allowWildcardNames is false/],
  ['ok/dns wildcard request with allowWildcardNames (step-ca: ok/dns-permitted-wildcard-literal)', { allow: { dns: ['*.local'] }, allowWildcardNames: true }, dns('*.local'), true, /allow\.dns "\*\.local"/],
  ['fail/dns wildcard request one level deeper than the rule', { allow: { dns: ['*.local'] }, allowWildcardNames: true }, dns('*.a.local'), false, /no rule matches/],
  ['fail/dns wildcard request is not allowed by an exact rule for one of its names', { allow: { dns: ['a.local'] }, allowWildcardNames: true }, dns('*.local'), false, /no rule matches/],
  ['fail/dns wildcard covering a denied host (stricter than step-ca)', { deny: { dns: ['db.pci.corp.test'] }, allowWildcardNames: true }, dns('*.pci.corp.test'), false, /deny\.dns "db\.pci\.corp\.test"/],
  ['fail/dns wildcard equal to a deny rule', { deny: { dns: ['*.pci.corp.test'] }, allowWildcardNames: true }, dns('*.pci.corp.test'), false, /deny\.dns "\*\.pci\.corp\.test"/],
  ['ok/dns wildcard next to a deny rule one level down', { deny: { dns: ['*.a.corp.test'] }, allowWildcardNames: true }, dns('*.corp.test'), true, /no deny/],
  // --- dns: no rules / other types' rules (step-ca's "explicitly permitted" rule) ---
  ['ok/dns no rules at all (step-ca: ok/dns-no-constraints)', {}, dns('www.example.com'), true, /no name rules/],
  ['fail/dns refused when only ip is allowed (step-ca: fail/ip-permitted-with-dns-name)', { allow: { ip: ['127.0.0.0/24'] } }, dns('www.example.com'), false, /has no dns rule/],
  ['fail/dns refused when only email is allowed (step-ca: fail/mail-permitted-with-dns-name)', { allow: { email: ['@example.com'] } }, dns('www.example.com'), false, /has no dns rule/],
  ['fail/dns refused when only uri is allowed (step-ca: fail/uri-permitted-with-dns-name)', { allow: { uri: ['*.local'] } }, dns('host.local'), false, /has no dns rule/],
  ['ok/dns allowed when only ip is denied (step-ca: ok/ip-excluded-with-dns)', { deny: { ip: ['127.0.0.1/24'] } }, dns('test.local'), true, /no rule for this type/],
  ['ok/dns with a deny-only dns list next to allow rules of another type', { allow: { ip: ['10.0.0.0/8'] }, deny: { dns: ['bad.local'] } }, dns('good.local'), true, /no deny\.dns rule matches/],
  // --- ip ---
  ['ok/ipv4 in CIDR (step-ca: ok/ipv4-permitted)', { allow: { ip: ['127.0.0.1/24'] } }, ip('127.0.0.20'), true, /allow\.ip "127\.0\.0\.1\/24"/],
  ['fail/ipv4 outside CIDR (step-ca: fail/ipv4-permitted)', { allow: { ip: ['127.0.0.1/24'] } }, ip('1.1.1.1'), false, /allow\.ip \(no rule matches\)/],
  ['ok/ipv6 in CIDR (step-ca: ok/ipv6-permitted)', { allow: { ip: ['2001:0db8:85a3:0000:0000:8a2e:0370:7334/120'] } }, ip('2001:0db8:85a3:0000:0000:8a2e:0370:7339'), true, /allow\.ip/],
  ['fail/ipv6 outside CIDR (step-ca: fail/ipv6-permitted)', { allow: { ip: ['2001:0db8:85a3:0000:0000:8a2e:0370:7334/120'] } }, ip('3001:0db8:85a3:0000:0000:8a2e:0370:7334'), false, /no rule matches/],
  ['fail/ipv4 denied (step-ca: fail/ipv4-excluded)', { deny: { ip: ['127.0.0.1/24'] } }, ip('127.0.0.1'), false, /deny\.ip/],
  ['fail/ipv6 denied (step-ca: fail/ipv6-excluded)', { deny: { ip: ['2001:0db8:85a3:0000:0000:8a2e:0370:7334/120'] } }, ip('2001:db8:85a3::8a2e:370:7334'), false, /deny\.ip/],
  ['ok/ipv4 outside a deny range (step-ca: ok/ipv4-excluded)', { deny: { ip: ['127.0.0.1/24'] } }, ip('10.10.10.10'), true, /no deny\.ip/],
  ['ok/ipv6 outside a deny range (step-ca: ok/ipv6-excluded)', { deny: { ip: ['2001:0db8:85a3:0000:0000:8a2e:0370:7334/120'] } }, ip('2003:0db8:85a3:0000:0000:8a2e:0370:7334'), true, /no deny\.ip/],
  ['ok/ipv4-mapped IPv6 matches an IPv4 rule (step-ca: ok/ipv4-in-ipv6)', { allow: { ip: ['192.0.2.0/24'] } }, ip('::ffff:192.0.2.128'), true, /allow\.ip/],
  ['fail/ipv4-mapped IPv6 cannot get past an IPv4 deny rule', { deny: { ip: ['10.0.0.0/8'] } }, ip('::ffff:10.1.2.3'), false, /deny\.ip "10\.0\.0\.0\/8"/],
  ['fail/ipv4 is not in a NAT64 range (step-ca: false/ipv4-in-ipv6-nat64)', { allow: { ip: ['64:ff9b::/96'] } }, ip('192.0.2.128'), false, /no rule matches/],
  ['ok/NAT64 address in the NAT64 range (step-ca: ok/ipv4-in-ipv6-nat64)', { allow: { ip: ['64:ff9b::/96'] } }, ip('64:ff9b::192.0.2.129'), true, /allow\.ip/],
  ['ok/ip single address rule', { allow: { ip: ['10.9.9.9'] } }, ip('10.9.9.9'), true, /allow\.ip "10\.9\.9\.9"/],
  ['fail/ip refused when only dns is allowed (step-ca: fail/dns-permitted-with-ip-name)', { allow: { dns: ['*.local'] } }, ip('127.0.0.1'), false, /has no ip rule/],
  ['ok/ip allowed when only dns is denied (step-ca: ok/dns-excluded-with-ip-name)', { deny: { dns: ['*.local'] } }, ip('127.0.0.1'), true, /no rule for this type/],
  ['fail/ip that does not parse', { allow: { ip: ['10.0.0.0/8'] } }, ip('10.0.0.256'), false, /not an IP address/],
  // --- email ---
  ['ok/email at the domain (step-ca: ok/mail-permitted-wildcard)', { allow: { email: ['@example.com'] } }, email('test@example.com'), true, /allow\.email "@example\.com"/],
  ['ok/email plain domain rule (step-ca: ok/mail-permitted-plain-domain)', { allow: { email: ['example.com'] } }, email('test@example.com'), true, /allow\.email/],
  ['fail/email other domain (step-ca: fail/mail-permitted-wildcard)', { allow: { email: ['@example.com'] } }, email('test@local.com'), false, /no rule matches/],
  ['fail/email subdomain of a domain rule (step-ca: fail/mail-permitted-wildcard-subdomain)', { allow: { email: ['@example.com'] } }, email('test@sub.example.com'), false, /no rule matches/],
  ['ok/email specific mailbox (step-ca: ok/mail-permitted-specific-mailbox)', { allow: { email: ['test@local.com'] } }, email('test@local.com'), true, /allow\.email "test@local\.com"/],
  ['fail/email other mailbox (step-ca: fail/mail-permitted-specific-mailbox)', { allow: { email: ['test@local.com'] } }, email('root@local.com'), false, /no rule matches/],
  ['ok/email .domain rule: one label below (step-ca: ok/wildcard-x509-period)', { allow: { email: ['.local'] } }, email('mail@example.local'), true, /allow\.email "\.local"/],
  ['fail/email .domain rule is not the domain itself (step-ca: fail/wildcard-x509-period)', { allow: { email: ['.local'] } }, email('mail@local'), false, /no rule matches/],
  ['fail/email denied domain (step-ca: fail/mail-excluded)', { deny: { email: ['@example.com'] } }, email('mail@example.com'), false, /deny\.email/],
  ['ok/email deny of the parent domain only (step-ca: ok/mail-excluded-with-subdomain)', { deny: { email: ['@local'] } }, email('mail@example.local'), true, /no deny\.email/],
  ['ok/email domain compared case-insensitively (step-ca: ok/different-case)', { allow: { email: ['example.com'] } }, email('mail@EXAMPLE.com'), true, /allow/],
  ['fail/email local part compared case-insensitively for a deny rule (stricter than RFC 5280 §7.5)', { deny: { email: ['admin@corp.test'] } }, email('Admin@corp.test'), false, /deny\.email/],
  ['ok/email IDN domain as A-labels', { allow: { email: ['@xn--bcher-kva.test'] } }, email('a@bücher.test'), true, /allow/],
  ['fail/email refused when only dns is allowed (step-ca: fail/dns-permitted-with-mail)', { allow: { dns: ['*.local'] } }, email('mail@smallstep.com'), false, /has no email rule/],
  ['fail/email that does not parse', { allow: { email: ['@example.com'] } }, email('not-an-address'), false, /not an email address/],
  // --- uri ---
  ['ok/uri host one label under (step-ca: ok/uri-permitted-domain-wildcard)', { allow: { uri: ['*.local'] } }, uri('https://example.local'), true, /allow\.uri "\*\.local"/],
  ['fail/uri other host (step-ca: fail/permitted-uri-domain-wildcard)', { allow: { uri: ['*.local'] } }, uri('https://example.com'), false, /no rule matches/],
  ['ok/uri specific host (step-ca: ok/uri-permitted-specific-uri)', { allow: { uri: ['test.local'] } }, uri('https://test.local'), true, /allow\.uri "test\.local"/],
  ['fail/uri wrong specific host (step-ca: fail/permitted-uri)', { allow: { uri: ['test.local'] } }, uri('https://bad.local'), false, /no rule matches/],
  ['ok/uri with a port (step-ca: ok/uri-permitted-with-port)', { allow: { uri: ['*.example.com'] } }, uri('https://www.example.com:8080'), true, /allow\.uri/],
  ['ok/uri host case-insensitive, non-special scheme', { allow: { uri: ['trust.corp.test'] } }, uri('spiffe://Trust.Corp.Test/ns/a/sa/b'), true, /allow\.uri/],
  ['fail/uri literal wildcard host (step-ca: fail/permitted-uri-with-literal-wildcard)', { allow: { uri: ['*.local'] } }, uri('https://*.local'), false, /"\*" cannot be matched/],
  ['fail/uri with an IP host (step-ca: fail/host-with-ipv4)', { allow: { uri: ['*.example.local'] } }, uri('https://127.0.0.1'), false, /IP address as host/],
  ['fail/uri with an IPv6 host (step-ca: fail/host-with-ipv6)', { allow: { uri: ['*.example.local'] } }, uri('https://[2001:db8::1]'), false, /IP address as host/],
  ['fail/uri without a host (step-ca: fail/empty-host)', { allow: { uri: ['*.local'] } }, uri('urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66'), false, /without a host/],
  ['fail/uri denied host (step-ca: fail/uri-excluded)', { deny: { uri: ['*.example.com'] } }, uri('https://www.example.com'), false, /deny\.uri/],
  ['ok/uri outside a deny rule (step-ca: ok/uri-excluded)', { deny: { uri: ['*.google.com'] } }, uri('https://www.example.com'), true, /no deny\.uri/],
  ['ok/uri without a host when the layer has no uri rule and no allow rule (as step-ca)', { deny: { dns: ['*.local'] } }, uri('urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66'), true, /no rule for this type/],
  ['fail/uri refused when only dns is allowed (step-ca: fail/dns-permitted-with-uri)', { allow: { dns: ['*.local'] } }, uri('https://www.example.com'), false, /has no uri rule/],
  // --- cn ---
  ['ok/cn exact rule', { allow: { cn: ['Device Fleet 7'] } }, cn('device fleet 7'), true, /allow\.cn "Device Fleet 7"/],
  ['fail/cn deny rule wins', { deny: { cn: ['root'] }, allow: { dns: ['*.local'] } }, cn('ROOT'), false, /deny\.cn "root"/],
  ['ok/cn judged as dns (step-ca: ok/subject-dns-permitted)', { allow: { dns: ['*.local'] } }, cn('example.local'), true, /judged as dns: allow\.dns/],
  ['fail/cn judged as dns (step-ca: fail/subject-dns-permitted)', { allow: { dns: ['*.local'] } }, cn('example.notlocal'), false, /judged as dns: allow\.dns \(no rule matches\)/],
  ['fail/cn judged as dns, denied (step-ca: fail/subject-dns-excluded)', { deny: { dns: ['*.local'] } }, cn('example.local'), false, /judged as dns: deny\.dns/],
  ['ok/cn judged as ip (step-ca: ok/subject-ipv4-permitted)', { allow: { ip: ['127.0.0.1/24'] } }, cn('127.0.0.20'), true, /judged as ip: allow\.ip/],
  ['fail/cn judged as ip (step-ca: fail/subject-ipv4-permitted)', { allow: { ip: ['127.0.0.1/24'] } }, cn('10.10.10.10'), false, /judged as ip/],
  ['fail/cn judged as ipv6, denied (step-ca: fail/subject-ipv6-excluded)', { deny: { ip: ['2001:0db8:85a3:0000:0000:8a2e:0370:7334/120'] } }, cn('2001:0db8:85a3:0000:0000:8a2e:0370:7339'), false, /judged as ip: deny\.ip/],
  ['ok/cn judged as email (step-ca: ok/subject-email-permitted)', { allow: { email: ['@example.local'] } }, cn('mail@example.local'), true, /judged as email/],
  ['fail/cn judged as email (step-ca: fail/subject-email-permitted)', { allow: { email: ['@example.local'] } }, cn('mail@smallstep.com'), false, /judged as email/],
  ['ok/cn judged as uri (step-ca: ok/subject-uri-permitted)', { allow: { uri: ['*.example.com'] } }, cn('https://www.example.com'), true, /judged as uri/],
  ['fail/cn judged as uri, denied (step-ca: fail/subject-uri-excluded)', { deny: { uri: ['*.example.com'] } }, cn('https://www.example.com'), false, /judged as uri: deny\.uri/],
  ['ok/cn without any rule (step-ca: ok/subject-no-constraints)', {}, cn('www.example.com'), true, /no name rules/],
  ['ok/cn not in allow.cn, but allowed as a dns name', { allow: { cn: ['fleet'], dns: ['*.local'] } }, cn('a.local'), true, /judged as dns: allow\.dns/],
  // --- other ---
  ['fail/an identifier type the policy does not know', {}, { type: 'permanent-identifier', value: 'x' }, false, /unsupported identifier type/],
];

test('ok/the table has at least 60 cases, both verdicts', () => {
  assert.ok(cases.length >= 60, `${cases.length} cases`);
  assert.ok(cases.filter((c) => c[3]).length >= 20 && cases.filter((c) => !c[3]).length >= 20);
  for (const [name, , , allowed] of cases) assert.equal(name.startsWith(allowed ? 'ok/' : 'fail/'), true, name);
});

for (const [name, policy, subject, allowed, rule] of cases) {
  test(name, () => {
    // Every policy of the table is one the topology accepts.
    const parsed = policySchema.safeParse(policy);
    assert.ok(parsed.success, JSON.stringify(!parsed.success && parsed.error.issues));
    const d = new PolicyLayer('layer-x', parsed.data).decide(subject);
    assert.equal(d.allowed, allowed, `${subject.type} ${subject.value}: ${d.rule}`);
    assert.match(d.rule, rule);
  });
}

// Rules that cannot mean anything are configuration errors, with their YAML path.
const badRules: Array<[string, unknown, RegExp]> = [
  ['fail/config dns rule with a "*" inside a label', { allow: { dns: ['a*.corp.test'] } }, /allow\.dns\.0/],
  ['fail/config dns rule with a double wildcard', { deny: { dns: ['*.*.corp.test'] } }, /deny\.dns\.0/],
  ['fail/config dns rule with an empty label (step-ca: fail/multiple-periods)', { allow: { dns: ['..local'] } }, /allow\.dns\.0/],
  ['fail/config ip rule that is no CIDR', { allow: { ip: ['10.0.0.0/33'] } }, /allow\.ip\.0/],
  ['fail/config email rule with "*" (step-ca: fail/asterisk-prefix)', { allow: { email: ['*@example.com'] } }, /allow\.email\.0/],
  ['fail/config email rule with two "@"', { deny: { email: ['a@b@c'] } }, /deny\.email\.0/],
  ['fail/config uri rule with "*" inside (step-ca: URI domain constraint can only have wildcard as starting character)', { allow: { uri: ['h*st.local'] } }, /allow\.uri\.0/],
  ['fail/config minLifetime above maxLifetime', { minLifetime: '2h', maxLifetime: '1h' }, /minLifetime/],
  ['fail/config unknown extension name', { extensions: { forbidden: ['mustStaple'] } }, /extensions\.forbidden\.0/],
];
for (const [name, policy, path] of badRules) {
  test(name, () => {
    const r = policySchema.safeParse(policy);
    assert.equal(r.success, false);
    assert.match(r.error!.issues.map((i) => i.path.join('.')).join(' '), path);
  });
}

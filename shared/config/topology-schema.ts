import { isIP } from 'node:net';
import { z } from 'zod';
import { DURATION_RE, parseDuration } from './duration.js';
import { ruleError, type NameType } from '../policy/names.js';
import { EC_CURVES, extensionOid, KEY_TYPES, SIGNATURE_ALGORITHMS } from '../policy/csr-rules.js';

// The one source of truth for the topology YAML. The JSON Schema in topology.schema.json is
// generated from this (`ra-mesh schema --write`) and a unit test keeps the two in step.

const duration = z.string().regex(DURATION_RE, 'a duration like 90s, 15m, 24h or 7d');
const nodeId = z
  .string()
  .regex(/^[a-z0-9][a-z0-9-]{0,62}$/, 'lower-case letters, digits and "-", at most 63 characters (used in NATS subjects)');
const natsUrl = z.string().regex(/^(nats|tls):\/\/[^\s]+$/, 'a NATS URL like nats://127.0.0.1:4222');
const hostPort = z.string().regex(/^(\[[0-9a-fA-F:.]+\]|[^\s:]+):\d{1,5}$/, 'host:port, e.g. 0.0.0.0:8443 or [::1]:8443');

const cidr = z.string().refine((s) => {
  const [net, bits, extra] = s.split('/');
  const family = isIP(net ?? '');
  if (family === 0 || extra !== undefined) return false;
  return bits === undefined || (/^\d+$/.test(bits) && Number(bits) <= (family === 4 ? 32 : 128));
}, 'an IP address or CIDR range, e.g. 10.0.0.0/8 or fd00::/8');

const extensionRule = z.string().refine((e) => extensionOid(e) !== undefined, 'an extension name (subjectAltName, keyUsage, extKeyUsage, basicConstraints, tlsFeature, ...) or a dotted OID like 1.3.6.1.5.5.7.1.24');

/** One type's name rules; each pattern is checked here so a bad one fails with its YAML path. */
const ruleList = (type: NameType, what: string) =>
  z
    .array(
      z.string().superRefine((rule, ctx) => {
        const err = ruleError(type, rule);
        if (err) ctx.addIssue({ code: 'custom', message: err });
      }),
    )
    .optional()
    .describe(what);

const nameRules = z
  .object({
    dns: ruleList('dns', 'DNS name patterns: "host.x" exactly, "*.x" exactly one label below x'),
    ip: ruleList('ip', 'IP addresses or CIDR ranges, v4 or v6'),
    email: ruleList('email', 'email rules: "user@domain", "domain" or "@domain" (any mailbox there), ".domain" (one label below)'),
    uri: ruleList('uri', 'URI host patterns, like dns ("host.x", "*.x")'),
    cn: ruleList('cn', 'exact subject common names (case-insensitive)'),
  })
  .strict();

const rateRule = z
  .object({
    limit: z.number().int().positive().describe('requests per period'),
    per: duration.describe('the period, e.g. 1h'),
    burst: z.number().int().positive().optional().describe('bucket size: how many may come at once (default: limit)'),
  })
  .strict();

export const policySchema = z
  .object({
    allow: nameRules
      .optional()
      .describe('names this layer allows; once the layer has an allow rule, names it does not allow are refused (also of types it has no rule for, unless they have deny rules)'),
    deny: nameRules.optional().describe('names this layer refuses; deny wins over allow'),
    allowWildcardNames: z.boolean().default(false).describe('whether wildcard DNS names (*.x) may be requested'),
    defaultLifetime: duration.optional().describe('certificate lifetime when the request names none (the first layer that sets one, account layer first)'),
    minLifetime: duration.optional().describe('shortest lifetime this layer accepts (a requested shorter one is refused, a default is raised)'),
    maxLifetime: duration.optional().describe('longest lifetime this layer accepts (a requested longer one is refused, a default is capped)'),
    maxSans: z.number().int().positive().optional().describe('most subject alternative names in one certificate'),
    renewAfterExpiry: duration.optional().describe('window after expiry in which a device may still renew with its old key'),
    keys: z
      .object({
        types: z.array(z.enum(KEY_TYPES)).min(1).optional().describe('key types a CSR may carry (RSA includes RSA-PSS keys)'),
        curves: z.array(z.enum(EC_CURVES)).min(1).optional().describe('EC curves a CSR key may use'),
        rsaMinBits: z.number().int().min(2048).max(8192).optional().describe('smallest RSA modulus in bits'),
        rsaMaxBits: z.number().int().min(2048).max(8192).optional().describe('largest RSA modulus in bits'),
      })
      .strict()
      .optional()
      .describe('CSR key rules'),
    signatureAlgorithms: z
      .array(z.enum(SIGNATURE_ALGORITHMS))
      .min(1)
      .optional()
      .describe('CSR signature algorithms this layer accepts (Go x509 names, e.g. ECDSA-SHA256, SHA256-RSA, Ed25519)'),
    extensions: z
      .object({
        required: z.array(extensionRule).optional().describe('extensions the CSR must request'),
        forbidden: z.array(extensionRule).optional().describe('extensions the CSR must not request'),
      })
      .strict()
      .optional()
      .describe('extensions of the CSR extensionRequest, by name (subjectAltName, keyUsage, extKeyUsage, basicConstraints, tlsFeature, ...) or dotted OID'),
    rateLimits: z
      .object({
        account: rateRule.optional().describe('token bucket per ACME account'),
        identifier: rateRule.optional().describe('token bucket per identifier (each name of a request takes one token)'),
        edge: rateRule.optional().describe('token bucket per edge the requests come from'),
      })
      .strict()
      .optional()
      .describe('rate limits enforced where this layer runs, kept in that node\'s memory (edge: newOrder requests; relay, gateway: issue requests)'),
  })
  .strict()
  .superRefine((p, ctx) => {
    const ms = (d: string | undefined) => (d === undefined || !DURATION_RE.test(d) ? undefined : parseDuration(d));
    const [def, min, max] = [ms(p.defaultLifetime), ms(p.minLifetime), ms(p.maxLifetime)];
    if (min !== undefined && max !== undefined && min > max) ctx.addIssue({ code: 'custom', path: ['minLifetime'], message: `minLifetime ${p.minLifetime} is longer than maxLifetime ${p.maxLifetime}` });
    if (def !== undefined && max !== undefined && def > max) ctx.addIssue({ code: 'custom', path: ['defaultLifetime'], message: `defaultLifetime ${p.defaultLifetime} is longer than maxLifetime ${p.maxLifetime}` });
    if (def !== undefined && min !== undefined && def < min) ctx.addIssue({ code: 'custom', path: ['defaultLifetime'], message: `defaultLifetime ${p.defaultLifetime} is shorter than minLifetime ${p.minLifetime}` });
    const k = p.keys;
    if (k?.rsaMinBits !== undefined && k.rsaMaxBits !== undefined && k.rsaMinBits > k.rsaMaxBits) {
      ctx.addIssue({ code: 'custom', path: ['keys', 'rsaMinBits'], message: `rsaMinBits ${k.rsaMinBits} is larger than rsaMaxBits ${k.rsaMaxBits}` });
    }
  });

export const acmeSchema = z
  .object({
    listen: hostPort.default('127.0.0.1:8443').describe('address the ACME HTTPS server listens on'),
    externalUrl: z.string().url().optional().describe('base URL clients use to reach this edge (default https://<listen>)'),
    challenges: z
      .array(z.enum(['http-01', 'dns-01', 'tls-alpn-01']))
      .min(1)
      .default(['http-01'])
      .describe('challenge types this edge offers'),
    resolver: z.string().optional().describe('DNS server (ip or ip:port) used for validation inside the segment'),
    hosts: z
      .record(z.string(), z.string())
      .optional()
      .describe('hosts-style overrides for validation: name -> address (checked before the resolver)'),
    forbiddenAddresses: z
      .array(cidr)
      .default([])
      .describe('addresses (CIDR) validation must never connect to, e.g. the edge host itself or management networks'),
    http01Port: z.number().int().min(1).max(65535).default(80).describe('port the http-01 validator connects to'),
    tlsAlpn01Port: z.number().int().min(1).max(65535).default(443).describe('port the tls-alpn-01 validator connects to'),
    eab: z.enum(['required', 'optional', 'off']).default('off').describe('external account binding (RFC 8555 §7.3.4)'),
    termsOfService: z.string().url().optional().describe('URL of the terms of service shown in the directory meta'),
    website: z.string().url().optional().describe('URL of a page about this ACME service, shown in the directory meta'),
    caaIdentities: z
      .array(z.string().regex(/^[a-z0-9.-]+$/, 'a CAA issuer domain name, e.g. ca.corp.example'))
      .optional()
      .describe('CAA issuer domain names of the CA behind the mesh, shown in the directory meta (RFC 8555 §7.1.1)'),
    tls: z
      .object({ cert: z.string().describe('PEM certificate chain file'), key: z.string().describe('PEM private key file') })
      .strict()
      .optional()
      .describe('TLS certificate for the ACME listener; without it the edge makes and keeps a self-signed one'),
    orderLifetime: duration.default('24h').describe('how long a pending or processing order stays usable'),
    retryAfter: z.number().int().min(1).max(3600).default(1).describe('seconds sent in Retry-After while an order is processing'),
    finalizeWait: duration
      .default('2s')
      .describe('how long finalize holds its answer for the certificate (then "valid" at once) before answering "processing" with Retry-After; 0s answers at once'),
    challengeWait: duration
      .default('2s')
      .describe('how long a challenge response holds its answer for the validation (then "valid" or "invalid" at once) before answering "processing" with Retry-After; 0s answers at once'),
    revokeWait: duration
      .default('5s')
      .describe('how long revokeCert waits for the CA answer before replying serverInternal (the revocation still completes)'),
    retention: duration
      .default('7d')
      .describe('how long expired orders with their authorizations and challenges are kept before they are pruned'),
  })
  .strict();

// SCEP (RFC 8894) at an edge, for devices that cannot speak ACME (services/edge/scep/).
export const scepSchema = z
  .object({
    listen: hostPort
      .default('127.0.0.1:8089')
      .describe('plain-HTTP listener serving /scep (RFC 8894 §4.1: the messages themselves are CMS-protected) and GET /crl'),
    raName: z
      .string()
      .regex(/^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/, 'a lower-case DNS name, e.g. scep-ra.iot-a.corp.example')
      .describe('DNS name of the SCEP RA certificate the edge requests from the mesh CA at first start (every policy layer on its path must allow it)'),
    raLifetime: duration
      .default('30d')
      .describe('lifetime asked for the RA certificate (capped by every maxLifetime); a new one is requested after two thirds of it'),
    challengePasswordFile: z
      .string()
      .optional()
      .describe("file holding the segment's challenge password (read on every request; relative to the topology file)"),
    oneTimePasswords: z.boolean().default(true).describe('accept one-time challenge passwords made by `ra-mesh scep otp add` (each enrolls one device)'),
    legacyCrypto: z
      .boolean()
      .default(false)
      .describe('also accept single-DES content encryption and SHA-1 message signatures (micromdm scepclient 2.1.0 sends them); replies never use DES'),
    resultWait: duration.default('2s').describe('how long PKIOperation waits for the answer from the mesh before replying PENDING'),
    pendingLifetime: duration
      .default('7d')
      .describe('how long a PENDING request waits for the mesh before it fails; nothing is issued for it after that'),
  })
  .strict();

const sha256Hex = z.string().regex(/^[0-9a-fA-F]{64}$/, 'a SHA-256 fingerprint: 64 hex digits');
const httpsUrl = z.string().url().refine((u) => /^https?:\/\//.test(u), 'an http(s) URL');
const casTimeout = duration.default('15s').describe('timeout of one call to the CA service');
const casMaxInFlight = z
  .number()
  .int()
  .min(1)
  .max(4096)
  .default(64)
  .describe('most calls to the CA service under way at once, over all requests; the others wait their turn (their messages are kept from redelivery meanwhile)');

const stepcaProvisioner = z
  .discriminatedUnion('type', [
    z
      .object({
        type: z.literal('jwk').describe('a JWK provisioner: one-time tokens signed with the provisioner key'),
        name: z.string().min(1).describe('provisioner name (the token issuer)'),
        kid: z.string().optional().describe('key id of the provisioner key (default: its RFC 7638 thumbprint)'),
        keyFile: z.string().optional().describe('private key of the provisioner, PEM or JWK (relative to the topology file)'),
        passwordFile: z
          .string()
          .optional()
          .describe("file holding the password that decrypts the provisioner's encryptedKey fetched from the CA's /provisioners"),
      })
      .strict()
      .refine((p) => (p.keyFile === undefined) !== (p.passwordFile === undefined), {
        message: 'a jwk provisioner needs exactly one of keyFile or passwordFile',
        path: ['keyFile'],
      }),
    z
      .object({
        type: z.literal('x5c').describe('an X5C provisioner: tokens signed with a certificate key, chain in the x5c header'),
        name: z.string().min(1).describe('provisioner name (the token issuer)'),
        certFile: z.string().describe('PEM certificate chain for the x5c header, read on every request'),
        keyFile: z.string().describe('PEM private key of that certificate, read on every request'),
      })
      .strict(),
  ])
  .describe('how the gateway authenticates to step-ca');

export const casSchema = z
  .discriminatedUnion('type', [
    z
      .object({
        type: z.literal('builtin').describe('the embedded CA: own root and intermediate, kept in the gateway store'),
        crlUrl: z.string().url().optional().describe('URL put in a CRL Distribution Points extension of issued certificates (none when unset)'),
        crlValidity: duration.default('7d').describe('nextUpdate - thisUpdate of each CRL; a new one is signed after half of it'),
        maxInFlight: casMaxInFlight,
      })
      .strict(),
    z
      .object({
        type: z.literal('stepca').describe('an upstream step-ca (POST /1.0/sign and /1.0/revoke)'),
        url: httpsUrl.describe('base URL of the step-ca, e.g. https://ca.internal:9000'),
        rootFingerprint: sha256Hex.describe("SHA-256 fingerprint of the step-ca root: the CA's TLS and issued chains must lead to it"),
        provisioner: stepcaProvisioner,
        timeout: casTimeout,
        maxInFlight: casMaxInFlight,
      })
      .strict(),
    z
      .object({
        type: z.literal('vault').describe('the Vault PKI secrets engine (<mount>/sign/<role>, <mount>/revoke)'),
        url: httpsUrl.describe('Vault address, e.g. https://vault.internal:8200'),
        caFile: z.string().optional().describe('PEM bundle trusted for the Vault TLS certificate (default: the system store)'),
        namespace: z.string().min(1).optional().describe('Vault Enterprise namespace (X-Vault-Namespace header)'),
        pkiMountPath: z.string().min(1).default('pki').describe('mount path of the PKI secrets engine'),
        pkiRoleDefault: z.string().min(1).describe('PKI role used when no key-type role below applies'),
        pkiRoleRSA: z.string().min(1).optional().describe('PKI role for RSA CSRs'),
        pkiRoleEC: z.string().min(1).optional().describe('PKI role for ECDSA CSRs'),
        pkiRoleEd25519: z.string().min(1).optional().describe('PKI role for Ed25519 CSRs'),
        auth: z
          .discriminatedUnion('type', [
            z
              .object({
                type: z.literal('approle').describe('AppRole login (auth/<mountPath>/login)'),
                mountPath: z.string().min(1).default('approle').describe('mount path of the AppRole auth method'),
                roleId: z.string().min(1).describe('the AppRole role_id'),
                secretId: z.string().min(1).optional().describe('the secret_id inline (prefer secretIdFile)'),
                secretIdFile: z.string().optional().describe('file holding the secret_id'),
                secretIdEnv: z.string().optional().describe('environment variable holding the secret_id'),
                isWrappingToken: z.boolean().default(false).describe('the secret_id is a response-wrapping token to unwrap first'),
              })
              .strict()
              .refine((a) => [a.secretId, a.secretIdFile, a.secretIdEnv].filter((x) => x !== undefined).length === 1, {
                message: 'approle needs exactly one of secretId, secretIdFile, secretIdEnv',
                path: ['secretId'],
              }),
            z
              .object({
                type: z.literal('kubernetes').describe('Kubernetes service-account login (auth/<mountPath>/login)'),
                mountPath: z.string().min(1).default('kubernetes').describe('mount path of the Kubernetes auth method'),
                role: z.string().min(1).describe('the Vault role bound to the service account'),
                tokenPath: z
                  .string()
                  .default('/var/run/secrets/kubernetes.io/serviceaccount/token')
                  .describe('file holding the service-account JWT'),
              })
              .strict(),
          ])
          .describe('how the gateway logs in to Vault'),
        timeout: casTimeout,
        maxInFlight: casMaxInFlight,
      })
      .strict(),
    z
      .object({
        type: z.literal('cloudcas').describe('Google Cloud Certificate Authority Service (certificates.create with requestId)'),
        caPool: z
          .string()
          .regex(/^projects\/[^/]+\/locations\/[^/]+\/caPools\/[^/]+$/, 'projects/<project>/locations/<location>/caPools/<pool>')
          .describe('the CA pool certificates are created in'),
        certificateAuthority: z.string().min(1).optional().describe('id of the issuing CA in the pool (default: the pool chooses)'),
        credentialsFile: z.string().describe('service-account JSON key file (type service_account)'),
        endpoint: httpsUrl.default('https://privateca.googleapis.com').describe('CAS API endpoint'),
        caFile: z.string().optional().describe('PEM bundle trusted for the endpoint and the token URI (default: the system store)'),
        timeout: casTimeout,
        maxInFlight: casMaxInFlight,
      })
      .strict(),
  ])
  .describe('the CA service the gateway calls');

export const nodeSchema = z
  .object({
    id: nodeId.describe('unique node id; also its JWS kid and its NATS subject suffix'),
    role: z.enum(['edge', 'relay', 'gateway']).describe('edge serves ACME, relay countersigns and forwards, gateway calls the CA'),
    dc: z.string().min(1).describe('data center (selects the leaf NATS server from nats.dcs)'),
    segment: z.string().optional().describe('network segment an edge serves'),
    parent: nodeId.optional().describe('the next node upstream; required for edge and relay, absent for the gateway'),
    nats: natsUrl.optional().describe('NATS URL for this node (default: nats.dcs[dc], else nats.hub)'),
    store: z.string().optional().describe('directory of the node store (default <stateDir>/nodes/<id>)'),
    http: hostPort.optional().describe('gateway: HTTP listener for /roots.pem and /health (default 127.0.0.1:8080)'),
    metrics: hostPort.optional().describe('listener for this node’s Prometheus metrics at /metrics (none when absent; the gateway also serves them on http)'),
    publicKeys: z
      .array(z.string().regex(/^[A-Za-z0-9_-]{43}$/, 'an RFC 7638 SHA-256 JWK thumbprint (base64url, 43 characters)'))
      .min(1)
      .optional()
      .describe('pinned signing keys of this node (thumbprints, as `ra-mesh keys list` prints): other keys in the keys folder are refused'),
    policy: policySchema.default({ allowWildcardNames: false }).describe('this node’s issuance policy layer'),
    acme: acmeSchema.optional().describe('ACME server settings (edge only)'),
    scep: scepSchema.optional().describe('SCEP enrollment (RFC 8894) for devices that cannot speak ACME (edge only)'),
    cas: casSchema.optional().describe('CA service (gateway only; default builtin)'),
  })
  .strict();

export const topologySchema = z
  .object({
    mesh: z.string().min(1).describe('name of the mesh'),
    stateDir: z.string().default('.ra-mesh').describe('directory for node stores, keys and NATS data, relative to the topology file'),
    keysDir: z.string().optional().describe('directory of node keys <id>.key.jwk / <id>.pub.jwk (default <stateDir>/keys)'),
    keyReload: duration.default('30s').describe('how often nodes re-read the public keys in keysDir (picks up key rotations)'),
    nats: z
      .object({
        hub: natsUrl.default('nats://127.0.0.1:4222').describe('client URL of the hub NATS server'),
        leafnodeListen: hostPort.default('127.0.0.1:7422').describe('where the hub accepts leaf-node connections'),
        dcs: z.record(z.string(), natsUrl).default({}).describe('client URL of the leaf NATS server of each data center'),
        auth: z
          .enum(['nkey', 'none'])
          .default('nkey')
          .describe('nkey: one nkey per node with subject permissions from the topology, and a password per leaf link; none: an open bus (development only)'),
        credentialsDir: z
          .string()
          .optional()
          .describe('directory of NATS credentials: <node>.nk seeds and leaf-<dc>.pass passwords (default <keysDir>/nats)'),
        tls: z
          .object({
            ca: z.string().describe('PEM CA bundle nodes and leaf servers use to verify NATS servers'),
            cert: z.string().describe('PEM certificate of the NATS servers ra-mesh starts (must name their hosts)'),
            key: z.string().describe('PEM private key of that certificate'),
          })
          .strict()
          .optional()
          .describe('TLS on every client port and leaf link of the NATS servers ra-mesh starts; nodes verify the servers with ca'),
        queue: z
          .object({
            ackWait: duration.default('30s').describe('how long a node may go silent on a message before JetStream delivers it again (a node still working on one sends in-progress acks while it makes progress; after 10 times this without any, or 100 times this in all, the message goes again)'),
            maxAge: duration.default('7d').describe('how long an envelope waits in an outbound stream for its uplink before it is discarded'),
            duplicateWindow: duration.default('2m').describe('window in which a copy stored again under the same Nats-Msg-Id (a JetStream redelivery) is dropped'),
          })
          .strict()
          .default({ ackWait: '30s', maxAge: '7d', duplicateWindow: '2m' })
          .describe('the JetStream streams that carry envelopes up (store-and-forward)'),
      })
      .strict()
      .default({
        hub: 'nats://127.0.0.1:4222',
        leafnodeListen: '127.0.0.1:7422',
        dcs: {},
        auth: 'nkey',
        queue: { ackWait: '30s', maxAge: '7d', duplicateWindow: '2m' },
      })
      .describe('the message bus: a hub server and one leaf server per data center'),
    envelope: z
      .object({
        ttl: duration.default('5m').describe('how long a signed envelope is valid after it is made'),
        maxBytes: z.number().int().min(1024).max(1_048_576).default(65_536).describe('largest envelope a node accepts'),
        algs: z.array(z.enum(['EdDSA', 'ES256'])).min(1).default(['EdDSA', 'ES256']).describe('JWS algorithms accepted on envelopes'),
        clockSkew: duration
          .default('30s')
          .describe('clock difference tolerated between nodes: envelopes are accepted this long after exp and before iat'),
        bundle: z
          .object({
            maxEnvelopes: z
              .number()
              .int()
              .min(1)
              .max(1024)
              .default(64)
              .describe('most requests a relay forwards under one countersignature (1: never bundle)'),
            maxBytes: z.number().int().min(1024).max(1_000_000).default(262_144).describe('largest bundle a relay sends and a node accepts'),
          })
          .strict()
          .default({ maxEnvelopes: 64, maxBytes: 262_144 })
          .describe('bundles: while a relay waits for its server to store one message, what else is ready goes next under one signature'),
      })
      .strict()
      .default({ ttl: '5m', maxBytes: 65_536, algs: ['EdDSA', 'ES256'], clockSkew: '30s', bundle: { maxEnvelopes: 64, maxBytes: 262_144 } })
      .describe('envelope limits'),
    nodes: z.array(nodeSchema).min(1).describe('every RA node of the mesh'),
    segments: z
      .record(
        z.string(),
        z
          .object({
            isolated: z
              .boolean()
              .default(false)
              .describe('no route out of the segment: its edge reaches only the segment and its leaf NATS (ra-mesh compose: an internal network)'),
          })
          .strict(),
      )
      .optional()
      .describe('network segments named by nodes[].segment, for deployment (ra-mesh compose puts each segment on a network of its own)'),
  })
  .strict()
  .superRefine((t, ctx) => {
    const ids = new Map<string, number>();
    t.nodes.forEach((n, i) => {
      if (ids.has(n.id)) ctx.addIssue({ code: 'custom', path: ['nodes', i, 'id'], message: `duplicate node id "${n.id}"` });
      ids.set(n.id, i);
    });
    const gateways = t.nodes.map((n, i) => [n, i] as const).filter(([n]) => n.role === 'gateway');
    if (gateways.length !== 1) {
      ctx.addIssue({ code: 'custom', path: ['nodes'], message: `exactly one node must have role gateway (found ${gateways.length})` });
    }
    t.nodes.forEach((n, i) => {
      if (n.role === 'gateway') {
        if (n.parent !== undefined) ctx.addIssue({ code: 'custom', path: ['nodes', i, 'parent'], message: 'the gateway has no parent' });
      } else if (n.parent === undefined) {
        ctx.addIssue({ code: 'custom', path: ['nodes', i, 'parent'], message: `a ${n.role} needs a parent` });
      } else {
        const pi = ids.get(n.parent);
        if (pi === undefined) {
          ctx.addIssue({ code: 'custom', path: ['nodes', i, 'parent'], message: `unknown node "${n.parent}"` });
        } else if (t.nodes[pi]!.role === 'edge') {
          ctx.addIssue({ code: 'custom', path: ['nodes', i, 'parent'], message: `parent "${n.parent}" is an edge; parents must be relays or the gateway` });
        }
      }
      if (n.acme && n.role !== 'edge') ctx.addIssue({ code: 'custom', path: ['nodes', i, 'acme'], message: 'only edge nodes serve ACME' });
      if (n.scep && n.role !== 'edge') ctx.addIssue({ code: 'custom', path: ['nodes', i, 'scep'], message: 'only edge nodes serve SCEP' });
      if (n.cas && n.role !== 'gateway') ctx.addIssue({ code: 'custom', path: ['nodes', i, 'cas'], message: 'only the gateway calls a CA service' });
      if (n.http && n.role !== 'gateway') ctx.addIssue({ code: 'custom', path: ['nodes', i, 'http'], message: 'only the gateway serves HTTP' });
    });
    // Every chain must end at the gateway: a parent cycle would never get there.
    t.nodes.forEach((n, i) => {
      const seen = new Set<string>();
      let cur: typeof n | undefined = n;
      while (cur && cur.parent !== undefined) {
        if (seen.has(cur.id)) {
          ctx.addIssue({ code: 'custom', path: ['nodes', i, 'parent'], message: `parent chain of "${n.id}" has a cycle` });
          return;
        }
        seen.add(cur.id);
        const pi = ids.get(cur.parent);
        cur = pi === undefined ? undefined : t.nodes[pi];
      }
    });
    const listens = new Map<string, number>();
    t.nodes.forEach((n, i) => {
      if (!n.acme) return;
      const prev = listens.get(n.acme.listen);
      if (prev !== undefined) {
        ctx.addIssue({ code: 'custom', path: ['nodes', i, 'acme', 'listen'], message: `address ${n.acme.listen} is already used by node "${t.nodes[prev]!.id}"` });
      }
      listens.set(n.acme.listen, i);
    });
  });

export type TopologyConfig = z.infer<typeof topologySchema>;
export type NodeConfig = z.infer<typeof nodeSchema>;
export type PolicyConfig = z.infer<typeof policySchema>;
export type AcmeConfig = z.infer<typeof acmeSchema>;
export type ScepConfig = z.infer<typeof scepSchema>;
export type CasConfig = z.infer<typeof casSchema>;
export type CasConfigOf<T extends CasConfig['type']> = Extract<CasConfig, { type: T }>;
export type NodeRole = NodeConfig['role'];

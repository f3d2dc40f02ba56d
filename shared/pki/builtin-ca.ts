// The embedded CA of the gateway (the "builtin" CA service): a root and an intermediate kept in a
// directory, created on first start, and leaf issuance from the intermediate.

import {
  X509Certificate as NodeX509Certificate,
  createHash,
  createPrivateKey,
  createPublicKey,
  KeyObject,
  randomBytes,
  sign as cryptoSign,
  webcrypto,
} from 'node:crypto';
import { link, mkdir, open, readFile, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import {
  AuthorityKeyIdentifierExtension,
  BasicConstraintsExtension,
  Extension as X509Extension,
  ExtendedKeyUsage,
  ExtendedKeyUsageExtension,
  KeyUsageFlags,
  KeyUsagesExtension,
  SubjectKeyIdentifierExtension,
  X509Certificate,
  X509CertificateGenerator,
  X509CrlGenerator,
  type JsonName,
} from './x509.js';
import { RaError } from '../errors/index.js';
import type { Logger } from '../logging/logger.js';
import { parseCsr } from './csr.js';
import { children, oid, readTlv, seq, splitSigned, time, tlv, uint } from './der.js';
import { canonicalIp, ipToBytes } from './ip.js';
import { derToPem, pemBlocks } from './pem.js';

export interface SignRequest {
  csrDer: Uint8Array;
  /** Exactly the DNS names to put in the SAN (already validated by the caller). */
  dnsNames: string[];
  /** Exactly the IP addresses to put in the SAN (already validated by the caller). */
  ipAddresses: string[];
  lifetimeMs: number;
  /** Default: now - 1 minute (clock skew). */
  notBefore?: Date;
  /** When set, a CRL Distribution Points extension (RFC 5280 §4.2.1.13) naming this URL. */
  crlUrl?: string;
}

/** One revoked certificate on a CRL. */
export interface CrlEntry {
  /** Hex serial (as `sign` returns it). */
  serial: string;
  /** RFC 5280 §5.3.1 CRLReason; 0 (unspecified) is left out of the entry, as §5.3.1 recommends. */
  reason: number;
  revokedAt: Date;
}

export interface CrlRequest {
  /** RFC 5280 §5.2.3 cRLNumber: monotonically increasing. */
  number: number;
  thisUpdate: Date;
  nextUpdate: Date;
  entries: CrlEntry[];
}

export interface SignedCertificate {
  /** The leaf, PEM. */
  certificatePem: string;
  /** Leaf + intermediate, PEM concatenated (what ACME serves). */
  chainPem: string;
  /** Hex, lower-case. */
  serial: string;
  notBefore: Date;
  notAfter: Date;
}

export interface BuiltinCaOptions {
  /** Used in the CA subject names when the CA is created. Default "ra-mesh". */
  name?: string;
  log?: Logger;
}

export const CA_FILES = {
  root: 'root.pem',
  rootKey: 'root.key.pem',
  intermediate: 'intermediate.pem',
  intermediateKey: 'intermediate.key.pem',
} as const;

const ORGANIZATION = 'ra-mesh';
const ROOT_YEARS = 10;
const INTERMEDIATE_YEARS = 5;
/** CA certificates start this far in the past, so leaves back-dated for clock skew nest inside. */
const CA_BACKDATE_MS = 60 * 60 * 1000;
const DEFAULT_SKEW_MS = 60 * 1000;
/** RFC 5280 ub-common-name: a longer name cannot be the CN and stays in the SAN only. */
const MAX_CN_LENGTH = 64;

// Node's WebCrypto, passed to every @peculiar/x509 call (no global provider state).
const crypto = webcrypto;
type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;
type EcdsaParams = webcrypto.EcdsaParams;
type EcKeyImportParams = webcrypto.EcKeyImportParams;

const EC_SIGNING: Record<string, { namedCurve: string; hash: string }> = {
  prime256v1: { namedCurve: 'P-256', hash: 'SHA-256' },
  secp384r1: { namedCurve: 'P-384', hash: 'SHA-384' },
  secp521r1: { namedCurve: 'P-521', hash: 'SHA-512' },
};

interface CaKey {
  /** For @peculiar/x509 (CRLs). */
  key: CryptoKey;
  hash: string;
  /** For node:crypto sign (leaf certificates). */
  keyObject: KeyObject;
  /** node:crypto digest name of `hash`. */
  digest: string;
}

/** ecdsa-with-SHA256/384/512 (RFC 5758 §3.2: no parameters). */
const ECDSA_SIG_OID: Record<string, string> = { 'SHA-256': '1.2.840.10045.4.3.2', 'SHA-384': '1.2.840.10045.4.3.3', 'SHA-512': '1.2.840.10045.4.3.4' };
const BOOLEAN_TRUE = new Uint8Array([0x01, 0x01, 0xff]);

/** X.520 DirectoryString as @peculiar/x509 and most CAs choose it: PrintableString when it fits, else UTF8String. */
function directoryString(s: string): Uint8Array {
  return /^[A-Za-z0-9 '()+,\-./:=?]*$/.test(s) ? tlv(0x13, Buffer.from(s, 'latin1')) : tlv(0x0c, Buffer.from(s, 'utf8'));
}


export class BuiltinCa {
  readonly #rootPem: string;
  readonly #rootDer: Uint8Array;
  readonly #intermediatePem: string;
  readonly #intermediate: X509Certificate;
  readonly #intermediateKey: CaKey;
  readonly #intermediateKeyId: string;
  /** The intermediate's subject Name DER, as written in its certificate: every leaf's issuer. */
  readonly #intermediateSubject: Uint8Array;
  readonly #signatureAlgorithm: Uint8Array;

  private constructor(rootDer: Uint8Array, intermediateDer: Uint8Array, intermediateKey: CaKey) {
    this.#rootDer = rootDer;
    this.#rootPem = derToPem(rootDer, 'CERTIFICATE');
    this.#intermediatePem = derToPem(intermediateDer, 'CERTIFICATE');
    this.#intermediate = new X509Certificate(intermediateDer);
    this.#intermediateKey = intermediateKey;
    const ski = this.#intermediate.getExtension(SubjectKeyIdentifierExtension);
    this.#intermediateKeyId = ski?.keyId ?? keyIdentifier(new Uint8Array(this.#intermediate.publicKey.rawData));
    // RFC 5280 §4.1.2.4: the issuer field is the issuing CA's subject, byte for byte.
    const tbs = splitSigned(intermediateDer).tbs;
    const fields = children(tbs, readTlv(tbs, 0));
    const subject = fields[fields[0]!.tag === 0xa0 ? 5 : 4]!;
    this.#intermediateSubject = tbs.slice(subject.start, subject.end);
    this.#signatureAlgorithm = seq(oid(ECDSA_SIG_OID[intermediateKey.hash]!));
  }

  /**
   * Loads the CA kept in `dir`, or creates it there when the directory holds none of its files.
   * Throws (never regenerates) when only some files exist or they do not form a valid CA:
   * a new CA would orphan every certificate already issued.
   */
  static async loadOrCreate(dir: string, opts: BuiltinCaOptions = {}): Promise<BuiltinCa> {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const paths = Object.values(CA_FILES).map((f) => join(dir, f));
    const present = await Promise.all(paths.map(exists));
    let ca: BuiltinCa;
    let event: string;
    if (present.every((p) => !p)) {
      ca = await BuiltinCa.create(dir, opts.name ?? 'ra-mesh');
      event = 'builtin CA created';
    } else if (present.every((p) => p)) {
      ca = await BuiltinCa.load(dir, opts.log);
      event = 'builtin CA loaded';
    } else {
      const missing = Object.values(CA_FILES).filter((_, i) => !present[i]);
      throw new Error(
        `builtin CA store ${dir} is incomplete (missing ${missing.join(', ')}); refusing to create a new CA, which would ` +
          'orphan the certificates already issued. Restore the missing files, or remove the directory to start a new CA.',
      );
    }
    opts.log?.info(
      { rootFingerprint: ca.rootFingerprint(), dir, intermediateNotAfter: ca.#intermediate.notAfter.toISOString() },
      event,
    );
    return ca;
  }

  rootPem(): string {
    return this.#rootPem;
  }

  intermediatePem(): string {
    return this.#intermediatePem;
  }

  /** SHA-256 of the root certificate DER, upper-case hex with colons. */
  rootFingerprint(): string {
    return fingerprint(this.#rootDer);
  }

  /**
   * Issues a leaf signed by the intermediate for the public key of `req.csrDer`, naming exactly
   * `req.dnsNames` and `req.ipAddresses` (nothing else from the CSR is used). The CSR signature is
   * checked again (RaError badCSR). notAfter = notBefore + lifetimeMs, cut at the intermediate's notAfter.
   */
  async sign(req: SignRequest): Promise<SignedCertificate> {
    const csr = await parseCsr(req.csrDer);

    const dnsNames = unique(req.dnsNames.map((n) => n.toLowerCase()));
    for (const n of dnsNames) {
      if (!/^[\x21-\x7e]{1,253}$/.test(n)) throw new RaError('rejectedIdentifier', { detail: `"${n}" cannot be a DNS name in a certificate` });
    }
    const ipAddresses = unique(
      req.ipAddresses.map((ip) => {
        const c = canonicalIp(ip);
        if (c === null) throw new RaError('rejectedIdentifier', { detail: `"${ip}" is not an IP address` });
        return c;
      }),
    );
    if (dnsNames.length + ipAddresses.length === 0) {
      throw new RaError('rejectedIdentifier', { detail: 'a certificate needs at least one DNS name or IP address' });
    }
    if (!Number.isFinite(req.lifetimeMs) || req.lifetimeMs <= 0) {
      throw new RaError('serverInternal', { detail: `invalid certificate lifetime ${req.lifetimeMs} ms` });
    }

    const inter = this.#intermediate;
    // X.509 times have whole seconds: start on a second so notAfter - notBefore is the lifetime.
    const requestedStart = req.notBefore?.getTime() ?? Date.now() - DEFAULT_SKEW_MS;
    if (!Number.isFinite(requestedStart)) throw new RaError('serverInternal', { detail: 'invalid notBefore' });
    const start = Math.max(Math.floor(requestedStart / 1000) * 1000, inter.notBefore.getTime());
    const end = Math.min(start + req.lifetimeMs, inter.notAfter.getTime());
    if (end <= start) {
      throw new RaError('serverInternal', { detail: 'the builtin CA intermediate certificate has expired' });
    }

    const cn = [...dnsNames, ...ipAddresses].find((n) => n.length <= MAX_CN_LENGTH);
    // RFC 5280 §4.2.1.3: keyEncipherment only for RSA keys (key transport); digitalSignature always.
    const rsaKey = csr.keyAlgorithm === 'RSA' && csr.keyDescription.startsWith('RSA ');
    const serial = randomSerial();
    const notBefore = new Date(start);
    const notAfter = new Date(end);
    const ext = (id: string, critical: boolean, value: Uint8Array): Uint8Array =>
      seq(oid(id), ...(critical ? [BOOLEAN_TRUE] : []), tlv(0x04, value));
    const extensions: Uint8Array[] = [
      // RFC 5280 §4.2.1.9: an end-entity certificate; cA FALSE is the DEFAULT and so not encoded.
      ext('2.5.29.19', true, seq()),
      // KeyUsage BIT STRING, trailing zero bits dropped (X.690 §11.2.2): digitalSignature (0) [+ keyEncipherment (2)].
      ext('2.5.29.15', true, rsaKey ? new Uint8Array([0x03, 0x02, 0x05, 0xa0]) : new Uint8Array([0x03, 0x02, 0x07, 0x80])),
      ext('2.5.29.37', false, seq(oid('1.3.6.1.5.5.7.3.1'), oid('1.3.6.1.5.5.7.3.2'))),
      ext('2.5.29.14', false, tlv(0x04, Buffer.from(keyIdentifier(csr.publicKeySpki), 'hex'))),
      ext('2.5.29.35', false, seq(tlv(0x80, Buffer.from(this.#intermediateKeyId, 'hex')))),
      // RFC 5280 §4.2.1.6: with an empty subject the SAN must be critical.
      ext(
        '2.5.29.17',
        cn === undefined,
        seq(
          ...dnsNames.map((n) => tlv(0x82, Buffer.from(n, 'latin1'))),
          // canonicalIp accepted each address above, so it has its 4 or 16 bytes.
          ...ipAddresses.map((ip) => tlv(0x87, ipToBytes(ip)!)),
        ),
      ),
    ];
    // RFC 5280 §4.2.1.13: DistributionPoint { distributionPoint [0] { fullName [0] { URI [6] } } }.
    if (req.crlUrl) extensions.push(ext('2.5.29.31', false, seq(seq(tlv(0xa0, tlv(0xa0, tlv(0x86, Buffer.from(req.crlUrl, 'utf8'))))))));

    // RFC 5280 §4.1: TBSCertificate, v3.
    const tbs = seq(
      tlv(0xa0, tlv(0x02, new Uint8Array([2]))),
      uint(Buffer.from(serial, 'hex')),
      this.#signatureAlgorithm,
      this.#intermediateSubject,
      seq(time(notBefore), time(notAfter)),
      cn === undefined ? seq() : seq(tlv(0x31, seq(oid('2.5.4.3'), directoryString(cn)))),
      csr.publicKeySpki,
      tlv(0xa3, seq(...extensions)),
    );
    let signature: Buffer;
    try {
      // Synchronous (~0.06 ms for P-256): the callback form's thread-pool round trip cost more than the signature.
      signature = cryptoSign(this.#intermediateKey.digest, tbs, { key: this.#intermediateKey.keyObject, dsaEncoding: 'der' });
    } catch (e) {
      throw new RaError('serverInternal', { detail: 'the builtin CA could not sign the certificate', cause: e });
    }
    const certDer = seq(tbs, this.#signatureAlgorithm, tlv(0x03, new Uint8Array([0]), signature));
    const certificatePem = derToPem(certDer, 'CERTIFICATE');
    return {
      certificatePem,
      chainPem: certificatePem + this.#intermediatePem,
      serial,
      notBefore,
      notAfter,
    };
  }

  /**
   * A CRL (RFC 5280 §5) signed by the intermediate, which issues every leaf: version 2, the
   * intermediate's subject as issuer, thisUpdate/nextUpdate, the CRL number and authority key
   * identifier extensions (§5.2.1, §5.2.3), one entry per revoked serial with its reason code (§5.3.1).
   */
  async signCrl(req: CrlRequest): Promise<Uint8Array> {
    if (!Number.isSafeInteger(req.number) || req.number < 1) throw new RaError('serverInternal', { detail: `invalid CRL number ${req.number}` });
    try {
      const crl = await X509CrlGenerator.create(
        {
          issuer: this.#intermediate.subjectName,
          thisUpdate: new Date(Math.floor(req.thisUpdate.getTime() / 1000) * 1000),
          nextUpdate: new Date(Math.floor(req.nextUpdate.getTime() / 1000) * 1000),
          signingKey: this.#intermediateKey.key,
          signingAlgorithm: { name: 'ECDSA', hash: { name: this.#intermediateKey.hash } } as EcdsaParams,
          extensions: [
            new AuthorityKeyIdentifierExtension(this.#intermediateKeyId, false),
            new X509Extension('2.5.29.20', false, derInteger(req.number)),
          ],
          entries: req.entries.map((e) => ({
            serialNumber: e.serial,
            revocationDate: new Date(Math.floor(e.revokedAt.getTime() / 1000) * 1000),
            ...(e.reason !== 0 ? { reason: e.reason } : {}),
          })),
        },
        crypto,
      );
      return new Uint8Array(crl.rawData);
    } catch (e) {
      throw new RaError('serverInternal', { detail: 'the builtin CA could not sign the CRL', cause: e });
    }
  }

  private static async create(dir: string, name: string): Promise<BuiltinCa> {
    const ecdsa = (namedCurve: string) => ({ name: 'ECDSA', namedCurve });
    const rootKeys = (await crypto.subtle.generateKey(ecdsa('P-384'), true, ['sign', 'verify'])) as CryptoKeyPair;
    const interKeys = (await crypto.subtle.generateKey(ecdsa('P-256'), true, ['sign', 'verify'])) as CryptoKeyPair;

    const notBefore = new Date(Math.floor((Date.now() - CA_BACKDATE_MS) / 1000) * 1000);
    const rootSubject: JsonName = [{ O: [ORGANIZATION] }, { CN: [`${name} Root CA`] }];
    const interSubject: JsonName = [{ O: [ORGANIZATION] }, { CN: [`${name} Intermediate CA`] }];
    const rootSpki = new Uint8Array(await crypto.subtle.exportKey('spki', rootKeys.publicKey));
    const interSpki = new Uint8Array(await crypto.subtle.exportKey('spki', interKeys.publicKey));
    const rootKeyId = keyIdentifier(rootSpki);

    const root = await X509CertificateGenerator.create(
      {
        serialNumber: randomSerial(),
        subject: rootSubject,
        issuer: rootSubject,
        notBefore,
        notAfter: addYears(notBefore, ROOT_YEARS),
        publicKey: rootSpki,
        signingKey: rootKeys.privateKey,
        signingAlgorithm: { name: 'ECDSA', hash: { name: 'SHA-384' } } as EcdsaParams,
        extensions: [
          new BasicConstraintsExtension(true, 1, true),
          new KeyUsagesExtension(KeyUsageFlags.keyCertSign | KeyUsageFlags.cRLSign, true),
          new SubjectKeyIdentifierExtension(rootKeyId, false),
        ],
      },
      crypto,
    );
    const intermediate = await X509CertificateGenerator.create(
      {
        serialNumber: randomSerial(),
        subject: interSubject,
        issuer: root.subjectName,
        notBefore,
        notAfter: addYears(notBefore, INTERMEDIATE_YEARS),
        publicKey: interSpki,
        signingKey: rootKeys.privateKey,
        signingAlgorithm: { name: 'ECDSA', hash: { name: 'SHA-384' } } as EcdsaParams,
        extensions: [
          new BasicConstraintsExtension(true, 0, true),
          // digitalSignature too, so the intermediate can sign OCSP responses later.
          new KeyUsagesExtension(KeyUsageFlags.digitalSignature | KeyUsageFlags.keyCertSign | KeyUsageFlags.cRLSign, true),
          new ExtendedKeyUsageExtension([ExtendedKeyUsage.serverAuth, ExtendedKeyUsage.clientAuth], false),
          new SubjectKeyIdentifierExtension(keyIdentifier(interSpki), false),
          new AuthorityKeyIdentifierExtension(rootKeyId, false),
        ],
      },
      crypto,
    );

    const rootDer = new Uint8Array(root.rawData);
    const interDer = new Uint8Array(intermediate.rawData);
    const pkcs8 = async (k: CryptoKey) => derToPem(new Uint8Array(await crypto.subtle.exportKey('pkcs8', k)), 'PRIVATE KEY');
    // Keys first: a crash part-way leaves an incomplete store, which the next start refuses loudly.
    await writeExclusive(join(dir, CA_FILES.rootKey), await pkcs8(rootKeys.privateKey), 0o600);
    await writeExclusive(join(dir, CA_FILES.intermediateKey), await pkcs8(interKeys.privateKey), 0o600);
    await writeExclusive(join(dir, CA_FILES.root), derToPem(rootDer, 'CERTIFICATE'), 0o644);
    await writeExclusive(join(dir, CA_FILES.intermediate), derToPem(interDer, 'CERTIFICATE'), 0o644);

    const interKeyObject = KeyObject.from(interKeys.privateKey);
    return new BuiltinCa(rootDer, interDer, { key: await importSigningKey(interKeys.privateKey), hash: 'SHA-256', keyObject: interKeyObject, digest: 'sha256' });
  }

  private static async load(dir: string, log?: Logger): Promise<BuiltinCa> {
    const fail = (what: string, cause?: unknown): never => {
      throw new Error(`builtin CA store ${dir}: ${what}`, cause === undefined ? undefined : { cause });
    };
    const read = async (file: string): Promise<string> => {
      const path = join(dir, file);
      if (file.endsWith('.key.pem')) {
        const mode = (await stat(path)).mode & 0o777;
        if (mode & 0o077) log?.warn({ path, mode: mode.toString(8) }, 'builtin CA key file is readable by group or others; it should be mode 0600');
      }
      return readFile(path, 'utf8');
    };
    const certDer = (pem: string, file: string): Uint8Array => {
      let blocks;
      try {
        blocks = pemBlocks(pem).filter((b) => b.label === 'CERTIFICATE');
      } catch (e) {
        return fail(`${file} is not valid PEM`, e);
      }
      if (blocks.length !== 1) fail(`${file} must hold exactly one CERTIFICATE (found ${blocks.length})`);
      return blocks[0]!.der;
    };
    const privateKey = (pem: string, file: string): KeyObject => {
      try {
        return createPrivateKey({ key: pem, format: 'pem' });
      } catch (e) {
        return fail(`${file} is not a valid private key`, e);
      }
    };
    const nodeCert = (der: Uint8Array, file: string): NodeX509Certificate => {
      try {
        return new NodeX509Certificate(der);
      } catch (e) {
        return fail(`${file} is not a valid certificate`, e);
      }
    };

    const rootDer = certDer(await read(CA_FILES.root), CA_FILES.root);
    const interDer = certDer(await read(CA_FILES.intermediate), CA_FILES.intermediate);
    const rootKey = privateKey(await read(CA_FILES.rootKey), CA_FILES.rootKey);
    const interKey = privateKey(await read(CA_FILES.intermediateKey), CA_FILES.intermediateKey);
    const root = nodeCert(rootDer, CA_FILES.root);
    const inter = nodeCert(interDer, CA_FILES.intermediate);

    if (!root.ca) fail(`${CA_FILES.root} is not a CA certificate`);
    if (!inter.ca) fail(`${CA_FILES.intermediate} is not a CA certificate`);
    if (!root.verify(root.publicKey)) fail(`${CA_FILES.root} is not a valid self-signed certificate`);
    if (!inter.checkIssued(root) || !inter.verify(root.publicKey)) fail(`${CA_FILES.intermediate} is not issued by ${CA_FILES.root}`);
    if (!sameKey(rootKey, root.publicKey)) fail(`${CA_FILES.rootKey} does not match ${CA_FILES.root}`);
    if (!sameKey(interKey, inter.publicKey)) fail(`${CA_FILES.intermediateKey} does not match ${CA_FILES.intermediate}`);

    const curve = interKey.asymmetricKeyType === 'ec' ? EC_SIGNING[interKey.asymmetricKeyDetails?.namedCurve ?? ''] : undefined;
    if (!curve) fail(`${CA_FILES.intermediateKey} must be an EC P-256, P-384 or P-521 key`);
    let key: CryptoKey;
    try {
      const der = interKey.export({ type: 'pkcs8', format: 'der' });
      key = await crypto.subtle.importKey('pkcs8', der, { name: 'ECDSA', namedCurve: curve!.namedCurve }, false, ['sign']);
    } catch (e) {
      return fail(`${CA_FILES.intermediateKey} cannot be used for signing`, e);
    }
    if (new Date(inter.validTo).getTime() <= Date.now()) {
      log?.warn({ notAfter: inter.validTo }, 'builtin CA intermediate certificate has expired; issuance will fail');
    }
    return new BuiltinCa(rootDer, interDer, { key, hash: curve!.hash, keyObject: interKey, digest: curve!.hash.replace('-', '').toLowerCase() });
  }
}

/** SHA-256 fingerprint of a DER blob: upper-case hex with colons. */
export function fingerprint(der: Uint8Array): string {
  return createHash('sha256').update(der).digest('hex').toUpperCase().match(/../g)!.join(':');
}

/**
 * A certificate serial: 16 bytes from the CSPRNG with the top bit cleared, so it is positive, and a
 * non-zero first byte, so its DER INTEGER is exactly 16 bytes (≥ 64 bits of entropy: CA/B Forum
 * BR 7.1). Lower-case hex.
 */
export function randomSerial(): string {
  for (;;) {
    const b = randomBytes(16);
    b[0]! &= 0x7f;
    if (b[0] !== 0) return b.toString('hex');
  }
}

/** RFC 5280 §4.2.1.2 method 1: SHA-1 of the subjectPublicKey BIT STRING value, hex. */
function keyIdentifier(spki: Uint8Array): string {
  const outer = readTlv(spki, 0);
  const alg = readTlv(spki, outer.contentStart);
  const bits = readTlv(spki, alg.end);
  return createHash('sha1')
    .update(spki.subarray(bits.contentStart + 1, bits.end))
    .digest('hex');
}

/** DER INTEGER of a non-negative safe integer (minimal two's complement). */
function derInteger(n: number): Uint8Array {
  const bytes: number[] = [];
  let v = n;
  do {
    bytes.unshift(v % 256);
    v = Math.floor(v / 256);
  } while (v > 0);
  if (bytes[0]! & 0x80) bytes.unshift(0);
  return new Uint8Array([0x02, bytes.length, ...bytes]);
}

function sameKey(priv: KeyObject, pub: KeyObject): boolean {
  const a = createPublicKey(priv).export({ type: 'spki', format: 'der' });
  const b = pub.export({ type: 'spki', format: 'der' });
  return a.equals(b);
}

/** Re-import a generated key as non-extractable for signing. */
async function importSigningKey(k: CryptoKey): Promise<CryptoKey> {
  const der = await crypto.subtle.exportKey('pkcs8', k);
  return crypto.subtle.importKey('pkcs8', der, k.algorithm as EcKeyImportParams, false, ['sign']);
}

function addYears(d: Date, years: number): Date {
  const r = new Date(d.getTime());
  r.setUTCFullYear(r.getUTCFullYear() + years);
  return r;
}

function unique(xs: string[]): string[] {
  return [...new Set(xs)];
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw e;
  }
}

/**
 * Writes `data` to `path` with `mode`, durably and without ever replacing an existing file: the
 * data goes to a temporary file that is fsync'ed and then hard-linked into place (link fails if
 * `path` exists, e.g. when two processes create the same store at once).
 */
async function writeExclusive(path: string, data: string, mode: number): Promise<void> {
  const tmp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  const fh = await open(tmp, 'wx', mode);
  try {
    await fh.writeFile(data, 'utf8');
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await link(tmp, path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') {
      throw new Error(`${path} appeared while the builtin CA was being created (another process creating the same store?)`, { cause: e });
    }
    throw e;
  } finally {
    await unlink(tmp).catch(() => undefined);
  }
}

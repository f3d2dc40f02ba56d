import { createHash, createPublicKey, generateKeyPairSync, KeyObject, randomBytes, webcrypto } from 'node:crypto';
import { request } from 'node:http';
import { x509 } from '../../shared/pki/index.js';
import {
  decryptEnveloped,
  encryptEnveloped,
  octetString,
  parseSignedMessage,
  printableString,
  readOctets,
  readString,
  signedDataCertificates,
  signMessage,
  tlv,
  type ContentCipher,
} from '../../services/edge/scep/cms.js';
import { FAIL_INFO, MESSAGE_TYPE, PKI_STATUS, SCEP_OID, type FailInfo, type MessageType, type PkiStatus } from '../../services/edge/scep/messages.js';

// TestScepDevice: a small SCEP client of ra-mesh's own (RFC 8894), on the same CMS code as the edge
// (services/edge/scep/cms.ts), for what Debian's micromdm scepclient 2.1.0 cannot do: CertPoll
// (GetCertInitial) instead of resending the request every 30 s, a chosen transactionID, AES-256 and
// SHA-256 only (no DES, no SHA-1), and hand-made bad messages. The real device in the tests is
// scepclient; this one covers the rest. Keys are RSA (SCEP's key transport needs RSA).

const RSA_ALG = { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256', publicExponent: new Uint8Array([1, 0, 1]), modulusLength: 2048 } as const;

export interface CertRepReply {
  status: PkiStatus;
  failInfo?: FailInfo;
  failText?: string;
  /** SUCCESS: the certificates of the reply (leaf first). */
  certificates?: Uint8Array[];
  transactionId: string;
}

export interface DeviceIdentity {
  /** The device key (PKCS #8 KeyObject) and the same key for @peculiar/x509. */
  key: KeyObject;
  cryptoKeys: webcrypto.CryptoKeyPair;
  /** The certificate that signs requests: self-signed for PKCSReq, the issued one for RenewalReq. */
  cert: Uint8Array;
}

function post(url: string, body: Uint8Array): Promise<{ status: number; type: string; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    u.searchParams.set('operation', 'PKIOperation');
    const req = request(u, { method: 'POST', headers: { 'content-type': 'application/x-pki-message' } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type'] ?? ''), body: Buffer.concat(chunks) }));
    });
    req.setTimeout(30_000, () => req.destroy(new Error('SCEP request timed out')));
    req.on('error', reject);
    req.end(Buffer.from(body));
  });
}

/** RFC 8894 §4.3: PKIOperation by GET, the pkiMessage base64 (standard alphabet) in "message". */
async function getPkiOperation(url: string, der: Uint8Array): Promise<{ status: number; type: string; body: Buffer }> {
  const u = new URL(url);
  u.searchParams.set('operation', 'PKIOperation');
  u.searchParams.set('message', Buffer.from(der).toString('base64'));
  const res = await fetch(u, { signal: AbortSignal.timeout(30_000) });
  return { status: res.status, type: res.headers.get('content-type') ?? '', body: Buffer.from(await res.arrayBuffer()) };
}

export async function scepGet(url: string, operation: string): Promise<{ status: number; type: string; body: Buffer }> {
  const u = new URL(url);
  u.searchParams.set('operation', operation);
  const res = await fetch(u, { signal: AbortSignal.timeout(30_000) });
  return { status: res.status, type: res.headers.get('content-type') ?? '', body: Buffer.from(await res.arrayBuffer()) };
}

export class TestScepDevice {
  /** The RA certificate (GetCACert, chosen by its key usage keyEncipherment). */
  ra?: Uint8Array;
  caCerts: Uint8Array[] = [];

  constructor(readonly url: string) {}

  async init(): Promise<this> {
    const res = await scepGet(this.url, 'GetCACert');
    if (res.status !== 200) throw new Error(`GetCACert answered ${res.status}: ${res.body.toString()}`);
    this.caCerts = signedDataCertificates(new Uint8Array(res.body));
    this.ra = this.caCerts.find((c) => {
      const ku = new x509.X509Certificate(c).getExtension(x509.KeyUsagesExtension);
      return ku !== null && (ku.usages & x509.KeyUsageFlags.keyEncipherment) !== 0;
    });
    if (!this.ra) throw new Error('GetCACert has no RA certificate (keyEncipherment)');
    return this;
  }

  /** A fresh RSA key with a self-signed certificate (RFC 8894 §2.3), as a device makes before PKCSReq. */
  static async newIdentity(cn = 'scep device'): Promise<DeviceIdentity> {
    const cryptoKeys = (await webcrypto.subtle.generateKey(RSA_ALG, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
    const self = await x509.X509CertificateGenerator.createSelfSigned({
      serialNumber: randomBytes(8).toString('hex').replace(/^[89a-f]/, '1'),
      name: `CN=${cn}`,
      notBefore: new Date(Date.now() - 60_000),
      notAfter: new Date(Date.now() + 86_400_000),
      keys: cryptoKeys,
      signingAlgorithm: RSA_ALG,
    });
    return { key: KeyObject.from(cryptoKeys.privateKey), cryptoKeys, cert: new Uint8Array(self.rawData) };
  }

  /** Another RSA key pair (to build mismatched requests). */
  static otherKey(): KeyObject {
    return generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
  }

  /** A PKCS #10 request with a CN, optional DNS subjectAltNames and an optional challengePassword. */
  static async csr(id: DeviceIdentity, opts: { cn: string; dns?: string[]; challenge?: string }): Promise<Uint8Array> {
    const csr = await x509.Pkcs10CertificateRequestGenerator.create({
      name: `CN=${opts.cn}`,
      keys: id.cryptoKeys,
      signingAlgorithm: RSA_ALG,
      extensions: opts.dns ? [new x509.SubjectAlternativeNameExtension(opts.dns.map((value) => ({ type: 'dns' as const, value })))] : [],
      attributes: opts.challenge ? [new x509.ChallengePasswordAttribute(opts.challenge)] : [],
    });
    return new Uint8Array(csr.rawData);
  }

  /** The RFC 8894 transactionID a device derives from its key (SHA-1 of the public key, as micromdm does), or any. */
  static transactionIdOf(id: DeviceIdentity): string {
    return createHash('sha1').update(createPublicKey(id.key).export({ type: 'spki', format: 'der' })).digest('base64');
  }

  /** Sends one pkiMessage and reads the CertRep (its signature by the RA is verified). */
  async send(
    type: MessageType,
    messageData: Uint8Array,
    id: DeviceIdentity,
    opts: { transactionId?: string; cipher?: ContentCipher; recipient?: Uint8Array; tamper?: (der: Uint8Array) => Uint8Array; get?: boolean } = {},
  ): Promise<CertRepReply & { http: number }> {
    const transactionId = opts.transactionId ?? TestScepDevice.transactionIdOf(id);
    const nonce = randomBytes(16);
    const enveloped = encryptEnveloped(messageData, opts.recipient ?? this.ra!, opts.cipher ?? 'aes-256-cbc');
    let der = signMessage({
      content: enveloped,
      attributes: [
        [SCEP_OID.transactionID, printableString(transactionId)],
        [SCEP_OID.messageType, printableString(type)],
        [SCEP_OID.senderNonce, octetString(nonce)],
      ],
      signerCert: id.cert,
      signerKey: id.key,
    });
    if (opts.tamper) der = opts.tamper(der);
    const res = opts.get ? await getPkiOperation(this.url, der) : await post(this.url, der);
    if (res.status !== 200) return { http: res.status, status: 'FAILURE', transactionId, failText: res.body.toString() };
    if (!res.type.startsWith('application/x-pki-message')) throw new Error(`PKIOperation answered ${res.type}`);
    const reply = parseSignedMessage(new Uint8Array(res.body), { allowSha1: false });
    if (!Buffer.from(reply.signer.der).equals(Buffer.from(this.ra!))) throw new Error('the CertRep is not signed by the RA certificate of GetCACert');
    const attr = (oid: string) => reply.attributes.get(oid)?.[0];
    if (readString(attr(SCEP_OID.messageType)!) !== MESSAGE_TYPE.CertRep) throw new Error('not a CertRep');
    if (readString(attr(SCEP_OID.transactionID)!) !== transactionId) throw new Error('the CertRep is for another transaction');
    // RFC 8894 §3.2.1.5: the recipientNonce is our senderNonce.
    if (!Buffer.from(readOctets(attr(SCEP_OID.recipientNonce)!)).equals(nonce)) throw new Error('recipientNonce is not our senderNonce');
    const statusCode = readString(attr(SCEP_OID.pkiStatus)!);
    const status = (Object.entries(PKI_STATUS).find(([, v]) => v === statusCode)?.[0] ?? 'FAILURE') as PkiStatus;
    const out: CertRepReply & { http: number } = { http: 200, status, transactionId };
    if (status === 'FAILURE') {
      const fi = readString(attr(SCEP_OID.failInfo)!);
      out.failInfo = Object.entries(FAIL_INFO).find(([, v]) => v === fi)?.[0] as FailInfo;
      const text = attr(SCEP_OID.failInfoText);
      if (text) out.failText = readString(text);
    }
    if (status === 'SUCCESS') {
      const { plaintext } = decryptEnveloped(reply.content!, [{ cert: id.cert, key: id.key }], { allowDes: false });
      out.certificates = signedDataCertificates(plaintext);
    }
    return out;
  }

  /** RFC 8894 §3.3.3 CertPoll: IssuerAndSubject of the request. */
  async certPoll(id: DeviceIdentity, transactionId: string, subjectCn: string): Promise<CertRepReply & { http: number }> {
    const issuer = new x509.X509Certificate(this.ra!).issuerName;
    const subject = new x509.Name(`CN=${subjectCn}`);
    const body = tlv(0x30, Buffer.concat([new Uint8Array(issuer.toArrayBuffer()), new Uint8Array(subject.toArrayBuffer())]));
    return this.send(MESSAGE_TYPE.CertPoll, body, id, { transactionId });
  }
}

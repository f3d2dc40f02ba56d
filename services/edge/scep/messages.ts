import { randomBytes, type KeyObject } from 'node:crypto';
import {
  CmsError,
  decryptEnveloped,
  degenerateCertificates,
  encryptEnveloped,
  octetString,
  parseSignedMessage,
  peekSignedAttributes,
  printableString,
  readOctets,
  readString,
  signMessage,
  tlv,
  type CertInfo,
  type ContentCipher,
  type Recipient,
} from './cms.js';

// SCEP pkiMessages (RFC 8894 §3.2, §3.3): the signed attributes, the request types, and CertRep.

/** RFC 8894 §3.2.1: id-VeriSign 113733 pki 1 attributes 9. */
export const SCEP_OID = {
  messageType: '2.16.840.1.113733.1.9.2',
  pkiStatus: '2.16.840.1.113733.1.9.3',
  failInfo: '2.16.840.1.113733.1.9.4',
  senderNonce: '2.16.840.1.113733.1.9.5',
  recipientNonce: '2.16.840.1.113733.1.9.6',
  transactionID: '2.16.840.1.113733.1.9.7',
  /** RFC 8894 §3.2.1.4: id-scep-failInfoText (id-pkix 24 1), UTF8String. */
  failInfoText: '1.3.6.1.5.5.7.24.1',
} as const;

/** RFC 8894 §3.2.1.2 messageType (PrintableString of the decimal number). */
export const MESSAGE_TYPE = {
  CertRep: '3',
  RenewalReq: '17',
  UpdateReq: '18',
  PKCSReq: '19',
  CertPoll: '20',
  GetCert: '21',
  GetCRL: '22',
} as const;
export type MessageType = (typeof MESSAGE_TYPE)[keyof typeof MESSAGE_TYPE];

/** RFC 8894 §3.2.1.3 pkiStatus. */
export const PKI_STATUS = { SUCCESS: '0', FAILURE: '2', PENDING: '3' } as const;
export type PkiStatus = keyof typeof PKI_STATUS;

/** RFC 8894 §3.2.1.4 failInfo. */
export const FAIL_INFO = { badAlg: '0', badMessageCheck: '1', badRequest: '2', badTime: '3', badCertId: '4' } as const;
export type FailInfo = keyof typeof FAIL_INFO;

const NAMES: Record<string, string> = Object.fromEntries(Object.entries(MESSAGE_TYPE).map(([k, v]) => [v, k]));

export function messageTypeName(t: string): string {
  return NAMES[t] ?? `unknown (${t})`;
}

export interface PkiRequest {
  messageType: MessageType;
  transactionId: string;
  senderNonce: Uint8Array;
  /** The certificate that signed the message (self-signed for PKCSReq, the existing one for RenewalReq). */
  signer: CertInfo;
  /** The decrypted messageData: a PKCS #10 request, IssuerAndSubject (CertPoll) or IssuerAndSerialNumber. */
  messageData: Uint8Array;
  /** Content encryption the client used (its reply is encrypted alike, never with single DES). */
  cipher: string;
  /** Hash of the message signature. */
  digest: string;
}

/** Parses, verifies and decrypts a pkiMessage (RFC 8894 §3.2): SignedData around the pkcsPKIEnvelope. */
export function parsePkiRequest(der: Uint8Array, ra: Recipient[], opts: { legacyCrypto: boolean }): PkiRequest {
  let msg: ReturnType<typeof parseSignedMessage>;
  try {
    msg = parseSignedMessage(der, { allowSha1: opts.legacyCrypto });
  } catch (e) {
    // RFC 8894 §3.3.2.2: an algorithm the server does not accept is answered by FAILURE badAlg.
    const attrs = e instanceof CmsError && e.failInfo === 'badAlg' ? peekSignedAttributes(der) : undefined;
    const tid = attrs?.get(SCEP_OID.transactionID)?.[0];
    const nonce = attrs?.get(SCEP_OID.senderNonce)?.[0];
    if (tid && nonce) {
      let context: PkiRequestError['context'] | undefined;
      try {
        context = { transactionId: readString(tid), senderNonce: readOctets(nonce) };
      } catch {
        context = undefined;
      }
      if (context && context.transactionId.length > 0 && context.transactionId.length <= 256) throw new PkiRequestError('badAlg', (e as Error).message, context, { cause: e });
    }
    throw e;
  }
  const one = (oid: string, what: string): Uint8Array => {
    const v = msg.attributes.get(oid);
    if (!v || v.length !== 1) throw new CmsError('badRequest', `the pkiMessage needs exactly one ${what} attribute`);
    return v[0]!;
  };
  const messageType = readString(one(SCEP_OID.messageType, 'messageType')) as MessageType;
  if (!(messageType in NAMES)) throw new CmsError('badRequest', `messageType ${messageType} is not a SCEP request`);
  const transactionId = readString(one(SCEP_OID.transactionID, 'transactionID'));
  // RFC 8894 §3.2.1.1: the transactionID is a string; ra-mesh keeps it as a record key, so bound it.
  if (transactionId.length === 0 || transactionId.length > 256) throw new CmsError('badRequest', 'the transactionID must have 1 to 256 characters');
  const senderNonce = readOctets(one(SCEP_OID.senderNonce, 'senderNonce'));
  // RFC 8894 §3.2.1.5: a 16-byte random nonce.
  if (senderNonce.length < 8 || senderNonce.length > 64) throw new CmsError('badRequest', 'the senderNonce must be 8 to 64 bytes (16 in RFC 8894)');
  const context = { messageType, transactionId, senderNonce, signer: msg.signer };
  try {
    if (!msg.content) throw new CmsError('badRequest', 'the pkiMessage carries no pkcsPKIEnvelope');
    const { plaintext, cipher } = decryptEnveloped(msg.content, ra, { allowDes: opts.legacyCrypto });
    return { ...context, messageData: plaintext, cipher, digest: msg.digest };
  } catch (e) {
    // The signed part is sound: the device can be answered with a CertRep FAILURE.
    if (e instanceof CmsError) throw new PkiRequestError(e.failInfo, e.message, context, { cause: e });
    throw e;
  }
}

/** A request whose signature verified but whose envelope did not decrypt or parse: answerable by CertRep. */
export class PkiRequestError extends CmsError {
  constructor(
    failInfo: CmsError['failInfo'],
    message: string,
    readonly context: Pick<PkiRequest, 'transactionId' | 'senderNonce'> & Partial<Pick<PkiRequest, 'messageType' | 'signer'>>,
    options?: { cause?: unknown },
  ) {
    super(failInfo, message, options);
    this.name = 'PkiRequestError';
  }
}

export interface CertRepInput {
  transactionId: string;
  /** The request's senderNonce (RFC 8894 §3.2.1.5: copied as recipientNonce). */
  recipientNonce: Uint8Array;
  status: PkiStatus;
  failInfo?: FailInfo;
  /** A clear sentence for the device's operator (failInfoText). */
  failText?: string;
  /** SUCCESS: the issued certificate first, then its chain (DER). */
  certificates?: Uint8Array[];
  /** SUCCESS: who gets the certificates (the request's signer certificate). */
  recipient?: Uint8Array;
  cipher?: string;
  ra: { cert: Uint8Array; key: KeyObject };
}

/** The reply cipher: the client's own, except single DES, which is answered with AES-128 (RFC 8894 §3.5.2). */
function replyCipher(requested?: string): ContentCipher {
  return requested === 'aes-256-cbc' || requested === 'aes-192-cbc' || requested === 'des-ede3-cbc' ? requested : 'aes-128-cbc';
}

/** RFC 8894 §3.3.2 CertRep: SignedData by the RA, SUCCESS with the certificates enveloped for the requester. */
export function certRep(input: CertRepInput): Uint8Array {
  const attributes: Array<[string, Uint8Array]> = [
    [SCEP_OID.transactionID, printableString(input.transactionId)],
    [SCEP_OID.messageType, printableString(MESSAGE_TYPE.CertRep)],
    [SCEP_OID.pkiStatus, printableString(PKI_STATUS[input.status])],
    [SCEP_OID.senderNonce, octetString(randomBytes(16))],
    [SCEP_OID.recipientNonce, octetString(input.recipientNonce)],
  ];
  let content: Uint8Array | undefined;
  if (input.status === 'FAILURE') {
    attributes.push([SCEP_OID.failInfo, printableString(FAIL_INFO[input.failInfo ?? 'badRequest'])]);
    if (input.failText) attributes.push([SCEP_OID.failInfoText, tlv(0x0c, Buffer.from(input.failText.slice(0, 500), 'utf8'))]);
  } else if (input.status === 'SUCCESS') {
    if (!input.certificates?.length || !input.recipient) throw new Error('a SUCCESS CertRep needs the certificates and the recipient');
    content = encryptEnveloped(degenerateCertificates(input.certificates), input.recipient, replyCipher(input.cipher));
  }
  return signMessage({ ...(content ? { content } : {}), attributes, signerCert: input.ra.cert, signerKey: input.ra.key });
}

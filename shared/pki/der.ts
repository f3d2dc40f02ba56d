// A minimal DER reader: just enough to cut a signed structure (CSR, certificate) into the exact
// bytes that were signed and the signature, without re-encoding anything.

export interface Tlv {
  tag: number;
  /** Offset of the tag byte. */
  start: number;
  /** Offset of the first content byte. */
  contentStart: number;
  /** Offset just past the content. */
  end: number;
}

/** Reads one TLV at `pos` of `buf`; throws on truncated or non-DER (indefinite, overlong) lengths. */
export function readTlv(buf: Uint8Array, pos: number): Tlv {
  if (pos + 2 > buf.length) throw new Error('DER: truncated header');
  const tag = buf[pos]!;
  if ((tag & 0x1f) === 0x1f) throw new Error('DER: multi-byte tags are not supported');
  let len = buf[pos + 1]!;
  let contentStart = pos + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0) throw new Error('DER: indefinite length');
    if (n > 4) throw new Error('DER: length too large');
    if (contentStart + n > buf.length) throw new Error('DER: truncated length');
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + buf[contentStart + i]!;
    if (buf[contentStart] === 0 || len < 0x80) throw new Error('DER: non-minimal length');
    contentStart += n;
  }
  const end = contentStart + len;
  if (end > buf.length) throw new Error('DER: truncated content');
  return { tag, start: pos, contentStart, end };
}

export interface SignedParts {
  /** The exact DER of the signed part (certificationRequestInfo / tbsCertificate). */
  tbs: Uint8Array;
  /** The DER of the signatureAlgorithm AlgorithmIdentifier. */
  algorithm: Uint8Array;
  /** The signature bits (BIT STRING contents without the unused-bits byte). */
  signature: Uint8Array;
}

/**
 * Splits SEQUENCE { tbs SEQUENCE, signatureAlgorithm SEQUENCE, signature BIT STRING } (PKCS#10
 * CertificationRequest, X.509 Certificate and CertificateList all have this shape). Trailing bytes
 * after the outer SEQUENCE or inside it are refused.
 */
export function splitSigned(der: Uint8Array): SignedParts {
  const outer = readTlv(der, 0);
  if (outer.tag !== 0x30) throw new Error('DER: not a SEQUENCE');
  if (outer.end !== der.length) throw new Error('DER: trailing bytes after the structure');
  const tbs = readTlv(der, outer.contentStart);
  if (tbs.tag !== 0x30) throw new Error('DER: signed part is not a SEQUENCE');
  const alg = readTlv(der, tbs.end);
  if (alg.tag !== 0x30) throw new Error('DER: signature algorithm is not a SEQUENCE');
  const sig = readTlv(der, alg.end);
  if (sig.tag !== 0x03) throw new Error('DER: signature is not a BIT STRING');
  if (sig.end !== outer.end) throw new Error('DER: unexpected elements after the signature');
  if (sig.end - sig.contentStart < 1 || der[sig.contentStart] !== 0) throw new Error('DER: signature BIT STRING has unused bits');
  return {
    tbs: der.subarray(tbs.start, tbs.end),
    algorithm: der.subarray(alg.start, alg.end),
    signature: der.subarray(sig.contentStart + 1, sig.end),
  };
}

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

/** The TLVs directly inside a constructed `tlv` of `buf`, in order; throws on any malformed child. */
export function children(buf: Uint8Array, tlv: Tlv): Tlv[] {
  if ((tlv.tag & 0x20) === 0) throw new Error('DER: expected a constructed element');
  const out: Tlv[] = [];
  for (let pos = tlv.contentStart; pos < tlv.end; ) {
    const c = readTlv(buf, pos);
    if (c.end > tlv.end) throw new Error('DER: element overruns its parent');
    out.push(c);
    pos = c.end;
  }
  return out;
}

/** The content bytes of `tlv`. */
export function content(buf: Uint8Array, tlv: Tlv): Uint8Array {
  return buf.subarray(tlv.contentStart, tlv.end);
}

/** Dotted text of an OBJECT IDENTIFIER's content bytes (X.690 §8.19); throws on a non-minimal arc. */
export function oidText(bytes: Uint8Array): string {
  if (bytes.length === 0) throw new Error('DER: empty OBJECT IDENTIFIER');
  const arcs: number[] = [];
  let v = 0;
  let started = false;
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i]!;
    if (!started && b === 0x80) throw new Error('DER: non-minimal OBJECT IDENTIFIER arc');
    started = true;
    v = v * 128 + (b & 0x7f);
    if (v > Number.MAX_SAFE_INTEGER / 128) throw new Error('DER: OBJECT IDENTIFIER arc too large');
    if ((b & 0x80) === 0) {
      if (arcs.length === 0) arcs.push(v < 80 ? Math.floor(v / 40) : 2, v < 80 ? v % 40 : v - 80);
      else arcs.push(v);
      v = 0;
      started = false;
    }
  }
  if (started) throw new Error('DER: truncated OBJECT IDENTIFIER');
  return arcs.join('.');
}

/** Universal string tags X.509 names use (X.680), decoded to text; null for any other tag. */
export function stringValue(tag: number, bytes: Uint8Array): string | null {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  switch (tag) {
    case 0x0c: // UTF8String
      return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
    case 0x13: // PrintableString
    case 0x16: // IA5String
    case 0x1a: // VisibleString
    case 0x12: // NumericString
      for (const c of bytes) if (c > 0x7f) throw new Error('DER: non-ASCII byte in an ASCII string');
      return b.toString('latin1');
    case 0x14: // TeletexString (T.61; read as Latin-1, as Go and OpenSSL do)
      return b.toString('latin1');
    case 0x1e: {
      // BMPString: UCS-2 big-endian
      if (bytes.length % 2) throw new Error('DER: odd BMPString length');
      let s = '';
      for (let i = 0; i < bytes.length; i += 2) s += String.fromCharCode((bytes[i]! << 8) | bytes[i + 1]!);
      return s;
    }
    case 0x1c: {
      // UniversalString: UCS-4 big-endian
      if (bytes.length % 4) throw new Error('DER: bad UniversalString length');
      let s = '';
      for (let i = 0; i < bytes.length; i += 4) s += String.fromCodePoint(b.readUInt32BE(i));
      return s;
    }
    default:
      return null;
  }
}

// --- writing: just what the builtin CA puts in a leaf certificate -------------------------------

/** One TLV with definite, minimal length (X.690 §10.1). */
export function tlv(tag: number, ...parts: Uint8Array[]): Uint8Array {
  let len = 0;
  for (const p of parts) len += p.length;
  const head: number[] = [tag];
  if (len < 0x80) head.push(len);
  else {
    const bytes: number[] = [];
    for (let v = len; v > 0; v = Math.floor(v / 256)) bytes.unshift(v % 256);
    head.push(0x80 | bytes.length, ...bytes);
  }
  const out = new Uint8Array(head.length + len);
  out.set(head, 0);
  let at = head.length;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

export const seq = (...parts: Uint8Array[]): Uint8Array => tlv(0x30, ...parts);

/** OBJECT IDENTIFIER from dotted text. */
export function oid(text: string): Uint8Array {
  const arcs = text.split('.').map(Number);
  if (arcs.length < 2 || arcs.some((a) => !Number.isSafeInteger(a) || a < 0)) throw new Error(`DER: bad OID ${text}`);
  const out: number[] = [];
  const push = (v: number): void => {
    const b: number[] = [v % 128];
    for (v = Math.floor(v / 128); v > 0; v = Math.floor(v / 128)) b.unshift(0x80 | v % 128);
    out.push(...b);
  };
  push(arcs[0]! * 40 + arcs[1]!);
  for (const a of arcs.slice(2)) push(a);
  return tlv(0x06, new Uint8Array(out));
}

/** INTEGER from big-endian unsigned magnitude bytes (made minimal and positive). */
export function uint(bytes: Uint8Array): Uint8Array {
  let i = 0;
  while (i < bytes.length - 1 && bytes[i] === 0) i++;
  const m = bytes.subarray(i);
  return m.length && m[0]! & 0x80 ? tlv(0x02, new Uint8Array([0]), m) : tlv(0x02, m.length ? m : new Uint8Array([0]));
}

/** RFC 5280 §4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050; whole seconds, "Z". */
export function time(d: Date): Uint8Array {
  const iso = d.toISOString(); // YYYY-MM-DDTHH:MM:SS.sssZ
  const y = d.getUTCFullYear();
  const digits = iso.slice(0, 19).replace(/[-T:]/g, '');
  return y >= 1950 && y < 2050 ? tlv(0x17, Buffer.from(`${digits.slice(2)}Z`, 'latin1')) : tlv(0x18, Buffer.from(`${digits}Z`, 'latin1'));
}

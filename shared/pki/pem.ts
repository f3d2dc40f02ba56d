// PEM (RFC 7468) encoding and decoding of DER blobs.

const PEM_BLOCK_RE = /-----BEGIN ([A-Z0-9 ]+)-----([\s\S]*?)-----END ([A-Z0-9 ]+)-----/g;
const BASE64_RE = /^[A-Za-z0-9+/]*={0,2}$/;

/** One decoded PEM block: its label (e.g. "CERTIFICATE") and DER contents. */
export interface PemBlock {
  label: string;
  der: Uint8Array;
}

/**
 * Every PEM block in `pem`, in order. Text outside the blocks (e.g. openssl's "Bag Attributes"
 * or comments) is ignored; a block whose base64 is invalid or whose END label does not match its
 * BEGIN label throws.
 */
export function pemBlocks(pem: string): PemBlock[] {
  const out: PemBlock[] = [];
  for (const m of pem.matchAll(PEM_BLOCK_RE)) {
    const [, begin, body, end] = m as unknown as [string, string, string, string];
    if (begin !== end) throw new Error(`PEM block "BEGIN ${begin}" ends with "END ${end}"`);
    const b64 = body.replace(/\s+/g, '');
    if (!BASE64_RE.test(b64) || b64.length % 4 !== 0) throw new Error(`PEM block "${begin}" has invalid base64 contents`);
    const der = new Uint8Array(Buffer.from(b64, 'base64'));
    if (der.length === 0) throw new Error(`PEM block "${begin}" is empty`);
    out.push({ label: begin, der });
  }
  return out;
}

/**
 * The DER contents of every PEM block in `pem`, in order; with `label`, only blocks with that label
 * (e.g. "CERTIFICATE"). Returns [] when there is no block.
 */
export function pemToDer(pem: string, label?: string): Uint8Array[] {
  return pemBlocks(pem)
    .filter((b) => label === undefined || b.label === label)
    .map((b) => b.der);
}

/** PEM text of one DER blob: 64-column base64 between BEGIN/END lines, ending with a newline. */
export function derToPem(der: Uint8Array | ArrayBuffer, label: string): string {
  const bytes = der instanceof Uint8Array ? der : new Uint8Array(der);
  const b64 = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64');
  const lines = b64.match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join('\n')}\n-----END ${label}-----\n`;
}

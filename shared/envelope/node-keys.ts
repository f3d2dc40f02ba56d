import { randomBytes } from 'node:crypto';
import { chmod, link, mkdir, readFile, rename, stat, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { calculateJwkThumbprint, exportJWK, generateKeyPair, importJWK, type CryptoKey, type JWK } from 'jose';
import { RaError } from '../errors/index.js';

// Node signing keys: one key pair per node, kid = node id. Private keys live in
// <keysDir>/<kid>.key.jwk (mode 0600, folder 0700); public keys in <keysDir>/<kid>.pub.jwk, which
// is what every other node of the mesh reads into its KeyRing.

export type EnvelopeAlg = 'EdDSA' | 'ES256';

export const ENVELOPE_ALGS: readonly EnvelopeAlg[] = ['EdDSA', 'ES256'];

/**
 * The alg of node keys ra-mesh makes when none is asked for (keys already on disk keep theirs): P-256,
 * whose signatures node:crypto (OpenSSL 3) verifies ~30% and makes ~20% faster than Ed25519 ones on the
 * machines measured (test/bench crypto); every relay verifies each layer below it, so verification
 * dominates a hop. P-256 ECDSA is also the FIPS 186-4 choice. EdDSA keys stay fully supported.
 */
export const DEFAULT_ENVELOPE_ALG: EnvelopeAlg = 'ES256';

export interface NodeKey {
  kid: string;
  alg: EnvelopeAlg;
  /** Non-extractable signing key. */
  privateKey: CryptoKey;
  /** The public JWK, with `kid` and `alg` set (what `<kid>.pub.jwk` holds). */
  publicJwk: JWK;
}

/** Node ids double as file names: the topology's node id rule, checked before touching the disk. */
const KID_RE = /^[a-z0-9][a-z0-9-]{0,62}$/;

function checkKidForFile(kid: string): void {
  if (!KID_RE.test(kid)) {
    throw new RaError('serverInternal', { detail: `invalid key id "${kid}" (a node id: lower-case letters, digits and "-")` });
  }
}

export function isEnvelopeAlg(v: unknown): v is EnvelopeAlg {
  return v === 'EdDSA' || v === 'ES256';
}

/** The JWS alg a public or private JWK is for: its `alg`, else inferred from kty/crv. */
export function jwkAlg(jwk: JWK): EnvelopeAlg {
  if (jwk.kty === 'OKP' && jwk.crv === 'Ed25519' && (jwk.alg === undefined || jwk.alg === 'EdDSA' || jwk.alg === 'Ed25519')) return 'EdDSA';
  if (jwk.kty === 'EC' && jwk.crv === 'P-256' && (jwk.alg === undefined || jwk.alg === 'ES256')) return 'ES256';
  throw new RaError('serverInternal', {
    detail: `unsupported node key (kty ${String(jwk.kty)}, crv ${String(jwk.crv)}, alg ${String(jwk.alg)}); node keys are Ed25519 (EdDSA) or P-256 (ES256)`,
  });
}

/** Public members only, in a stable order, with kid and alg. */
function publicOf(jwk: JWK, kid: string, alg: EnvelopeAlg): JWK {
  return alg === 'EdDSA'
    ? { kty: jwk.kty, crv: jwk.crv, x: jwk.x, kid, alg }
    : { kty: jwk.kty, crv: jwk.crv, x: jwk.x, y: jwk.y, kid, alg };
}

async function nodeKeyFromPrivateJwk(jwk: JWK, kid: string, alg: EnvelopeAlg): Promise<NodeKey> {
  const privateKey = (await importJWK({ ...jwk, alg }, alg, { extractable: false })) as CryptoKey;
  return { kid, alg, privateKey, publicJwk: publicOf(jwk, kid, alg) };
}

async function generate(kid: string, alg: EnvelopeAlg): Promise<{ key: NodeKey; privateJwk: JWK }> {
  if (!isEnvelopeAlg(alg)) throw new RaError('serverInternal', { detail: `unsupported node key alg "${String(alg)}"` });
  const pair = await generateKeyPair(alg, { extractable: true });
  const d = await exportJWK(pair.privateKey);
  const privateJwk: JWK = { ...publicOf(d, kid, alg), d: d.d };
  return { key: await nodeKeyFromPrivateJwk(privateJwk, kid, alg), privateJwk };
}

/** A fresh key pair as JWKs (private with d, public with kid and alg), for files written elsewhere. */
export async function generateNodeKeyPair(kid: string, alg: EnvelopeAlg = DEFAULT_ENVELOPE_ALG): Promise<{ privateJwk: JWK; publicJwk: JWK }> {
  checkKidForFile(kid);
  const g = await generate(kid, alg);
  return { privateJwk: g.privateJwk, publicJwk: g.key.publicJwk };
}

/** A fresh key pair (P-256 unless EdDSA is asked for). Not persisted: see loadOrCreateNodeKey. */
export async function generateNodeKey(kid: string, alg: EnvelopeAlg = DEFAULT_ENVELOPE_ALG): Promise<NodeKey> {
  return (await generate(kid, alg)).key;
}

export function privateKeyFile(dir: string, kid: string): string {
  return join(dir, `${kid}.key.jwk`);
}

export function publicKeyFile(dir: string, kid: string): string {
  return join(dir, `${kid}.pub.jwk`);
}

function isErrno(e: unknown, code: string): boolean {
  return typeof e === 'object' && e !== null && (e as NodeJS.ErrnoException).code === code;
}

function tmpName(file: string): string {
  return `${file}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`;
}

async function readJwkFile(file: string): Promise<JWK | undefined> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    if (isErrno(e, 'ENOENT')) return undefined;
    throw new RaError('serverInternal', { detail: `cannot read key file ${file}`, cause: e });
  }
  try {
    const v: unknown = JSON.parse(text);
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('not a JSON object');
    return v as JWK;
  } catch (e) {
    throw new RaError('serverInternal', { detail: `key file ${file} is not a JWK`, cause: e });
  }
}

/**
 * Loads the node key from `<dir>/<kid>.key.jwk`, creating it (and `<dir>/<kid>.pub.jwk`) when absent.
 * Creation is atomic and exclusive: concurrent callers (several nodes starting at once) all end up
 * with the one key that won. A missing or stale public file is rewritten from the private key.
 * With `alg` given, an existing key of another alg is an error; without it, the stored key's alg is used,
 * and a new key is made with `newAlg` (default DEFAULT_ENVELOPE_ALG).
 */
export async function loadOrCreateNodeKey(dir: string, kid: string, alg?: EnvelopeAlg, newAlg: EnvelopeAlg = DEFAULT_ENVELOPE_ALG): Promise<NodeKey> {
  checkKidForFile(kid);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const privFile = privateKeyFile(dir, kid);
  let key: NodeKey;
  let stored = await readJwkFile(privFile);
  if (!stored) {
    const fresh = await generate(kid, alg ?? newAlg);
    const tmp = tmpName(privFile);
    try {
      await writeFile(tmp, JSON.stringify(fresh.privateJwk, null, 2) + '\n', { mode: 0o600, flag: 'wx' });
      // link() fails if the target exists: the first writer wins, the file is never seen half-written.
      await link(tmp, privFile);
      key = fresh.key;
    } catch (e) {
      if (!isErrno(e, 'EEXIST')) throw new RaError('serverInternal', { detail: `cannot write key file ${privFile}`, cause: e });
      stored = await readJwkFile(privFile);
      if (!stored) throw new RaError('serverInternal', { detail: `key file ${privFile} vanished while being created`, cause: e });
    } finally {
      await unlink(tmp).catch(() => undefined);
    }
  }
  if (stored) {
    if (typeof stored.d !== 'string') throw new RaError('serverInternal', { detail: `key file ${privFile} holds no private key` });
    if (stored.kid !== undefined && stored.kid !== kid) {
      throw new RaError('serverInternal', { detail: `key file ${privFile} is for kid "${stored.kid}", not "${kid}"` });
    }
    const storedAlg = jwkAlg(stored);
    if (alg !== undefined && alg !== storedAlg) {
      throw new RaError('serverInternal', { detail: `key file ${privFile} holds an ${storedAlg} key, ${alg} was asked for` });
    }
    // Keep the private key private even if the file was copied in with a looser mode.
    const st = await stat(privFile);
    if ((st.mode & 0o077) !== 0) await chmod(privFile, 0o600);
    key = await nodeKeyFromPrivateJwk(stored, kid, storedAlg);
  }
  await writePublicIfStale(dir, key!);
  return key!;
}

async function writePublicIfStale(dir: string, key: NodeKey): Promise<void> {
  const file = publicKeyFile(dir, key.kid);
  const want = JSON.stringify(key.publicJwk, null, 2) + '\n';
  const have = await readFile(file, 'utf8').catch(() => undefined);
  if (have === want) return;
  const tmp = tmpName(file);
  try {
    await writeFile(tmp, want, { mode: 0o644 });
    await rename(tmp, file);
  } catch (e) {
    await unlink(tmp).catch(() => undefined);
    throw new RaError('serverInternal', { detail: `cannot write public key file ${file}`, cause: e });
  }
}

/** Where a node's key of one rotation stage lives: current `<kid>.pub.jwk`, `<kid>.next.pub.jwk`, `<kid>.prev.pub.jwk`. */
export type KeyStage = 'current' | 'next' | 'prev';
export const KEY_STAGES: readonly KeyStage[] = ['current', 'next', 'prev'];

export function stagedPublicKeyFile(dir: string, kid: string, stage: KeyStage): string {
  return stage === 'current' ? publicKeyFile(dir, kid) : join(dir, `${kid}.${stage}.pub.jwk`);
}

export function stagedPrivateKeyFile(dir: string, kid: string, stage: 'current' | 'next'): string {
  return stage === 'current' ? privateKeyFile(dir, kid) : join(dir, `${kid}.next.key.jwk`);
}

type RingJwk = JWK & { kid: string; alg: EnvelopeAlg };

/**
 * The public keys of the mesh by kid (node id). A node has one current key and, while its key is
 * being rotated, also a next or a previous one: signatures by any of them verify (the overlap).
 * Imports are done once and cached.
 */
export class KeyRing {
  private jwks = new Map<string, RingJwk[]>();
  private imported = new Map<string, Promise<CryptoKey>>();

  constructor(entries?: Iterable<[string, JWK]>) {
    for (const [kid, jwk] of entries ?? []) {
      if (jwk.kid !== undefined && jwk.kid !== kid) {
        throw new RaError('serverInternal', { detail: `key ring entry "${kid}" holds a JWK with kid "${jwk.kid}"` });
      }
      this.add({ ...jwk, kid });
    }
  }

  private static check(jwk: JWK & { kid: string }): RingJwk {
    if (typeof jwk.kid !== 'string' || jwk.kid === '') throw new RaError('serverInternal', { detail: 'a key ring JWK needs a kid' });
    if (jwk.d !== undefined) throw new RaError('serverInternal', { detail: `refusing private key material for kid "${jwk.kid}" in the key ring` });
    const alg = jwkAlg(jwk);
    return publicOf(jwk, jwk.kid, alg) as RingJwk;
  }

  /** Sets the (only) public key of a node, replacing any it had. Private key material is refused. */
  add(jwk: JWK & { kid: string }): void {
    const k = KeyRing.check(jwk);
    this.jwks.set(k.kid, [k]);
    for (const c of [...this.imported.keys()]) if (c.startsWith(`${k.kid}#`)) this.imported.delete(c);
  }

  /** Adds another accepted key of a node (the next or previous key of a rotation). */
  addRotation(jwk: JWK & { kid: string }): void {
    const k = KeyRing.check(jwk);
    const list = this.jwks.get(k.kid);
    if (!list) throw new RaError('serverInternal', { detail: `node "${k.kid}" has no current key to rotate from` });
    list.push(k);
  }

  has(kid: string): boolean {
    return this.jwks.has(kid);
  }

  /** The alg the current key of `kid` signs with. */
  alg(kid: string): EnvelopeAlg | undefined {
    return this.jwks.get(kid)?.[0]?.alg;
  }

  /** Every alg any accepted key of `kid` signs with. */
  algs(kid: string): EnvelopeAlg[] {
    return [...new Set((this.jwks.get(kid) ?? []).map((k) => k.alg))];
  }

  /** The current public JWK of `kid` (a copy). */
  jwk(kid: string): JWK | undefined {
    const j = this.jwks.get(kid)?.[0];
    return j ? { ...j } : undefined;
  }

  /** How many keys of `kid` are accepted (2 during a rotation). */
  count(kid: string): number {
    return this.jwks.get(kid)?.length ?? 0;
  }

  kids(): string[] {
    return [...this.jwks.keys()];
  }

  private importAt(kid: string, i: number): Promise<CryptoKey> {
    const jwk = this.jwks.get(kid)![i]!;
    const cacheKey = `${kid}#${i}#${jwk.x}`;
    let p = this.imported.get(cacheKey);
    if (!p) {
      p = importJWK(jwk, jwk.alg) as Promise<CryptoKey>;
      this.imported.set(cacheKey, p);
      const mine = p;
      p.catch(() => {
        if (this.imported.get(cacheKey) === mine) this.imported.delete(cacheKey);
      });
    }
    return p;
  }

  /** The current key of `kid`. */
  async get(kid: string): Promise<CryptoKey | undefined> {
    if (!this.jwks.has(kid)) return undefined;
    return this.importAt(kid, 0);
  }

  /** Every accepted key of `kid` for `alg`, current first. */
  async candidates(kid: string, alg: EnvelopeAlg): Promise<CryptoKey[]> {
    const list = this.jwks.get(kid) ?? [];
    const out: CryptoKey[] = [];
    for (const [i, k] of list.entries()) if (k.alg === alg) out.push(await this.importAt(kid, i));
    return out;
  }

  /**
   * Reads each id's current public key `<dir>/<id>.pub.jwk` (ids without one are skipped) and, when
   * present, its next and previous keys. With `pins`, a node's keys must have one of its pinned RFC 7638
   * thumbprints (the topology's publicKeys), or loading fails naming the file.
   */
  static async fromDir(dir: string, ids: string[], pins: Record<string, readonly string[] | undefined> = {}): Promise<KeyRing> {
    const ring = new KeyRing();
    for (const id of ids) {
      checkKidForFile(id);
      for (const stage of KEY_STAGES) {
        const file = stagedPublicKeyFile(dir, id, stage);
        const jwk = await readJwkFile(file);
        if (!jwk) continue;
        if (jwk.kid !== undefined && jwk.kid !== id) throw new RaError('serverInternal', { detail: `public key file ${file} is for kid "${jwk.kid}", not "${id}"` });
        if (stage !== 'current' && !ring.has(id)) throw new RaError('serverInternal', { detail: `${file} exists but ${publicKeyFile(dir, id)} does not` });
        try {
          if (stage === 'current') ring.add({ ...jwk, kid: id });
          else ring.addRotation({ ...jwk, kid: id });
        } catch (e) {
          throw new RaError('serverInternal', { detail: `public key file ${file}: ${(e as RaError).detail ?? String(e)}`, cause: e });
        }
        const pinned = pins[id];
        if (pinned && pinned.length > 0) {
          const tp = await calculateJwkThumbprint(jwk);
          if (!pinned.includes(tp)) {
            throw new RaError('serverInternal', { detail: `public key file ${file} (thumbprint ${tp}) is not one of the keys the topology pins for "${id}"` });
          }
        }
      }
    }
    return ring;
  }

  /** Re-reads the directory (see fromDir) and swaps the keys in at once; on error the ring is unchanged. */
  async reload(dir: string, ids: string[], pins: Record<string, readonly string[] | undefined> = {}): Promise<void> {
    const fresh = await KeyRing.fromDir(dir, ids, pins);
    this.jwks = fresh.jwks;
    this.imported = fresh.imported;
  }
}

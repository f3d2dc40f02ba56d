// Node key rotation with overlap. Three steps, each a command an operator runs
// (`ra-mesh keys rotate|promote|retire`), with the public key files distributed to every node in
// between (the nodes re-read the keys folder every topology.keyReload):
//   rotate:  a next key pair is made; every node accepts signatures by the current or the next key.
//   promote: next becomes current (the node signs with it after its restart); the old public key
//            stays accepted as "prev", its private key is destroyed.
//   retire:  prev is removed; signatures by the old key are refused from then on.
// A node that was never restarted after promote still signs with the old key: restart it before retire.

import { calculateJwkThumbprint, type JWK } from 'jose';
import { readFile, rename, unlink, writeFile } from 'node:fs/promises';
import { RaError } from '../errors/index.js';
import {
  generateNodeKeyPair,
  jwkAlg,
  privateKeyFile,
  publicKeyFile,
  stagedPrivateKeyFile,
  stagedPublicKeyFile,
  type EnvelopeAlg,
} from './node-keys.js';

async function exists(file: string): Promise<boolean> {
  return readFile(file).then(
    () => true,
    () => false,
  );
}

async function thumbprintOf(file: string): Promise<string> {
  return calculateJwkThumbprint(JSON.parse(await readFile(file, 'utf8')) as JWK);
}

/**
 * Step 1: makes `<kid>.next.key.jwk` / `<kid>.next.pub.jwk` (of the current key's alg unless `alg` is
 * given, so a mesh that accepts only that alg keeps accepting the node). Returns the new key's thumbprint.
 */
export async function rotateStart(dir: string, kid: string, alg?: EnvelopeAlg): Promise<string> {
  if (!(await exists(privateKeyFile(dir, kid)))) throw new RaError('serverInternal', { detail: `node "${kid}" has no key in ${dir} to rotate (ra-mesh keys init)` });
  if (await exists(stagedPublicKeyFile(dir, kid, 'next'))) throw new RaError('serverInternal', { detail: `node "${kid}" is already rotating: promote or remove its next key first` });
  if (await exists(stagedPublicKeyFile(dir, kid, 'prev'))) throw new RaError('serverInternal', { detail: `node "${kid}" still has a previous key: retire it first` });
  const current = JSON.parse(await readFile(publicKeyFile(dir, kid), 'utf8').catch(() => readFile(privateKeyFile(dir, kid), 'utf8'))) as JWK;
  const { privateJwk, publicJwk } = await generateNodeKeyPair(kid, alg ?? jwkAlg(current));
  await writeFile(stagedPrivateKeyFile(dir, kid, 'next'), JSON.stringify(privateJwk, null, 2) + '\n', { mode: 0o600, flag: 'wx' });
  await writeFile(stagedPublicKeyFile(dir, kid, 'next'), JSON.stringify(publicJwk, null, 2) + '\n', { mode: 0o644 });
  return calculateJwkThumbprint(publicJwk);
}

/** Step 2: next becomes current; the old public key becomes prev; the old private key is deleted. */
export async function rotatePromote(dir: string, kid: string): Promise<string> {
  const nextKey = stagedPrivateKeyFile(dir, kid, 'next');
  const nextPub = stagedPublicKeyFile(dir, kid, 'next');
  if (!(await exists(nextKey)) || !(await exists(nextPub))) throw new RaError('serverInternal', { detail: `node "${kid}" has no next key to promote (ra-mesh keys rotate)` });
  await rename(publicKeyFile(dir, kid), stagedPublicKeyFile(dir, kid, 'prev'));
  await rename(nextPub, publicKeyFile(dir, kid));
  await rename(nextKey, privateKeyFile(dir, kid));
  return thumbprintOf(publicKeyFile(dir, kid));
}

/** Step 3: the previous key is no longer accepted. */
export async function rotateRetire(dir: string, kid: string): Promise<void> {
  try {
    await unlink(stagedPublicKeyFile(dir, kid, 'prev'));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new RaError('serverInternal', { detail: `node "${kid}" has no previous key to retire` });
    throw e;
  }
}

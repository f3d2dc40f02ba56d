import { parseDuration, type Topology } from '../config/index.js';
import type { Logger } from '../logging/logger.js';
import { DEFAULT_ENVELOPE_ALG, KeyRing, loadOrCreateNodeKey, type EnvelopeAlg, type NodeKey } from './node-keys.js';

/** The pinned thumbprints of every node that has some (topology nodes[].publicKeys). */
export function keyPins(topology: Topology): Record<string, readonly string[] | undefined> {
  return Object.fromEntries(topology.nodes.map((n) => [n.id, n.publicKeys]));
}

/**
 * The alg of node keys made for this mesh: ES256 (DEFAULT_ENVELOPE_ALG) when the topology's
 * envelope.algs accepts it, else the first alg it accepts (a key nobody would accept is never made).
 */
export function nodeKeyAlg(topology: Topology): EnvelopeAlg {
  const algs = topology.config.envelope.algs;
  return algs.includes(DEFAULT_ENVELOPE_ALG) ? DEFAULT_ENVELOPE_ALG : algs[0]!;
}

/** The node's signing key, made with nodeKeyAlg(topology) when it has none yet (a stored key keeps its alg). */
export function loadOrCreateMeshNodeKey(topology: Topology, nodeId: string): Promise<NodeKey> {
  return loadOrCreateNodeKey(topology.keysDir(), nodeId, undefined, nodeKeyAlg(topology));
}

/** The public keys of every node of the topology, from its keys folder, checked against the pins. */
export function loadMeshKeyRing(topology: Topology): Promise<KeyRing> {
  return KeyRing.fromDir(topology.keysDir(), topology.nodes.map((n) => n.id), keyPins(topology));
}

/**
 * Re-reads the keys folder into `ring` every topology.keyReload, so a rotated key is accepted without
 * restarting anyone. A folder that fails to load (a key not pinned, a broken file) leaves the ring as it
 * was and is logged. Returns the stop function.
 */
export function watchMeshKeys(topology: Topology, ring: KeyRing, log: Logger): () => void {
  const timer = setInterval(() => {
    ring
      .reload(topology.keysDir(), topology.nodes.map((n) => n.id), keyPins(topology))
      .catch((e) => log.error({ err: e }, 'keys folder not reloaded; keeping the keys loaded before'));
  }, parseDuration(topology.config.keyReload));
  timer.unref();
  return () => clearInterval(timer);
}

import { parseDuration, type Topology } from '../config/index.js';
import type { Logger } from '../logging/logger.js';
import { KeyRing } from './node-keys.js';

/** The pinned thumbprints of every node that has some (topology nodes[].publicKeys). */
export function keyPins(topology: Topology): Record<string, readonly string[] | undefined> {
  return Object.fromEntries(topology.nodes.map((n) => [n.id, n.publicKeys]));
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

import { chmod, rm } from 'node:fs/promises';
import { join } from 'node:path';
import Fastify, { type FastifyInstance } from 'fastify';
import { RaError, toRaError } from '../../shared/errors/index.js';
import type { EabStore } from './eab/eab-store.js';
import type { ScepStore } from './scep/scep-store.js';
import type { Logger } from './logger.js';

/** The edge's admin socket: a unix socket in its store folder (mode 0600, so only the node's user). */
export function adminSocketPath(storeDir: string): string {
  return join(storeDir, 'admin.sock');
}

/**
 * Local administration of a running edge (its level store is locked by the process): EAB keys for
 * `ra-mesh eab add|list|revoke`. Reachable only through the unix socket, never over the network.
 */
export async function startAdminServer(eab: EabStore, storeDir: string, log?: Logger, scep?: ScepStore): Promise<FastifyInstance | undefined> {
  const path = adminSocketPath(storeDir);
  // sun_path holds 107 bytes on Linux.
  if (Buffer.byteLength(path) > 100) {
    log?.warn({ path }, 'store path too long for the admin socket; `ra-mesh eab` works only while the edge is stopped');
    return undefined;
  }
  const app = Fastify({ logger: false });
  app.setErrorHandler(async (err, _req, reply) => {
    const e = err instanceof RaError ? err : toRaError(err);
    return reply.code(e.status).send(e.toProblem());
  });
  app.get('/eab', async () => eab.list());
  app.post('/eab', async (req) => {
    const body = (req.body ?? {}) as { keyId?: string; label?: string; policy?: unknown };
    return eab.add({ ...(body.keyId ? { keyId: body.keyId } : {}), ...(body.label ? { label: body.label } : {}), ...(body.policy !== undefined ? { policy: body.policy } : {}) });
  });
  app.post('/eab/:keyId/revoke', async (req) => eab.revoke((req.params as { keyId: string }).keyId));
  if (scep) registerScepAdmin(app, scep);
  await rm(path, { force: true });
  await app.listen({ path });
  await chmod(path, 0o600);
  return app;
}

/** `ra-mesh scep otp add|list|revoke` against a running edge (services/cli/commands/scep.ts). */
function registerScepAdmin(app: FastifyInstance, scep: ScepStore): void {
  app.get('/scep/otp', async () => scep.listOtps());
  app.post('/scep/otp', async (req) => {
    const body = (req.body ?? {}) as { count?: number; label?: string; ttlMs?: number };
    return scep.addOtps({ ...(body.count !== undefined ? { count: body.count } : {}), ...(body.label ? { label: body.label } : {}), ...(body.ttlMs ? { ttlMs: body.ttlMs } : {}) });
  });
  app.post('/scep/otp/:id/revoke', async (req) => scep.revokeOtp((req.params as { id: string }).id));
}

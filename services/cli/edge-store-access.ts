import { request } from 'node:http';
import { NodeStore } from '../../shared/store/index.js';
import { adminSocketPath } from '../edge/admin.js';

// How the CLI reaches an edge's store (EAB keys, SCEP one-time passwords): directly when no edge runs,
// else through the running edge's admin unix socket (level allows one process per store).

/** What to ask a running edge's admin socket instead. */
export interface AdminRequest {
  method: 'GET' | 'POST';
  path: string;
  body?: unknown;
  /** The error for a 404 (the running edge has no such admin resource). */
  notFound?: string;
}

function isLocked(e: unknown): boolean {
  const err = e as { code?: string; cause?: { code?: string } };
  return err.code === 'LEVEL_LOCKED' || err.cause?.code === 'LEVEL_LOCKED' || (err.code === 'LEVEL_DATABASE_NOT_OPEN' && /lock/i.test(String(err.cause ?? '')));
}

/** Runs `direct` on the edge's store; when a running edge holds the store, sends `viaAdmin` to its admin socket. */
export async function onEdgeStore<T>(storeDir: string, direct: (db: NodeStore) => Promise<T>, viaAdmin: AdminRequest): Promise<T> {
  let db: NodeStore;
  try {
    db = await NodeStore.open(storeDir);
  } catch (e) {
    if (!isLocked(e)) throw e;
    return (await adminRequest(adminSocketPath(storeDir), viaAdmin)) as T;
  }
  try {
    return await direct(db);
  } finally {
    await db.close();
  }
}

/** One JSON request to an edge's admin socket; a 4xx/5xx rejects with the edge's detail. */
export function adminRequest(socketPath: string, r: AdminRequest): Promise<unknown> {
  const body = r.body === undefined ? undefined : JSON.stringify(r.body);
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, method: r.method, path: r.path, headers: body ? { 'content-type': 'application/json' } : {} }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => {
        let json: { detail?: string } | undefined;
        try {
          json = text ? JSON.parse(text) : undefined;
        } catch {
          json = undefined;
        }
        const status = res.statusCode ?? 500;
        if (status === 404 && r.notFound) reject(new Error(r.notFound));
        else if (status >= 400) reject(new Error(json?.detail ?? `admin socket answered ${status}`));
        else resolve(json);
      });
    });
    req.on('error', (e) => reject(new Error(`the edge's store is locked by a running edge and its admin socket ${socketPath} is not reachable: ${e.message}`)));
    req.end(body);
  });
}

import type { AcmeStore } from './records.js';

/** How long an order (and its authorizations and challenges) is kept after it expired. */
export const DEFAULT_ORDER_RETENTION_MS = 7 * 86_400_000;

/**
 * Deletes orders that expired more than `retentionMs` ago, with their authorizations, challenges and
 * index entries. Orders still processing are left to the outbox (which expires them itself);
 * certificates are kept (revocation and audit need them). Returns how many orders were removed.
 */
export async function pruneExpired(store: AcmeStore, now = Date.now(), retentionMs = DEFAULT_ORDER_RETENTION_MS): Promise<number> {
  let removed = 0;
  for await (const [id, order] of store.orders.entries()) {
    if (order.status === 'processing' || Date.parse(order.expires) + retentionMs > now) continue;
    const ops: Parameters<typeof store.db.batch>[0] = [
      { coll: store.orders as never, type: 'del', key: id },
      { coll: store.accountOrders as never, type: 'del', key: `${order.accountId}/${id}` },
    ];
    if (order.envelopeId) ops.push({ coll: store.orderByEnvelope as never, type: 'del', key: order.envelopeId });
    for (const authzId of order.authzIds) {
      const authz = await store.authzs.get(authzId);
      ops.push({ coll: store.authzs as never, type: 'del', key: authzId });
      for (const c of authz?.challengeIds ?? []) ops.push({ coll: store.challenges as never, type: 'del', key: c });
    }
    await store.db.batch(ops);
    removed++;
  }
  return removed;
}

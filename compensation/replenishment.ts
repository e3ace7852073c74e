/**
 * Replenishment's compensation: a cancelled order's pending purchases are called off, and a
 * tombstone left so that a backorder arriving late buys nothing.
 */
import type { Handler } from '../common/runner.ts';
import type { ReplenishmentStore } from '../services/replenishment/store.ts';

export const cancelPurchases: Handler<'order.cancelled', ReplenishmentStore> = async ({ data }, store) => {
  await store.tombstones.leave(data.orderId, data.reason);
  await store.cancelPending(data.orderId);
  return [];
};

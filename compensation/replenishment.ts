/**
 * Replenishment's compensation: a cancelled order's pending purchases are called off, and a
 * tombstone left so that a backorder arriving late buys nothing; replenishment.cancelled reports
 * it when order-creation counts on it.
 */
import { emit } from '../common/events.ts';
import type { Handler } from '../common/runner.ts';
import type { ReplenishmentStore } from '../services/replenishment/store.ts';

export const cancelPurchases: Handler<'order.cancelled', ReplenishmentStore> = async ({ data }, store) => {
  await store.tombstones.leave(data.orderId, data.reason);
  const cancelled = await store.cancelPending(data.orderId);
  if (!data.compensations?.includes('replenishment.cancelled')) return [];
  return [emit('replenishment.cancelled', { orderId: data.orderId, replenishmentIds: cancelled })];
};

/**
 * Replenishment's compensation: a cancelled order's pending purchases are called off. Arriving
 * before the backorder, it leaves a tombstone so the late backorder buys nothing.
 */
import type { Handler } from '../common/runner.ts';
import type { ReplenishmentStore } from '../services/replenishment/store.ts';

export const cancelPurchases: Handler<'order.cancelled', ReplenishmentStore> = async ({ data }, store) => {
  await store.cancelOrder(data.orderId);
  return [];
};

/**
 * Inventory's compensations: undo its part of an order that failed. Each is safe to repeat and
 * checks the order's state first, doing nothing once the state has moved on.
 */
import { emit } from '../common/events.ts';
import type { Handler } from '../common/runner.ts';
import { reservedEvents } from '../services/inventory/domain.ts';
import type { InventoryStore } from '../services/inventory/store.ts';

/**
 * order.cancelled → release the order's reservation (and drop its backorders), reported by
 * inventory.released. Arriving before order.created, it leaves a tombstone so that the late
 * order.created is refused.
 */
export const releaseReservation: Handler<'order.cancelled', InventoryStore> = async (
  { data },
  store,
  { log },
) => {
  // order-creation counts on this report when it names it, even if nothing was held here.
  const owed = data.compensations?.includes('inventory.released') ?? false;
  const nothing = owed ? [emit('inventory.released', { orderId: data.orderId, items: [] })] : [];
  const order = await store.order(data.orderId);
  if (!order) {
    await store.tombstones.leave(data.orderId, data.reason);
    return nothing;
  }
  if (order.status === 'DEDUCTED') {
    log.warn({ orderId: data.orderId }, 'order.cancelled after dispatch: nothing to release');
    return nothing;
  }
  if (order.status !== 'RESERVED' && order.status !== 'BACKORDERED') return nothing;
  const released = await store.release(data.orderId);
  await store.setOrder(data.orderId, 'RELEASED');
  const ready = await store.fillBackorders(released.map((r) => r.sku));
  return [emit('inventory.released', { orderId: data.orderId, items: released }), ...reservedEvents(ready)];
};

/**
 * replenishment.failed for an order still waiting → release its partial reservation and reject
 * it. If the order was filled meanwhile (or is gone), the failure no longer concerns it.
 */
export const rejectUnfillable: Handler<'replenishment.failed', InventoryStore> = async ({ data }, store) => {
  if (!data.orderId) return [];
  const order = await store.order(data.orderId);
  if (order?.status !== 'BACKORDERED') return [];
  const released = await store.release(data.orderId);
  await store.setOrder(data.orderId, 'REJECTED');
  const ready = await store.fillBackorders(released.map((r) => r.sku));
  return [
    emit('inventory.rejected', {
      orderId: data.orderId,
      reason: 'REPLENISHMENT_FAILED',
      detail: data.detail,
    }),
    ...reservedEvents(ready),
  ];
};

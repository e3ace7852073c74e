/** Inventory's subscriptions: routing key → handler, compensations included. */

import { type Emit, emit } from '../../common/events.ts';
import type { Handler, Handlers } from '../../common/runner.ts';
import { rejectUnfillable, releaseReservation } from '../../compensation/inventory.ts';
import { isLow, planReservation, reservedEvents } from './domain.ts';
import type { InventoryStore } from './store.ts';

/** After reserving, every touched SKU left at or under its reorder point asks for a restock. */
async function lowStockEvents(store: InventoryStore, skus: readonly string[]): Promise<Emit[]> {
  const levels = await store.stock(skus);
  return [...levels.values()]
    .filter(isLow)
    .map((s) =>
      emit('stock.low', { sku: s.sku, available: s.onHand - s.reserved, reorderPoint: s.reorderPoint }),
    );
}

const reserve: Handler<'order.created', InventoryStore> = async ({ data }, store, { failAt, saga }) => {
  // Called off before it came, or seen before (another delivery): refuse.
  if ((await store.tombstones.has(data.orderId)) || (await store.order(data.orderId))) return [];
  const stock = await store.stock(data.items.map((item) => item.sku));
  const plan = planReservation(data.items, stock, failAt === 'inventory');
  if (plan.kind === 'rejected') {
    await store.setOrder(data.orderId, 'REJECTED');
    return [emit('inventory.rejected', { orderId: data.orderId, ...plan.rejection })];
  }
  for (const line of plan.lines) {
    await store.reserve(data.orderId, line.sku, line.requested, line.reserve);
    if (line.missing > 0)
      await store.addBackorder(data.orderId, line.sku, line.missing, failAt === 'replenishment');
  }
  const shortages = plan.lines.filter((l) => l.missing > 0).map(({ sku, missing }) => ({ sku, missing }));
  await store.setOrder(data.orderId, shortages.length > 0 ? 'BACKORDERED' : 'RESERVED', {
    shippingAddress: data.shippingAddress,
    context: saga,
  });
  const outcome =
    shortages.length > 0
      ? emit('inventory.backordered', {
          orderId: data.orderId,
          shortages: shortages as [(typeof shortages)[0]],
        })
      : emit('inventory.reserved', {
          orderId: data.orderId,
          items: data.items,
          shippingAddress: data.shippingAddress,
        });
  return [
    outcome,
    ...(await lowStockEvents(
      store,
      plan.lines.map((l) => l.sku),
    )),
  ];
};

const restock: Handler<'replenishment.completed', InventoryStore> = async ({ data }, store, { log }) => {
  if (!(await store.addStock(data.sku, data.quantity))) {
    log.warn({ sku: data.sku }, 'replenishment of a SKU inventory does not carry: ignored');
    return [];
  }
  const ready = await store.fillBackorders([data.sku], data.orderId);
  return [...reservedEvents(ready), ...(await lowStockEvents(store, [data.sku]))];
};

const deduct: Handler<'shipment.dispatched', InventoryStore> = async ({ data }, store, { log }) => {
  const order = await store.order(data.orderId);
  if (order?.status !== 'RESERVED') {
    if (order?.status !== 'DEDUCTED')
      log.error({ orderId: data.orderId, status: order?.status }, 'dispatched without a reservation');
    return [];
  }
  await store.deduct(data.orderId);
  await store.setOrder(data.orderId, 'DEDUCTED');
  return [];
};

export const handlers: Handlers<InventoryStore> = {
  'order.created': reserve,
  'replenishment.completed': restock,
  'shipment.dispatched': deduct,
  // Compensations (compensation/inventory.ts).
  'order.cancelled': releaseReservation,
  'replenishment.failed': rejectUnfillable,
};

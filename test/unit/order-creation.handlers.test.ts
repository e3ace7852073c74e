import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { storeContext } from '../../common/saga-context.ts';
import type { CancelReason, OrderStatus } from '../../services/order-creation/domain.ts';
import { handlers } from '../../services/order-creation/handlers.ts';
import { migrations, orderStore, readOrder } from '../../services/order-creation/store.ts';
import { anOrder } from '../../support/builders.ts';
import {
  anEvent,
  handlerFor,
  inventoryReserved,
  openServiceDb,
  shipmentDispatched,
} from '../support/unit-db.ts';

const track = handlerFor(handlers, 'inventory.reserved');

/** order-creation's database with one order in the given status. */
async function anOrderIn(status: OrderStatus = 'PENDING', cancelReason?: CancelReason) {
  const orders = await openServiceDb('order-creation', migrations, orderStore);
  const id = randomUUID();
  const order = anOrder();
  const now = new Date().toISOString();
  await orders.transact(async (store) => {
    await store.create({
      id,
      customer_id: order.customerId,
      items: JSON.stringify(order.items),
      shipping_address: JSON.stringify(order.shippingAddress),
      context: storeContext({ orderId: id }),
      created_at: now,
      deadline_at: now,
    });
    if (status !== 'PENDING') await store.update(id, { status, ...(cancelReason ? { cancelReason } : {}) });
    return { value: undefined, emit: [] };
  });
  return { orders, id };
}

describe('order-creation: following the saga of an order', () => {
  it("listens to every other service's event about an order", () => {
    expect(Object.keys(handlers).sort()).toEqual(
      [
        'inventory.reserved',
        'inventory.backordered',
        'inventory.rejected',
        'inventory.released',
        'replenishment.completed',
        'replenishment.failed',
        'replenishment.cancelled',
        'shipment.dispatched',
        'shipment.failed',
        'shipment.cancelled',
        'shipment.cancel_rejected',
      ].sort(),
    );
  });

  it('every event about an order lands in its timeline once, with the service that emitted it', async () => {
    // Arrange
    const { orders, id } = await anOrderIn('PENDING');
    const reserved = inventoryReserved(id);

    // Act: delivered twice
    await orders.handle(track, reserved);
    await orders.handle(track, reserved);

    // Assert
    const order = await readOrder(orders.db, id);
    expect(order?.timeline.map((t) => ({ eventId: t.eventId, type: t.type, source: t.source }))).toEqual([
      { eventId: reserved.id, type: 'inventory.reserved', source: 'inventory' },
    ]);
    expect(order?.status).toBe('RESERVED');
  });

  it('when inventory rejects the order, it is cancelled with that reason and order.cancelled tells the other services', async () => {
    const { orders, id } = await anOrderIn('PENDING');

    const emitted = await orders.handle(
      handlerFor(handlers, 'inventory.rejected'),
      anEvent('inventory.rejected', { orderId: id, reason: 'UNKNOWN_SKU', detail: 'unknown SKU: NOPE-9' }),
    );

    expect(emitted).toEqual([
      { type: 'order.cancelled', data: { orderId: id, reason: 'UNKNOWN_SKU', compensations: [] } },
    ]);
    const order = await readOrder(orders.db, id);
    // Nothing was reserved, nothing ordered: it is owed nothing, settled at once.
    expect(order).toMatchObject({
      status: 'CANCELLED',
      reason: 'UNKNOWN_SKU',
      settledAt: expect.any(String),
    });
    expect(order?.timeline[0]).toMatchObject({ type: 'inventory.rejected', detail: 'unknown SKU: NOPE-9' });
  });

  it('the pivot: a dispatch while the cancel is pending completes the order', async () => {
    const { orders, id } = await anOrderIn('CANCELLING', 'CUSTOMER_CANCELLED');

    const emitted = await orders.handle(handlerFor(handlers, 'shipment.dispatched'), shipmentDispatched(id));

    expect(emitted).toEqual([{ type: 'order.completed', data: { orderId: id } }]);
    expect(await readOrder(orders.db, id)).toMatchObject({
      status: 'COMPLETED',
      settledAt: expect.any(String),
    });
  });

  it('when shipment confirms a deadline cancel, the order is cancelled with DEADLINE_EXCEEDED (the stored cancel reason)', async () => {
    const { orders, id } = await anOrderIn('CANCELLING', 'DEADLINE_EXCEEDED');

    const emitted = await orders.handle(
      handlerFor(handlers, 'shipment.cancelled'),
      anEvent('shipment.cancelled', { orderId: id }),
    );

    expect(emitted).toEqual([
      {
        type: 'order.cancelled',
        data: {
          orderId: id,
          reason: 'DEADLINE_EXCEEDED',
          compensations: ['inventory.released', 'replenishment.cancelled'],
        },
      },
    ]);
    const order = await readOrder(orders.db, id);
    expect(order).toMatchObject({ status: 'CANCELLED', reason: 'DEADLINE_EXCEEDED' });
    expect(order?.settledAt).toBeUndefined();
  });

  it('a cancelled order is settled when the last compensation it is owed reports, in either order', async () => {
    const { orders, id } = await anOrderIn('CANCELLING', 'CUSTOMER_CANCELLED');
    await orders.handle(
      handlerFor(handlers, 'shipment.cancelled'),
      anEvent('shipment.cancelled', { orderId: id }),
    );

    await orders.handle(
      handlerFor(handlers, 'replenishment.cancelled'),
      anEvent('replenishment.cancelled', { orderId: id, replenishmentIds: [] }),
    );
    const halfway = await readOrder(orders.db, id);
    await orders.handle(
      handlerFor(handlers, 'inventory.released'),
      anEvent('inventory.released', { orderId: id, items: [] }),
    );
    const order = await readOrder(orders.db, id);

    expect(halfway?.settledAt).toBeUndefined();
    expect(order).toMatchObject({ status: 'CANCELLED', reason: 'CUSTOMER_CANCELLED' });
    const last = order?.timeline.at(-1);
    expect(last?.type).toBe('inventory.released');
    expect(Date.parse(order?.settledAt ?? '')).toBeGreaterThanOrEqual(Date.parse(last?.at ?? 'x'));
  });

  it('a completed order never changes again: a late shipment.failed is only recorded', async () => {
    const { orders, id } = await anOrderIn('COMPLETED');

    const emitted = await orders.handle(
      handlerFor(handlers, 'shipment.failed'),
      anEvent('shipment.failed', { orderId: id, reason: 'SHIPMENT_FAILED', detail: 'INJECTED' }),
    );

    expect(emitted).toEqual([]);
    const order = await readOrder(orders.db, id);
    expect(order?.status).toBe('COMPLETED');
    expect(order?.reason).toBeUndefined();
    expect(order?.timeline.map((t) => t.type)).toEqual(['shipment.failed']);
  });

  it('an event about an order this service does not know changes nothing and emits nothing', async () => {
    const { orders, id } = await anOrderIn('PENDING');

    const emitted = await orders.handle(
      handlerFor(handlers, 'inventory.reserved'),
      inventoryReserved(randomUUID()),
    );

    expect(emitted).toEqual([]);
    expect((await readOrder(orders.db, id))?.status).toBe('PENDING');
  });
});

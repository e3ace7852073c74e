import { describe, expect, it } from 'vitest';
import { rejectUnfillable, releaseReservation } from '../../compensation/inventory.ts';
import { handlers } from '../../services/inventory/handlers.ts';
import { readStock } from '../../services/inventory/store.ts';
import { aLine } from '../../support/builders.ts';
import {
  emittedOf,
  expectStockInvariants,
  handlerFor,
  openInventory,
  orderCancelled,
  orderCreated,
  replenishmentCompleted,
  replenishmentFailed,
  shipmentDispatched,
  stockOf,
  typesOf,
} from '../support/unit-db.ts';

const reserve = handlerFor(handlers, 'order.created');
const restock = handlerFor(handlers, 'replenishment.completed');
const deduct = handlerFor(handlers, 'shipment.dispatched');

describe('inventory compensation: releasing a cancelled order (order.cancelled)', () => {
  it('is what inventory does on order.cancelled and on replenishment.failed', () => {
    expect(handlers['order.cancelled']).toBe(releaseReservation);
    expect(handlers['replenishment.failed']).toBe(rejectUnfillable);
  });

  it('when the shipment fails, the reservation is released and inventory.released says what was given back', async () => {
    // Arrange
    const inventory = await openInventory();
    const order = orderCreated([aLine('GADGET-2', 3), aLine('WIDGET-1', 2)]);
    await inventory.handle(reserve, order);

    // Act
    const emitted = await inventory.handle(
      releaseReservation,
      orderCancelled(order.data.orderId, 'SHIPMENT_FAILED'),
    );

    // Assert
    expect(emitted).toEqual([
      {
        type: 'inventory.released',
        data: {
          orderId: order.data.orderId,
          items: expect.arrayContaining([
            { sku: 'GADGET-2', quantity: 3 },
            { sku: 'WIDGET-1', quantity: 2 },
          ]),
        },
      },
    ]);
    expect(await stockOf(inventory.db, 'GADGET-2')).toMatchObject({ onHand: 500, reserved: 0 });
    expect(await stockOf(inventory.db, 'WIDGET-1')).toMatchObject({ reserved: 0 });
    await expectStockInvariants(inventory.db);
  });

  it('applied twice, the second changes nothing and emits nothing', async () => {
    const inventory = await openInventory();
    const order = orderCreated([aLine('GADGET-2', 3)]);
    await inventory.handle(reserve, order);
    await inventory.handle(releaseReservation, orderCancelled(order.data.orderId));
    const before = await readStock(inventory.db);

    const again = await inventory.handle(releaseReservation, orderCancelled(order.data.orderId));

    expect(again).toEqual([]);
    expect(await readStock(inventory.db)).toEqual(before);
    await expectStockInvariants(inventory.db);
  });

  it('a backordered order gives back its partial reservation and its backorder no longer waits', async () => {
    const inventory = await openInventory();
    const order = orderCreated([aLine('GIZMO-3', 8)]);
    await inventory.handle(reserve, order);

    const emitted = await inventory.handle(
      releaseReservation,
      orderCancelled(order.data.orderId, 'CUSTOMER_CANCELLED'),
    );
    const later = await inventory.handle(restock, replenishmentCompleted('GIZMO-3', 3, order.data.orderId));

    expect(emittedOf(emitted, 'inventory.released')).toEqual([
      { orderId: order.data.orderId, items: [{ sku: 'GIZMO-3', quantity: 5 }] },
    ]);
    expect(emittedOf(later, 'inventory.reserved')).toEqual([]);
    expect(await inventory.db.selectFrom('backorders').selectAll().execute()).toEqual([]);
    expect(await stockOf(inventory.db, 'GIZMO-3')).toMatchObject({ onHand: 8, reserved: 0, available: 8 });
    await expectStockInvariants(inventory.db, { replenished: { 'GIZMO-3': 3 } });
  });

  it('a backordered order with nothing reserved yet is released with an empty list', async () => {
    const inventory = await openInventory();
    await inventory.handle(reserve, orderCreated([aLine('LEGACY-4', 3)]));
    const order = orderCreated([aLine('LEGACY-4', 2)]);
    await inventory.handle(reserve, order);

    const emitted = await inventory.handle(releaseReservation, orderCancelled(order.data.orderId));

    expect(emitted).toEqual([
      { type: 'inventory.released', data: { orderId: order.data.orderId, items: [] } },
    ]);
    expect(await stockOf(inventory.db, 'LEGACY-4')).toMatchObject({ reserved: 3 });
    await expectStockInvariants(inventory.db);
  });

  it('stock released by a cancellation goes to the next waiting backorder, which is then reserved', async () => {
    const inventory = await openInventory();
    const first = orderCreated([aLine('GIZMO-3', 5)]);
    const waiting = orderCreated([aLine('GIZMO-3', 2)]);
    await inventory.handle(reserve, first);
    await inventory.handle(reserve, waiting);

    const emitted = await inventory.handle(releaseReservation, orderCancelled(first.data.orderId));

    expect(typesOf(emitted)).toEqual(['inventory.released', 'inventory.reserved']);
    expect(emittedOf(emitted, 'inventory.reserved')).toEqual([
      {
        orderId: waiting.data.orderId,
        items: [{ sku: 'GIZMO-3', quantity: 2 }],
        shippingAddress: waiting.data.shippingAddress,
      },
    ]);
    expect(await stockOf(inventory.db, 'GIZMO-3')).toMatchObject({ onHand: 5, reserved: 2, available: 3 });
    await expectStockInvariants(inventory.db);
  });

  it('applied before order.created, it leaves a tombstone: the late order.created reserves nothing and emits nothing', async () => {
    const inventory = await openInventory();
    const order = orderCreated([aLine('GADGET-2', 3)]);

    const compensation = await inventory.handle(
      releaseReservation,
      orderCancelled(order.data.orderId, 'DEADLINE_EXCEEDED'),
    );
    const late = await inventory.handle(reserve, order);

    expect(compensation).toEqual([]);
    expect(late).toEqual([]);
    expect(await stockOf(inventory.db, 'GADGET-2')).toMatchObject({ reserved: 0 });
    expect(await inventory.db.selectFrom('reservations').selectAll().execute()).toEqual([]);
    await expectStockInvariants(inventory.db);
  });

  it('when order-creation counts on its report, it reports inventory.released even with nothing held', async () => {
    const inventory = await openInventory();
    const orderId = orderCreated([aLine('GADGET-2', 3)]).data.orderId;

    const emitted = await inventory.handle(
      releaseReservation,
      orderCancelled(orderId, 'CUSTOMER_CANCELLED', ['inventory.released', 'replenishment.cancelled']),
    );

    expect(emitted).toEqual([{ type: 'inventory.released', data: { orderId, items: [] } }]);
  });

  it('when order-creation counts on its report, a release reports what was given back, once', async () => {
    const inventory = await openInventory();
    const order = orderCreated([aLine('GADGET-2', 3)]);
    await inventory.handle(reserve, order);
    const cancelled = orderCancelled(order.data.orderId, 'SHIPMENT_FAILED', ['inventory.released']);

    const emitted = await inventory.handle(releaseReservation, cancelled);

    expect(emitted).toEqual([
      {
        type: 'inventory.released',
        data: { orderId: order.data.orderId, items: [{ sku: 'GADGET-2', quantity: 3 }] },
      },
    ]);
    await expectStockInvariants(inventory.db);
  });

  it('after dispatch there is nothing to release: stock stays deducted and nothing is emitted', async () => {
    const inventory = await openInventory();
    const order = orderCreated([aLine('GADGET-2', 3)]);
    await inventory.handle(reserve, order);
    await inventory.handle(deduct, shipmentDispatched(order.data.orderId));

    const emitted = await inventory.handle(releaseReservation, orderCancelled(order.data.orderId));

    expect(emitted).toEqual([]);
    expect(await stockOf(inventory.db, 'GADGET-2')).toMatchObject({
      onHand: 497,
      reserved: 0,
      dispatched: 3,
    });
    await expectStockInvariants(inventory.db, { dispatched: { 'GADGET-2': 3 } });
  });

  it('after a rejection (nothing was reserved) it does nothing', async () => {
    const inventory = await openInventory();
    const order = orderCreated([aLine('WIDGET-1', 1), aLine('NOPE-9', 1)]);
    await inventory.handle(reserve, order);

    const emitted = await inventory.handle(
      releaseReservation,
      orderCancelled(order.data.orderId, 'UNKNOWN_SKU'),
    );

    expect(emitted).toEqual([]);
    await expectStockInvariants(inventory.db);
  });

  it('when a cancelled order had two lines of the same SKU, its whole reservation is released', async () => {
    // Two lines of 600 (each within the 1..1000 of a line) are held as one reservation of 1200.
    const inventory = await openInventory();
    const order = orderCreated([aLine('WIDGET-1', 600), aLine('WIDGET-1', 600)]);
    await inventory.handle(reserve, order);

    await inventory.handle(releaseReservation, orderCancelled(order.data.orderId));

    expect(await stockOf(inventory.db, 'WIDGET-1')).toMatchObject({ reserved: 0 });
    await expectStockInvariants(inventory.db);
  });
});

describe('inventory compensation: an order replenishment cannot fill (replenishment.failed)', () => {
  it('when the replenishment fails, the partial reservation is released and the order rejected with REPLENISHMENT_FAILED', async () => {
    const inventory = await openInventory();
    const order = orderCreated([aLine('LEGACY-4', 5), aLine('WIDGET-1', 1)]);
    await inventory.handle(reserve, order);

    const emitted = await inventory.handle(
      rejectUnfillable,
      replenishmentFailed('LEGACY-4', order.data.orderId, 'LEGACY-4 is discontinued'),
    );

    expect(emitted).toEqual([
      {
        type: 'inventory.rejected',
        data: {
          orderId: order.data.orderId,
          reason: 'REPLENISHMENT_FAILED',
          detail: 'LEGACY-4 is discontinued',
        },
      },
    ]);
    expect(await stockOf(inventory.db, 'LEGACY-4')).toMatchObject({ onHand: 3, reserved: 0 });
    expect(await stockOf(inventory.db, 'WIDGET-1')).toMatchObject({ reserved: 0 });
    expect(await inventory.db.selectFrom('backorders').selectAll().execute()).toEqual([]);
    await expectStockInvariants(inventory.db);
  });

  it('an injected failure is passed on: the rejection says INJECTED', async () => {
    const inventory = await openInventory();
    const order = orderCreated([aLine('GIZMO-3', 8)]);
    await inventory.handle(reserve, order);

    const emitted = await inventory.handle(
      rejectUnfillable,
      replenishmentFailed('GIZMO-3', order.data.orderId, 'INJECTED'),
    );

    expect(emittedOf(emitted, 'inventory.rejected')).toEqual([
      { orderId: order.data.orderId, reason: 'REPLENISHMENT_FAILED', detail: 'INJECTED' },
    ]);
  });

  it('applied twice, the second changes nothing and emits nothing', async () => {
    const inventory = await openInventory();
    const order = orderCreated([aLine('LEGACY-4', 5)]);
    await inventory.handle(reserve, order);
    await inventory.handle(rejectUnfillable, replenishmentFailed('LEGACY-4', order.data.orderId));
    const before = await readStock(inventory.db);

    const again = await inventory.handle(
      rejectUnfillable,
      replenishmentFailed('LEGACY-4', order.data.orderId),
    );

    expect(again).toEqual([]);
    expect(await readStock(inventory.db)).toEqual(before);
    await expectStockInvariants(inventory.db);
  });

  it('does nothing if the order was already fully reserved (another replenishment filled it first)', async () => {
    const inventory = await openInventory();
    const order = orderCreated([aLine('GIZMO-3', 8)]);
    await inventory.handle(reserve, order);
    await inventory.handle(restock, replenishmentCompleted('GIZMO-3', 20));

    const emitted = await inventory.handle(
      rejectUnfillable,
      replenishmentFailed('GIZMO-3', order.data.orderId, 'INJECTED'),
    );

    expect(emitted).toEqual([]);
    expect(await stockOf(inventory.db, 'GIZMO-3')).toMatchObject({ onHand: 25, reserved: 8 });
    await expectStockInvariants(inventory.db, { replenished: { 'GIZMO-3': 20 } });
  });

  it('a failed restock that no order asked for (stock.low) releases nothing', async () => {
    const inventory = await openInventory();
    const order = orderCreated([aLine('GIZMO-3', 8)]);
    await inventory.handle(reserve, order);

    const emitted = await inventory.handle(rejectUnfillable, replenishmentFailed('GIZMO-3'));

    expect(emitted).toEqual([]);
    expect(await stockOf(inventory.db, 'GIZMO-3')).toMatchObject({ reserved: 5 });
  });

  it('after the order was cancelled (released), a late failure does nothing', async () => {
    const inventory = await openInventory();
    const order = orderCreated([aLine('LEGACY-4', 5)]);
    await inventory.handle(reserve, order);
    await inventory.handle(releaseReservation, orderCancelled(order.data.orderId, 'CUSTOMER_CANCELLED'));

    const emitted = await inventory.handle(
      rejectUnfillable,
      replenishmentFailed('LEGACY-4', order.data.orderId),
    );

    expect(emitted).toEqual([]);
    await expectStockInvariants(inventory.db);
  });

  it('the order.cancelled that follows the rejection does nothing more', async () => {
    const inventory = await openInventory();
    const order = orderCreated([aLine('LEGACY-4', 5)]);
    await inventory.handle(reserve, order);
    await inventory.handle(rejectUnfillable, replenishmentFailed('LEGACY-4', order.data.orderId));
    const before = await readStock(inventory.db);

    const emitted = await inventory.handle(
      releaseReservation,
      orderCancelled(order.data.orderId, 'REPLENISHMENT_FAILED'),
    );

    expect(emitted).toEqual([]);
    expect(await readStock(inventory.db)).toEqual(before);
  });

  it('stock released by the rejection goes to the next waiting backorder', async () => {
    const inventory = await openInventory();
    const unfillable = orderCreated([aLine('LEGACY-4', 5)]);
    const next = orderCreated([aLine('LEGACY-4', 2)]);
    await inventory.handle(reserve, unfillable);
    await inventory.handle(reserve, next);

    const emitted = await inventory.handle(
      rejectUnfillable,
      replenishmentFailed('LEGACY-4', unfillable.data.orderId),
    );

    expect(typesOf(emitted)).toEqual(['inventory.rejected', 'inventory.reserved']);
    expect(emittedOf(emitted, 'inventory.reserved').map((r) => r.orderId)).toEqual([next.data.orderId]);
    expect(await stockOf(inventory.db, 'LEGACY-4')).toMatchObject({ onHand: 3, reserved: 2 });
    await expectStockInvariants(inventory.db);
  });
});

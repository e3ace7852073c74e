import { describe, expect, it } from 'vitest';
import { handlers } from '../../services/inventory/handlers.ts';
import { aLine, anAddress } from '../../support/builders.ts';
import {
  emittedOf,
  expectStockInvariants,
  handlerFor,
  openInventory,
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

describe('inventory: reserving an order (order.created)', () => {
  it('when every line is available, each is reserved and inventory.reserved carries the lines and the address', async () => {
    // Arrange
    const inventory = await openInventory();
    const order = orderCreated([aLine('WIDGET-1', 2), aLine('GADGET-2', 3)], {
      shippingAddress: anAddress({ country: 'FR' }),
    });

    // Act
    const emitted = await inventory.handle(reserve, order);

    // Assert
    expect(emitted).toEqual([
      {
        type: 'inventory.reserved',
        data: {
          orderId: order.data.orderId,
          items: order.data.items,
          shippingAddress: order.data.shippingAddress,
        },
      },
    ]);
    expect(await stockOf(inventory.db, 'WIDGET-1')).toMatchObject({
      onHand: 1_000_000,
      reserved: 2,
      available: 999_998,
    });
    expect(await stockOf(inventory.db, 'GADGET-2')).toMatchObject({
      onHand: 500,
      reserved: 3,
      available: 497,
    });
    await expectStockInvariants(inventory.db);
  });

  it('the events it emits are the ones committed to the outbox, in the same transaction', async () => {
    const inventory = await openInventory();

    const emitted = await inventory.handle(reserve, orderCreated([aLine('GIZMO-3', 2)]));

    expect(typesOf(await inventory.outbox())).toEqual(typesOf(emitted));
    expect(typesOf(emitted)).toEqual(['inventory.reserved', 'stock.low']);
  });

  it('when stock is short, what is available is reserved, the rest is backordered, and stock.low asks for a restock', async () => {
    const inventory = await openInventory();
    const order = orderCreated([aLine('WIDGET-1', 1), aLine('GIZMO-3', 8)]);

    const emitted = await inventory.handle(reserve, order);

    expect(emitted).toEqual([
      {
        type: 'inventory.backordered',
        data: { orderId: order.data.orderId, shortages: [{ sku: 'GIZMO-3', missing: 3 }] },
      },
      { type: 'stock.low', data: { sku: 'GIZMO-3', available: 0, reorderPoint: 10 } },
    ]);
    expect(await stockOf(inventory.db, 'GIZMO-3')).toMatchObject({ onHand: 5, reserved: 5, available: 0 });
    expect(await stockOf(inventory.db, 'WIDGET-1')).toMatchObject({ reserved: 1 });
    const backorders = await inventory.db
      .selectFrom('backorders')
      .select(['order_id', 'sku', 'missing'])
      .execute();
    expect(backorders).toEqual([{ order_id: order.data.orderId, sku: 'GIZMO-3', missing: 3 }]);
    await expectStockInvariants(inventory.db);
  });

  it('a reservation that leaves a SKU exactly at its reorder point emits stock.low; one unit less does not', async () => {
    const inventory = await openInventory();

    const notLow = await inventory.handle(reserve, orderCreated([aLine('GADGET-2', 449)]));
    const low = await inventory.handle(reserve, orderCreated([aLine('GADGET-2', 1)]));

    expect(typesOf(notLow)).toEqual(['inventory.reserved']);
    expect(low).toContainEqual({
      type: 'stock.low',
      data: { sku: 'GADGET-2', available: 50, reorderPoint: 50 },
    });
    await expectStockInvariants(inventory.db);
  });

  it('a discontinued SKU never asks for a restock, even when it runs out or is short', async () => {
    const inventory = await openInventory();

    const allOfIt = await inventory.handle(reserve, orderCreated([aLine('LEGACY-4', 3)]));
    const short = await inventory.handle(reserve, orderCreated([aLine('LEGACY-4', 2)]));

    expect(typesOf(allOfIt)).toEqual(['inventory.reserved']);
    expect(typesOf(short)).toEqual(['inventory.backordered']);
    await expectStockInvariants(inventory.db);
  });

  it('two lines of the same SKU are reserved as one: one shortage of their sum', async () => {
    const inventory = await openInventory();
    const order = orderCreated([aLine('GIZMO-3', 3), aLine('GIZMO-3', 4)]);

    const emitted = await inventory.handle(reserve, order);

    expect(emittedOf(emitted, 'inventory.backordered')).toEqual([
      { orderId: order.data.orderId, shortages: [{ sku: 'GIZMO-3', missing: 2 }] },
    ]);
    expect(await stockOf(inventory.db, 'GIZMO-3')).toMatchObject({ reserved: 5, available: 0 });
    await expectStockInvariants(inventory.db);
  });

  it('an unknown SKU rejects the whole order with UNKNOWN_SKU and reserves nothing', async () => {
    const inventory = await openInventory();
    const order = orderCreated([aLine('WIDGET-1', 1), aLine('NOPE-9', 1)]);

    const emitted = await inventory.handle(reserve, order);

    expect(emitted).toEqual([
      {
        type: 'inventory.rejected',
        data: { orderId: order.data.orderId, reason: 'UNKNOWN_SKU', detail: 'unknown SKU: NOPE-9' },
      },
    ]);
    expect(await stockOf(inventory.db, 'WIDGET-1')).toMatchObject({ reserved: 0 });
    await expectStockInvariants(inventory.db);
  });

  it('an injected failure at inventory rejects the order with INVENTORY_REJECTED / INJECTED and reserves nothing', async () => {
    const inventory = await openInventory();
    const order = orderCreated([aLine('WIDGET-1', 1)]);

    const emitted = await inventory.handle(reserve, order, 'inventory');

    expect(emitted).toEqual([
      {
        type: 'inventory.rejected',
        data: { orderId: order.data.orderId, reason: 'INVENTORY_REJECTED', detail: 'INJECTED' },
      },
    ]);
    expect(await stockOf(inventory.db, 'WIDGET-1')).toMatchObject({ reserved: 0 });
  });

  it('an injected failure meant for another step does not reject the order here', async () => {
    const inventory = await openInventory();

    const emitted = await inventory.handle(reserve, orderCreated([aLine('WIDGET-1', 1)]), 'shipment');

    expect(typesOf(emitted)).toEqual(['inventory.reserved']);
  });

  it('an order seen before (another delivery of order.created) reserves nothing more and emits nothing', async () => {
    const inventory = await openInventory();
    const order = orderCreated([aLine('GADGET-2', 5)]);
    await inventory.handle(reserve, order);

    const again = await inventory.handle(reserve, { ...order, id: crypto.randomUUID() });

    expect(again).toEqual([]);
    expect(await stockOf(inventory.db, 'GADGET-2')).toMatchObject({ reserved: 5 });
    await expectStockInvariants(inventory.db);
  });

  it('an order of many unknown SKUs is rejected with an inventory.rejected its schema accepts', async () => {
    // 20 unknown SKUs of 32 characters: the detail names them all.
    const inventory = await openInventory();
    const skus = Array.from(
      { length: 20 },
      (_, i) => `UNKNOWN-${String(i).padStart(2, '0')}-${'X'.repeat(20)}`,
    );
    const order = orderCreated(skus.map((sku) => aLine(sku, 1)));

    const emitted = await inventory.handle(reserve, order);

    expect(emittedOf(emitted, 'inventory.rejected')).toEqual([
      expect.objectContaining({ orderId: order.data.orderId, reason: 'UNKNOWN_SKU' }),
    ]);
  });
});

describe('inventory: replenished stock (replenishment.completed)', () => {
  it('when a replenishment completes, waiting backorders are filled first come first served and the order now complete is reserved', async () => {
    // Arrange: GIZMO-3 has 5; A misses 3, then B misses 4, then C misses 2.
    const inventory = await openInventory();
    const a = orderCreated([aLine('GIZMO-3', 8)], { shippingAddress: anAddress({ city: 'Leeds' }) });
    const b = orderCreated([aLine('GIZMO-3', 4)]);
    const c = orderCreated([aLine('GIZMO-3', 2)]);
    for (const order of [a, b, c]) await inventory.handle(reserve, order);

    // Act: 5 arrive
    const emitted = await inventory.handle(restock, replenishmentCompleted('GIZMO-3', 5, a.data.orderId));

    // Assert: A takes 3 and is complete, B takes the other 2, C gets nothing yet.
    expect(emittedOf(emitted, 'inventory.reserved')).toEqual([
      {
        orderId: a.data.orderId,
        items: [{ sku: 'GIZMO-3', quantity: 8 }],
        shippingAddress: a.data.shippingAddress,
      },
    ]);
    expect(emittedOf(emitted, 'stock.low')).toEqual([{ sku: 'GIZMO-3', available: 0, reorderPoint: 10 }]);
    const waiting = await inventory.db
      .selectFrom('backorders')
      .select(['order_id', 'missing'])
      .orderBy('seq')
      .execute();
    expect(waiting).toEqual([
      { order_id: b.data.orderId, missing: 2 },
      { order_id: c.data.orderId, missing: 2 },
    ]);
    expect(await stockOf(inventory.db, 'GIZMO-3')).toMatchObject({ onHand: 10, reserved: 10, available: 0 });
    await expectStockInvariants(inventory.db, { replenished: { 'GIZMO-3': 5 } });
  });

  it('a second replenishment completes the next orders in line, each announced once', async () => {
    const inventory = await openInventory();
    const a = orderCreated([aLine('GIZMO-3', 8)]);
    const b = orderCreated([aLine('GIZMO-3', 4)]);
    const c = orderCreated([aLine('GIZMO-3', 2)]);
    for (const order of [a, b, c]) await inventory.handle(reserve, order);
    await inventory.handle(restock, replenishmentCompleted('GIZMO-3', 5));

    const emitted = await inventory.handle(restock, replenishmentCompleted('GIZMO-3', 10));

    expect(emittedOf(emitted, 'inventory.reserved').map((r) => r.orderId)).toEqual([
      b.data.orderId,
      c.data.orderId,
    ]);
    expect(await inventory.db.selectFrom('backorders').selectAll().execute()).toEqual([]);
    expect(await stockOf(inventory.db, 'GIZMO-3')).toMatchObject({ onHand: 20, reserved: 14, available: 6 });
    await expectStockInvariants(inventory.db, { replenished: { 'GIZMO-3': 15 } });
  });

  it('an order short on two SKUs is reserved only once both have arrived, with all its lines', async () => {
    const inventory = await openInventory();
    const order = orderCreated([aLine('GIZMO-3', 7), aLine('GADGET-2', 501)]);
    await inventory.handle(reserve, order);

    const first = await inventory.handle(restock, replenishmentCompleted('GIZMO-3', 2, order.data.orderId));
    const second = await inventory.handle(restock, replenishmentCompleted('GADGET-2', 1, order.data.orderId));

    expect(emittedOf(first, 'inventory.reserved')).toEqual([]);
    expect(emittedOf(second, 'inventory.reserved')).toEqual([
      {
        orderId: order.data.orderId,
        items: expect.arrayContaining([
          { sku: 'GIZMO-3', quantity: 7 },
          { sku: 'GADGET-2', quantity: 501 },
        ]),
        shippingAddress: order.data.shippingAddress,
      },
    ]);
    await expectStockInvariants(inventory.db, { replenished: { 'GIZMO-3': 2, 'GADGET-2': 1 } });
  });

  it('with nobody waiting, the replenished stock becomes available', async () => {
    const inventory = await openInventory();

    const emitted = await inventory.handle(restock, replenishmentCompleted('GIZMO-3', 20));

    expect(emittedOf(emitted, 'inventory.reserved')).toEqual([]);
    expect(emittedOf(emitted, 'stock.low')).toEqual([]);
    expect(await stockOf(inventory.db, 'GIZMO-3')).toMatchObject({ onHand: 25, available: 25 });
    await expectStockInvariants(inventory.db, { replenished: { 'GIZMO-3': 20 } });
  });

  it('a replenishment of a SKU inventory does not carry changes nothing and emits nothing', async () => {
    const inventory = await openInventory();

    const emitted = await inventory.handle(restock, replenishmentCompleted('NOPE-9', 5));

    expect(emitted).toEqual([]);
    await expectStockInvariants(inventory.db);
  });

  it('when a backordered order with two lines of the same SKU is filled, the inventory.reserved it emits passes its schema', async () => {
    // Two lines of 600 (each within the 1..1000 of a line) are stored as one line of 1200.
    const inventory = await openInventory();
    const order = orderCreated([aLine('GIZMO-3', 600), aLine('GIZMO-3', 600)]);
    await inventory.handle(reserve, order);

    const emitted = await inventory.handle(
      restock,
      replenishmentCompleted('GIZMO-3', 1195, order.data.orderId),
    );

    expect(emittedOf(emitted, 'inventory.reserved').map((r) => r.orderId)).toEqual([order.data.orderId]);
    await expectStockInvariants(inventory.db, { replenished: { 'GIZMO-3': 1195 } });
  });
});

describe('inventory: an order told to fail at replenishment (X-Fail-At: replenishment)', () => {
  it('its backorder waits for its own replenishment: stock that arrives meanwhile goes to the others', async () => {
    const inventory = await openInventory();
    const held = orderCreated([aLine('GIZMO-3', 7)]);
    const other = orderCreated([aLine('GIZMO-3', 3)]);
    await inventory.handle(reserve, held, 'replenishment');
    await inventory.handle(reserve, other);

    const emitted = await inventory.handle(restock, replenishmentCompleted('GIZMO-3', 20));

    expect(emittedOf(emitted, 'inventory.reserved').map((r) => r.orderId)).toEqual([other.data.orderId]);
    const waiting = await inventory.db.selectFrom('backorders').select(['order_id', 'missing']).execute();
    expect(waiting).toEqual([{ order_id: held.data.orderId, missing: 2 }]);
    await expectStockInvariants(inventory.db, { replenished: { 'GIZMO-3': 20 } });
  });

  it('when its replenishment fails as asked, its partial reservation is released and it is rejected', async () => {
    const inventory = await openInventory();
    const held = orderCreated([aLine('GIZMO-3', 7)]);
    await inventory.handle(reserve, held, 'replenishment');

    const emitted = await inventory.handle(
      handlerFor(handlers, 'replenishment.failed'),
      replenishmentFailed('GIZMO-3', held.data.orderId, 'INJECTED'),
      'replenishment',
    );

    expect(emittedOf(emitted, 'inventory.rejected')).toEqual([
      { orderId: held.data.orderId, reason: 'REPLENISHMENT_FAILED', detail: 'INJECTED' },
    ]);
    expect(await stockOf(inventory.db, 'GIZMO-3')).toMatchObject({ reserved: 0 });
    await expectStockInvariants(inventory.db);
  });

  it('if its own replenishment completes after all (fault injection off at replenishment), it is filled and reserved', async () => {
    const inventory = await openInventory();
    const held = orderCreated([aLine('GIZMO-3', 7)]);
    await inventory.handle(reserve, held, 'replenishment');

    const emitted = await inventory.handle(
      restock,
      replenishmentCompleted('GIZMO-3', 2, held.data.orderId),
      'replenishment',
    );

    expect(emittedOf(emitted, 'inventory.reserved').map((r) => r.orderId)).toEqual([held.data.orderId]);
    await expectStockInvariants(inventory.db, { replenished: { 'GIZMO-3': 2 } });
  });
});

describe('inventory: dispatch (shipment.dispatched)', () => {
  it('when the shipment is dispatched, the reservation leaves the warehouse: on hand and reserved go down, dispatched goes up', async () => {
    const inventory = await openInventory();
    const order = orderCreated([aLine('GADGET-2', 3), aLine('WIDGET-1', 2)]);
    await inventory.handle(reserve, order);

    const emitted = await inventory.handle(deduct, shipmentDispatched(order.data.orderId));

    expect(emitted).toEqual([]);
    expect(await stockOf(inventory.db, 'GADGET-2')).toMatchObject({
      onHand: 497,
      reserved: 0,
      dispatched: 3,
      available: 497,
    });
    expect(await stockOf(inventory.db, 'WIDGET-1')).toMatchObject({
      onHand: 999_998,
      reserved: 0,
      dispatched: 2,
    });
    await expectStockInvariants(inventory.db, { dispatched: { 'GADGET-2': 3, 'WIDGET-1': 2 } });
  });

  it('an order filled from a backorder is deducted in full', async () => {
    const inventory = await openInventory();
    const order = orderCreated([aLine('GIZMO-3', 8)]);
    await inventory.handle(reserve, order);
    await inventory.handle(restock, replenishmentCompleted('GIZMO-3', 3, order.data.orderId));

    await inventory.handle(deduct, shipmentDispatched(order.data.orderId));

    expect(await stockOf(inventory.db, 'GIZMO-3')).toMatchObject({ onHand: 0, reserved: 0, dispatched: 8 });
    await expectStockInvariants(inventory.db, {
      replenished: { 'GIZMO-3': 3 },
      dispatched: { 'GIZMO-3': 8 },
    });
  });

  it('a second shipment.dispatched for the same order deducts nothing more', async () => {
    const inventory = await openInventory();
    const order = orderCreated([aLine('GADGET-2', 3)]);
    await inventory.handle(reserve, order);
    await inventory.handle(deduct, shipmentDispatched(order.data.orderId));

    const again = await inventory.handle(deduct, shipmentDispatched(order.data.orderId));

    expect(again).toEqual([]);
    expect(await stockOf(inventory.db, 'GADGET-2')).toMatchObject({
      onHand: 497,
      reserved: 0,
      dispatched: 3,
    });
    await expectStockInvariants(inventory.db, { dispatched: { 'GADGET-2': 3 } });
  });

  it('a dispatch of an order still waiting for stock deducts nothing (it was never fully reserved)', async () => {
    const inventory = await openInventory();
    const order = orderCreated([aLine('GIZMO-3', 8)]);
    await inventory.handle(reserve, order);

    await inventory.handle(deduct, shipmentDispatched(order.data.orderId));

    expect(await stockOf(inventory.db, 'GIZMO-3')).toMatchObject({ onHand: 5, reserved: 5, dispatched: 0 });
    await expectStockInvariants(inventory.db);
  });

  it('a dispatch of an order inventory never reserved deducts nothing', async () => {
    const inventory = await openInventory();

    const emitted = await inventory.handle(deduct, shipmentDispatched(crypto.randomUUID()));

    expect(emitted).toEqual([]);
    await expectStockInvariants(inventory.db);
  });
});

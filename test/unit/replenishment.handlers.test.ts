import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { readContext } from '../../common/saga-context.ts';
import { cancelPurchases } from '../../compensation/replenishment.ts';
import { deliver, handlers } from '../../services/replenishment/handlers.ts';
import type { ReplenishmentStore, ReplenishmentTables } from '../../services/replenishment/store.ts';
import {
  anEvent,
  handlerFor,
  openReplenishment,
  orderCancelled,
  type ServiceDb,
} from '../support/unit-db.ts';

const orderForBackorder = handlerFor(handlers, 'inventory.backordered');
const restock = handlerFor(handlers, 'stock.low');

const backordered = (orderId: string, shortages: { sku: string; missing: number }[]) =>
  anEvent('inventory.backordered', { orderId, shortages: shortages as [{ sku: string; missing: number }] });
const stockLow = (sku: string, available: number, reorderPoint: number) =>
  anEvent('stock.low', { sku, available, reorderPoint });

type Replenishment = ServiceDb<ReplenishmentTables, ReplenishmentStore>;
const requests = (r: Replenishment) =>
  r.db.selectFrom('replenishments').selectAll().orderBy('created_at').execute();

/** What the supplier's timer does for every request: settles it and emits its answer. */
async function deliverAll(r: Replenishment, faultInjection = true) {
  const emitted = [];
  for (const request of await r.db
    .selectFrom('replenishments')
    .selectAll()
    .where('status', '=', 'PENDING')
    .execute()) {
    const { emitted: answer } = await r.transact((store) => deliver(store, request, faultInjection));
    emitted.push(...answer);
  }
  return emitted;
}

describe('replenishment: buying for a backorder (inventory.backordered)', () => {
  it('when stock is short, one purchase per shortage is requested for that order, due after the supplier delay', async () => {
    // Arrange
    const replenishment = await openReplenishment();
    const orderId = randomUUID();

    // Act
    const emitted = await replenishment.handle(
      orderForBackorder,
      backordered(orderId, [
        { sku: 'GIZMO-3', missing: 3 },
        { sku: 'GADGET-2', missing: 7 },
      ]),
    );

    // Assert
    expect(emitted).toEqual([]);
    const rows = await requests(replenishment);
    expect(
      rows.map(({ sku, quantity, order_id, trigger, status }) => ({
        sku,
        quantity,
        order_id,
        trigger,
        status,
      })),
    ).toEqual(
      expect.arrayContaining([
        {
          sku: 'GIZMO-3',
          quantity: 3,
          order_id: orderId,
          trigger: 'inventory.backordered',
          status: 'PENDING',
        },
        {
          sku: 'GADGET-2',
          quantity: 7,
          order_id: orderId,
          trigger: 'inventory.backordered',
          status: 'PENDING',
        },
      ]),
    );
    for (const row of rows) {
      expect(Date.parse(row.due_at) - Date.parse(row.created_at)).toBe(300); // SUPPLIER_DELAY_MS default
    }
  });

  it('keeps the saga context of the backorder, so the supplier answer carries it (and its injected failure)', async () => {
    const replenishment = await openReplenishment();

    await replenishment.handle(
      orderForBackorder,
      backordered(randomUUID(), [{ sku: 'GIZMO-3', missing: 3 }]),
      'replenishment',
    );

    const [row] = await requests(replenishment);
    expect(readContext(row?.context ?? null)).toMatchObject({ failAt: 'replenishment' });
  });
});

describe('replenishment: restocking a low SKU (stock.low)', () => {
  it('when stock is low, a restock back to twice the reorder point is requested, for no order', async () => {
    const replenishment = await openReplenishment();

    await replenishment.handle(restock, stockLow('GIZMO-3', 4, 10));

    const rows = await requests(replenishment);
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({
      sku: 'GIZMO-3',
      quantity: 16,
      order_id: null,
      trigger: 'stock.low',
      status: 'PENDING',
    });
  });

  it('while a restock of the SKU is pending, another stock.low buys nothing more', async () => {
    const replenishment = await openReplenishment();
    await replenishment.handle(restock, stockLow('GIZMO-3', 4, 10));

    await replenishment.handle(restock, stockLow('GIZMO-3', 0, 10));
    await replenishment.handle(restock, stockLow('GADGET-2', 50, 50));

    const rows = await requests(replenishment);
    expect(rows.map((r) => r.sku).sort()).toEqual(['GADGET-2', 'GIZMO-3']);
  });

  it('a stock.low sent after the restock arrived asks again', async () => {
    const replenishment = await openReplenishment();
    await replenishment.handle(restock, stockLow('GIZMO-3', 4, 10));
    await deliverAll(replenishment);
    const later = { ...stockLow('GIZMO-3', 2, 10), occurredAt: new Date(Date.now() + 1_000).toISOString() };

    await replenishment.handle(restock, later);

    const rows = await requests(replenishment);
    expect(rows.map((r) => r.status).sort()).toEqual(['COMPLETED', 'PENDING']);
  });

  it('a stock.low sent before the restock arrived (delivered late) buys nothing more', async () => {
    const replenishment = await openReplenishment();
    const stale = stockLow('GIZMO-3', 0, 10);
    await replenishment.handle(restock, {
      ...stockLow('GIZMO-3', 4, 10),
      occurredAt: new Date(Date.now() - 2_000).toISOString(),
    });
    await deliverAll(replenishment);

    await replenishment.handle(restock, { ...stale, occurredAt: new Date(Date.now() - 1_000).toISOString() });

    expect((await requests(replenishment)).map((r) => r.status)).toEqual(['COMPLETED']);
  });

  it('a backorder purchase does not stand in for a restock: stock.low still asks while it is pending', async () => {
    const replenishment = await openReplenishment();
    await replenishment.handle(
      orderForBackorder,
      backordered(randomUUID(), [{ sku: 'GIZMO-3', missing: 3 }]),
    );

    await replenishment.handle(restock, stockLow('GIZMO-3', 0, 10));

    expect((await requests(replenishment)).map((r) => r.trigger).sort()).toEqual([
      'inventory.backordered',
      'stock.low',
    ]);
  });
});

describe('replenishment: the supplier answers', () => {
  it('a delivered purchase emits replenishment.completed with the order it was for', async () => {
    const replenishment = await openReplenishment();
    const orderId = randomUUID();
    const trigger = backordered(orderId, [{ sku: 'GIZMO-3', missing: 3 }]);
    await replenishment.handle(orderForBackorder, trigger);

    const emitted = await deliverAll(replenishment);

    const [request] = await requests(replenishment);
    expect(emitted).toEqual([
      {
        type: 'replenishment.completed',
        data: { replenishmentId: request?.id, sku: 'GIZMO-3', orderId, quantity: 3 },
        // The order's saga context, caused by the backorder that asked for the purchase.
        context: { orderId, causationId: trigger.id },
      },
    ]);
    expect(request?.status).toBe('COMPLETED');
  });

  it('a discontinued SKU fails with REPLENISHMENT_FAILED, saying it is discontinued', async () => {
    const replenishment = await openReplenishment();
    const orderId = randomUUID();
    const trigger = backordered(orderId, [{ sku: 'LEGACY-4', missing: 2 }]);
    await replenishment.handle(orderForBackorder, trigger);

    const emitted = await deliverAll(replenishment);

    expect(emitted).toEqual([
      {
        type: 'replenishment.failed',
        data: {
          replenishmentId: expect.any(String),
          sku: 'LEGACY-4',
          orderId,
          reason: 'REPLENISHMENT_FAILED',
          detail: 'LEGACY-4 is discontinued',
        },
        context: { orderId, causationId: trigger.id },
      },
    ]);
    expect((await requests(replenishment))[0]).toMatchObject({
      status: 'FAILED',
      detail: 'LEGACY-4 is discontinued',
    });
  });

  it('an injected failure fails the purchase of that order with detail INJECTED', async () => {
    const replenishment = await openReplenishment();
    const orderId = randomUUID();
    const trigger = backordered(orderId, [{ sku: 'GIZMO-3', missing: 3 }]);
    await replenishment.handle(orderForBackorder, trigger, 'replenishment');

    const emitted = await deliverAll(replenishment);

    expect(emitted).toEqual([
      {
        type: 'replenishment.failed',
        data: {
          replenishmentId: expect.any(String),
          sku: 'GIZMO-3',
          orderId,
          reason: 'REPLENISHMENT_FAILED',
          detail: 'INJECTED',
        },
        context: { orderId, causationId: trigger.id, failAt: 'replenishment' },
      },
    ]);
  });

  it('with fault injection disabled by configuration, the injected failure is ignored and the purchase delivered', async () => {
    const replenishment = await openReplenishment();
    await replenishment.handle(
      orderForBackorder,
      backordered(randomUUID(), [{ sku: 'GIZMO-3', missing: 3 }]),
      'replenishment',
    );

    const emitted = await deliverAll(replenishment, false);

    expect(emitted.map((e) => e.type)).toEqual(['replenishment.completed']);
  });

  it('a request is answered once: delivering it again emits nothing', async () => {
    const replenishment = await openReplenishment();
    await replenishment.handle(
      orderForBackorder,
      backordered(randomUUID(), [{ sku: 'GIZMO-3', missing: 3 }]),
    );
    const [pending] = await requests(replenishment);
    if (!pending) throw new Error('no request');
    await replenishment.transact((store) => deliver(store, pending, true));

    const { emitted } = await replenishment.transact((store) => deliver(store, pending, true));

    expect(emitted).toEqual([]);
  });

  it("an injected replenishment failure fails only the order's purchase, not a restock its stock.low asked for", async () => {
    // The order's saga context (x-fail-at: replenishment) travels onto the stock.low its reservation caused.
    const replenishment = await openReplenishment();
    await replenishment.handle(restock, stockLow('GIZMO-3', 0, 10), 'replenishment');

    const emitted = await deliverAll(replenishment);

    expect(emitted.map((e) => e.type)).toEqual(['replenishment.completed']);
  });
});

describe('replenishment compensation: calling off a cancelled order’s purchases (order.cancelled)', () => {
  it('is what replenishment does on order.cancelled', () => {
    expect(handlers['order.cancelled']).toBe(cancelPurchases);
  });

  it('applied once, the order’s pending purchases are cancelled and the supplier answers nothing for them', async () => {
    const replenishment = await openReplenishment();
    const orderId = randomUUID();
    await replenishment.handle(orderForBackorder, backordered(orderId, [{ sku: 'GIZMO-3', missing: 3 }]));

    const emitted = await replenishment.handle(
      cancelPurchases,
      orderCancelled(orderId, 'CUSTOMER_CANCELLED'),
    );
    const answers = await deliverAll(replenishment);

    expect(emitted).toEqual([]);
    expect(answers).toEqual([]);
    expect((await requests(replenishment))[0]).toMatchObject({
      status: 'CANCELLED',
      detail: 'order cancelled',
    });
  });

  it('when order-creation counts on its report, replenishment.cancelled names the purchases called off', async () => {
    const replenishment = await openReplenishment();
    const orderId = randomUUID();
    await replenishment.handle(orderForBackorder, backordered(orderId, [{ sku: 'GIZMO-3', missing: 3 }]));
    const [pending] = await requests(replenishment);

    const emitted = await replenishment.handle(
      cancelPurchases,
      orderCancelled(orderId, 'CUSTOMER_CANCELLED', ['inventory.released', 'replenishment.cancelled']),
    );

    expect(emitted).toEqual([
      { type: 'replenishment.cancelled', data: { orderId, replenishmentIds: [pending?.id] } },
    ]);
  });

  it('a request already due when the cancellation lands is not answered afterwards', async () => {
    const replenishment = await openReplenishment();
    const orderId = randomUUID();
    await replenishment.handle(orderForBackorder, backordered(orderId, [{ sku: 'GIZMO-3', missing: 3 }]));
    const [due] = await requests(replenishment);
    if (!due) throw new Error('no request');

    await replenishment.handle(cancelPurchases, orderCancelled(orderId));
    const { emitted } = await replenishment.transact((store) => deliver(store, due, true));

    expect(emitted).toEqual([]);
  });

  it('applied twice, the second changes nothing and emits nothing', async () => {
    const replenishment = await openReplenishment();
    const orderId = randomUUID();
    await replenishment.handle(orderForBackorder, backordered(orderId, [{ sku: 'GIZMO-3', missing: 3 }]));
    await replenishment.handle(cancelPurchases, orderCancelled(orderId));
    const before = {
      requests: await requests(replenishment),
      tombstones: await replenishment.db.selectFrom('tombstones').selectAll().execute(),
    };

    const again = await replenishment.handle(cancelPurchases, orderCancelled(orderId));

    expect(again).toEqual([]);
    expect({
      requests: await requests(replenishment),
      tombstones: await replenishment.db.selectFrom('tombstones').selectAll().execute(),
    }).toEqual(before);
  });

  it('when order.cancelled arrives before inventory.backordered, the late backorder buys nothing', async () => {
    const replenishment = await openReplenishment();
    const orderId = randomUUID();

    await replenishment.handle(cancelPurchases, orderCancelled(orderId, 'DEADLINE_EXCEEDED'));
    const late = await replenishment.handle(
      orderForBackorder,
      backordered(orderId, [{ sku: 'GIZMO-3', missing: 3 }]),
    );

    expect(late).toEqual([]);
    expect(await requests(replenishment)).toEqual([]);
  });

  it('touches neither other orders’ purchases nor restocks', async () => {
    const replenishment = await openReplenishment();
    const cancelled = randomUUID();
    const other = randomUUID();
    await replenishment.handle(orderForBackorder, backordered(cancelled, [{ sku: 'GIZMO-3', missing: 3 }]));
    await replenishment.handle(orderForBackorder, backordered(other, [{ sku: 'GIZMO-3', missing: 2 }]));
    await replenishment.handle(restock, stockLow('GIZMO-3', 0, 10));

    await replenishment.handle(cancelPurchases, orderCancelled(cancelled));

    const rows = await requests(replenishment);
    expect(rows.filter((r) => r.status === 'CANCELLED').map((r) => r.order_id)).toEqual([cancelled]);
    expect(rows.filter((r) => r.status === 'PENDING')).toHaveLength(2);
  });

  it('a purchase already delivered stays delivered (its stock is in the warehouse)', async () => {
    const replenishment = await openReplenishment();
    const orderId = randomUUID();
    await replenishment.handle(orderForBackorder, backordered(orderId, [{ sku: 'GIZMO-3', missing: 3 }]));
    await deliverAll(replenishment);

    await replenishment.handle(cancelPurchases, orderCancelled(orderId));

    expect((await requests(replenishment)).map((r) => r.status)).toEqual(['COMPLETED']);
  });
});

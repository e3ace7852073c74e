/**
 * Every failure of saga.md undone, seen through every service's read API; customer cancels
 * racing the saga; the deadline. Real processes on a real RabbitMQ.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { aLine, anAddress, anOrder } from '../../support/builders.ts';
import { System } from '../../support/system.ts';
import {
  awaitTerminal,
  everyView,
  expectConsistent,
  expectSettledAfter,
  place,
  quiesce,
  readStock,
  settled,
} from '../support/saga.ts';

let system: System;

beforeAll(async () => {
  system = await System.start();
});

afterAll(async () => {
  await system?.destroy();
});

describe('when a step fails, the order is cancelled and what was done is undone', () => {
  it('an unknown SKU: inventory rejects, nothing is reserved, nothing ships', async () => {
    const order = await place(system, anOrder({ items: [aLine('WIDGET-1', 1), aLine('NOPE-1', 1)] }));

    const done = await awaitTerminal(system, order.id);
    const view = await settled(system, order.id, (v) => v.shipments.length > 0);

    expect(done).toMatchObject({ status: 'CANCELLED', reason: 'UNKNOWN_SKU' });
    expect(view.types).toEqual(['order.created', 'inventory.rejected', 'order.cancelled']);
    expect(view.order.timeline[1]?.detail).toContain('NOPE-1');
    // Shipment never saw the order: the cancellation leaves its promise never to dispatch it.
    expect(view.shipments).toEqual([
      { orderId: order.id, status: 'CANCELLED', detail: 'UNKNOWN_SKU', createdAt: expect.any(String) },
    ]);
    await expectConsistent(system);
  });

  it('an injected inventory failure: rejected with INJECTED in the timeline', async () => {
    const order = await place(system, anOrder(), { 'X-Fail-At': 'inventory' });

    const done = await awaitTerminal(system, order.id);
    const view = await settled(system, order.id, (v) => v.shipments.length > 0);

    expect(done).toMatchObject({ status: 'CANCELLED', reason: 'INVENTORY_REJECTED' });
    expect(view.order.timeline.find((t) => t.type === 'inventory.rejected')?.detail).toBe('INJECTED');
    expect(view.types).not.toContain('inventory.reserved');
    expect(view.dispatched).toEqual([]);
    await expectConsistent(system);
  });

  it.each([
    ['injected', aLine('GIZMO-3', 200), { 'X-Fail-At': 'replenishment' }, 'INJECTED'],
    ['discontinued SKU', aLine('LEGACY-4', 5), {}, 'LEGACY-4 is discontinued'],
  ])(
    'a replenishment failure (%s): the partial reservation is released',
    async (_, line, headers, detail) => {
      const before = await readStock(system, line.sku);
      const order = await place(system, anOrder({ items: [line, aLine('WIDGET-1', 2)] }), headers);

      const done = await awaitTerminal(system, order.id);
      await quiesce(system);
      const view = await settled(
        system,
        order.id,
        (v) => v.stock.find((s) => s.sku === line.sku)?.reserved === 0,
      );

      expect(done).toMatchObject({ status: 'CANCELLED', reason: 'REPLENISHMENT_FAILED' });
      expect(view.types.slice(0, 2)).toEqual(['order.created', 'inventory.backordered']);
      expect(view.order.timeline.find((t) => t.type === 'replenishment.failed')?.detail).toBe(detail);
      expect(view.types).toContain('inventory.rejected');
      expect(view.types).not.toContain('inventory.reserved');
      expect(view.replenishments.map((r) => r.status)).toContain('FAILED');
      expect(view.dispatched).toEqual([]);
      const after = view.stock.find((s) => s.sku === line.sku);
      expect(after?.reserved).toBe(0);
      expect(after?.onHand).toBeGreaterThanOrEqual(before?.onHand ?? 0);
      await expectConsistent(system);
    },
  );

  it.each([
    ['injected', anAddress(), { 'X-Fail-At': 'shipment' }, 'INJECTED'],
    ['unsupported country', anAddress({ country: 'BR' }), {}, 'UNSUPPORTED_COUNTRY'],
  ])(
    'a shipment failure (%s): the reservation is released and the stock is back',
    async (_, address, headers, detail) => {
      const stockBefore = await readStock(system, 'GADGET-2');
      const order = await place(
        system,
        anOrder({ items: [aLine('GADGET-2', 3)], shippingAddress: address }),
        headers,
      );

      const done = await awaitTerminal(system, order.id);
      // `?wait` answered once settled: the compensations are in the timeline already, no polling.
      const view = await everyView(system, order.id);

      expect(done).toMatchObject({ status: 'CANCELLED', reason: 'SHIPMENT_FAILED' });
      expectSettledAfter(done, ['inventory.released', 'replenishment.cancelled']);
      expect(done.timeline.find((t) => t.type === 'order.cancelled')?.data).toMatchObject({
        compensations: ['inventory.released', 'replenishment.cancelled'],
      });
      expect(view.types.slice(0, 4)).toEqual([
        'order.created',
        'inventory.reserved',
        'shipment.failed',
        'order.cancelled',
      ]);
      expect(view.types.slice(4).sort()).toEqual(['inventory.released', 'replenishment.cancelled']);
      expect(view.order.timeline.find((t) => t.type === 'shipment.failed')?.detail).toContain(detail);
      expect(view.order.timeline.find((t) => t.type === 'inventory.released')?.data).toMatchObject({
        items: [{ sku: 'GADGET-2', quantity: 3 }],
      });
      expect(view.dispatched).toEqual([]);
      const stockAfter = view.stock.find((s) => s.sku === 'GADGET-2');
      expect(stockAfter?.onHand).toBe(stockBefore?.onHand);
      expect(stockAfter?.reserved).toBe(0);
      await expectConsistent(system);
    },
  );
});

describe('when the customer cancels', () => {
  it('a cancel that wins the race ends CANCELLED with the reservation released and no shipment', async () => {
    const order = await place(system, anOrder({ items: [aLine('GIZMO-3', 200)] })); // waits on the supplier: plenty of time

    const cancel = await system.request<{ status: string }>(
      'order-creation',
      'POST',
      `/orders/${order.id}/cancel`,
    );
    const done = await awaitTerminal(system, order.id);
    const view = await settled(
      system,
      order.id,
      (v) => v.types.includes('inventory.released') && v.replenishments.every((r) => r.status !== 'PENDING'),
    );

    expect(cancel.status).toBe(202);
    expect(['CANCELLING', 'CANCELLED']).toContain(cancel.body.status);
    expect(done).toMatchObject({ status: 'CANCELLED', reason: 'CUSTOMER_CANCELLED' });
    expectSettledAfter(done, ['inventory.released', 'replenishment.cancelled']);
    expect(view.types).toEqual(
      expect.arrayContaining(['order.cancel_requested', 'shipment.cancelled', 'order.cancelled']),
    );
    // The purchase the order waited for was called off, and the report names it.
    const report = done.timeline.find((t) => t.type === 'replenishment.cancelled');
    expect(report?.data).toMatchObject({ replenishmentIds: view.replenishments.map((r) => r.id) });
    expect(view.dispatched).toEqual([]);
    expect(view.replenishments.every((r) => r.status !== 'PENDING')).toBe(true);
    await expectConsistent(system);
  });

  it('a cancel after completion is refused with 409; the completed order was settled at completion', async () => {
    const order = await place(system);
    const done = await awaitTerminal(system, order.id);
    expect(done).toMatchObject({ status: 'COMPLETED', settledAt: expect.any(String) });

    const cancel = await system.request('order-creation', 'POST', `/orders/${order.id}/cancel`);

    expect(cancel.status).toBe(409);
    expect(cancel.headers.get('content-type')).toContain('application/problem+json');
  });

  it('100 cancels fired at random moments: every order ends COMPLETED with one shipment or CANCELLED with none', async () => {
    // A supplier slower than a cancel under this load (a cancel's POST can take 200 ms here), so
    // the orders that wait for it are always still running when their cancel lands.
    const system = await System.start({ env: { SUPPLIER_DELAY_MS: '2000' } });
    try {
      const orders = await Promise.all(
        Array.from({ length: 100 }, async (_, i) => {
          // A plain saga can finish before its cancel lands (it takes ~15 ms at light load); every
          // fourth order buys more GIZMO-3 than is on hand and waits for the supplier.
          const line = i % 4 === 0 ? aLine('GIZMO-3', 1000) : aLine('WIDGET-1', 1 + (i % 7));
          const order = await place(system, anOrder({ items: [line] }));
          await new Promise((r) => setTimeout(r, Math.random() * 60));
          const cancel = await system.request('order-creation', 'POST', `/orders/${order.id}/cancel`);
          expect([202, 409]).toContain(cancel.status);
          return order.id;
        }),
      );

      const outcomes = await Promise.all(orders.map((id) => awaitTerminal(system, id)));
      await quiesce(system);
      const tally = { COMPLETED: 0, CANCELLED: 0 };
      for (const order of outcomes) {
        const view = await settled(system, order.id, () => true);
        expect(['COMPLETED', 'CANCELLED']).toContain(view.order.status);
        tally[view.order.status as keyof typeof tally] += 1;
        // Cancelled or completed, each saga ends settled: every compensation owed was reported.
        expect(view.order.settledAt, view.order.id).toEqual(expect.any(String));
        if (view.order.status === 'COMPLETED') expect(view.dispatched).toHaveLength(1);
        else {
          expect(view.order.reason).toBe('CUSTOMER_CANCELLED');
          expect(view.dispatched).toHaveLength(0);
        }
      }
      console.log(`random cancels: ${tally.COMPLETED} completed, ${tally.CANCELLED} cancelled`);
      expect(tally.CANCELLED).toBeGreaterThan(0);
      await expectConsistent(system);
    } finally {
      await system.destroy();
    }
  });
});

describe('when the saga deadline passes', () => {
  let slow: System;
  beforeAll(async () => {
    // The supplier answers long after the test is over: on a loaded machine, a restart of
    // order-creation could otherwise outlast it, and the order complete before its deadline is seen.
    slow = await System.start({ env: { SAGA_DEADLINE_MS: '1500', SUPPLIER_DELAY_MS: '120000' } });
  });
  afterAll(async () => {
    await slow?.destroy();
  });

  it('the order is cancelled with DEADLINE_EXCEEDED, even across a restart of order-creation', async () => {
    const order = await place(slow, anOrder({ items: [aLine('GIZMO-3', 8)] })); // waits for the supplier

    await slow.signal('order-creation', 'SIGTERM'); // down when the deadline passes
    await new Promise((r) => setTimeout(r, 2000));
    await slow.startService('order-creation');
    const done = await awaitTerminal(slow, order.id);
    const view = await settled(slow, order.id, (v) => v.types.includes('inventory.released'));

    expect(done).toMatchObject({ status: 'CANCELLED', reason: 'DEADLINE_EXCEEDED' });
    expectSettledAfter(done, ['inventory.released', 'replenishment.cancelled']);
    expect(view.types).toEqual(
      expect.arrayContaining([
        'order.cancel_requested',
        'shipment.cancelled',
        'order.cancelled',
        'inventory.released',
      ]),
    );
    expect(view.dispatched).toEqual([]);
    expect(view.order.status).toBe('CANCELLED');
    expect(view.stock.find((s) => s.sku === 'GIZMO-3')?.reserved).toBe(0);
    await expectConsistent(slow);
  });
});

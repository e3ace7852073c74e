/**
 * The four services' handlers wired by an in-memory "exchange" instead of RabbitMQ: each service
 * has its own queue of the events it subscribes to, the saga context (x-fail-at) travels from the
 * event handled to the events emitted, and the simulated supplier answers due purchases. Messages
 * can be delivered in any order (redelivery, retries), which is what the tombstones are for.
 */

import { randomUUID } from 'node:crypto';
import fc from 'fast-check';
import { sql } from 'kysely';
import { describe, expect, it, vi } from 'vitest';
import type { Emit, FailAt, RoutingKey, SagaEvent } from '../../common/events.ts';
import { SAGA_HEADER } from '../../common/headers.ts';
import { sagaHeaders } from '../../common/outbox.ts';
import type { Handler, Handlers } from '../../common/runner.ts';
import { readContext, storeContext } from '../../common/saga-context.ts';
import { mergeLines } from '../../services/inventory/domain.ts';
import { handlers as inventoryHandlers } from '../../services/inventory/handlers.ts';
import { type CancelReason, isTerminal, requestCancel } from '../../services/order-creation/domain.ts';
import { handlers as orderHandlers } from '../../services/order-creation/handlers.ts';
import { migrations as orderMigrations, orderStore, readOrder } from '../../services/order-creation/store.ts';
import { deliver, handlers as replenishmentHandlers } from '../../services/replenishment/handlers.ts';
import { handlers as shipmentHandlers } from '../../services/shipment/handlers.ts';
import { anAddress } from '../../support/builders.ts';
import {
  anEvent,
  expectStockInvariants,
  openInventory,
  openReplenishment,
  openServiceDb,
  openShipment,
  type ServiceDb,
} from '../support/unit-db.ts';

interface OrderSpec {
  items: { sku: string; quantity: number }[];
  country: string;
  failAt?: FailAt;
}

type Service = 'order-creation' | 'inventory' | 'replenishment' | 'shipment';
interface Delivery {
  service: Service;
  event: SagaEvent;
  failAt?: FailAt;
}

// biome-ignore lint/suspicious/noExplicitAny: each service's store type differs; the bus only forwards it.
type AnyServiceDb = ServiceDb<any, any>;

async function aSaga() {
  const orders = await openServiceDb('order-creation', orderMigrations, orderStore);
  const inventory = await openInventory();
  const replenishment = await openReplenishment();
  const shipment = await openShipment();
  const services: Record<Service, { db: AnyServiceDb; handlers: Handlers<unknown> }> = {
    'order-creation': { db: orders, handlers: orderHandlers as Handlers<unknown> },
    inventory: { db: inventory, handlers: inventoryHandlers as Handlers<unknown> },
    replenishment: { db: replenishment, handlers: replenishmentHandlers as Handlers<unknown> },
    shipment: { db: shipment, handlers: shipmentHandlers as Handlers<unknown> },
  };
  const queue: Delivery[] = [];
  const replenished: Record<string, number> = {};
  const failAtOf = new Map<string, FailAt | undefined>();

  /** The outbox's own rule decides which events carry x-fail-at. */
  const publish = (emitted: readonly Emit[], context: { orderId?: string; failAt?: FailAt }) => {
    for (const e of emitted) {
      const event = anEvent(e.type, e.data as never) as SagaEvent;
      const failAt = sagaHeaders(e, context)[SAGA_HEADER.failAt] as FailAt | undefined;
      for (const service of Object.keys(services) as Service[]) {
        if (services[service].handlers[event.type])
          queue.push({ service, event, ...(failAt ? { failAt } : {}) });
      }
    }
  };

  return {
    queue,
    replenished,
    inventory,
    shipment,
    orders,

    /** POST /orders: PENDING and order.created, in one transaction. */
    async place(spec: OrderSpec): Promise<string> {
      const id = randomUUID();
      const shippingAddress = anAddress({ country: spec.country });
      const now = new Date().toISOString();
      failAtOf.set(id, spec.failAt);
      const { emitted } = await orders.transact(async (store) => {
        await store.create({
          id,
          customer_id: 'customer-42',
          items: JSON.stringify(spec.items),
          shipping_address: JSON.stringify(shippingAddress),
          context: storeContext({ orderId: id, failAt: spec.failAt }),
          created_at: now,
          deadline_at: now,
        });
        return {
          value: undefined,
          emit: [
            {
              type: 'order.created',
              data: { orderId: id, customerId: 'customer-42', items: spec.items, shippingAddress },
            },
          ],
        };
      });
      publish(emitted, { orderId: id, failAt: spec.failAt });
      return id;
    },

    /** POST /orders/{id}/cancel. */
    async cancel(id: string, reason: CancelReason = 'CUSTOMER_CANCELLED'): Promise<string> {
      const { value, emitted } = await orders.transact(async (store) => {
        const order = await store.order(id);
        if (!order) throw new Error(`no order ${id}`);
        const decision = requestCancel({ id, status: order.status }, reason);
        if (decision.outcome !== 'requested') return { value: decision.outcome, emit: [] };
        await store.update(id, { status: 'CANCELLING', cancelReason: reason });
        return { value: decision.outcome, emit: decision.emit };
      });
      publish(emitted, { orderId: id, failAt: failAtOf.get(id) });
      return value;
    },

    /** Delivers the first queued message of this type to this service. */
    async deliverNext(service: Service, type: RoutingKey): Promise<void> {
      const index = queue.findIndex((d) => d.service === service && d.event.type === type);
      if (index < 0) throw new Error(`no ${type} queued for ${service}`);
      await this.deliverAt(index);
    },

    /** Delivers the message at `index` of the queue to its service. */
    async deliverAt(index: number): Promise<void> {
      const [delivery] = queue.splice(index, 1);
      if (!delivery) throw new Error(`nothing at ${index}`);
      const { db, handlers } = services[delivery.service];
      const handler = handlers[delivery.event.type] as Handler<RoutingKey, unknown>;
      const emitted = await db.handle(handler, delivery.event, delivery.failAt);
      if (delivery.service === 'inventory' && delivery.event.type === 'replenishment.completed') {
        const { sku, quantity } = (delivery.event as SagaEvent<'replenishment.completed'>).data;
        replenished[sku] = (replenished[sku] ?? 0) + quantity;
      }
      publish(emitted, { orderId: delivery.event.orderId, failAt: delivery.failAt });
    },

    async pendingPurchases() {
      return replenishment.db
        .selectFrom('replenishments')
        .selectAll()
        .where('status', '=', 'PENDING')
        .orderBy(sql`rowid`)
        .execute();
    },

    /** The supplier answers one due purchase. */
    async supply(index: number, trigger?: 'stock.low' | 'inventory.backordered'): Promise<void> {
      const pending = (await this.pendingPurchases()).filter((r) => !trigger || r.trigger === trigger);
      const request = pending[index % pending.length];
      if (!request) return;
      const { emitted } = await replenishment.transact((store) => deliver(store, request, true));
      publish(emitted, readContext(request.context));
    },

    /** Runs everything to the end: queued messages first come first served, then the supplier. */
    async settle(tick: () => void = () => {}): Promise<void> {
      for (let step = 0; step < 5000; step++, tick()) {
        if (queue.length > 0) await this.deliverAt(0);
        else if ((await this.pendingPurchases()).length > 0) await this.supply(0);
        else return;
      }
      throw new Error('the saga did not settle in 5000 steps');
    },

    async statusOf(id: string) {
      const order = await readOrder(orders.db, id);
      return { status: order?.status, reason: order?.reason };
    },

    async shipmentsOf(id: string) {
      return shipment.db.selectFrom('shipments').selectAll().where('order_id', '=', id).execute();
    },
  };
}

type Saga = Awaited<ReturnType<typeof aSaga>>;

/** Once every order is terminal: nothing reserved, every COMPLETED order dispatched once, no CANCELLED one. */
async function expectSettled(saga: Saga, placed: { id: string; spec: OrderSpec }[]) {
  const dispatched: Record<string, number> = {};
  for (const { id, spec } of placed) {
    const { status } = await saga.statusOf(id);
    expect(status && isTerminal(status), `order ${id} ends ${status}`).toBe(true);
    const shipments = (await saga.shipmentsOf(id)).filter((s) => s.status === 'DISPATCHED');
    expect(shipments, `order ${id} (${status}) dispatched shipments`).toHaveLength(
      status === 'COMPLETED' ? 1 : 0,
    );
    if (status === 'COMPLETED') {
      for (const { sku, quantity } of mergeLines(spec.items))
        dispatched[sku] = (dispatched[sku] ?? 0) + quantity;
    }
  }
  const stock = await saga.inventory.db.selectFrom('stock').select(['sku', 'reserved']).execute();
  expect(stock.filter((s) => s.reserved !== 0)).toEqual([]);
  await expectStockInvariants(saga.inventory.db, { replenished: saga.replenished, dispatched });
}

describe('the saga, its four services wired without a broker', () => {
  it('when everything is in stock, the order completes and its stock leaves the warehouse', async () => {
    const saga = await aSaga();
    const spec = { items: [{ sku: 'WIDGET-1', quantity: 2 }], country: 'GB' };

    const id = await saga.place(spec);
    await saga.settle();

    expect(await saga.statusOf(id)).toEqual({ status: 'COMPLETED', reason: undefined });
    await expectSettled(saga, [{ id, spec }]);
  });

  it('when stock is short, replenishment fills the backorder and the order completes', async () => {
    const saga = await aSaga();
    const spec = { items: [{ sku: 'GIZMO-3', quantity: 8 }], country: 'US' };

    const id = await saga.place(spec);
    await saga.settle();

    expect((await saga.statusOf(id)).status).toBe('COMPLETED');
    await expectSettled(saga, [{ id, spec }]);
  });

  it('a discontinued SKU ordered beyond stock ends CANCELLED with REPLENISHMENT_FAILED and nothing left reserved', async () => {
    const saga = await aSaga();
    const spec = { items: [{ sku: 'LEGACY-4', quantity: 5 }], country: 'GB' };

    const id = await saga.place(spec);
    await saga.settle();

    expect(await saga.statusOf(id)).toEqual({ status: 'CANCELLED', reason: 'REPLENISHMENT_FAILED' });
    await expectSettled(saga, [{ id, spec }]);
  });

  it.each([
    ['an unknown SKU', { items: [{ sku: 'NOPE-9', quantity: 1 }], country: 'GB' }, 'UNKNOWN_SKU'],
    [
      'an unsupported country',
      { items: [{ sku: 'GADGET-2', quantity: 1 }], country: 'JP' },
      'SHIPMENT_FAILED',
    ],
    [
      'X-Fail-At: inventory',
      { items: [{ sku: 'GADGET-2', quantity: 1 }], country: 'GB', failAt: 'inventory' },
      'INVENTORY_REJECTED',
    ],
    [
      'X-Fail-At: replenishment with short stock',
      { items: [{ sku: 'GIZMO-3', quantity: 7 }], country: 'GB', failAt: 'replenishment' },
      'REPLENISHMENT_FAILED',
    ],
    [
      'X-Fail-At: shipment',
      { items: [{ sku: 'GADGET-2', quantity: 1 }], country: 'GB', failAt: 'shipment' },
      'SHIPMENT_FAILED',
    ],
  ] as const)('%s ends CANCELLED with %s, everything undone', async (_, spec, reason) => {
    const saga = await aSaga();

    const id = await saga.place({ ...spec, items: [...spec.items] });
    await saga.settle();

    expect(await saga.statusOf(id)).toEqual({ status: 'CANCELLED', reason });
    await expectSettled(saga, [{ id, spec: { ...spec, items: [...spec.items] } }]);
  });

  it('a customer cancel while the order awaits stock ends CANCELLED, the purchase called off, nothing shipped', async () => {
    const saga = await aSaga();
    const spec = { items: [{ sku: 'GIZMO-3', quantity: 8 }], country: 'GB' };
    const id = await saga.place(spec);
    while (saga.queue.length > 0) await saga.deliverAt(0); // reserved 5, backordered 3, purchase pending

    const outcome = await saga.cancel(id);
    await saga.settle();

    expect(outcome).toBe('requested');
    expect(await saga.statusOf(id)).toEqual({ status: 'CANCELLED', reason: 'CUSTOMER_CANCELLED' });
    await expectSettled(saga, [{ id, spec }]);
  });

  it('a customer cancel after dispatch is rejected and the order completes', async () => {
    const saga = await aSaga();
    const spec = { items: [{ sku: 'GADGET-2', quantity: 1 }], country: 'GB' };
    const id = await saga.place(spec);
    // order.created → inventory; inventory.reserved → shipment (dispatched), order-creation still behind.
    await saga.deliverNext('inventory', 'order.created');
    await saga.deliverNext('shipment', 'inventory.reserved');

    await saga.cancel(id);
    await saga.settle();

    expect((await saga.statusOf(id)).status).toBe('COMPLETED');
    await expectSettled(saga, [{ id, spec }]);
  });

  it('an order waiting for stock that another order releases is not failed by that order’s X-Fail-At', async () => {
    // Y holds all of GIZMO-3 and fails at shipment (injected); X waits for 2 of them.
    const saga = await aSaga();
    const y = await saga.place({
      items: [{ sku: 'GIZMO-3', quantity: 5 }],
      country: 'GB',
      failAt: 'shipment',
    });
    const x = await saga.place({ items: [{ sku: 'GIZMO-3', quantity: 2 }], country: 'GB' });

    // Y's shipment fails, Y is cancelled, its released stock fills X.
    await saga.settle();

    expect(await saga.statusOf(y)).toEqual({ status: 'CANCELLED', reason: 'SHIPMENT_FAILED' });
    expect(await saga.statusOf(x)).toEqual({ status: 'COMPLETED', reason: undefined });
  });

  it('an order asked to fail at shipment still fails there when a low-stock restock fills it before its own purchase', async () => {
    const saga = await aSaga();
    const id = await saga.place({
      items: [{ sku: 'GIZMO-3', quantity: 6 }],
      country: 'GB',
      failAt: 'shipment',
    });
    await saga.deliverNext('inventory', 'order.created'); // reserves 5, backorders 1, stock.low
    await saga.deliverNext('replenishment', 'stock.low');
    await saga.deliverNext('replenishment', 'inventory.backordered');

    await saga.supply(0, 'stock.low'); // the restock arrives before the order's own purchase
    await saga.settle();

    expect(await saga.statusOf(id)).toEqual({ status: 'CANCELLED', reason: 'SHIPMENT_FAILED' });
  });

  it('an order asked to fail at shipment still fails there when another order’s released stock fills it', async () => {
    // Y holds all of GIZMO-3 and is cancelled by its customer; X (X-Fail-At: shipment) waits for 2 of them.
    const saga = await aSaga();
    const y = await saga.place({ items: [{ sku: 'GIZMO-3', quantity: 5 }], country: 'GB' });
    const x = await saga.place({
      items: [{ sku: 'GIZMO-3', quantity: 2 }],
      country: 'GB',
      failAt: 'shipment',
    });
    await saga.deliverNext('inventory', 'order.created');
    await saga.deliverNext('inventory', 'order.created');

    await saga.cancel(y);
    await saga.deliverNext('shipment', 'order.cancel_requested'); // the cancel reaches shipment before Y's reservation
    await saga.settle();

    expect(await saga.statusOf(y)).toEqual({ status: 'CANCELLED', reason: 'CUSTOMER_CANCELLED' });
    expect(await saga.statusOf(x)).toEqual({ status: 'CANCELLED', reason: 'SHIPMENT_FAILED' });
  });
});

describe('the saga, whatever the order in which messages arrive (property)', () => {
  const line = fc.record({
    sku: fc.constantFrom('WIDGET-1', 'GADGET-2', 'GIZMO-3', 'GIZMO-3', 'LEGACY-4', 'NOPE-9'),
    quantity: fc.integer({ min: 1, max: 6 }),
  });
  const anyOrder = fc.record({
    items: fc.array(line, { minLength: 1, maxLength: 3 }),
    country: fc.constantFrom('GB', 'US', 'DE', 'JP'),
    failAt: fc.constantFrom<FailAt | undefined>(
      undefined,
      undefined,
      undefined,
      'inventory',
      'replenishment',
      'shipment',
    ),
    cancel: fc.boolean(),
  });
  const scenario = fc.record({
    orders: fc.array(anyOrder, { minLength: 1, maxLength: 5 }),
    picks: fc.array(fc.nat(), { minLength: 30, maxLength: 120 }),
  });
  type Scenario = typeof scenario extends fc.Arbitrary<infer T> ? T : never;
  // A fixed seed: the same scenarios on every run, so a failure is reproducible, never flaky. Each run
  // opens four databases: shrinking a counterexample takes minutes, so a failure is reported as found
  // (drop endOnFailure to shrink it while debugging).
  const RUNS = { numRuns: 25, seed: 20_240_601, endOnFailure: true };

  /** Places the orders, then delivers any message of any queue, a due purchase or a customer cancel, as `picks` say. */
  async function play({ orders, picks }: Scenario) {
    const saga = await aSaga();
    // The clock too is part of the scenario (timestamps decide which restock is already underway):
    // it moves 7 ms per step, the same on every run.
    vi.useFakeTimers({ toFake: ['Date'], now: new Date('2030-01-01T00:00:00Z') });
    try {
      const tick = () => vi.setSystemTime(Date.now() + 7);
      const placed: { id: string; spec: OrderSpec; cancel: boolean }[] = [];
      for (const { cancel, ...spec } of orders) {
        placed.push({ id: await saga.place(spec), spec, cancel });
        tick();
      }
      const cancels = placed.filter((p) => p.cancel).map((p) => p.id);
      for (const pick of picks) {
        const choice = pick % (saga.queue.length + 2);
        if (choice < saga.queue.length) await saga.deliverAt(choice);
        else if (choice === saga.queue.length) await saga.supply(pick);
        else if (cancels.length > 0) await saga.cancel(cancels.splice(pick % cancels.length, 1)[0] as string);
        tick();
      }
      for (const id of cancels) await saga.cancel(id);
      await saga.settle(tick);
      return { saga, placed };
    } finally {
      vi.useRealTimers();
    }
  }

  it('every order ends terminal, nothing stays reserved, only COMPLETED orders shipped, stock adds up', async () => {
    await fc.assert(
      fc.asyncProperty(scenario, async (s) => {
        const { saga, placed } = await play(s);

        await expectSettled(saga, placed);
      }),
      RUNS,
    );
  });

  it('an order fails for its own reasons only: its X-Fail-At, its SKUs, its country or its cancel', async () => {
    await fc.assert(
      fc.asyncProperty(scenario, async (s) => {
        const { saga, placed } = await play(s);

        for (const { id, spec, cancel } of placed) {
          const { status } = await saga.statusOf(id);
          const skus = spec.items.map((i) => i.sku);
          const mustFail =
            spec.failAt === 'inventory' ||
            spec.failAt === 'shipment' ||
            spec.country === 'JP' ||
            skus.includes('NOPE-9');
          const mustComplete =
            !mustFail && !cancel && spec.failAt === undefined && !skus.includes('LEGACY-4');
          if (mustFail) expect(status, `order ${id} ${JSON.stringify(spec)}`).toBe('CANCELLED');
          if (mustComplete) expect(status, `order ${id} ${JSON.stringify(spec)}`).toBe('COMPLETED');
        }
      }),
      RUNS,
    );
  });
});

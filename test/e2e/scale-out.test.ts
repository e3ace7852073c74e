/**
 * Two instances of every service on one PostgreSQL database, competing on each service's queue.
 * Scarce SKUs are ordered far beyond their stock from both order APIs at once: they never
 * oversell, and every unit there is gets sold. On PostgreSQL whatever SAGA_TEST_STORE says
 * (several instances need it); `npm run test:postgres` leaves it out, it would run the same twice.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { aLine, anOrder } from '../../support/builders.ts';
import { type Instance, System } from '../../support/system.ts';
import { expectConsistent, type Order, quiesce, type Stock } from '../support/saga.ts';

let system: System;

beforeAll(async () => {
  // A deadline far off: on two busy cores, a cancellation by deadline would leave units unsold.
  system = await System.start({ store: 'postgres', instances: 2, env: { SAGA_DEADLINE_MS: '180000' } });
}, 180_000);

afterAll(async () => {
  await system?.destroy();
});

/** Deliveries the instance handled (saga_messages_total, outcome handled), of one routing key or all. */
async function handledBy(instance: Instance, routingKey?: string): Promise<number> {
  const text = await (await fetch(system.url(instance, '/metrics'))).text();
  return text
    .split('\n')
    .filter((line) => line.startsWith('saga_messages_total{') && line.includes('outcome="handled"'))
    .filter((line) => !routingKey || line.includes(`routing_key="${routingKey}"`))
    .reduce((n, line) => n + Number(line.split(' ').at(-1)), 0);
}

const stockOf = async (instance: Instance) =>
  new Map((await system.get<Stock[]>(instance, '/stock')).body.map((s) => [s.sku, s]));

describe('two instances of every service on PostgreSQL', () => {
  it('sell a scarce SKU ordered far beyond its stock from both order APIs exactly once per unit', async () => {
    const before = await stockOf('inventory');
    const legacy = before.get('LEGACY-4'); // discontinued: what is short is never replenished
    const gizmo = before.get('GIZMO-3'); // low: what is short is bought from the supplier
    expect(legacy).toMatchObject({ onHand: 3, reserved: 0, discontinued: true });
    expect(gizmo).toMatchObject({ onHand: 5, reserved: 0, discontinued: false });

    // 40 times LEGACY-4's stock, one unit per order (a partial reservation given back could go
    // to a later order or to none: one unit each keeps "sold" exact), and 8 times GIZMO-3's.
    const orders = [
      ...Array.from({ length: 120 }, () => anOrder({ items: [aLine('LEGACY-4', 1)] })),
      ...Array.from({ length: 20 }, (_, i) => anOrder({ items: [aLine('GIZMO-3', 1 + (i % 3))] })),
    ].sort(() => Math.random() - 0.5);
    const apis = system.instancesOf('order-creation');
    expect(apis).toHaveLength(2);

    // Both inventories are watched while they reserve: neither may ever show stock oversold.
    const oversold: string[] = [];
    let watching = true;
    const watcher = (async () => {
      while (watching) {
        for (const instance of system.instancesOf('inventory')) {
          for (const s of (await stockOf(instance)).values()) {
            if (s.reserved > s.onHand) oversold.push(`${instance}: ${s.sku} ${s.reserved} > ${s.onHand}`);
          }
        }
        await new Promise((r) => setTimeout(r, 50));
      }
    })();

    const answers = await Promise.all(
      orders.map((order, i) =>
        system.request<Order>(apis[i % apis.length] as Instance, 'POST', '/orders', order),
      ),
    );
    expect(answers.filter((a) => a.status !== 201).map((a) => a.body)).toEqual([]);
    await quiesce(system, 120_000);
    watching = false;
    await watcher;
    expect(oversold).toEqual([]);

    const settled = await Promise.all(
      answers.map(async (a, i) => {
        const api = apis[(i + 1) % apis.length] as Instance; // read from the other API
        return (await system.get<Order>(api, `/orders/${a.body.id}`)).body;
      }),
    );
    expect(settled.filter((o) => o.status !== 'COMPLETED' && o.status !== 'CANCELLED')).toEqual([]);
    const sold = (sku: string) =>
      settled
        .filter((o) => o.status === 'COMPLETED')
        .flatMap((o) => o.items)
        .filter((l) => l.sku === sku)
        .reduce((n, l) => n + l.quantity, 0);
    const after = await stockOf('inventory#2');

    // LEGACY-4: every unit there was, and not one more; every other order refused.
    expect(sold('LEGACY-4')).toBe(3);
    expect(after.get('LEGACY-4')).toMatchObject({ onHand: 0, reserved: 0, replenished: 0, dispatched: 3 });
    const refused = settled.filter((o) => o.items[0]?.sku === 'LEGACY-4' && o.status === 'CANCELLED');
    expect(refused).toHaveLength(117);
    expect(new Set(refused.map((o) => o.reason))).toEqual(new Set(['REPLENISHMENT_FAILED']));

    // GIZMO-3: every order sold, from the stock there was and what the supplier delivered.
    const wanted = orders
      .flatMap((o) => o.items)
      .filter((l) => l.sku === 'GIZMO-3')
      .reduce((n, l) => n + l.quantity, 0);
    expect(sold('GIZMO-3')).toBe(wanted);
    const g = after.get('GIZMO-3');
    expect(g).toMatchObject({ reserved: 0, dispatched: wanted });
    expect(g?.onHand).toBe(5 + (g?.replenished ?? 0) - wanted);
    expect(g?.onHand).toBeGreaterThanOrEqual(0);

    await expectConsistent(system);

    // Or the test proved nothing: every instance of every service took its share of the work,
    // and both inventories reserved.
    const handled: Record<string, number> = {};
    for (const instance of system.instances) handled[instance] = await handledBy(instance);
    console.log('deliveries handled per instance:', handled);
    for (const instance of system.instances) expect(handled[instance], instance).toBeGreaterThan(0);
    for (const instance of system.instancesOf('inventory'))
      expect(await handledBy(instance, 'order.created'), `${instance} reserved`).toBeGreaterThan(0);
  }, 240_000);
});

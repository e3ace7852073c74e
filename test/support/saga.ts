/** Helpers over a running System: place orders, wait for them, read every service's view of one. */
import { expect } from 'vitest';
import type { components } from '../../common/generated/api.ts';
import { checkUntilClean, type ServiceUrls, waitUntilSettled } from '../../scripts/consistency.ts';
import { anOrder } from '../../support/builders.ts';
import type { System } from '../../support/system.ts';
import { eventually } from './wait.ts';

type Schemas = components['schemas'];
export type Order = Schemas['Order'];
export type Stock = Schemas['Stock'];
export type Shipment = Schemas['Shipment'];
export type Replenishment = Schemas['Replenishment'];

export async function place(
  system: System,
  order = anOrder(),
  headers: Record<string, string> = {},
): Promise<Order> {
  const created = await system.request<Order>('order-creation', 'POST', '/orders', order, headers);
  expect(created.status, JSON.stringify(created.body)).toBe(201);
  return created.body;
}

/** The order once settled (`?wait`: completed, or cancelled with every compensation reported), or after `ms`. */
export async function awaitTerminal(system: System, id: string, ms = 20_000): Promise<Order> {
  return (await system.get<Order>('order-creation', `/orders/${id}?wait=${ms}`)).body;
}

/** The order is settled, and not before any of these compensation facts was in its timeline. */
export function expectSettledAfter(order: Order, facts: readonly string[]): void {
  expect(order.settledAt, 'settledAt').toEqual(expect.any(String));
  const settledAt = Date.parse(order.settledAt ?? '');
  for (const type of facts) {
    const fact = order.timeline.find((t) => t.type === type);
    expect(fact, `${type} in the timeline`).toBeDefined();
    expect(settledAt).toBeGreaterThanOrEqual(Date.parse(fact?.at ?? ''));
  }
}

/** Everything the four services say about one order (and the stock). */
export async function everyView(system: System, orderId: string) {
  // The order first: what its timeline shows was committed by its service before it was read, so
  // the other views, read after, show it too (read together, one could be answered first).
  const order = await system.get<Order>('order-creation', `/orders/${orderId}`);
  const [shipments, replenishments, stock] = await Promise.all([
    system.get<Shipment[]>('shipment', `/shipments?orderId=${orderId}`),
    system.get<Replenishment[]>('replenishment', `/replenishments?orderId=${orderId}`),
    system.get<Stock[]>('inventory', '/stock'),
  ]);
  return {
    order: order.body,
    types: order.body.timeline.map((t) => t.type),
    dispatched: shipments.body.filter((s) => s.status === 'DISPATCHED'),
    shipments: shipments.body,
    replenishments: replenishments.body,
    stock: stock.body,
  };
}

export type View = Awaited<ReturnType<typeof everyView>>;

export async function readStock(system: System, sku: string): Promise<Stock | undefined> {
  return (await system.get<Stock>('inventory', `/stock/${sku}`)).body;
}

/**
 * Polls every service's view of the order until `done` holds (compensations land a moment after
 * the order turns terminal), or 15 s pass; returns the last view either way for the assertions.
 */
export const settled = (system: System, orderId: string, done: (view: View) => boolean): Promise<View> =>
  eventually(() => everyView(system, orderId), done, 15_000, 100);

/** The read APIs `npm run check` reads. */
export const urlsOf = (system: System): ServiceUrls => ({
  orders: system.url('order-creation', ''),
  inventory: system.url('inventory', ''),
  shipment: system.url('shipment', ''),
});

/** `npm run check`'s verdict on the whole system: no violation of saga.md's invariants. */
export async function expectConsistent(system: System): Promise<void> {
  const report = await checkUntilClean(urlsOf(system), 10_000);
  expect(report.violations).toEqual([]);
}

/** Waits until no order is left non-terminal (a deadline or a late answer may still be running). */
export async function quiesce(system: System, ms = 30_000): Promise<void> {
  await waitUntilSettled(urlsOf(system).orders, ms, 100);
}

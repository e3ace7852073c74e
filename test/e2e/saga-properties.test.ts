/**
 * Property: whatever mix of orders, failure points and cancel times, once the system is quiet
 * saga.md's invariants hold, every order is terminal, a COMPLETED one has exactly one shipment
 * and a CANCELLED one none, and an order nothing was done against completes.
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { anAddress, anOrder } from '../../support/builders.ts';
import { System } from '../../support/system.ts';
import { awaitTerminal, expectConsistent, type Order, place, settled } from '../support/saga.ts';

let system: System;
beforeAll(async () => {
  system = await System.start({ env: { SUPPLIER_DELAY_MS: '50' } });
});
afterAll(async () => {
  await system?.destroy();
});

const anOrderPlan = fc.record({
  lines: fc.array(
    fc.record({
      sku: fc.constantFrom('WIDGET-1', 'GADGET-2', 'GIZMO-3', 'LEGACY-4', 'NOPE-1'),
      quantity: fc.integer({ min: 1, max: 12 }),
    }),
    { minLength: 1, maxLength: 3 },
  ),
  failAt: fc.option(fc.constantFrom('inventory', 'replenishment', 'shipment'), { nil: undefined }),
  country: fc.constantFrom('GB', 'DE', 'US', 'BR'),
  cancelAfterMs: fc.option(fc.integer({ min: 0, max: 400 }), { nil: undefined }),
});
type Plan = typeof anOrderPlan extends fc.Arbitrary<infer T> ? T : never;

/** Nothing in the plan can make it fail: it must complete. */
const mustComplete = (plan: Plan) =>
  !plan.failAt &&
  plan.cancelAfterMs === undefined &&
  plan.country !== 'BR' &&
  plan.lines.every((l) => l.sku === 'WIDGET-1' || l.sku === 'GADGET-2' || l.sku === 'GIZMO-3');

async function run(plan: Plan): Promise<{ plan: Plan; order: Order }> {
  const created = await place(
    system,
    anOrder({ items: plan.lines, shippingAddress: anAddress({ country: plan.country }) }),
    plan.failAt ? { 'X-Fail-At': plan.failAt } : {},
  );
  if (plan.cancelAfterMs !== undefined) {
    await new Promise((r) => setTimeout(r, plan.cancelAfterMs));
    const cancel = await system.request('order-creation', 'POST', `/orders/${created.id}/cancel`);
    expect([202, 409]).toContain(cancel.status);
  }
  return { plan, order: await awaitTerminal(system, created.id) };
}

describe('the saga under random mixes of orders, failures and cancels', () => {
  it('keeps every invariant at quiescence', async () => {
    let orders = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(anOrderPlan, { minLength: 3, maxLength: 25 }), async (plans) => {
        const outcomes = await Promise.all(plans.map(run));
        orders += outcomes.length;
        for (const { plan, order } of outcomes) {
          const view = await settled(system, order.id, () => true);
          expect(['COMPLETED', 'CANCELLED']).toContain(view.order.status);
          if (view.order.status === 'COMPLETED') expect(view.dispatched).toHaveLength(1);
          else {
            expect(view.dispatched).toHaveLength(0);
            expect(view.order.reason).toBeTruthy();
          }
          if (mustComplete(plan)) expect(view.order.status, JSON.stringify(plan)).toBe('COMPLETED');
        }
        await expectConsistent(system);
      }),
      { numRuns: 30, endOnFailure: true },
    );
    console.log(`property runs: 30 mixes, ${orders} orders`);
  }, 300_000);
});

import { describe, expect, it } from 'vitest';
import { DEMO_CATALOG } from '../../common/demo-catalog.ts';
import { restockQuantity, supplierAnswer } from '../../services/replenishment/domain.ts';

describe('replenishment rules: how much a low-stock restock buys', () => {
  it('brings the SKU back to twice its reorder point', () => {
    expect(restockQuantity({ available: 4, reorderPoint: 10 })).toBe(16);
    expect(restockQuantity({ available: 0, reorderPoint: 10 })).toBe(20);
  });

  it('after the restock, available is exactly twice the reorder point', () => {
    const low = { available: 37, reorderPoint: 50 };

    const quantity = restockQuantity(low);

    expect(low.available + quantity).toBe(2 * low.reorderPoint);
  });

  it('always buys at least one unit (a reorder point of zero, or stock already above twice of it)', () => {
    expect(restockQuantity({ available: 0, reorderPoint: 0 })).toBe(1);
    expect(restockQuantity({ available: 25, reorderPoint: 10 })).toBe(1);
  });
});

describe('replenishment rules: what the simulated supplier answers', () => {
  const sellable = DEMO_CATALOG.filter((e) => !e.discontinued);
  const discontinued = DEMO_CATALOG.filter((e) => e.discontinued);

  it('the demo catalog has SKUs of both kinds (the tests below would otherwise prove nothing)', () => {
    expect(sellable.length).toBeGreaterThan(0);
    expect(discontinued.length).toBeGreaterThan(0);
  });

  it('delivers every SKU of the catalog that is not discontinued', () => {
    for (const entry of sellable) expect(supplierAnswer(entry.sku, false)).toEqual({ delivered: true });
  });

  it('never delivers a discontinued SKU, and says why', () => {
    for (const entry of discontinued) {
      expect(supplierAnswer(entry.sku, false)).toEqual({
        delivered: false,
        detail: `${entry.sku} is discontinued`,
      });
    }
  });

  it('does not deliver a SKU it does not carry', () => {
    const answer = supplierAnswer('NOPE-9', false);

    expect(answer.delivered).toBe(false);
    expect(!answer.delivered && answer.detail).toContain('NOPE-9');
  });

  it('an injected failure fails even a SKU it would deliver, with detail INJECTED', () => {
    expect(supplierAnswer('WIDGET-1', true)).toEqual({ delivered: false, detail: 'INJECTED' });
  });

  it('an injected failure on a discontinued SKU still says INJECTED (the injection is what the timeline shows)', () => {
    expect(supplierAnswer('LEGACY-4', true)).toEqual({ delivered: false, detail: 'INJECTED' });
  });
});

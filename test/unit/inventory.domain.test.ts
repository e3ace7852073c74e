import { describe, expect, it } from 'vitest';
import {
  allocate,
  available,
  isLow,
  mergeLines,
  planReservation,
  reservedEvents,
  type StockLevel,
} from '../../services/inventory/domain.ts';
import { anAddress } from '../../support/builders.ts';

const aStock = (overrides: Partial<StockLevel> = {}): StockLevel => ({
  sku: 'GIZMO-3',
  onHand: 5,
  reserved: 0,
  reorderPoint: 10,
  discontinued: false,
  ...overrides,
});

const catalog = (...levels: StockLevel[]): Map<string, StockLevel> => new Map(levels.map((s) => [s.sku, s]));

describe('inventory rules: planning a reservation', () => {
  it('when every line is available, every line is reserved in full with nothing missing', () => {
    // Arrange
    const stock = catalog(aStock({ sku: 'WIDGET-1', onHand: 100 }), aStock({ sku: 'GADGET-2', onHand: 10 }));

    // Act
    const plan = planReservation(
      [
        { sku: 'WIDGET-1', quantity: 3 },
        { sku: 'GADGET-2', quantity: 10 },
      ],
      stock,
    );

    // Assert
    expect(plan).toEqual({
      kind: 'reserve',
      lines: [
        { sku: 'WIDGET-1', requested: 3, reserve: 3, missing: 0 },
        { sku: 'GADGET-2', requested: 10, reserve: 10, missing: 0 },
      ],
    });
  });

  it('when a line is short, what is available is reserved and the rest is missing', () => {
    const stock = catalog(aStock({ sku: 'GIZMO-3', onHand: 5, reserved: 2 }));

    const plan = planReservation([{ sku: 'GIZMO-3', quantity: 8 }], stock);

    expect(plan).toEqual({
      kind: 'reserve',
      lines: [{ sku: 'GIZMO-3', requested: 8, reserve: 3, missing: 5 }],
    });
  });

  it('when nothing is available, the whole line is missing and nothing is reserved', () => {
    const stock = catalog(aStock({ sku: 'GIZMO-3', onHand: 5, reserved: 5 }));

    const plan = planReservation([{ sku: 'GIZMO-3', quantity: 4 }], stock);

    expect(plan).toEqual({
      kind: 'reserve',
      lines: [{ sku: 'GIZMO-3', requested: 4, reserve: 0, missing: 4 }],
    });
  });

  it('only the short line of a mixed order is partial', () => {
    const stock = catalog(aStock({ sku: 'WIDGET-1', onHand: 100 }), aStock({ sku: 'GIZMO-3', onHand: 5 }));

    const plan = planReservation(
      [
        { sku: 'WIDGET-1', quantity: 2 },
        { sku: 'GIZMO-3', quantity: 7 },
      ],
      stock,
    );

    expect(plan.kind === 'reserve' && plan.lines).toEqual([
      { sku: 'WIDGET-1', requested: 2, reserve: 2, missing: 0 },
      { sku: 'GIZMO-3', requested: 7, reserve: 5, missing: 2 },
    ]);
  });

  it('two lines of the same SKU count as one line of their sum', () => {
    const stock = catalog(aStock({ sku: 'GIZMO-3', onHand: 5 }));

    const plan = planReservation(
      [
        { sku: 'GIZMO-3', quantity: 3 },
        { sku: 'GIZMO-3', quantity: 4 },
      ],
      stock,
    );

    expect(plan).toEqual({
      kind: 'reserve',
      lines: [{ sku: 'GIZMO-3', requested: 7, reserve: 5, missing: 2 }],
    });
  });

  it('an unknown SKU rejects the whole order with UNKNOWN_SKU naming it, even if the other lines are available', () => {
    const stock = catalog(aStock({ sku: 'WIDGET-1', onHand: 100 }));

    const plan = planReservation(
      [
        { sku: 'WIDGET-1', quantity: 1 },
        { sku: 'NOPE-9', quantity: 1 },
      ],
      stock,
    );

    expect(plan.kind).toBe('rejected');
    if (plan.kind !== 'rejected') return;
    expect(plan.rejection.reason).toBe('UNKNOWN_SKU');
    expect(plan.rejection.detail).toContain('NOPE-9');
    expect(plan.rejection.detail).not.toContain('WIDGET-1');
  });

  it('an unknown SKU ordered on two lines is named once', () => {
    const plan = planReservation(
      [
        { sku: 'NOPE-9', quantity: 1 },
        { sku: 'NOPE-9', quantity: 2 },
      ],
      catalog(),
    );

    expect(plan).toEqual({
      kind: 'rejected',
      rejection: { reason: 'UNKNOWN_SKU', detail: 'unknown SKU: NOPE-9' },
    });
  });

  it('an injected failure rejects the order with INVENTORY_REJECTED and detail INJECTED', () => {
    const stock = catalog(aStock({ sku: 'WIDGET-1', onHand: 100 }));

    const plan = planReservation([{ sku: 'WIDGET-1', quantity: 1 }], stock, true);

    expect(plan).toEqual({
      kind: 'rejected',
      rejection: { reason: 'INVENTORY_REJECTED', detail: 'INJECTED' },
    });
  });

  it('without an injected failure the same order is reserved', () => {
    const stock = catalog(aStock({ sku: 'WIDGET-1', onHand: 100 }));

    const plan = planReservation([{ sku: 'WIDGET-1', quantity: 1 }], stock, false);

    expect(plan.kind).toBe('reserve');
  });

  it('a stock already over-reserved (available below zero) reserves nothing rather than a negative amount', () => {
    const stock = catalog(aStock({ sku: 'GIZMO-3', onHand: 2, reserved: 3 }));

    const plan = planReservation([{ sku: 'GIZMO-3', quantity: 2 }], stock);

    expect(plan).toEqual({
      kind: 'reserve',
      lines: [{ sku: 'GIZMO-3', requested: 2, reserve: 0, missing: 2 }],
    });
  });
});

describe('inventory rules: merging lines', () => {
  it('sums the quantities of the same SKU and keeps the order of first appearance', () => {
    const merged = mergeLines([
      { sku: 'B-2', quantity: 1 },
      { sku: 'A-1', quantity: 2 },
      { sku: 'B-2', quantity: 3 },
    ]);

    expect(merged).toEqual([
      { sku: 'B-2', quantity: 4 },
      { sku: 'A-1', quantity: 2 },
    ]);
  });
});

describe('inventory rules: allocating replenished stock to backorders', () => {
  const waiting = [
    { seq: 1, orderId: 'first', missing: 3 },
    { seq: 2, orderId: 'second', missing: 4 },
    { seq: 3, orderId: 'third', missing: 2 },
  ];

  it('serves backorders first come first served: the oldest is filled before the next gets anything', () => {
    const allocation = allocate(waiting, 5);

    expect(allocation).toEqual([
      { seq: 1, orderId: 'first', take: 3 },
      { seq: 2, orderId: 'second', take: 2 },
    ]);
  });

  it('when there is enough for everyone, each backorder gets exactly what it misses', () => {
    const allocation = allocate(waiting, 100);

    expect(allocation.map((a) => a.take)).toEqual([3, 4, 2]);
  });

  it('never gives out more than is free', () => {
    for (const free of [0, 1, 3, 4, 8, 9, 10]) {
      const total = allocate(waiting, free).reduce((sum, a) => sum + a.take, 0);
      expect(total).toBe(Math.min(free, 9));
    }
  });

  it('with nothing free, nobody gets anything', () => {
    expect(allocate(waiting, 0)).toEqual([]);
    expect(allocate(waiting, -2)).toEqual([]);
  });

  it('with nobody waiting, nothing is allocated', () => {
    expect(allocate([], 10)).toEqual([]);
  });
});

describe('inventory rules: low stock', () => {
  it('available is on hand minus reserved', () => {
    expect(available(aStock({ onHand: 7, reserved: 3 }))).toBe(4);
  });

  it('a SKU at its reorder point is low', () => {
    expect(isLow(aStock({ onHand: 15, reserved: 5, reorderPoint: 10 }))).toBe(true);
  });

  it('a SKU under its reorder point is low', () => {
    expect(isLow(aStock({ onHand: 5, reserved: 0, reorderPoint: 10 }))).toBe(true);
  });

  it('a SKU one above its reorder point is not low', () => {
    expect(isLow(aStock({ onHand: 16, reserved: 5, reorderPoint: 10 }))).toBe(false);
  });

  it('a discontinued SKU is never low, even with nothing left (it is not worth reordering)', () => {
    expect(isLow(aStock({ onHand: 0, reserved: 0, reorderPoint: 0, discontinued: true }))).toBe(false);
    expect(isLow(aStock({ onHand: 3, reserved: 3, reorderPoint: 10, discontinued: true }))).toBe(false);
  });
});

describe('inventory rules: orders a backorder fill completes', () => {
  it('each is announced as inventory.reserved in its own saga context, not in the one being handled', () => {
    const shippingAddress = anAddress();
    const items = [{ sku: 'GIZMO-3', quantity: 8 }] as [{ sku: string; quantity: number }];
    const context = { orderId: 'order-a', failAt: 'shipment' as const };

    expect(reservedEvents([{ orderId: 'order-a', items, shippingAddress, context }])).toEqual([
      { type: 'inventory.reserved', data: { orderId: 'order-a', items, shippingAddress }, context },
    ]);
  });
});

import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { ROUTING_KEYS, type SagaEvent } from '../../common/events.ts';
import {
  type CancelReason,
  type Compensation,
  decide,
  isTerminal,
  type OrderState,
  type OrderStatus,
  owedCompensations,
  requestCancel,
} from '../../services/order-creation/domain.ts';
import { anAddress } from '../../support/builders.ts';
import {
  anEvent,
  replenishmentCompleted,
  replenishmentFailed,
  shipmentDispatched,
} from '../support/unit-db.ts';

const ORDER_ID = randomUUID();
const ALL_STATUSES: OrderStatus[] = [
  'PENDING',
  'AWAITING_STOCK',
  'RESERVED',
  'CANCELLING',
  'COMPLETED',
  'CANCELLED',
];
const LIVE: OrderStatus[] = ['PENDING', 'AWAITING_STOCK', 'RESERVED', 'CANCELLING'];
/** What a cancellation owes when inventory may hold something: both reports. */
const BOTH = ['inventory.released', 'replenishment.cancelled'];

const anOrderIn = (status: OrderStatus, cancelReason?: CancelReason): OrderState => ({
  id: ORDER_ID,
  status,
  ...(cancelReason ? { cancelReason } : {}),
});

/** One event of every routing key, about ORDER_ID where it has an order. */
const EVENTS: { [K in (typeof ROUTING_KEYS)[number]]: SagaEvent<K> } = {
  'order.created': anEvent('order.created', {
    orderId: ORDER_ID,
    customerId: 'customer-42',
    items: [{ sku: 'WIDGET-1', quantity: 1 }],
    shippingAddress: anAddress(),
  }),
  'order.cancel_requested': anEvent('order.cancel_requested', {
    orderId: ORDER_ID,
    reason: 'CUSTOMER_CANCELLED',
  }),
  'order.cancelled': anEvent('order.cancelled', { orderId: ORDER_ID, reason: 'SHIPMENT_FAILED' }),
  'order.completed': anEvent('order.completed', { orderId: ORDER_ID }),
  'inventory.reserved': anEvent('inventory.reserved', {
    orderId: ORDER_ID,
    items: [{ sku: 'WIDGET-1', quantity: 1 }],
    shippingAddress: anAddress(),
  }),
  'inventory.backordered': anEvent('inventory.backordered', {
    orderId: ORDER_ID,
    shortages: [{ sku: 'GIZMO-3', missing: 3 }],
  }),
  'inventory.rejected': anEvent('inventory.rejected', {
    orderId: ORDER_ID,
    reason: 'UNKNOWN_SKU',
    detail: 'unknown SKU: NOPE-9',
  }),
  'inventory.released': anEvent('inventory.released', {
    orderId: ORDER_ID,
    items: [{ sku: 'WIDGET-1', quantity: 1 }],
  }),
  'stock.low': anEvent('stock.low', { sku: 'GIZMO-3', available: 0, reorderPoint: 10 }),
  'replenishment.completed': replenishmentCompleted('GIZMO-3', 3, ORDER_ID),
  'replenishment.failed': replenishmentFailed('LEGACY-4', ORDER_ID),
  'replenishment.cancelled': anEvent('replenishment.cancelled', { orderId: ORDER_ID, replenishmentIds: [] }),
  'shipment.dispatched': shipmentDispatched(ORDER_ID),
  'shipment.failed': anEvent('shipment.failed', {
    orderId: ORDER_ID,
    reason: 'SHIPMENT_FAILED',
    detail: 'INJECTED',
  }),
  'shipment.cancelled': anEvent('shipment.cancelled', { orderId: ORDER_ID }),
  'shipment.cancel_rejected': anEvent('shipment.cancel_rejected', {
    orderId: ORDER_ID,
    reason: 'ALREADY_DISPATCHED',
  }),
};

/** What each event does to an order in each live status (saga.md): the expected status, or undefined = unchanged. */
const EXPECTED: Record<string, Partial<Record<OrderStatus, OrderStatus>>> = {
  'inventory.backordered': { PENDING: 'AWAITING_STOCK' },
  'inventory.reserved': { PENDING: 'RESERVED', AWAITING_STOCK: 'RESERVED' },
  'inventory.rejected': {
    PENDING: 'CANCELLED',
    AWAITING_STOCK: 'CANCELLED',
    RESERVED: 'CANCELLED',
    CANCELLING: 'CANCELLED',
  },
  'shipment.failed': {
    PENDING: 'CANCELLED',
    AWAITING_STOCK: 'CANCELLED',
    RESERVED: 'CANCELLED',
    CANCELLING: 'CANCELLED',
  },
  'shipment.dispatched': {
    PENDING: 'COMPLETED',
    AWAITING_STOCK: 'COMPLETED',
    RESERVED: 'COMPLETED',
    CANCELLING: 'COMPLETED',
  },
  // Only ever an answer to order.cancel_requested (so the order is CANCELLING); a promise never to ship is final.
  'shipment.cancelled': {
    PENDING: 'CANCELLED',
    AWAITING_STOCK: 'CANCELLED',
    RESERVED: 'CANCELLED',
    CANCELLING: 'CANCELLED',
  },
  'shipment.cancel_rejected': { CANCELLING: 'RESERVED' },
};

describe('order rules: the status machine', () => {
  it('terminal statuses are exactly COMPLETED and CANCELLED', () => {
    expect(ALL_STATUSES.filter(isTerminal)).toEqual(['COMPLETED', 'CANCELLED']);
  });

  describe.each(['COMPLETED', 'CANCELLED'] as const)('a %s order never changes again', (status) => {
    it.each(ROUTING_KEYS)('on %s: no new status, nothing emitted', (type) => {
      const decision = decide(anOrderIn(status, 'CUSTOMER_CANCELLED'), EVENTS[type]);

      expect(decision).toEqual({ emit: [] });
    });
  });

  describe.each(LIVE)('a %s order', (status) => {
    it.each(ROUTING_KEYS)('on %s moves as the contract says', (type) => {
      const expected = EXPECTED[type]?.[status];

      const decision = decide(anOrderIn(status), EVENTS[type]);

      if (expected) expect(decision.next?.status).toBe(expected);
      else expect(decision).toEqual({ emit: [] });
    });
  });

  it('events that only inform (timeline, stock, replenishment, its own) change no live order and emit nothing', () => {
    const informative = [
      'order.created',
      'order.cancel_requested',
      'order.cancelled',
      'order.completed',
      'inventory.released',
      'stock.low',
      'replenishment.completed',
      'replenishment.failed',
      'replenishment.cancelled',
    ] as const;

    for (const status of LIVE) {
      for (const type of informative) expect(decide(anOrderIn(status), EVENTS[type])).toEqual({ emit: [] });
    }
  });

  it('when stock is short, a pending order waits for stock', () => {
    const decision = decide(anOrderIn('PENDING'), EVENTS['inventory.backordered']);

    expect(decision).toEqual({ next: { status: 'AWAITING_STOCK' }, emit: [] });
  });

  it('when inventory reserves an order awaiting stock, it is reserved and nothing is emitted', () => {
    const decision = decide(anOrderIn('AWAITING_STOCK'), EVENTS['inventory.reserved']);

    expect(decision).toEqual({ next: { status: 'RESERVED' }, emit: [] });
  });

  it('a reservation arriving while a cancel is pending does not undo the cancel', () => {
    const decision = decide(anOrderIn('CANCELLING'), EVENTS['inventory.reserved']);

    expect(decision.next).toBeUndefined();
  });

  it.each([
    ['UNKNOWN_SKU', 'unknown SKU: NOPE-9'],
    ['INVENTORY_REJECTED', 'INJECTED'],
    ['REPLENISHMENT_FAILED', 'LEGACY-4 is discontinued'],
  ] as const)(
    'when inventory rejects with %s, the order is cancelled with that reason and order.cancelled tells the others',
    (reason, detail) => {
      const event = anEvent('inventory.rejected', { orderId: ORDER_ID, reason, detail });

      const decision = decide(anOrderIn('AWAITING_STOCK'), event);

      expect(decision).toEqual({
        next: { status: 'CANCELLED', reason },
        owed: reason === 'REPLENISHMENT_FAILED' ? ['replenishment.cancelled'] : [],
        ...(reason === 'REPLENISHMENT_FAILED' ? {} : { settled: true }),
        emit: [
          {
            type: 'order.cancelled',
            data: {
              orderId: ORDER_ID,
              reason,
              compensations: reason === 'REPLENISHMENT_FAILED' ? ['replenishment.cancelled'] : [],
            },
          },
        ],
      });
    },
  );

  it('when the shipment fails, the order is cancelled with SHIPMENT_FAILED and order.cancelled is emitted', () => {
    const decision = decide(anOrderIn('RESERVED'), EVENTS['shipment.failed']);

    expect(decision).toEqual({
      next: { status: 'CANCELLED', reason: 'SHIPMENT_FAILED' },
      owed: BOTH,
      emit: [
        {
          type: 'order.cancelled',
          data: { orderId: ORDER_ID, reason: 'SHIPMENT_FAILED', compensations: BOTH },
        },
      ],
    });
  });

  it('when the order is dispatched, it completes and order.completed is emitted', () => {
    const decision = decide(anOrderIn('RESERVED'), EVENTS['shipment.dispatched']);

    expect(decision).toEqual({
      next: { status: 'COMPLETED' },
      settled: true,
      emit: [{ type: 'order.completed', data: { orderId: ORDER_ID } }],
    });
  });

  it('the pivot: a dispatch while CANCELLING completes the order (it left the warehouse), it is not cancelled', () => {
    const decision = decide(anOrderIn('CANCELLING', 'CUSTOMER_CANCELLED'), EVENTS['shipment.dispatched']);

    expect(decision).toEqual({
      next: { status: 'COMPLETED' },
      settled: true,
      emit: [{ type: 'order.completed', data: { orderId: ORDER_ID } }],
    });
  });

  it('when shipment promises never to dispatch, a customer cancel goes through with CUSTOMER_CANCELLED', () => {
    const decision = decide(anOrderIn('CANCELLING', 'CUSTOMER_CANCELLED'), EVENTS['shipment.cancelled']);

    expect(decision).toEqual({
      next: { status: 'CANCELLED', reason: 'CUSTOMER_CANCELLED' },
      owed: BOTH,
      emit: [
        {
          type: 'order.cancelled',
          data: { orderId: ORDER_ID, reason: 'CUSTOMER_CANCELLED', compensations: BOTH },
        },
      ],
    });
  });

  it('when shipment promises never to dispatch, a deadline cancel goes through with DEADLINE_EXCEEDED', () => {
    const decision = decide(anOrderIn('CANCELLING', 'DEADLINE_EXCEEDED'), EVENTS['shipment.cancelled']);

    expect(decision).toEqual({
      next: { status: 'CANCELLED', reason: 'DEADLINE_EXCEEDED' },
      owed: BOTH,
      emit: [
        {
          type: 'order.cancelled',
          data: { orderId: ORDER_ID, reason: 'DEADLINE_EXCEEDED', compensations: BOTH },
        },
      ],
    });
  });

  it('when the cancel is rejected (already dispatched), the order goes back to RESERVED and waits for the dispatch', () => {
    const decision = decide(
      anOrderIn('CANCELLING', 'CUSTOMER_CANCELLED'),
      EVENTS['shipment.cancel_rejected'],
    );

    expect(decision).toEqual({ next: { status: 'RESERVED' }, emit: [] });
  });

  it('a cancel rejection then the dispatch completes the order', () => {
    const afterRejection = decide(anOrderIn('CANCELLING'), EVENTS['shipment.cancel_rejected']);
    const status = afterRejection.next?.status ?? 'CANCELLING';

    const decision = decide(anOrderIn(status), EVENTS['shipment.dispatched']);

    expect(decision.next?.status).toBe('COMPLETED');
  });

  it('the dispatch then a late cancel rejection leaves the order COMPLETED', () => {
    const completed =
      decide(anOrderIn('CANCELLING'), EVENTS['shipment.dispatched']).next?.status ?? 'CANCELLING';

    const decision = decide(anOrderIn(completed), EVENTS['shipment.cancel_rejected']);

    expect(completed).toBe('COMPLETED');
    expect(decision).toEqual({ emit: [] });
  });
});

describe('order rules: asking to cancel', () => {
  it.each(['PENDING', 'AWAITING_STOCK', 'RESERVED'] as const)(
    'a %s order can be cancelled: order.cancel_requested asks shipment first',
    (status) => {
      const request = requestCancel(anOrderIn(status), 'CUSTOMER_CANCELLED');

      expect(request).toEqual({
        outcome: 'requested',
        emit: [{ type: 'order.cancel_requested', data: { orderId: ORDER_ID, reason: 'CUSTOMER_CANCELLED' } }],
      });
    },
  );

  it('the deadline asks with DEADLINE_EXCEEDED', () => {
    const request = requestCancel(anOrderIn('AWAITING_STOCK'), 'DEADLINE_EXCEEDED');

    expect(request).toEqual({
      outcome: 'requested',
      emit: [{ type: 'order.cancel_requested', data: { orderId: ORDER_ID, reason: 'DEADLINE_EXCEEDED' } }],
    });
  });

  it('a second request while the first is pending asks nothing more', () => {
    expect(requestCancel(anOrderIn('CANCELLING', 'CUSTOMER_CANCELLED'), 'CUSTOMER_CANCELLED')).toEqual({
      outcome: 'already-requested',
    });
  });

  it.each(['COMPLETED', 'CANCELLED'] as const)('a %s order cannot be cancelled (409)', (status) => {
    expect(requestCancel(anOrderIn(status), 'CUSTOMER_CANCELLED')).toEqual({ outcome: 'terminal' });
  });
});

describe('order rules: a cancelled order is settled once its compensations have reported', () => {
  const cancelledOwing = (owed: Compensation[]): OrderState => ({ id: ORDER_ID, status: 'CANCELLED', owed });

  it.each([
    ['UNKNOWN_SKU', []],
    ['INVENTORY_REJECTED', []],
    ['REPLENISHMENT_FAILED', ['replenishment.cancelled']],
    ['SHIPMENT_FAILED', BOTH],
    ['CUSTOMER_CANCELLED', BOTH],
    ['DEADLINE_EXCEEDED', BOTH],
  ] as const)('a cancellation for %s is owed %j', (reason, owed) => {
    expect(owedCompensations(reason)).toEqual(owed);
  });

  it('each compensation fact owed counts one off; the last one settles the order', () => {
    const first = decide(
      cancelledOwing(['inventory.released', 'replenishment.cancelled']),
      EVENTS['inventory.released'],
    );
    const last = decide(cancelledOwing(first.owed ?? []), EVENTS['replenishment.cancelled']);

    expect(first).toEqual({ owed: ['replenishment.cancelled'], emit: [] });
    expect(last).toEqual({ owed: [], settled: true, emit: [] });
  });

  it('a compensation fact not owed (or reported twice) changes nothing', () => {
    expect(decide(cancelledOwing(['replenishment.cancelled']), EVENTS['inventory.released'])).toEqual({
      emit: [],
    });
    expect(decide(cancelledOwing([]), EVENTS['replenishment.cancelled'])).toEqual({ emit: [] });
  });

  it('a compensation fact for an order not cancelled counts nothing', () => {
    const order: OrderState = { id: ORDER_ID, status: 'COMPLETED', owed: ['inventory.released'] };

    expect(decide(order, EVENTS['inventory.released'])).toEqual({ emit: [] });
  });
});

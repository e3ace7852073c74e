import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { neverDispatch } from '../../compensation/shipment.ts';
import { handlers } from '../../services/shipment/handlers.ts';
import { listShipments } from '../../services/shipment/store.ts';
import { anAddress } from '../../support/builders.ts';
import {
  anEvent,
  emittedOf,
  handlerFor,
  inventoryReserved,
  openShipment,
  orderCancelled,
  typesOf,
} from '../support/unit-db.ts';

const dispatch = handlerFor(handlers, 'inventory.reserved');
const answerCancel = handlerFor(handlers, 'order.cancel_requested');

const cancelRequested = (
  orderId: string,
  reason: 'CUSTOMER_CANCELLED' | 'DEADLINE_EXCEEDED' = 'CUSTOMER_CANCELLED',
) => anEvent('order.cancel_requested', { orderId, reason });

describe('shipment: dispatching a reserved order (inventory.reserved)', () => {
  it('when the order is reserved, it is dispatched with the carrier of its country and a tracking number', async () => {
    // Arrange
    const shipment = await openShipment();
    const orderId = randomUUID();

    // Act
    const emitted = await shipment.handle(dispatch, inventoryReserved(orderId, anAddress({ country: 'GB' })));

    // Assert
    const [dispatched] = emittedOf(emitted, 'shipment.dispatched');
    expect(typesOf(emitted)).toEqual(['shipment.dispatched']);
    expect(dispatched).toMatchObject({
      orderId,
      carrier: 'Royal Mail',
      trackingNumber: expect.stringMatching(/^RO\d{10}$/),
    });
    const row = await shipment.db
      .selectFrom('shipments')
      .selectAll()
      .where('order_id', '=', orderId)
      .executeTakeFirst();
    expect(row).toMatchObject({
      status: 'DISPATCHED',
      id: dispatched?.shipmentId,
      carrier: 'Royal Mail',
      tracking_number: dispatched?.trackingNumber,
      country: 'GB',
    });
  });

  it('an order is dispatched once: a second inventory.reserved ships nothing more', async () => {
    const shipment = await openShipment();
    const orderId = randomUUID();
    await shipment.handle(dispatch, inventoryReserved(orderId));

    const again = await shipment.handle(dispatch, inventoryReserved(orderId));

    expect(again).toEqual([]);
    expect(await listShipments(shipment.db)).toHaveLength(1);
  });

  it('when the destination country is not served, the shipment fails with SHIPMENT_FAILED and nothing is dispatched', async () => {
    const shipment = await openShipment();
    const orderId = randomUUID();

    const emitted = await shipment.handle(dispatch, inventoryReserved(orderId, anAddress({ country: 'JP' })));

    expect(emitted).toEqual([
      {
        type: 'shipment.failed',
        data: {
          orderId,
          reason: 'SHIPMENT_FAILED',
          detail: expect.stringMatching(/^UNSUPPORTED_COUNTRY: JP/),
        },
      },
    ]);
    const row = await shipment.db
      .selectFrom('shipments')
      .selectAll()
      .where('order_id', '=', orderId)
      .executeTakeFirst();
    expect(row).toMatchObject({ status: 'FAILED', id: null, tracking_number: null });
  });

  it('the served countries are the configured ones', async () => {
    const shipment = await openShipment({ SUPPORTED_COUNTRIES: 'JP' });

    const japan = await shipment.handle(
      dispatch,
      inventoryReserved(randomUUID(), anAddress({ country: 'JP' })),
    );
    const britain = await shipment.handle(
      dispatch,
      inventoryReserved(randomUUID(), anAddress({ country: 'GB' })),
    );

    expect(typesOf(japan)).toEqual(['shipment.dispatched']);
    expect(typesOf(britain)).toEqual(['shipment.failed']);
  });

  it('an injected failure at shipment fails it with detail INJECTED', async () => {
    const shipment = await openShipment();
    const orderId = randomUUID();

    const emitted = await shipment.handle(dispatch, inventoryReserved(orderId), 'shipment');

    expect(emitted).toEqual([
      { type: 'shipment.failed', data: { orderId, reason: 'SHIPMENT_FAILED', detail: 'INJECTED' } },
    ]);
  });

  it('a failed shipment is not retried by a later inventory.reserved', async () => {
    const shipment = await openShipment();
    const orderId = randomUUID();
    await shipment.handle(dispatch, inventoryReserved(orderId), 'shipment');

    const again = await shipment.handle(dispatch, inventoryReserved(orderId));

    expect(again).toEqual([]);
  });
});

describe('shipment: answering a cancel request (order.cancel_requested), the pivot', () => {
  it('before dispatch, shipment promises never to dispatch: shipment.cancelled, and a later inventory.reserved is refused', async () => {
    const shipment = await openShipment();
    const orderId = randomUUID();

    const answer = await shipment.handle(answerCancel, cancelRequested(orderId));
    const late = await shipment.handle(dispatch, inventoryReserved(orderId));

    expect(answer).toEqual([{ type: 'shipment.cancelled', data: { orderId } }]);
    expect(late).toEqual([]);
    expect(await listShipments(shipment.db, orderId)).toEqual([
      { orderId, status: 'CANCELLED', detail: 'CUSTOMER_CANCELLED', createdAt: expect.any(String) },
    ]);
  });

  it('after dispatch, the cancel is rejected with ALREADY_DISPATCHED and the shipment stays dispatched', async () => {
    const shipment = await openShipment();
    const orderId = randomUUID();
    await shipment.handle(dispatch, inventoryReserved(orderId));

    const answer = await shipment.handle(answerCancel, cancelRequested(orderId, 'DEADLINE_EXCEEDED'));

    expect(answer).toEqual([
      { type: 'shipment.cancel_rejected', data: { orderId, reason: 'ALREADY_DISPATCHED' } },
    ]);
    const row = await shipment.db
      .selectFrom('shipments')
      .selectAll()
      .where('order_id', '=', orderId)
      .executeTakeFirst();
    expect(row?.status).toBe('DISPATCHED');
  });

  it('after a failed shipment, the cancel goes through (nothing was dispatched) and the failure is kept', async () => {
    const shipment = await openShipment();
    const orderId = randomUUID();
    await shipment.handle(dispatch, inventoryReserved(orderId), 'shipment');

    const answer = await shipment.handle(answerCancel, cancelRequested(orderId));

    expect(answer).toEqual([{ type: 'shipment.cancelled', data: { orderId } }]);
    const row = await shipment.db
      .selectFrom('shipments')
      .selectAll()
      .where('order_id', '=', orderId)
      .executeTakeFirst();
    expect(row).toMatchObject({ status: 'FAILED', detail: 'INJECTED' });
  });

  it('asked twice before dispatch, it answers shipment.cancelled both times and keeps one promise', async () => {
    const shipment = await openShipment();
    const orderId = randomUUID();
    await shipment.handle(answerCancel, cancelRequested(orderId));

    const again = await shipment.handle(answerCancel, cancelRequested(orderId));

    expect(again).toEqual([{ type: 'shipment.cancelled', data: { orderId } }]);
    expect(await listShipments(shipment.db)).toHaveLength(1);
  });
});

describe('shipment compensation: never dispatching a cancelled order (order.cancelled)', () => {
  it('is what shipment does on order.cancelled', () => {
    expect(handlers['order.cancelled']).toBe(neverDispatch);
  });

  it('applied once, it records the promise never to dispatch the order, and emits nothing', async () => {
    const shipment = await openShipment();
    const orderId = randomUUID();

    const emitted = await shipment.handle(neverDispatch, orderCancelled(orderId, 'UNKNOWN_SKU'));

    expect(emitted).toEqual([]);
    expect(await listShipments(shipment.db, orderId)).toEqual([
      { orderId, status: 'CANCELLED', detail: 'UNKNOWN_SKU', createdAt: expect.any(String) },
    ]);
  });

  it('applied twice, the second changes nothing and emits nothing', async () => {
    const shipment = await openShipment();
    const orderId = randomUUID();
    await shipment.handle(neverDispatch, orderCancelled(orderId, 'UNKNOWN_SKU'));
    const before = await listShipments(shipment.db);

    const again = await shipment.handle(neverDispatch, orderCancelled(orderId, 'DEADLINE_EXCEEDED'));

    expect(again).toEqual([]);
    expect(await listShipments(shipment.db)).toEqual(before);
  });

  it('when order.cancelled arrives before inventory.reserved, the late reservation is refused: no shipment', async () => {
    const shipment = await openShipment();
    const orderId = randomUUID();

    await shipment.handle(neverDispatch, orderCancelled(orderId, 'INVENTORY_REJECTED'));
    const late = await shipment.handle(dispatch, inventoryReserved(orderId));

    expect(late).toEqual([]);
    expect((await listShipments(shipment.db, orderId)).map((s) => s.status)).toEqual(['CANCELLED']);
  });

  it('a dispatched shipment is never undone', async () => {
    const shipment = await openShipment();
    const orderId = randomUUID();
    await shipment.handle(dispatch, inventoryReserved(orderId));
    const before = await listShipments(shipment.db);

    const emitted = await shipment.handle(neverDispatch, orderCancelled(orderId));

    expect(emitted).toEqual([]);
    expect(await listShipments(shipment.db)).toEqual(before);
  });

  it('after a failed shipment, the failure is kept as it was', async () => {
    const shipment = await openShipment();
    const orderId = randomUUID();
    await shipment.handle(dispatch, inventoryReserved(orderId, anAddress({ country: 'JP' })));
    const before = await listShipments(shipment.db);

    const emitted = await shipment.handle(neverDispatch, orderCancelled(orderId, 'SHIPMENT_FAILED'));

    expect(emitted).toEqual([]);
    expect(await listShipments(shipment.db)).toEqual(before);
  });
});

/** Shipment's subscriptions: routing key → handler, compensations included. */
import { emit } from '../../common/events.ts';
import { newId } from '../../common/ids.ts';
import type { Handler, Handlers } from '../../common/runner.ts';
import { neverDispatch } from '../../compensation/shipment.ts';
import { shippingDecision, trackingNumber } from './domain.ts';
import type { ShipmentStore } from './store.ts';

const dispatch: Handler<'inventory.reserved', ShipmentStore> = async (
  { data },
  store,
  { config, failAt },
) => {
  // Promised never to ship (a cancellation came first), or decided before: dispatched or failed.
  if ((await store.tombstones.has(data.orderId)) || (await store.shipment(data.orderId))) return [];
  const country = data.shippingAddress.country;
  const decision = shippingDecision(country, config.supportedCountries, failAt === 'shipment');
  if (!decision.ship) {
    await store.record({
      order_id: data.orderId,
      id: null,
      status: 'FAILED',
      carrier: null,
      tracking_number: null,
      country,
      detail: decision.detail,
    });
    return [
      emit('shipment.failed', { orderId: data.orderId, reason: 'SHIPMENT_FAILED', detail: decision.detail }),
    ];
  }
  const shipment = {
    id: newId(),
    carrier: decision.carrier,
    trackingNumber: trackingNumber(decision.carrier),
  };
  await store.record({
    order_id: data.orderId,
    id: shipment.id,
    status: 'DISPATCHED',
    carrier: shipment.carrier,
    tracking_number: shipment.trackingNumber,
    country,
    detail: null,
  });
  return [
    emit('shipment.dispatched', {
      orderId: data.orderId,
      shipmentId: shipment.id,
      carrier: shipment.carrier,
      trackingNumber: shipment.trackingNumber,
    }),
  ];
};

/**
 * The pivot: once dispatched the order cannot be cancelled. Otherwise shipment promises never to
 * dispatch it: a tombstone, which refuses a later inventory.reserved.
 */
const answerCancel: Handler<'order.cancel_requested', ShipmentStore> = async ({ data }, store) => {
  const shipment = await store.shipment(data.orderId);
  if (shipment?.status === 'DISPATCHED') {
    return [emit('shipment.cancel_rejected', { orderId: data.orderId, reason: 'ALREADY_DISPATCHED' })];
  }
  if (!shipment) await store.tombstones.leave(data.orderId, data.reason);
  return [emit('shipment.cancelled', { orderId: data.orderId })];
};

export const handlers: Handlers<ShipmentStore> = {
  'inventory.reserved': dispatch,
  'order.cancel_requested': answerCancel,
  // Compensation (compensation/shipment.ts).
  'order.cancelled': neverDispatch,
};

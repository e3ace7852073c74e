/**
 * Shipment's compensation. Nothing dispatched is ever undone (dispatch is the pivot); what a
 * cancellation leaves here is the promise never to dispatch: a tombstone that refuses a late
 * inventory.reserved.
 */
import type { Handler } from '../common/runner.ts';
import type { ShipmentStore } from '../services/shipment/store.ts';

export const neverDispatch: Handler<'order.cancelled', ShipmentStore> = async ({ data }, store, { log }) => {
  const shipment = await store.shipment(data.orderId);
  if (shipment?.status === 'DISPATCHED') {
    log.error(
      { orderId: data.orderId },
      'order.cancelled for a dispatched order: the pivot protocol was bypassed',
    );
  }
  if (!shipment) await store.tombstones.leave(data.orderId, data.reason);
  return [];
};

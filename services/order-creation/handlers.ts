/**
 * order-creation's subscriptions. It listens to every saga event about an order: each one goes
 * into the order's timeline, and those that decide its fate move its status (domain.ts).
 */
import type { RoutingKey } from '../../common/events.ts';
import type { Handler, Handlers } from '../../common/runner.ts';
import { decide } from './domain.ts';
import type { OrderStore } from './store.ts';

const track: Handler<RoutingKey, OrderStore> = async (event, store, { log }) => {
  await store.record([event]);
  if (!event.orderId) return [];
  const order = await store.order(event.orderId);
  if (!order) {
    log.warn({ orderId: event.orderId, type: event.type }, 'event about an order this service does not know');
    return [];
  }
  const decision = decide(
    { id: order.id, status: order.status, cancelReason: order.cancel_reason, owed: JSON.parse(order.owed) },
    event,
  );
  if (decision.next || decision.owed || decision.settled) {
    await store.update(order.id, {
      status: order.status,
      ...decision.next,
      ...(decision.owed ? { owed: decision.owed } : {}),
      ...(decision.settled ? { settled: true } : {}),
    });
  }
  return decision.emit;
};

/** Its own events enter the timeline when they are emitted, so it does not consume them. */
export const handlers: Handlers<OrderStore> = {
  'inventory.reserved': track,
  'inventory.backordered': track,
  'inventory.rejected': track,
  'inventory.released': track,
  'replenishment.completed': track,
  'replenishment.failed': track,
  'replenishment.cancelled': track,
  'shipment.dispatched': track,
  'shipment.failed': track,
  'shipment.cancelled': track,
  'shipment.cancel_rejected': track,
};

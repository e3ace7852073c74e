/** Replenishment's subscriptions: routing key → handler, compensations included. */

import { emit } from '../../common/events.ts';
import type { Handler, Handlers, Outcome } from '../../common/runner.ts';
import { readContext } from '../../common/saga-context.ts';
import { cancelPurchases } from '../../compensation/replenishment.ts';
import { restockQuantity, supplierAnswer } from './domain.ts';
import type { Replenishment, ReplenishmentStore } from './store.ts';

const orderForBackorder: Handler<'inventory.backordered', ReplenishmentStore> = async (
  event,
  store,
  { config, saga },
) => {
  if (await store.tombstones.has(event.data.orderId)) return [];
  for (const { sku, missing } of event.data.shortages) {
    await store.request({
      sku,
      quantity: missing,
      orderId: event.data.orderId,
      trigger: 'inventory.backordered',
      context: saga,
      delayMs: config.supplierDelayMs,
    });
  }
  return [];
};

const restock: Handler<'stock.low', ReplenishmentStore> = async (event, store, { config, saga }) => {
  if (await store.restockUnderway(event.data.sku, event.occurredAt)) return [];
  await store.request({
    sku: event.data.sku,
    quantity: restockQuantity(event.data),
    trigger: 'stock.low',
    context: saga,
    delayMs: config.supplierDelayMs,
  });
  return [];
};

export const handlers: Handlers<ReplenishmentStore> = {
  'inventory.backordered': orderForBackorder,
  'stock.low': restock,
  // Compensation (compensation/replenishment.ts).
  'order.cancelled': cancelPurchases,
};

/** The supplier's answer to one due request: the request is settled and the answer emitted. */
export async function deliver(
  store: ReplenishmentStore,
  request: Replenishment,
  faultInjection: boolean,
): Promise<Outcome<void>> {
  const context = readContext(request.context);
  const injected =
    faultInjection && context.failAt === 'replenishment' && request.order_id === context.orderId;
  const answer = supplierAnswer(request.sku, injected);
  const settled = await store.settle(
    request.id,
    answer.delivered ? 'COMPLETED' : 'FAILED',
    answer.delivered ? undefined : answer.detail,
  );
  if (!settled) return { value: undefined, emit: [] };
  const common = {
    replenishmentId: request.id,
    sku: request.sku,
    ...(request.order_id ? { orderId: request.order_id } : {}),
  };
  return {
    value: undefined,
    emit: [
      answer.delivered
        ? emit('replenishment.completed', { ...common, quantity: request.quantity }, context)
        : emit(
            'replenishment.failed',
            { ...common, reason: 'REPLENISHMENT_FAILED', detail: answer.detail },
            context,
          ),
    ],
  };
}

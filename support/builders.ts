/**
 * Builders of orders and events, `anOrder({ items: [aLine('GIZMO-3', 8)] })`, `anOrderCreated()`:
 * the tests' fixtures and the benchmark's load.
 */
import { randomUUID } from 'node:crypto';
import { type EventData, orderIdOf, type RoutingKey, type SagaEvent } from '../common/events.ts';
import type { components } from '../common/generated/api.ts';

type CreateOrder = components['schemas']['CreateOrderRequest'];
type Address = components['schemas']['ShippingAddress'];

export const anAddress = (overrides: Partial<Address> = {}): Address => ({
  name: 'Ada Lovelace',
  line1: '12 St James Square',
  city: 'London',
  postalCode: 'SW1Y 4JH',
  country: 'GB',
  ...overrides,
});

export const aLine = (sku = 'WIDGET-1', quantity = 1) => ({ sku, quantity });

export const anOrder = (overrides: Partial<CreateOrder> = {}): CreateOrder => ({
  customerId: 'customer-42',
  items: [aLine()],
  shippingAddress: anAddress(),
  ...overrides,
});

/** A saga event envelope around `data`, as it travels on the exchange. */
export function anEvent<K extends RoutingKey>(type: K, data: EventData<K>): SagaEvent<K> {
  const orderId = orderIdOf(data);
  return {
    id: randomUUID(),
    type,
    version: 1,
    occurredAt: new Date().toISOString(),
    ...(orderId ? { orderId } : {}),
    data,
  };
}

/** `order.created` for a new order (a fresh orderId unless given). */
export const anOrderCreated = (
  overrides: Partial<EventData<'order.created'>> = {},
): SagaEvent<'order.created'> =>
  anEvent('order.created', {
    orderId: randomUUID(),
    customerId: 'customer-42',
    items: [aLine()],
    shippingAddress: anAddress(),
    ...overrides,
  });

/**
 * The event contract in code: the closed list of routing keys, who emits each, and the
 * envelope. Publishing or subscribing to a key outside this list does not compile.
 */
import type { components } from './generated/api.ts';

type Schemas = components['schemas'];

export const SERVICES = ['order-creation', 'inventory', 'replenishment', 'shipment'] as const;
export type ServiceName = (typeof SERVICES)[number];

/** Routing key → the service that emits it (saga.md, "Routing keys"). */
export const EMITTED_BY = {
  'order.created': 'order-creation',
  'order.cancel_requested': 'order-creation',
  'order.cancelled': 'order-creation',
  'order.completed': 'order-creation',
  'inventory.reserved': 'inventory',
  'inventory.backordered': 'inventory',
  'inventory.rejected': 'inventory',
  'inventory.released': 'inventory',
  'stock.low': 'inventory',
  'replenishment.completed': 'replenishment',
  'replenishment.failed': 'replenishment',
  'replenishment.cancelled': 'replenishment',
  'shipment.dispatched': 'shipment',
  'shipment.failed': 'shipment',
  'shipment.cancelled': 'shipment',
  'shipment.cancel_rejected': 'shipment',
} as const satisfies Record<string, ServiceName>;

export type RoutingKey = keyof typeof EMITTED_BY;
export const ROUTING_KEYS = Object.keys(EMITTED_BY) as RoutingKey[];

/**
 * Events no step of the saga waits for: announced to whoever subscribes, and dropped by the
 * broker when nobody does. Every other event must reach a queue: publishing it where no queue is
 * bound is an error (a saga would stall), so it is published `mandatory`.
 */
export const NOTIFICATIONS: ReadonlySet<RoutingKey> = new Set(['order.completed']);

export function isRoutingKey(value: unknown): value is RoutingKey {
  return typeof value === 'string' && Object.hasOwn(EMITTED_BY, value);
}

/** The `data` of each event, generated from `openapi/events/<routing key>.json`. */
export type EventData<K extends RoutingKey> = Schemas[K];

/** The message body: `{ id, type, version, occurredAt, orderId?, data }`. */
export interface SagaEvent<K extends RoutingKey = RoutingKey> {
  id: string;
  type: K;
  version: 1;
  occurredAt: string;
  orderId?: string;
  data: EventData<K>;
}

/**
 * An event a handler asks to emit; the runner turns it into an envelope with the saga context of
 * the event being handled, or with `context` when the event is about another order.
 */
export type Emit = { [K in RoutingKey]: { type: K; data: EventData<K>; context?: SagaContext } }[RoutingKey];

/**
 * `emit('inventory.reserved', { ... })`: the data is checked against that key's schema type.
 * Pass the order's own saga context when the event is about an order other than the one being
 * handled (a backorder filled by another order's release), so its trace and x-fail-at follow it.
 */
export function emit<K extends RoutingKey>(type: K, data: EventData<K>, context?: SagaContext): Emit {
  return (context ? { type, data, context } : { type, data }) as Emit;
}

/** Where a step of the saga is made to fail on purpose (the `X-Fail-At` / `x-fail-at` header). */
export type FailAt = 'inventory' | 'replenishment' | 'shipment';
export const FAIL_AT_VALUES: readonly FailAt[] = ['inventory', 'replenishment', 'shipment'];

/**
 * The saga context that travels in AMQP headers and is copied from the event a service
 * handles onto every event it emits for that order.
 */
export interface SagaContext {
  /** The order this context belongs to: `failAt` travels only on events about this order. */
  orderId?: string;
  traceparent?: string;
  causationId?: string;
  failAt?: FailAt;
}

/** The order an event is about, if any (`stock.low` and a stock-triggered replenishment have none). */
export function orderIdOf(data: object): string | undefined {
  const orderId = (data as { orderId?: unknown }).orderId;
  return typeof orderId === 'string' ? orderId : undefined;
}

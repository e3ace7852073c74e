/**
 * The saga context a service keeps for the events it emits later, outside the handling of the
 * event that brought it: an order filled by another order's stock (inventory), a supplier's
 * answer (replenishment), a cancel asked over HTTP or by the deadline (order-creation). Every
 * service keeps it the same way: a `context` text column holding the JSON of a SagaContext,
 * written by `storeContext` and read back by `readContext`.
 */
import type { SagaContext } from './events.ts';

declare const stored: unique symbol;

/** A saga context in the form a `context` column holds; only `storeContext` makes one. */
export type StoredContext = string & { readonly [stored]: true };

/**
 * The stored form of a saga context: usually the handled event's (`HandlerContext.saga`), kept
 * whole. `orderId` keeps `failAt` on that order's events only; `causationId` names the cause of
 * what is emitted outside any message (a supplier's answer was caused by the request's trigger).
 * Absent fields stay out of the JSON.
 */
export function storeContext({ orderId, traceparent, causationId, failAt }: SagaContext): StoredContext {
  return JSON.stringify({ orderId, traceparent, causationId, failAt }) as StoredContext;
}

/** The saga context back from its column; none kept (null) reads as the empty context. */
export function readContext(column: StoredContext | null): SagaContext {
  return column === null ? {} : (JSON.parse(column) as SagaContext);
}

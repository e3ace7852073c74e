/**
 * The names of the message headers the saga sets, in one place: the ones every event carries,
 * the one a retry adds, and the ones on a parked message. Part of the public contract (saga.md):
 * operators' tools and other consumers read them.
 */

/** The saga context every event carries (saga.md, "Event envelope"). */
export const SAGA_HEADER = {
  traceparent: 'traceparent',
  causationId: 'x-causation-id',
  failAt: 'x-fail-at',
} as const;

/** Which attempt at handling a message this delivery is: absent on the first one, 2 on the first retry. */
export const ATTEMPT_HEADER = 'x-attempt';

/** Headers on a parked message (dead-letter queue): why, after how many attempts, from where, when. */
export const DEAD_HEADER = {
  reason: 'x-dead-reason',
  error: 'x-dead-error',
  attempts: 'x-dead-attempts',
  /** Also on a retried copy: back from its delay queue, a message's routing key is the queue's name. */
  routingKey: 'x-original-routing-key',
  queue: 'x-original-queue',
  at: 'x-dead-at',
} as const;

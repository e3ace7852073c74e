/**
 * The order's state machine, without I/O. order-creation owns the fate of the order: every
 * failure ends CANCELLED with its reason and `order.cancelled`, which the other services'
 * compensations undo; dispatch completes it.
 */

import { type Emit, type EventData, emit, type SagaEvent } from '../../common/events.ts';
import type { components } from '../../common/generated/api.ts';

export type OrderStatus = components['schemas']['OrderStatus'];
export type FailureReason = components['schemas']['FailureReason'];
export type CancelReason = components['schemas']['CancelReason'];

export const TERMINAL: readonly OrderStatus[] = ['COMPLETED', 'CANCELLED'];
export const isTerminal = (status: OrderStatus): boolean => TERMINAL.includes(status);

export interface OrderState {
  id: string;
  status: OrderStatus;
  reason?: FailureReason | null;
  /** Why a cancel was requested (customer or deadline), while CANCELLING. */
  cancelReason?: CancelReason | null;
  /** The compensation facts a CANCELLED order still waits for. */
  owed?: readonly Compensation[];
}

/** A fact a compensating service reports once it has undone its part of a cancelled order. */
export type Compensation = NonNullable<EventData<'order.cancelled'>['compensations']>[number];

export const isCompensation = (type: string): type is Compensation =>
  type === 'inventory.released' || type === 'replenishment.cancelled';

/** The reasons inventory itself decided: it released what it held when it rejected the order. */
const REJECTED_BY_INVENTORY: readonly FailureReason[] = [
  'UNKNOWN_SKU',
  'INVENTORY_REJECTED',
  'REPLENISHMENT_FAILED',
];
/** Refused before any reservation: no backorder was made, so no purchase can be pending. */
const REFUSED_AT_ONCE: readonly FailureReason[] = ['UNKNOWN_SKU', 'INVENTORY_REJECTED'];

/**
 * What a cancellation for `reason` is owed. Decided from the reason alone, not from what this
 * service has seen so far: inventory may have reserved (or replenishment ordered) a moment ago,
 * its event not read here yet. Each service named reports, even when it had nothing to undo.
 * Shipment owes nothing: dispatch is the pivot, so it never has anything to undo, and its promise
 * never to dispatch (shipment.cancelled) came before the cancellation.
 */
export function owedCompensations(reason: FailureReason): Compensation[] {
  return [
    ...(REJECTED_BY_INVENTORY.includes(reason) ? [] : (['inventory.released'] as const)),
    ...(REFUSED_AT_ONCE.includes(reason) ? [] : (['replenishment.cancelled'] as const)),
  ];
}

export interface Decision {
  /** The new status (and reason), if the event changes it. */
  next?: { status: OrderStatus; reason?: FailureReason };
  /** The compensations still owed, when that changes. */
  owed?: Compensation[];
  /** The saga is over: completed, or cancelled with every compensation reported. */
  settled?: true;
  emit: Emit[];
}

const unchanged: Decision = { emit: [] };

function cancel(orderId: string, reason: FailureReason): Decision {
  const owed = owedCompensations(reason);
  return {
    next: { status: 'CANCELLED', reason },
    owed,
    ...(owed.length === 0 ? { settled: true } : {}),
    emit: [emit('order.cancelled', { orderId, reason, compensations: owed })],
  };
}

/** A compensation fact for a CANCELLED order: one fewer owed, settled with the last. */
function compensated(order: OrderState, event: SagaEvent): Decision {
  const owed = order.owed ?? [];
  if (order.status !== 'CANCELLED' || !owed.includes(event.type as Compensation)) return unchanged;
  const rest = owed.filter((type) => type !== event.type);
  return { owed: rest, ...(rest.length === 0 ? { settled: true } : {}), emit: [] };
}

/**
 * What an event from another service does to the order. A terminal order never changes status
 * again; a cancelled one still counts the compensations it is owed.
 */
export function decide(order: OrderState, event: SagaEvent): Decision {
  if (isTerminal(order.status)) return compensated(order, event);
  const { id, status } = order;
  switch (event.type) {
    case 'inventory.backordered':
      return status === 'PENDING' ? { next: { status: 'AWAITING_STOCK' }, emit: [] } : unchanged;
    case 'inventory.reserved':
      return status === 'PENDING' || status === 'AWAITING_STOCK'
        ? { next: { status: 'RESERVED' }, emit: [] }
        : unchanged;
    case 'inventory.rejected':
      return cancel(id, (event as SagaEvent<'inventory.rejected'>).data.reason);
    case 'shipment.failed':
      return cancel(id, 'SHIPMENT_FAILED');
    // Dispatch is the pivot: it completes the order even if a cancel was requested meanwhile.
    case 'shipment.dispatched':
      return {
        next: { status: 'COMPLETED' },
        settled: true,
        emit: [emit('order.completed', { orderId: id })],
      };
    // Shipment promised never to dispatch: the cancel goes through.
    case 'shipment.cancelled':
      return cancel(id, order.cancelReason ?? 'CUSTOMER_CANCELLED');
    // Too late to cancel: it was dispatched, and shipment.dispatched completes the order.
    case 'shipment.cancel_rejected':
      return status === 'CANCELLING' ? { next: { status: 'RESERVED' }, emit: [] } : unchanged;
    default:
      return unchanged;
  }
}

export type CancelRequest =
  | { outcome: 'requested'; emit: Emit[] }
  | { outcome: 'already-requested' }
  | { outcome: 'terminal' };

/** A cancel (customer or deadline) asks shipment, the pivot owner, before anything is undone. */
export function requestCancel(order: OrderState, reason: CancelReason): CancelRequest {
  if (isTerminal(order.status)) return { outcome: 'terminal' };
  if (order.status === 'CANCELLING') return { outcome: 'already-requested' };
  return { outcome: 'requested', emit: [emit('order.cancel_requested', { orderId: order.id, reason })] };
}

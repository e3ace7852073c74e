/**
 * The order's state machine, without I/O. order-creation owns the fate of the order: every
 * failure ends CANCELLED with its reason and `order.cancelled`, which the other services'
 * compensations undo; dispatch completes it.
 */

import { type Emit, emit, type SagaEvent } from '../../common/events.ts';
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
}

export interface Decision {
  /** The new status (and reason), if the event changes it. */
  next?: { status: OrderStatus; reason?: FailureReason };
  emit: Emit[];
}

const unchanged: Decision = { emit: [] };

const cancel = (orderId: string, reason: FailureReason): Decision => ({
  next: { status: 'CANCELLED', reason },
  emit: [emit('order.cancelled', { orderId, reason })],
});

/** What an event from another service does to the order. A terminal order never changes again. */
export function decide(order: OrderState, event: SagaEvent): Decision {
  if (isTerminal(order.status)) return unchanged;
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
      return { next: { status: 'COMPLETED' }, emit: [emit('order.completed', { orderId: id })] };
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

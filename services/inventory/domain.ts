/** Inventory's rules, without I/O: what to reserve, what is short, when stock is low. */
import { type Emit, type EventData, emit, type SagaContext } from '../../common/events.ts';

export interface StockLevel {
  sku: string;
  onHand: number;
  reserved: number;
  reorderPoint: number;
  discontinued: boolean;
}

export interface Line {
  sku: string;
  quantity: number;
}

export const available = (stock: StockLevel): number => stock.onHand - stock.reserved;

/** At or under the reorder point, and worth reordering (a discontinued SKU is not). */
export const isLow = (stock: StockLevel): boolean =>
  !stock.discontinued && available(stock) <= stock.reorderPoint;

/** `label: A, B, C and 12 more`, within the 500 characters a failure detail may have. */
function listed(label: string, items: readonly string[], max = 500): string {
  let text = `${label}: ${items.join(', ')}`;
  for (let shown = items.length - 1; text.length > max && shown > 0; shown--) {
    text = `${label}: ${items.slice(0, shown).join(', ')} and ${items.length - shown} more`;
  }
  return text.slice(0, max);
}

export type Rejection = Pick<EventData<'inventory.rejected'>, 'reason' | 'detail'>;

export type ReservationPlan =
  | { kind: 'rejected'; rejection: Rejection }
  | { kind: 'reserve'; lines: { sku: string; requested: number; reserve: number; missing: number }[] };

/** Lines of the same SKU count as one. */
export function mergeLines(items: readonly Line[]): Line[] {
  const merged = new Map<string, number>();
  for (const { sku, quantity } of items) merged.set(sku, (merged.get(sku) ?? 0) + quantity);
  return [...merged].map(([sku, quantity]) => ({ sku, quantity }));
}

/**
 * Reserve what is available of each line; the rest is short and waits for replenishment.
 * An unknown SKU, or an injected failure, rejects the whole order and reserves nothing.
 */
export function planReservation(
  items: readonly Line[],
  stock: ReadonlyMap<string, StockLevel>,
  injectedFailure = false,
): ReservationPlan {
  if (injectedFailure)
    return { kind: 'rejected', rejection: { reason: 'INVENTORY_REJECTED', detail: 'INJECTED' } };
  const lines = mergeLines(items);
  const unknown = lines.filter((line) => !stock.has(line.sku)).map((line) => line.sku);
  if (unknown.length > 0) {
    return {
      kind: 'rejected',
      rejection: { reason: 'UNKNOWN_SKU', detail: listed('unknown SKU', unknown) },
    };
  }
  return {
    kind: 'reserve',
    lines: lines.map(({ sku, quantity }) => {
      const reserve = Math.max(0, Math.min(quantity, available(stock.get(sku) as StockLevel)));
      return { sku, requested: quantity, reserve, missing: quantity - reserve };
    }),
  };
}

export interface Waiting {
  seq: number;
  orderId: string;
  missing: number;
}

/** First come, first served: how much of `free` stock each waiting backorder gets, in order. */
export function allocate(
  waiting: readonly Waiting[],
  free: number,
): { seq: number; orderId: string; take: number }[] {
  const out: { seq: number; orderId: string; take: number }[] = [];
  let left = free;
  for (const backorder of waiting) {
    if (left <= 0) break;
    const take = Math.min(left, backorder.missing);
    out.push({ seq: backorder.seq, orderId: backorder.orderId, take });
    left -= take;
  }
  return out;
}

/** An order whose last backorder was just filled: ready for inventory.reserved, in its own saga context. */
export interface NowReserved {
  orderId: string;
  items: EventData<'inventory.reserved'>['items'];
  shippingAddress: EventData<'inventory.reserved'>['shippingAddress'];
  context: SagaContext;
}

/**
 * Orders filled by stock that came in (a replenishment) or was given back (a release) are
 * announced each in its own saga context: they are not the order of the event being handled.
 */
export const reservedEvents = (ready: readonly NowReserved[]): Emit[] =>
  ready.map(({ context, ...order }) => emit('inventory.reserved', order, context));

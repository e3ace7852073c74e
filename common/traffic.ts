/**
 * The demo traffic: a steady mix of orders over the demo catalog, most of them taking a forward
 * path and a share `failures` failing on purpose, so that the dashboard and the broker's console
 * have something to show. Used by `npm run traffic` and by the dashboard's traffic button.
 */
import type { FailAt } from './events.ts';
import type { components } from './generated/api.ts';

type CreateOrder = components['schemas']['CreateOrderRequest'];

/** One order of the mix: its body, the failure it is meant to meet, and which path that is. */
export interface TrafficOrder {
  body: CreateOrder;
  failAt?: FailAt;
  path: string;
}

const ADDRESS = {
  name: 'Ada Lovelace',
  line1: '1 Main St',
  city: 'Berlin',
  postalCode: '10115',
  country: 'DE',
};

const order = (sku: string, quantity: number, country = 'DE'): CreateOrder => ({
  customerId: 'traffic',
  items: [{ sku, quantity }],
  shippingAddress: { ...ADDRESS, country },
});

/** The forward paths, by weight: plain orders mostly, some that wait for the supplier. */
const FORWARD: readonly [number, () => TrafficOrder][] = [
  [80, () => ({ body: order('WIDGET-1', 1 + Math.floor(Math.random() * 3)), path: 'plain' })],
  [12, () => ({ body: order('GADGET-2', 1), path: 'plain' })],
  // More than GIZMO-3 ever has on hand: it waits for a replenishment, then ships.
  [8, () => ({ body: order('GIZMO-3', 8), path: 'replenishment' })],
];

/** The failures, by weight: injected at each step, and the business failures of saga.md. */
const FAILURES: readonly [number, (injection: boolean) => TrafficOrder][] = [
  [
    30,
    (injection) =>
      injection
        ? { body: order('WIDGET-1', 1), failAt: 'shipment', path: 'shipment fails (injected)' }
        : { body: order('WIDGET-1', 1, 'BR'), path: 'country not served' },
  ],
  [20, () => ({ body: order('WIDGET-1', 1, 'BR'), path: 'country not served' })],
  [
    15,
    (injection) =>
      injection
        ? { body: order('WIDGET-1', 1), failAt: 'inventory', path: 'inventory refuses (injected)' }
        : { body: order('NOPE-1', 1), path: 'unknown SKU' },
  ],
  [15, () => ({ body: order('NOPE-1', 1), path: 'unknown SKU' })],
  [15, () => ({ body: order('LEGACY-4', 5), path: 'discontinued SKU' })],
  [
    10,
    (injection) =>
      injection
        ? { body: order('GIZMO-3', 8), failAt: 'replenishment', path: 'replenishment fails (injected)' }
        : { body: order('LEGACY-4', 5), path: 'discontinued SKU' },
  ],
];

function pick<T>(weighted: readonly [number, T][]): T {
  const total = weighted.reduce((sum, [weight]) => sum + weight, 0);
  let roll = Math.random() * total;
  for (const [weight, value] of weighted) {
    roll -= weight;
    if (roll < 0) return value;
  }
  return (weighted.at(-1) as [number, T])[1];
}

/**
 * The next order of the mix: a failure with probability `failures` (0 to 1), else a forward path.
 * Without fault injection (production) the failures are business ones only.
 */
export function trafficOrder(failures: number, injection = true): TrafficOrder {
  return Math.random() < failures ? pick(FAILURES)(injection) : pick(FORWARD)();
}

/** A traffic run's parameters, checked: a rate in orders/s, a duration in s, a share of failures. */
export interface TrafficPlan {
  rate: number;
  durationS: number;
  failures: number;
}

/** What is wrong with a plan, one line each (none: it is good). */
export function planProblems({ rate, durationS, failures }: TrafficPlan): string[] {
  return [
    ...(Number.isFinite(rate) && rate > 0 && rate <= 1000 ? [] : ['rate must be from 0 to 1000 orders/s']),
    ...(Number.isFinite(durationS) && durationS > 0 && durationS <= 3600
      ? []
      : ['duration must be from 0 to 3600 s']),
    ...(Number.isFinite(failures) && failures >= 0 && failures <= 1 ? [] : ['failures must be from 0 to 1']),
  ];
}

/**
 * Places orders at `rate` per second for `durationS` seconds (or until the signal aborts), each
 * through `place`, without waiting for one to finish before the next: an open loop, as real
 * customers are. Resolves once the last one is answered.
 */
export async function runTraffic(
  plan: TrafficPlan,
  place: (order: TrafficOrder) => Promise<unknown>,
  signal?: AbortSignal,
  onPlaced?: (order: TrafficOrder, outcome: 'ok' | 'error', error?: unknown) => void,
  injection = true,
): Promise<void> {
  const started = performance.now();
  const total = Math.max(1, Math.round(plan.rate * plan.durationS));
  const pending = new Set<Promise<void>>();
  for (let i = 0; i < total && !signal?.aborted; i++) {
    // Paced against the start, not the last order: a slow answer does not slow the rate down.
    const due = started + (i * 1000) / plan.rate;
    const wait = due - performance.now();
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
    if (signal?.aborted) break;
    const next = trafficOrder(plan.failures, injection);
    const placed = place(next).then(
      () => onPlaced?.(next, 'ok'),
      (error) => onPlaced?.(next, 'error', error),
    );
    pending.add(placed);
    void placed.finally(() => pending.delete(placed));
  }
  await Promise.all(pending);
}

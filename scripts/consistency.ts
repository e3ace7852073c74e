/**
 * The invariants of the saga (design/saga.md, "Invariants") checked from outside, through the
 * read APIs only: orders, stock and shipments. Used by `npm run check` and by tests in-process.
 */
import type { components } from '../common/generated/api.ts';

type OrderSummary = components['schemas']['OrderSummary'];
type OrderStatus = components['schemas']['OrderStatus'];
type Stock = components['schemas']['Stock'];
type Shipment = components['schemas']['Shipment'];

/** One broken invariant: `subject` is the order id or the SKU. */
export interface Violation {
  kind: string;
  subject: string;
  detail: string;
}

/** What was checked and what was found broken. */
export interface CheckReport {
  violations: Violation[];
  orders: number;
  terminal: number;
  skus: number;
  shipments: number;
}

/** Base URLs of the services read, e.g. `http://127.0.0.1:3000`. */
export interface ServiceUrls {
  orders: string;
  inventory: string;
  shipment: string;
}

/** Options of checkConsistency. */
export interface CheckOptions {
  /** The moment deadlines are judged against (default: when the check starts). */
  now?: Date;
  /** How long past its deadline a non-terminal order is tolerated, since cancelling takes a moment (5000). */
  deadlineGraceMs?: number;
}

/** A service did not answer, or answered with an error: the check could not be made. */
export class ServiceError extends Error {
  readonly url: string;

  constructor(url: string, problem: string) {
    super(`${url}: ${problem}`);
    this.url = url;
    this.name = 'ServiceError';
  }
}

const OPEN_STATUSES: readonly OrderStatus[] = ['PENDING', 'AWAITING_STOCK', 'RESERVED', 'CANCELLING'];
const isTerminal = (status: OrderStatus) => !OPEN_STATUSES.includes(status);
/** GET /shipments answers at most this many rows; a full page may be missing older ones. */
const SHIPMENT_LIST_CAP = 1000;
const REQUEST_TIMEOUT_MS = 10_000;
const PARALLEL_REQUESTS = 16;

async function getJson<T>(base: string, path: string): Promise<T> {
  const url = `${base.replace(/\/+$/, '')}${path}`;
  let response: Response;
  try {
    response = await fetch(url, { signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
  } catch (error) {
    const cause = (error as { cause?: { code?: string } }).cause?.code ?? (error as Error).message;
    throw new ServiceError(url, `unreachable (${cause})`);
  }
  if (!response.ok) throw new ServiceError(url, `answered HTTP ${response.status}`);
  try {
    return (await response.json()) as T;
  } catch {
    throw new ServiceError(url, 'answered something that is not JSON');
  }
}

async function allOrders(base: string): Promise<OrderSummary[]> {
  const orders: OrderSummary[] = [];
  let cursor: string | undefined;
  do {
    const query = cursor ? `&cursor=${encodeURIComponent(cursor)}` : '';
    const page = await getJson<{ items: OrderSummary[]; nextCursor?: string }>(
      base,
      `/orders?limit=200${query}`,
    );
    orders.push(...page.items);
    cursor = page.nextCursor;
  } while (cursor);
  return orders;
}

/** True while some order is not terminal: one small query per open status. */
export async function hasOpenOrders(ordersUrl: string): Promise<boolean> {
  const pages = await Promise.all(
    OPEN_STATUSES.map((status) =>
      getJson<{ items: unknown[] }>(ordersUrl, `/orders?status=${status}&limit=1`),
    ),
  );
  return pages.some((page) => page.items.length > 0);
}

/** Polls until every order is terminal or `timeoutMs` has passed; true if they all are. */
export async function waitUntilSettled(ordersUrl: string, timeoutMs: number, pollMs = 250): Promise<boolean> {
  const until = Date.now() + timeoutMs;
  while (await hasOpenOrders(ordersUrl)) {
    if (Date.now() >= until) return false;
    await new Promise((resolve) => setTimeout(resolve, Math.min(pollMs, until - Date.now())));
  }
  return true;
}

/**
 * Shipments of the given orders: the global list, plus a query per order that may be missing
 * from it when the list was cut at its cap.
 */
async function shipmentsOf(base: string, orders: OrderSummary[]): Promise<Shipment[]> {
  const listed = await getJson<Shipment[]>(base, '/shipments');
  if (listed.length < SHIPMENT_LIST_CAP) return listed;
  const seen = new Set(listed.map((s) => s.orderId));
  const missing = orders.filter((o) => !seen.has(o.id)).values();
  const more: Shipment[] = [];
  // The workers share one iterator, so at most PARALLEL_REQUESTS queries run at once.
  const worker = async () => {
    for (const order of missing) {
      more.push(...(await getJson<Shipment[]>(base, `/shipments?orderId=${encodeURIComponent(order.id)}`)));
    }
  };
  await Promise.all(Array.from({ length: PARALLEL_REQUESTS }, worker));
  return [...listed, ...more];
}

function checkStock(stock: Stock, settled: boolean): Violation[] {
  const found: Violation[] = [];
  const add = (kind: string, detail: string) => found.push({ kind, subject: stock.sku, detail });
  const { onHand, reserved, available, initial, replenished, dispatched } = stock;
  if (available !== onHand - reserved) {
    add('available-mismatch', `available ${available} != onHand ${onHand} - reserved ${reserved}`);
  }
  if (onHand - reserved < 0) {
    add('oversold', `onHand ${onHand} - reserved ${reserved} = ${onHand - reserved} < 0`);
  }
  if (initial === undefined || replenished === undefined || dispatched === undefined) {
    add('ledger-missing', 'initial, replenished or dispatched is missing from GET /stock');
  } else if (onHand !== initial + replenished - dispatched) {
    add(
      'on-hand-mismatch',
      `onHand ${onHand} != initial ${initial} + replenished ${replenished} - dispatched ${dispatched}`,
    );
  }
  if (settled && reserved !== 0) {
    add('reservation-left', `reserved ${reserved} while every order is terminal`);
  }
  return found;
}

function checkOrder(order: OrderSummary, shipments: Shipment[], deadlineBefore: number): Violation[] {
  const found: Violation[] = [];
  const add = (kind: string, detail: string) => found.push({ kind, subject: order.id, detail });
  const dispatched = shipments.filter((s) => s.status === 'DISPATCHED').length;
  if (order.status === 'COMPLETED' && dispatched !== 1) {
    add(
      dispatched === 0 ? 'completed-not-shipped' : 'shipped-twice',
      `COMPLETED with ${dispatched} DISPATCHED shipments`,
    );
  }
  if (order.status === 'CANCELLED') {
    if (dispatched > 0) {
      add('cancelled-but-shipped', `CANCELLED (${order.reason ?? 'no reason'}) yet DISPATCHED`);
    }
    if (!order.reason) add('missing-reason', 'CANCELLED without a reason');
  }
  if (!isTerminal(order.status) && Date.parse(order.deadlineAt) < deadlineBefore) {
    add('deadline-missed', `still ${order.status}, deadline was ${order.deadlineAt}`);
  }
  return found;
}

/**
 * Reads every order, SKU and shipment and returns the invariants they break. `reserved = 0` is
 * only required when every order is terminal, both before and after stock is read (so an order
 * placed meanwhile does not count as a leftover). Throws ServiceError when a service cannot be read.
 */
export async function checkConsistency(urls: ServiceUrls, options: CheckOptions = {}): Promise<CheckReport> {
  const now = options.now ?? new Date();
  const deadlineBefore = now.getTime() - (options.deadlineGraceMs ?? 5000);
  const orders = await allOrders(urls.orders);
  const finished = orders.filter((o) => isTerminal(o.status));
  const [stock, shipments] = await Promise.all([
    getJson<Stock[]>(urls.inventory, '/stock'),
    shipmentsOf(urls.shipment, finished),
  ]);
  const settled = finished.length === orders.length && !(await hasOpenOrders(urls.orders));

  const byOrder = new Map<string, Shipment[]>();
  for (const s of shipments) byOrder.set(s.orderId, [...(byOrder.get(s.orderId) ?? []), s]);
  const violations = [
    ...stock.flatMap((s) => checkStock(s, settled)),
    ...orders.flatMap((o) => checkOrder(o, byOrder.get(o.id) ?? [], deadlineBefore)),
  ];
  return {
    violations,
    orders: orders.length,
    terminal: finished.length,
    skus: stock.length,
    shipments: shipments.length,
  };
}

/**
 * Checks again until clean or `timeoutMs` has passed, and returns the last report. Compensations
 * land a moment after an order turns terminal, so a system that just settled may show a
 * reservation for a few milliseconds more: a violation that stays is a real one.
 */
export async function checkUntilClean(
  urls: ServiceUrls,
  timeoutMs: number,
  options: CheckOptions = {},
): Promise<CheckReport> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const report = await checkConsistency(urls, options);
    if (report.violations.length === 0 || Date.now() >= deadline) return report;
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

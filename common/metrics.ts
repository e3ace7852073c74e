/**
 * Prometheus metrics (saga.md, "Seeing inside"), one registry per service, served on
 * `GET /metrics`: what the runner did with each delivery, how long handlers took, the outbox,
 * the broker connection, HTTP requests, Node's process metrics, and on order-creation the orders.
 * Labels are bounded: routing keys of the contract, route templates, statuses, reasons; never an id.
 */
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import { isRoutingKey, type SagaEvent } from './events.ts';
import type { Rerun } from './group-commit.ts';
import type { SettledDelivery } from './runner.ts';

const SECONDS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const SAGA_SECONDS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120];

/** What the metrics read when scraped, rather than count as it happens. */
export interface MetricsSources {
  outboxPending: () => Promise<number>;
  brokerConnected: () => boolean;
}

/** The order's creation time: its id is a UUIDv7, whose first 48 bits are it, in ms. */
function createdAtOf(orderId: string): number {
  return Number.parseInt(orderId.slice(0, 8) + orderId.slice(9, 13), 16);
}

export class Metrics {
  readonly registry = new Registry();
  private readonly messages: Counter<'routing_key' | 'outcome'>;
  private readonly handlerDuration: Histogram<'routing_key'>;
  private readonly publishLag: Histogram;
  private readonly http: Histogram<'method' | 'route' | 'status'>;
  private readonly reruns: Counter<'reason'>;
  private orders?: { total: Counter<'status' | 'reason'>; duration: Histogram<'outcome'> };

  constructor(sources: MetricsSources) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    this.messages = new Counter({
      name: 'saga_messages_total',
      help: 'Deliveries by outcome: handled + duplicate + retried + parked = deliveries.',
      labelNames: ['routing_key', 'outcome'],
      registers,
    });
    this.handlerDuration = new Histogram({
      name: 'saga_handler_duration_seconds',
      help: 'From a delivery reaching the runner to its outcome being final (its transaction included).',
      labelNames: ['routing_key'],
      buckets: SECONDS,
      registers,
    });
    new Gauge({
      name: 'saga_outbox_pending',
      help: 'Outbox rows committed and not yet confirmed by the broker.',
      registers,
      async collect() {
        this.set(await sources.outboxPending());
      },
    });
    this.publishLag = new Histogram({
      name: 'saga_outbox_publish_lag_seconds',
      help: "From an outbox row's commit to the broker's confirm of its publish.",
      buckets: SECONDS,
      registers,
    });
    new Gauge({
      name: 'saga_broker_connected',
      help: '1 while the service holds a connection and channels to the broker, else 0.',
      registers,
      collect() {
        this.set(sources.brokerConnected() ? 1 : 0);
      },
    });
    this.reruns = new Counter({
      name: 'saga_transaction_reruns_total',
      help: 'Transactions of the writer run again: conflict (PostgreSQL aborted it: serialization failure, deadlock), unavailable (database unreachable), split (a burst failed; its units run alone).',
      labelNames: ['reason'],
      registers,
    });
    this.http = new Histogram({
      name: 'saga_http_request_duration_seconds',
      help: 'HTTP requests by method, route template and status.',
      labelNames: ['method', 'route', 'status'],
      buckets: SECONDS,
      registers,
    });
  }

  /** A delivery's outcome is final (the runner's hook). */
  settled(delivery: SettledDelivery): void {
    // A retried copy keeps its first routing key; anything else on the queue is one label, not many.
    const routingKey = isRoutingKey(delivery.routingKey) ? delivery.routingKey : 'other';
    this.messages.inc({ routing_key: routingKey, outcome: delivery.outcome });
    this.handlerDuration.observe({ routing_key: routingKey }, delivery.durationMs / 1000);
  }

  /** The writer ran a transaction again (the runner's hook). */
  rerun(reason: Rerun): void {
    this.reruns.inc({ reason });
  }

  /** Outbox rows created at `createdAt` (ISO) were confirmed now. */
  published(createdAt: readonly string[]): void {
    const now = Date.now();
    for (const at of createdAt) this.publishLag.observe((now - Date.parse(at)) / 1000);
  }

  /** A request to `route` (its template) was answered with `status`, `seconds` after it came. */
  request(method: string, route: string, status: number, seconds: number): void {
    this.http.observe({ method, route, status: String(status) }, seconds);
  }

  /**
   * order-creation's families: orders created and settled, by status and reason, the time from
   * creation to outcome, and the orders in flight by status (`inFlight` counts them when scraped).
   */
  countOrders(inFlight: () => Promise<Record<string, number>>): void {
    const registers = [this.registry];
    this.orders = {
      total: new Counter({
        name: 'saga_orders_total',
        help: 'Orders created (PENDING) and settled (COMPLETED, CANCELLED with its reason).',
        labelNames: ['status', 'reason'],
        registers,
      }),
      duration: new Histogram({
        name: 'saga_order_duration_seconds',
        help: 'From an order being created to its completion or cancellation.',
        labelNames: ['outcome'],
        buckets: SAGA_SECONDS,
        registers,
      }),
    };
    new Gauge({
      name: 'saga_orders_in_flight',
      help: 'Orders not yet completed or cancelled, by status.',
      labelNames: ['status'],
      registers,
      async collect() {
        this.reset();
        for (const [status, n] of Object.entries(await inFlight())) this.set({ status }, Number(n));
      },
    });
  }

  /** Counts the orders' events a commit emitted (order-creation). */
  emitted(events: readonly SagaEvent[]): void {
    const { orders } = this;
    if (!orders) return;
    for (const event of events) {
      if (event.type === 'order.created') orders.total.inc({ status: 'PENDING', reason: '' });
      else if (event.type === 'order.completed' || event.type === 'order.cancelled') {
        const status = event.type === 'order.completed' ? 'COMPLETED' : 'CANCELLED';
        const reason = event.type === 'order.cancelled' ? (event.data as { reason: string }).reason : '';
        orders.total.inc({ status, reason });
        const seconds = (Date.parse(event.occurredAt) - createdAtOf(event.orderId ?? '')) / 1000;
        orders.duration.observe({ outcome: status }, Math.max(0, seconds));
      }
    }
  }

  /** The Prometheus text exposition, and its content type. */
  async exposition(): Promise<{ body: string; contentType: string }> {
    return { body: await this.registry.metrics(), contentType: this.registry.contentType };
  }
}

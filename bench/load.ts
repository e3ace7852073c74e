/**
 * The load: closed-loop clients, each placing an order (`POST /orders`), then reading it with
 * `GET /orders/{id}?wait=` until it is terminal, then placing the next. One sample per order.
 */
import http from 'node:http';
import { performance } from 'node:perf_hooks';
import type { RoutingKey } from '../common/events.ts';
import { handlers as inventoryHandlers } from '../services/inventory/handlers.ts';
import { handlers as orderHandlers } from '../services/order-creation/handlers.ts';
import { handlers as replenishmentHandlers } from '../services/replenishment/handlers.ts';
import { handlers as shipmentHandlers } from '../services/shipment/handlers.ts';
import { aLine, anOrder } from '../support/builders.ts';
import type { System } from '../support/system.ts';
import type { BenchConfig } from './options.ts';

export type Path = 'plain' | 'replenishment';

export interface Sample {
  /** The path the order was meant to take… */
  intended: Path;
  /** …and the one it took (an `inventory.backordered` in its timeline), once terminal. */
  path?: Path;
  status: string;
  reason?: string;
  /** POST sent → terminal status read, ms. */
  latencyMs?: number;
  postMs?: number;
  error?: string;
  /** Deliveries of the events in the order's timeline: one per queue bound to each event's key. */
  timelineDeliveries: number;
  /**
   * Where the time went: ms between consecutive steps, keyed "from → to". The steps are the POST
   * being sent, each timeline event (its `at` is when the emitting transaction wrote it) and the
   * terminal status being read. Same machine, same clock.
   */
  gaps?: [string, number][];
  /** When the order was placed, ms after the phase started. */
  startedMs?: number;
}

export interface Drive {
  samples: Sample[];
  wallSeconds: number;
  notAttempted: number;
}

interface Answer {
  status: number;
  body: unknown;
}

interface OrderView {
  id: string;
  status: string;
  reason?: string;
  timeline?: { type: string; at: string }[];
}

function gapsOf(
  sentAt: number,
  timeline: { type: string; at: string }[],
  readAt: number,
): [string, number][] {
  const steps: [string, number][] = [
    ['POST sent', sentAt],
    ...timeline.map((e): [string, number] => [e.type, Date.parse(e.at)]),
    ['terminal read', readAt],
  ];
  return steps.slice(1).map(([type, at], i) => {
    const [fromType, fromAt] = steps[i] ?? ['?', at];
    return [`${fromType} → ${type}`, at - fromAt];
  });
}

/** Queues bound to each routing key, from the services' own subscription lists. */
const SUBSCRIBERS = new Map<string, number>();
for (const handlers of [orderHandlers, inventoryHandlers, replenishmentHandlers, shipmentHandlers]) {
  for (const key of Object.keys(handlers) as RoutingKey[])
    SUBSCRIBERS.set(key, (SUBSCRIBERS.get(key) ?? 0) + 1);
}

const isTerminal = (status: string) => status === 'COMPLETED' || status === 'CANCELLED';
/** Order i takes the replenishment path when the running share crosses an integer: evenly spread. */
const isReplenishment = (i: number, s: number) => Math.floor((i + 1) * s) > Math.floor(i * s);

/** Clients against `system`; `close` lets their keep-alive sockets go. */
export function clients(system: System, config: BenchConfig) {
  // Keep-alive sockets, one per client (a client waits for each answer before the next).
  const agent = new http.Agent({ keepAlive: true, maxSockets: config.clients + 4 });

  function call(method: 'GET' | 'POST', url: string, body?: unknown, timeoutMs = 20_000): Promise<Answer> {
    return new Promise((resolvePromise, reject) => {
      const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
      const request = http.request(
        url,
        {
          method,
          agent,
          headers: payload ? { 'content-type': 'application/json', 'content-length': payload.length } : {},
          timeout: timeoutMs,
        },
        (response) => {
          const chunks: Buffer[] = [];
          response.on('data', (chunk: Buffer) => chunks.push(chunk));
          response.on('error', reject);
          response.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            let parsed: unknown = text;
            try {
              parsed = JSON.parse(text);
            } catch {}
            resolvePromise({ status: response.statusCode ?? 0, body: parsed });
          });
        },
      );
      request.on('timeout', () =>
        request.destroy(new Error(`${method} ${url} timed out after ${timeoutMs} ms`)),
      );
      request.on('error', reject);
      request.end(payload);
    });
  }

  async function placeAndWait(intended: Path): Promise<Sample> {
    const body =
      intended === 'replenishment'
        ? anOrder({ items: [aLine('GIZMO-3', config.replenishQuantity)] })
        : anOrder();
    const started = performance.now();
    const sentAt = Date.now();
    try {
      const created = await call('POST', system.url('order-creation', '/orders'), body);
      const postMs = performance.now() - started;
      if (created.status !== 201) {
        return {
          intended,
          status: `HTTP ${created.status}`,
          error: JSON.stringify(created.body).slice(0, 300),
          timelineDeliveries: 0,
        };
      }
      let order = created.body as OrderView;
      const giveUpAt = started + 40_000;
      while (!isTerminal(order.status) && performance.now() < giveUpAt) {
        const read = await call('GET', system.url('order-creation', `/orders/${order.id}?wait=10000`));
        if (read.status !== 200) {
          return {
            intended,
            status: `HTTP ${read.status}`,
            postMs,
            error: JSON.stringify(read.body).slice(0, 300),
            timelineDeliveries: 0,
          };
        }
        order = read.body as OrderView;
      }
      const latencyMs = performance.now() - started;
      const readAt = Date.now();
      const timeline = order.timeline ?? [];
      return {
        intended,
        path: timeline.some((e) => e.type === 'inventory.backordered') ? 'replenishment' : 'plain',
        status: isTerminal(order.status) ? order.status : `STUCK ${order.status}`,
        ...(order.reason ? { reason: order.reason } : {}),
        ...(isTerminal(order.status) ? { latencyMs } : {}),
        postMs,
        timelineDeliveries: timeline.reduce((n, e) => n + (SUBSCRIBERS.get(e.type) ?? 0), 0),
        ...(order.status === 'COMPLETED' ? { gaps: gapsOf(sentAt, timeline, readAt) } : {}),
      };
    } catch (error) {
      return { intended, status: 'ERROR', error: (error as Error).message, timelineDeliveries: 0 };
    }
  }

  /** `count` orders from the clients, their first orders spread over the ramp. */
  async function drive(count: number, onProgress?: (done: number) => void): Promise<Drive> {
    const samples: Sample[] = [];
    let next = 0;
    const started = performance.now();
    const stopAt = started + config.maxSeconds * 1000;
    const concurrent = Math.min(config.clients, Math.max(count, 1));
    const client = async (k: number) => {
      await new Promise((r) => setTimeout(r, (k * config.rampMs) / concurrent));
      while (next < count && performance.now() < stopAt) {
        const i = next++;
        const startedMs = performance.now() - started;
        const sample = await placeAndWait(
          isReplenishment(i, config.replenishShare) ? 'replenishment' : 'plain',
        );
        samples.push({ ...sample, startedMs });
        onProgress?.(samples.length);
      }
    };
    await Promise.all(Array.from({ length: concurrent }, (_, k) => client(k)));
    return { samples, wallSeconds: (performance.now() - started) / 1000, notAttempted: count - next };
  }

  return { drive, close: () => agent.destroy() };
}

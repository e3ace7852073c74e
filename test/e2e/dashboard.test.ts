/**
 * The dashboard's server side through HTTP, services as real processes: the page and its assets,
 * the state of the queues read from the management API with the parked messages and their
 * reasons, and the actions (place an order, traffic, replay) with their guards: configuration,
 * same origin, a JSON body.
 */
import amqp from 'amqplib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { aLine, anOrder } from '../../support/builders.ts';
import { AMQP_URL, System } from '../../support/system.ts';
import { awaitTerminal, type Order } from '../support/saga.ts';
import { eventually } from '../support/wait.ts';

let system: System;

beforeAll(async () => {
  system = await System.start();
});

afterAll(async () => {
  await system?.destroy();
});

interface State {
  exchange: string;
  queues: { name: string; ready: number; consumers: number; publishRate: number }[];
  parked: Record<
    string,
    { count: number; messages: { messageId?: string; routingKey?: string; reason?: string }[] }
  >;
  traffic: { running: boolean; placed?: number };
  error?: string;
}

const state = async () => (await system.get<State>('order-creation', '/dashboard/state')).body;

describe('GET /dashboard: the page, served from the project', () => {
  it('answers the page and its script and style, with no outside reference', async () => {
    const page = await fetch(system.url('order-creation', '/dashboard'));
    const html = await page.text();
    const script = await fetch(system.url('order-creation', '/dashboard/assets/dashboard.js'));
    const style = await fetch(system.url('order-creation', '/dashboard/assets/dashboard.css'));

    expect(page.headers.get('content-type')).toContain('text/html');
    expect(html).toContain('/dashboard/assets/dashboard.js');
    expect(html).not.toMatch(/(src|href)="https?:/);
    expect(html).toContain('data-actions="true"');
    expect(script.headers.get('content-type')).toContain('javascript');
    expect(await script.text()).toContain('new EventSource(');
    expect(style.status).toBe(200);
    expect((await fetch(system.url('order-creation', '/dashboard/assets/secrets.txt'))).status).toBe(404);
  });
});

/** Reads GET /dashboard/stream as EventSource would, into `messages`, until `close`. */
function readStream(url: string) {
  const messages: { id: string; type: string; orderId?: string; data: unknown }[] = [];
  const abort = new AbortController();
  const done = (async () => {
    const response = await fetch(url, { signal: abort.signal });
    const decoder = new TextDecoder();
    let partial = '';
    for await (const chunk of response.body as AsyncIterable<Uint8Array>) {
      partial += decoder.decode(chunk, { stream: true });
      for (let end = partial.indexOf('\n\n'); end >= 0; end = partial.indexOf('\n\n')) {
        const lines = partial.slice(0, end).split('\n');
        partial = partial.slice(end + 2);
        const id = lines.find((l) => l.startsWith('id: '))?.slice(4);
        const data = lines.find((l) => l.startsWith('data: '))?.slice(6);
        if (id && data) messages.push({ id, ...JSON.parse(data) });
      }
    }
  })().catch(() => {});
  return { messages, close: () => abort.abort(), done };
}

describe('GET /dashboard/stream on a lone instance', () => {
  it('holds every event of a saga once: those it handles, those it emits, stock.low it only watches', async () => {
    const stream = readStream(system.url('order-creation', '/dashboard/stream'));
    // GIZMO-3 starts under its reorder point: a reservation of one is followed by stock.low.
    const placed = await system.request<Order>('order-creation', 'POST', '/orders', {
      ...anOrder({ items: [aLine('GIZMO-3', 1)] }),
    });
    const order = await awaitTerminal(system, placed.body.id);
    const ids = order.timeline.map((t) => t.eventId);
    const seen = await eventually(
      async () => stream.messages,
      (m) =>
        ids.every((id) => m.some((e) => e.id === id)) &&
        m.some((e) => e.type === 'stock.low' && (e.data as { sku?: string }).sku === 'GIZMO-3'),
      20_000,
      100,
    );
    stream.close();

    expect(order.status).toBe('COMPLETED');
    expect(order.timeline.map((t) => t.type)).toEqual(
      expect.arrayContaining([
        'order.created',
        'inventory.reserved',
        'shipment.dispatched',
        'order.completed',
      ]),
    );
    const mine = seen.filter((e) => ids.includes(e.id));
    expect(mine.map((e) => e.id)).toEqual(ids);
    expect(new Set(seen.map((e) => e.id)).size).toBe(seen.length);
  });
});

describe('GET /dashboard/state: the queues, from the management API', () => {
  it('lists the saga queues with their consumers and rates', async () => {
    // The management API samples its figures every few seconds: a fresh consumer shows a moment later.
    const { queues, exchange, error } = await eventually(
      state,
      (s) => s.queues.find((q) => q.name === `${s.exchange}.inventory`)?.consumers === 1,
      20_000,
      250,
    );

    expect(error).toBeUndefined();
    expect(queues.map((q) => q.name)).toEqual(
      expect.arrayContaining([`${exchange}.inventory`, `${exchange}.shipment.dead-letter`]),
    );
    expect(queues.find((q) => q.name === `${exchange}.inventory`)?.consumers).toBe(1);
    expect(queues.every((q) => q.name.startsWith(`${exchange}.`))).toBe(true);
  });

  it('is not for other sites to read: no Access-Control-Allow-Origin, unlike the order API', async () => {
    const dashboard = await fetch(system.url('order-creation', '/dashboard/state'));
    const orders = await fetch(system.url('order-creation', '/orders?limit=1'));

    expect(dashboard.status).toBe(200);
    expect(dashboard.headers.get('access-control-allow-origin')).toBeNull();
    expect(orders.headers.get('access-control-allow-origin')).toBe('*');
  });

  it('shows what is parked with its reason, and replay sends it back to its queue', async () => {
    const { exchange } = await state();
    const connection = await amqp.connect(AMQP_URL);
    const channel = await connection.createChannel();
    // Not JSON: every queue bound to the key parks it as malformed.
    channel.publish(exchange, 'shipment.cancel_rejected', Buffer.from('not json'), {
      messageId: 'broken-1',
      type: 'shipment.cancel_rejected',
    });
    await channel.close();
    await connection.close();

    const parked = await eventually(state, (s) => (s.parked['order-creation']?.count ?? 0) > 0, 20_000, 250);
    const replay = await system.request<{ replayed: number; problems: string[] }>(
      'order-creation',
      'POST',
      '/dashboard/replay',
      { service: 'order-creation' },
    );

    expect(parked.parked['order-creation']?.messages[0]).toMatchObject({
      messageId: 'broken-1',
      routingKey: 'shipment.cancel_rejected',
      reason: 'malformed-json',
    });
    expect(replay.status).toBe(200);
    expect(replay.body.replayed).toBe(1);
  });
});

describe('the actions: allowed by configuration, same origin only, JSON only', () => {
  it('places an order with a failure injected, which then fails there', async () => {
    const placed = await system.request<Order>('order-creation', 'POST', '/dashboard/orders', {
      order: anOrder({ items: [aLine('WIDGET-1', 1)] }),
      failAt: 'shipment',
    });

    expect(placed.status).toBe(201);
    expect(await awaitTerminal(system, placed.body.id)).toMatchObject({
      status: 'CANCELLED',
      reason: 'SHIPMENT_FAILED',
      settledAt: expect.any(String),
    });
  });

  it('an invalid order is a 400 naming the field', async () => {
    const refused = await system.request<{ errors: { pointer: string }[] }>(
      'order-creation',
      'POST',
      '/dashboard/orders',
      {
        order: { ...anOrder(), items: [] },
      },
    );

    expect(refused.status).toBe(400);
    expect(refused.headers.get('content-type')).toContain('application/problem+json');
    expect(JSON.stringify(refused.body)).toContain('/body/order/items');
  });

  it.each([
    ['an Origin of another site', { origin: 'http://evil.example' }],
    ['Sec-Fetch-Site cross-site', { 'sec-fetch-site': 'cross-site' }],
    ['Sec-Fetch-Site same-site (another port)', { 'sec-fetch-site': 'same-site' }],
  ])('a request with %s is refused with 403', async (_, headers) => {
    for (const [path, body] of [
      ['/dashboard/orders', { order: anOrder() }],
      ['/dashboard/traffic', { action: 'start', rate: 1, duration: 1 }],
      ['/dashboard/replay', { service: 'inventory' }],
    ] as const) {
      const refused = await system.request('order-creation', 'POST', path, body, headers);
      expect(refused.status, path).toBe(403);
      expect(refused.headers.get('content-type')).toContain('application/problem+json');
    }
    expect((await state()).traffic.running).toBe(false);
  });

  it('a plain form post (not JSON) is refused with 415, so a cross-site form cannot pass', async () => {
    const refused = await fetch(system.url('order-creation', '/dashboard/traffic'), {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: 'action=start&rate=100&duration=60',
    });

    expect(refused.status).toBe(415);
    expect((await state()).traffic.running).toBe(false);
  });

  it('traffic starts, places orders at its rate, and stops', async () => {
    const started = await system.request('order-creation', 'POST', '/dashboard/traffic', {
      action: 'start',
      rate: 20,
      duration: 30,
      failures: 0.5,
    });
    const running = await eventually(state, (s) => (s.traffic.placed ?? 0) >= 5, 10_000, 100);
    const stopped = await system.request<{ running: boolean }>(
      'order-creation',
      'POST',
      '/dashboard/traffic',
      {
        action: 'stop',
      },
    );

    expect(started.status).toBe(202);
    expect(running.traffic.running).toBe(true);
    expect(stopped.body.running).toBe(false);
    expect((await state()).traffic.running).toBe(false);
  });
});

describe('with DASHBOARD_ACTIONS=false (the default when NODE_ENV=production)', () => {
  let locked: System;
  beforeAll(async () => {
    locked = await System.start({ env: { NODE_ENV: 'production' } });
  });
  afterAll(async () => {
    await locked?.destroy();
  });

  it('the page still shows, and every action is refused with 403', async () => {
    const html = await (await fetch(locked.url('order-creation', '/dashboard'))).text();
    const refused = await locked.request<{ detail: string }>('order-creation', 'POST', '/dashboard/orders', {
      order: anOrder(),
    });

    expect(html).toContain('data-actions="false"');
    expect(refused.status).toBe(403);
    expect(refused.body.detail).toContain('DASHBOARD_ACTIONS=false');
  });
});

describe('with DASHBOARD=false', () => {
  let bare: System;
  beforeAll(async () => {
    bare = await System.start({ env: { DASHBOARD: 'false' } });
  });
  afterAll(async () => {
    await bare?.destroy();
  });

  it('there is no dashboard, and orders go through as ever', async () => {
    const page = await fetch(bare.url('order-creation', '/dashboard'));
    const stream = await fetch(bare.url('order-creation', '/dashboard/stream'));
    const placed = await bare.request<Order>('order-creation', 'POST', '/orders', anOrder());

    expect(page.status).toBe(404);
    expect(stream.status).toBe(404);
    expect(placed.status).toBe(201);
    expect((await awaitTerminal(bare, placed.body.id)).status).toBe('COMPLETED');
  });
});

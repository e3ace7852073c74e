/**
 * The dashboard's live feed against a real RabbitMQ and a real HTTP server: two "instances" each
 * watch the exchange with a queue of their own and serve GET /dashboard/stream; a client reads
 * the stream, drops off, and resumes with Last-Event-ID, on the same instance or the other one.
 */
import { once } from 'node:events';
import { type IncomingMessage, request } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import amqp, { type Channel, type ChannelModel } from 'amqplib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Broker } from '../../common/broker/connection.ts';
import { queueNames } from '../../common/broker/topology.ts';
import { loadConfig } from '../../common/config.ts';
import type { RoutingKey, SagaEvent } from '../../common/events.ts';
import { HttpServer } from '../../common/http.ts';
import { newId } from '../../common/ids.ts';
import { feedEverything, LiveFeed } from '../../common/live-feed.ts';
import { createLogger } from '../../common/logger.ts';
import { type Repeating, repeat } from '../../common/timers.ts';
import { AMQP_URL, deleteTopology } from '../../support/system.ts';

const exchange = `test-live-feed-${process.pid}`;
const MANAGEMENT = process.env.RABBITMQ_MANAGEMENT_URL ?? 'http://127.0.0.1:15672';
const log = createLogger('order-creation', 'silent');

interface Instance {
  broker: Broker;
  http: HttpServer;
  feed: LiveFeed;
}

async function anInstance(heartbeatMs?: number): Promise<Instance> {
  const config = loadConfig('order-creation', {
    AMQP_URL,
    SAGA_EXCHANGE: exchange,
    ORDER_CREATION_PORT: '0',
    LOG_LEVEL: 'silent',
  });
  const broker = new Broker(
    config,
    { names: queueNames(exchange, 'order-creation'), bindings: [], retryDelaysMs: [] },
    log,
  );
  const feed = new LiveFeed({ maxEvents: 1000, maxAgeMs: 600_000, flushMs: 20 });
  await broker.watchAll((message) => feed.push(message));
  await broker.connect();
  const http = new HttpServer({ config, log, checks: () => ({}) });
  http.route('get', '/dashboard/stream', () => feed.reply({ heartbeatMs }), { documented: false });
  await http.listen();
  return { broker, http, feed };
}

/** An open stream as EventSource would read it: each message's id and data. */
async function openStream(instance: Instance, lastEventId?: string) {
  const req = request({
    host: '127.0.0.1',
    port: instance.http.port,
    path: '/dashboard/stream',
    headers: lastEventId ? { 'last-event-id': lastEventId } : {},
  });
  req.end();
  const [res] = (await once(req, 'response')) as [IncomingMessage];
  const messages: { id: string; data: Record<string, unknown> }[] = [];
  let comments = 0;
  let partial = '';
  res.setEncoding('utf8');
  res.on('data', (chunk: string) => {
    partial += chunk;
    for (let end = partial.indexOf('\n\n'); end >= 0; end = partial.indexOf('\n\n')) {
      const lines = partial.slice(0, end).split('\n');
      partial = partial.slice(end + 2);
      if (lines[0]?.startsWith(':')) comments++;
      else {
        const id = lines.find((l) => l.startsWith('id: '))?.slice(4) ?? '';
        const data = lines.filter((l) => l.startsWith('data: ')).map((l) => l.slice(6));
        messages.push({ id, data: JSON.parse(data.join('\n')) });
      }
    }
  });
  return { res, messages, comments: () => comments, close: () => req.destroy() };
}

async function until(condition: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await sleep(10);
  }
}

let connection: ChannelModel;
let channel: Channel;
const instances: Instance[] = [];

/** Publishes n saga events about one order, as a service's outbox would (messageId = event id). */
function publish(n: number, orderId = newId()): string[] {
  return Array.from({ length: n }, (_, i) => {
    const id = newId();
    const type = i % 2 === 0 ? 'inventory.reserved' : 'inventory.released';
    const data = {
      orderId,
      items: [{ sku: 'WIDGET-1', quantity: 1 }],
      ...(i % 2 === 0 ? { shippingAddress: {} } : {}),
    };
    const body = { id, type, version: 1, occurredAt: new Date().toISOString(), orderId, data };
    channel.publish(exchange, type, Buffer.from(JSON.stringify(body)), {
      messageId: id,
      type,
      correlationId: orderId,
      contentType: 'application/json',
    });
    return id;
  });
}

beforeAll(async () => {
  instances.push(await anInstance(), await anInstance(50));
  connection = await amqp.connect(AMQP_URL);
  channel = await connection.createChannel();
});

afterAll(async () => {
  for (const { http, broker, feed } of instances) {
    feed.close();
    await http.close(Date.now() + 1000);
    await broker.close();
  }
  await connection?.close();
  await deleteTopology(exchange);
});

describe('GET /dashboard/stream: every saga event, one message each, resumable', () => {
  it('each event published on the exchange is one message: id = the event id, data = { eventId, orderId, type, source, at, data }', async () => {
    const [a] = instances as [Instance];
    const stream = await openStream(a);
    const orderId = newId();

    const ids = publish(4, orderId);
    await until(() => stream.messages.filter((m) => ids.includes(m.id)).length === 4);
    stream.close();

    const mine = stream.messages.filter((m) => ids.includes(m.id));
    expect(stream.res.headers['content-type']).toBe('text/event-stream');
    expect(mine.map((m) => m.id)).toEqual(ids);
    expect(mine[1]?.data).toEqual({
      eventId: ids[1],
      orderId,
      type: 'inventory.released',
      source: 'inventory',
      at: expect.any(String),
      data: { orderId, items: [{ sku: 'WIDGET-1', quantity: 1 }] },
    });
  });

  it('a client that reconnects with Last-Event-ID gets what it missed, nothing before it, nothing lost', async () => {
    const [a] = instances as [Instance];
    const first = await openStream(a);
    const before = publish(3);
    await until(() => first.messages.some((m) => m.id === before[2]));
    first.close();

    const missed = publish(5); // while no client is connected
    await until(() => a.feed.since(before[2]).length >= 5);
    const resumed = await openStream(a, before[2]);
    const after = publish(2);
    await until(() => resumed.messages.some((m) => m.id === after[1]));
    resumed.close();

    expect(resumed.messages.map((m) => m.id)).toEqual([...missed, ...after]);
  });

  it('a cursor from one instance resumes on another: both hold the same events under the same ids', async () => {
    const [a, b] = instances as [Instance, Instance];
    const onA = await openStream(a);
    const seen = publish(2);
    await until(() => onA.messages.some((m) => m.id === seen[1]));
    onA.close();
    const missed = publish(3);
    await until(() => b.feed.since(seen[1]).length >= 3);

    const onB = await openStream(b, seen[1]);
    await until(() => missed.every((id) => onB.messages.some((m) => m.id === id)));
    onB.close();

    expect(onB.messages.map((m) => m.id)).toEqual(missed);
  });

  it('a cursor the instance does not hold is placed by the time in its UUIDv7: nothing after it is lost', async () => {
    const [a] = instances as [Instance];
    const foreign = newId(); // an id this instance never saw, from just now
    const later = publish(3);
    await until(() => later.every((id) => a.feed.since(undefined).some((e) => e.eventId === id)));

    const stream = await openStream(a, foreign);
    await until(() => later.every((id) => stream.messages.some((m) => m.id === id)));
    stream.close();

    expect(stream.messages.map((m) => m.id)).toEqual(expect.arrayContaining(later));
  });

  it('heartbeats (comments) keep an idle stream alive through proxies', async () => {
    const b = instances[1] as Instance; // heartbeats every 50 ms

    const stream = await openStream(b);
    await until(() => stream.comments() >= 2, 2000);
    stream.close();

    expect(stream.comments()).toBeGreaterThanOrEqual(2);
  });

  it('the watcher is a light subscriber: a server-named, exclusive, auto-deleted queue bound to #', async () => {
    const response = await fetch(
      `${MANAGEMENT}/api/exchanges/%2F/${encodeURIComponent(exchange)}/bindings/source`,
      { headers: { authorization: `Basic ${Buffer.from('guest:guest').toString('base64')}` } },
    );
    const bindings = (await response.json()) as { destination: string; routing_key: string }[];
    const watchers = bindings.filter((b) => b.routing_key === '#');

    expect(watchers).toHaveLength(2);
    for (const { destination } of watchers) {
      const queue = (await (
        await fetch(`${MANAGEMENT}/api/queues/%2F/${encodeURIComponent(destination)}`, {
          headers: { authorization: `Basic ${Buffer.from('guest:guest').toString('base64')}` },
        })
      ).json()) as { exclusive: boolean; auto_delete: boolean; durable: boolean };
      expect(destination).toMatch(/^amq\.gen-/);
      expect(queue).toMatchObject({ exclusive: true, auto_delete: true, durable: false });
    }
  });
});

describe('feedEverything: an event crosses the broker a second time only when it must', () => {
  const peersExchange = `${exchange}-peers`;
  const own: RoutingKey[] = ['inventory.reserved'];
  const timers: Repeating[] = [];
  const brokers: Broker[] = [];

  /** An instance of a service whose runner handles inventory.reserved: its broker consumes its queue. */
  async function aPeer() {
    const config = loadConfig('order-creation', {
      AMQP_URL,
      SAGA_EXCHANGE: peersExchange,
      LOG_LEVEL: 'silent',
    });
    const broker = new Broker(
      config,
      { names: queueNames(peersExchange, 'order-creation'), bindings: [], retryDelaysMs: [] },
      log,
    );
    brokers.push(broker);
    const feed = new LiveFeed({ maxEvents: 1000, maxAgeMs: 600_000 });
    const commits: ((emitted: SagaEvent[], handled: SagaEvent[]) => void)[] = [];
    feedEverything(feed, {
      broker,
      own,
      log,
      onCommit: (hook) => commits.push(hook),
      every: (ms, task) => timers.push(repeat(ms, task, () => {})),
    });
    await broker.connect();
    await broker.consume(() => {});
    const commit = (handled: SagaEvent[]) => {
      for (const hook of commits) hook([], handled);
    };
    return { broker, feed, commit };
  }

  /** Publishes one event under `type` and answers its id. */
  function publishOne(type: RoutingKey): string {
    const id = newId();
    const body = { id, type, version: 1, occurredAt: new Date().toISOString(), data: {} };
    channel.publish(peersExchange, type, Buffer.from(JSON.stringify(body)), { messageId: id, type });
    return id;
  }

  const holds = (feed: LiveFeed, id: string) => feed.since(undefined).some((e) => e.eventId === id);

  afterAll(async () => {
    for (const timer of timers) timer.stop();
    for (const broker of brokers) await broker.close();
    await deleteTopology(peersExchange);
  });

  it('alone on its queue it watches what its runner does not see; sharing it, everything', async () => {
    const a = await aPeer();
    // Alone once the broker says so: an own event no longer reaches the watcher, the others do.
    // Published on one channel, the own event would arrive first: its absence is not a race.
    let pair: [string, string] | undefined;
    await until(() => {
      if (pair && holds(a.feed, pair[1])) {
        if (!holds(a.feed, pair[0])) return true;
        pair = undefined;
      }
      pair ??= [publishOne('inventory.reserved'), publishOne('stock.low')];
      return false;
    }, 10_000);
    const handled = {
      id: newId(),
      type: 'inventory.reserved' as const,
      version: 1 as const,
      occurredAt: new Date().toISOString(),
      data: {} as never,
    };
    a.commit([handled]);
    expect(holds(a.feed, handled.id)).toBe(true);

    // Another instance takes a share of the queue: each of them now watches everything.
    const b = await aPeer();
    let probe: { id: string; at: number } | undefined;
    await until(() => {
      if (probe && holds(a.feed, probe.id) && holds(b.feed, probe.id)) return true;
      if (!probe || Date.now() - probe.at > 500)
        probe = { id: publishOne('inventory.reserved'), at: Date.now() };
      return false;
    }, 10_000);

    expect(await a.broker.otherConsumers()).toBe(1);
    expect(await b.broker.otherConsumers()).toBe(1);
  });
});

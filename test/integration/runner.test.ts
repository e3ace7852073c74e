/**
 * The shared runner against a real RabbitMQ and a real SQLite database: inbox, transaction,
 * outbox, ack, retries and dead letters. A tiny service of its own, on its own exchange.
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import amqp, { type Channel, type ChannelModel, type ConsumeMessage } from 'amqplib';
import type { Migration } from 'kysely/migration';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { UnroutableError } from '../../common/broker/connection.ts';
import { queueNames } from '../../common/broker/topology.ts';
import { openDatabase, type Tx } from '../../common/db.ts';
import { type Emit, emit, type SagaEvent } from '../../common/events.ts';
import { DEAD_HEADER } from '../../common/headers.ts';
import { writeOutbox } from '../../common/outbox.ts';
import { startService } from '../../common/service.ts';
import { anOrderCreated } from '../../support/builders.ts';
import { AMQP_URL, deleteTopology } from '../../support/system.ts';
import { eventually } from '../support/wait.ts';

interface ProbeTables {
  effects: { message_id: string; note: string };
}

const migrations: Record<string, Migration> = {
  '0001_probe': {
    up: (db) =>
      db.schema
        .createTable('effects')
        .addColumn('message_id', 'text', (c) => c.notNull())
        .addColumn('note', 'text', (c) => c.notNull())
        .execute(),
  },
};

/** How the probe's handler behaves for the next messages. */
let behaviour: 'ok' | 'throw' | 'invalid-event' = 'ok';

const probeStore = (trx: Tx<ProbeTables>) => ({
  note: (id: string, note: string) => trx.insertInto('effects').values({ message_id: id, note }).execute(),
});

const orderCreated = () => anOrderCreated();

const exchange = `test-runner-${process.pid}`;
const dataDir = mkdtempSync(join(tmpdir(), 'runner-'));
const env = {
  AMQP_URL,
  SAGA_EXCHANGE: exchange,
  DATA_DIR: dataDir,
  SHIPMENT_PORT: '0',
  LOG_LEVEL: 'silent',
  RETRY_ATTEMPTS: '3',
  RETRY_BASE_DELAY_MS: '50',
};
const names = queueNames(exchange, 'shipment');

let service: Awaited<ReturnType<typeof startProbe>> | undefined;
let connection: ChannelModel;
let channel: Channel;
let captured: ConsumeMessage[] = [];
/** Where the test hears order.completed. */
let listener: string;

function startProbe() {
  return startService<ProbeTables, ReturnType<typeof probeStore>>(
    {
      name: 'shipment',
      migrations,
      store: probeStore,
      handlers: {
        'order.created': async (event, store) => {
          await store.note(event.id, 'handled');
          if (behaviour === 'throw' || event.data.customerId === 'always-fails')
            throw new Error('transient failure');
          if (behaviour === 'invalid-event') return [emit('order.completed', {} as never)];
          return [emit('order.completed', { orderId: event.data.orderId })];
        },
      },
    },
    env,
  );
}

async function publish(event: unknown, options: { routingKey?: string; raw?: Buffer; id?: string } = {}) {
  const e = event as SagaEvent;
  channel.publish(exchange, options.routingKey ?? e.type, options.raw ?? Buffer.from(JSON.stringify(event)), {
    persistent: true,
    messageId: options.id ?? e.id,
    contentType: 'application/json',
  });
}

const effects = async () => service?.app.db.selectFrom('effects').selectAll().execute() ?? [];
const outboxRows = async () => service?.app.db.selectFrom('outbox').selectAll().execute() ?? [];

async function parked(): Promise<ConsumeMessage[]> {
  const out: ConsumeMessage[] = [];
  for (;;) {
    const message = await channel.get(names.deadLetterQueue, { noAck: true });
    if (!message) return out;
    out.push(message as unknown as ConsumeMessage);
  }
}

beforeAll(async () => {
  service = await startProbe();
  connection = await amqp.connect(AMQP_URL);
  channel = await connection.createChannel();
  listener = (await channel.assertQueue('', { exclusive: true })).queue;
  await channel.bindQueue(listener, exchange, 'order.completed');
  await channel.consume(listener, (m) => m && captured.push(m), { noAck: true });
});

afterEach(async () => {
  behaviour = 'ok';
  captured = [];
  await service?.app.db.deleteFrom('effects').execute();
  await parked();
});

afterAll(async () => {
  await service?.stop();
  await connection?.close();
  await deleteTopology(exchange);
  rmSync(dataDir, { recursive: true, force: true });
});

describe('the runner', () => {
  it('handles a message delivered twice only once', async () => {
    const event = orderCreated();
    await publish(event);
    await publish(event);
    await eventually(
      () => captured.length,
      (n) => n >= 1,
    );
    await new Promise((r) => setTimeout(r, 300)); // room for a second, wrong, effect

    expect(await effects()).toHaveLength(1);
    expect(captured).toHaveLength(1);
    const published = JSON.parse(captured[0]?.content.toString() ?? '{}');
    expect(published).toMatchObject({ type: 'order.completed', orderId: event.orderId });
    expect(captured[0]?.properties.headers?.['x-causation-id']).toBe(event.id);
    expect(captured[0]?.properties).toMatchObject({
      messageId: published.id,
      type: 'order.completed',
      correlationId: event.orderId,
    });
  });

  it('leaves nothing committed when the handler throws, retries, then parks the message with its reason', async () => {
    behaviour = 'throw';
    const event = orderCreated();
    await publish(event);

    const dead = await eventually(parked, (m) => m.length > 0);

    expect(dead).toHaveLength(1);
    const headers = dead[0]?.properties.headers ?? {};
    expect(headers[DEAD_HEADER.reason]).toBe('retries-exhausted');
    expect(headers[DEAD_HEADER.attempts]).toBe(3);
    expect(headers[DEAD_HEADER.error]).toContain('transient failure');
    expect(headers[DEAD_HEADER.routingKey]).toBe('order.created');
    expect(headers[DEAD_HEADER.queue]).toBe(names.queue);
    expect(JSON.parse(dead[0]?.content.toString() ?? '{}')).toEqual(event); // unchanged
    expect(await effects()).toHaveLength(0);
    expect(captured).toHaveLength(0);
  });

  it('succeeds on a retry after a transient failure, with the effect once', async () => {
    behaviour = 'throw';
    const event = orderCreated();
    await publish(event);
    await new Promise((r) => setTimeout(r, 20));
    behaviour = 'ok';

    await eventually(
      () => captured.length,
      (n) => n >= 1,
    );

    expect(await effects()).toHaveLength(1);
    expect(await parked()).toHaveLength(0);
  });

  it('isolates a failing message from the others delivered in the same burst', async () => {
    const good = Array.from({ length: 20 }, () => orderCreated());
    const bad = { ...orderCreated(), id: randomUUID() };
    bad.data = { ...bad.data, customerId: 'always-fails' };
    for (const [i, event] of good.entries()) {
      await publish(event);
      if (i === 10) await publish(bad);
    }

    const dead = await eventually(parked, (m) => m.length > 0);
    await eventually(
      () => captured.length,
      (n) => n >= good.length,
    );

    expect(dead.map((m) => m.properties.messageId)).toEqual([bad.id]);
    const handled = (await effects()).map((e) => e.message_id).sort();
    expect(handled).toEqual(good.map((e) => e.id).sort());
    expect(captured).toHaveLength(good.length);
  });

  it('runs work outside a message with the deliveries, and fails only the unit that throws', async () => {
    const runner = service?.app.runner;
    if (!runner) throw new Error('the probe is not running');
    const deliveries = Array.from({ length: 10 }, () => orderCreated());
    for (const event of deliveries) await publish(event);
    // Started together, they join whatever burst is waiting (group commit).
    const work = Array.from({ length: 10 }, (_, i) => {
      const orderId = randomUUID();
      return runner.transact(async (store) => {
        await store.note(`work-${i}`, 'handled');
        if (i === 4) throw new Error('this one fails');
        return { value: i, emit: [emit('order.completed', { orderId })] };
      });
    });

    const outcomes = await Promise.allSettled(work);
    await eventually(
      () => captured.length,
      (n) => n >= 19,
    );

    expect(outcomes.map((o) => o.status)).toEqual(
      Array.from({ length: 10 }, (_, i) => (i === 4 ? 'rejected' : 'fulfilled')),
    );
    expect(outcomes[4]).toMatchObject({ status: 'rejected', reason: { message: 'this one fails' } });
    const [fulfilled] = outcomes;
    expect(fulfilled).toMatchObject({ status: 'fulfilled', value: { value: 0 } });
    if (fulfilled?.status === 'fulfilled') {
      expect(fulfilled.value.emitted.map((e) => e.type)).toEqual(['order.completed']);
    }
    const handled = (await effects()).map((e) => e.message_id);
    expect(handled).toHaveLength(19);
    expect(handled).not.toContain('work-4');
    expect(handled).toEqual(expect.arrayContaining(deliveries.map((e) => e.id)));
    await new Promise((r) => setTimeout(r, 300)); // room for a wrong, twentieth event
    expect(captured).toHaveLength(19);
  });

  it('commits the state change and the emitted event together or not at all', async () => {
    behaviour = 'invalid-event'; // the outbox refuses an event that breaks its schema: the transaction rolls back
    const event = orderCreated();
    const before = (await outboxRows()).length;
    await publish(event);

    await eventually(parked, (m) => m.length > 0);

    expect(await effects()).toHaveLength(0);
    expect(await outboxRows()).toHaveLength(before);
  });

  it.each([
    ['malformed-json', Buffer.from('{not json'), 'order.created'],
    [
      'schema-invalid',
      Buffer.from(JSON.stringify({ ...orderCreated(), data: { orderId: 'nope' } })),
      'order.created',
    ],
    [
      'unknown-routing-key',
      Buffer.from(JSON.stringify({ ...orderCreated(), type: 'order.shredded' })),
      'order.created',
    ],
  ])('parks a %s message at once, without retrying it', async (reason, raw, routingKey) => {
    await publish({}, { raw, routingKey, id: randomUUID() });

    const dead = await eventually(parked, (m) => m.length > 0);

    expect(dead[0]?.properties.headers?.[DEAD_HEADER.reason]).toBe(reason);
    expect(dead[0]?.properties.headers?.[DEAD_HEADER.attempts]).toBe(1);
    expect(dead[0]?.content.equals(raw)).toBe(true);
    expect(await effects()).toHaveLength(0);
  });
});

describe('the topology', () => {
  it("binds the service's queue to its subscriptions only, also after a version that had more", async () => {
    await channel.bindQueue(names.queue, exchange, 'inventory.rejected'); // as an older version might have
    await service?.stop();
    service = await startProbe();

    const stray = { exchange, routingKey: 'inventory.rejected', content: Buffer.from('{}') };
    await expect(
      service.broker.publish([{ ...stray, options: { messageId: randomUUID() } }]),
    ).rejects.toThrow(UnroutableError);
  });
});

describe('timers and commit hooks of a service', () => {
  it('run a task again when it says its next work is due, and at once when woken', async () => {
    if (!service) throw new Error('no service');
    const runs: number[] = [];
    let dueIn: number | undefined = 20;
    let release = () => {};
    const timer = service.app.every(60_000, async () => {
      runs.push(Date.now());
      if (runs.length === 3) await new Promise<void>((r) => (release = r));
      return dueIn === undefined ? undefined : Date.now() + dueIn;
    });
    const runsReach = (n: number) =>
      eventually(
        () => runs.length,
        (k) => k === n,
        5_000,
      );

    // Its own due times bring it back long before the 60 s period: runs 1, 2 and 3 (which waits).
    expect(await runsReach(3)).toBe(3);
    dueIn = undefined;
    timer.wake(); // while run 3 is under way: one more run right after it, not beside it
    timer.wake();
    release();
    expect(await runsReach(4)).toBe(4);
    await new Promise((r) => setTimeout(r, 200));
    expect(runs).toHaveLength(4); // nothing due and not woken: it waits for its period

    timer.wake();
    expect(await runsReach(5)).toBe(5);
  });

  it('hear of every commit, even one that emitted nothing', async () => {
    if (!service) throw new Error('no service');
    const heard: string[][] = [];
    service.app.onCommit((events) => heard.push(events.map((e) => e.type)));
    const { runner } = service.app;

    await runner.transact(async () => ({ value: undefined, emit: [] }));
    await runner.transact(async () => ({
      value: undefined,
      emit: [emit('order.completed', { orderId: randomUUID() })],
    }));

    expect(heard).toEqual([[], ['order.completed']]);
    // Heard here, not in the next test.
    expect(
      await eventually(
        () => captured.length,
        (n) => n === 1,
        5_000,
      ),
    ).toBe(1);
  });
});

describe('retention', () => {
  it('forgets handled message ids and published outbox rows older than the window, and only those', async () => {
    const db = service?.app.db;
    if (!db) throw new Error('no service');
    const old = new Date(Date.now() - 200 * 3_600_000).toISOString();
    const recent = new Date().toISOString();
    await db
      .insertInto('inbox')
      .values([
        { message_id: 'old', consumer: 'probe', handled_at: old },
        { message_id: 'recent', consumer: 'probe', handled_at: recent },
      ])
      .execute();
    const row = { routing_key: 'order.completed', body: '{}', headers: '{}', created_at: old };
    await db
      .insertInto('outbox')
      .values([
        { ...row, id: 'old-published', published_at: old },
        { ...row, id: 'recent-published', published_at: recent },
      ])
      .execute();

    await service?.app.runner.prune();

    const inbox = await db.selectFrom('inbox').select('message_id').where('consumer', '=', 'probe').execute();
    expect(inbox.map((r) => r.message_id)).toEqual(['recent']);
    const outbox = await db.selectFrom('outbox').select('id').where('id', 'like', '%-published').execute();
    expect(outbox.map((r) => r.id)).toEqual(['recent-published']);
  });
});

describe('the outbox relay', () => {
  it('publishes events committed before a crash when the service starts again', async () => {
    await service?.stop();
    service = undefined;
    // The service "crashed" right after committing: the event is in the outbox, never published.
    const db = await openDatabase<ProbeTables>(dataDir, 'shipment', migrations);
    const orderId = randomUUID();
    const [written] = await db
      .transaction()
      .execute((trx) => writeOutbox(trx as never, [emit('order.completed', { orderId })], {}));
    await db.destroy();

    service = await startProbe();
    await eventually(
      () => captured.length,
      (n) => n >= 1,
    );

    expect(JSON.parse(captured[0]?.content.toString() ?? '{}').id).toBe(written?.id);
    const row = (await outboxRows()).find((r) => r.id === written?.id);
    expect(row?.published_at).not.toBeNull();
  });

  it('refuses to publish an event no queue would take, but lets a notification go unheard', async () => {
    if (!service) throw new Error('no service');
    const { app, broker, relay } = service;
    const stray = { exchange, routingKey: 'shipment.failed', content: Buffer.from('{}') };
    await expect(broker.publish([{ ...stray, options: { messageId: randomUUID() } }])).rejects.toThrow(
      UnroutableError,
    );

    await channel.unbindQueue(listener, exchange, 'order.completed');
    try {
      const [written] = await app.db
        .transaction()
        .execute((trx) =>
          writeOutbox(trx as never, [emit('order.completed', { orderId: randomUUID() })], {}),
        );
      relay.wake();

      const publishedAt = await eventually(
        async () => (await outboxRows()).find((r) => r.id === written?.id)?.published_at,
        (at) => at != null,
        5_000,
      );
      expect(publishedAt).not.toBeNull();
      expect(captured).toHaveLength(0);
    } finally {
      await channel.bindQueue(listener, exchange, 'order.completed');
    }
  });

  it('keeps publishing later events while an earlier one is refused, and sends that one once it can go', async () => {
    if (!service) throw new Error('no service');
    const { app, relay } = service;
    const write = (e: Emit) =>
      app.db.transaction().execute(async (trx) => (await writeOutbox(trx as never, [e], {}))[0]);
    const published = async (id?: string) =>
      (await outboxRows()).find((r) => r.id === id)?.published_at ?? null;
    const publishedSoon = (id?: string) =>
      eventually(
        () => published(id),
        (at) => at !== null,
        5_000,
      );
    const orderId = randomUUID();

    // No queue takes shipment.failed on this exchange yet: the broker returns it, again and again.
    const refused = await write(
      emit('shipment.failed', { orderId, reason: 'SHIPMENT_FAILED', detail: 'test' }),
    );
    relay.wake();
    await new Promise((r) => setTimeout(r, 300));
    const later = await write(emit('order.completed', { orderId }));
    relay.wake();

    expect(await publishedSoon(later?.id)).not.toBeNull();
    expect(captured.map((m) => m.properties.messageId)).toContain(later?.id);
    expect(await published(refused?.id)).toBeNull();

    const { queue } = await channel.assertQueue('', { exclusive: true });
    await channel.bindQueue(queue, exchange, 'shipment.failed');
    expect(await publishedSoon(refused?.id)).not.toBeNull();
    const arrived = await eventually(
      () => channel.get(queue, { noAck: true }),
      (m) => m !== false,
      5_000,
    );
    expect(arrived ? arrived.properties.messageId : undefined).toBe(refused?.id);
    await channel.deleteQueue(queue);
  });
});

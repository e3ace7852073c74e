/**
 * The runner's metrics and spans against a real RabbitMQ, with a service of its own whose handler
 * fails on purpose: every delivery counted once by outcome, and a retry or a parking as an event
 * of the consumer span, received by a real OTLP/HTTP (JSON) receiver.
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import amqp, { type Channel, type ChannelModel } from 'amqplib';
import type { Migration } from 'kysely/migration';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SagaEvent } from '../../common/events.ts';
import { startService } from '../../common/service.ts';
import { anOrderCreated } from '../../support/builders.ts';
import { OtlpReceiver, SPAN_KIND } from '../../support/otlp.ts';
import { AMQP_URL, deleteTopology } from '../../support/system.ts';
import { eventually } from '../support/wait.ts';

const exchange = `test-telemetry-${process.pid}`;
const dataDir = mkdtempSync(join(tmpdir(), 'telemetry-'));
const migrations: Record<string, Migration> = {};

let receiver: OtlpReceiver;
let service: Awaited<ReturnType<typeof startService<unknown, undefined>>>;
let connection: ChannelModel;
let channel: Channel;

beforeAll(async () => {
  receiver = await OtlpReceiver.start();
  service = await startService<unknown, undefined>(
    {
      name: 'shipment',
      migrations,
      store: () => undefined,
      handlers: {
        'order.created': (event) => {
          if (event.data.customerId === 'always-fails') throw new Error('always fails');
          return [];
        },
      },
    },
    {
      AMQP_URL,
      SAGA_EXCHANGE: exchange,
      DATA_DIR: dataDir,
      SHIPMENT_PORT: '0',
      LOG_LEVEL: 'silent',
      RETRY_ATTEMPTS: '3',
      RETRY_BASE_DELAY_MS: '50',
      OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint,
      OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
      OTEL_BSP_SCHEDULE_DELAY: '50',
    },
  );
  connection = await amqp.connect(AMQP_URL);
  channel = await connection.createChannel();
});

afterAll(async () => {
  await service?.stop();
  await connection?.close();
  await deleteTopology(exchange);
  await receiver?.close();
  rmSync(dataDir, { recursive: true, force: true });
});

function publish(event: SagaEvent | { id: string }, raw?: Buffer) {
  channel.publish(exchange, 'order.created', raw ?? Buffer.from(JSON.stringify(event)), {
    persistent: true,
    messageId: event.id,
    contentType: 'application/json',
  });
}

const count = (text: string, outcome: string) =>
  Number(
    new RegExp(
      `^saga_messages_total\\{routing_key="order.created",outcome="${outcome}"\\} (\\d+)$`,
      'm',
    ).exec(text)?.[1] ?? 0,
  );

describe('telemetry of the runner', () => {
  it('counts each delivery once by outcome, and shows retries and parking on the consumer spans', async () => {
    const good = [anOrderCreated(), anOrderCreated(), anOrderCreated()];
    const always = anOrderCreated();
    always.data = { ...always.data, customerId: 'always-fails' };
    const twice = anOrderCreated();
    for (const event of [...good, always, twice, twice]) publish(event);
    const malformed = { id: randomUUID() };
    publish(malformed, Buffer.from('{ not json'));

    // 3 good, 3 attempts at `always` (RETRY_ATTEMPTS), `twice` twice, the malformed one: 9 deliveries.
    const url = `http://127.0.0.1:${service.app.http.port}/metrics`;
    const text = await eventually(
      async () => (await fetch(url)).text(),
      (t) => ['handled', 'duplicate', 'retried', 'parked'].reduce((n, o) => n + count(t, o), 0) >= 9,
    );
    expect({
      handled: count(text, 'handled'),
      duplicate: count(text, 'duplicate'),
      retried: count(text, 'retried'),
      parked: count(text, 'parked'),
    }).toEqual({ handled: 4, duplicate: 1, retried: 2, parked: 2 });
    expect(text).toMatch(/^saga_handler_duration_seconds_count\{routing_key="order.created"\} 9$/m);

    const spansOf = (id: string) =>
      receiver.spans.filter(
        (s) => s.kind === SPAN_KIND.consumer && s.attributes['messaging.message.id'] === id,
      );
    const parked = await eventually(
      () => spansOf(always.id),
      (s) => s.length >= 3,
    );
    expect(parked.map((s) => s.events.map((e) => e.name)).sort()).toEqual([
      ['parked'],
      ['retry scheduled'],
      ['retry scheduled'],
    ]);
    expect(parked.find((s) => s.attributes['saga.attempt'] === 1)).toMatchObject({
      status: 2,
      attributes: {
        'saga.outcome': 'retried',
        'messaging.rabbitmq.destination.routing_key': 'order.created',
      },
    });
    expect(spansOf(good[0]?.id ?? '')[0]).toMatchObject({
      status: 0,
      attributes: { 'saga.outcome': 'handled' },
    });
    expect(parked.find((s) => s.events[0]?.name === 'parked')?.events[0]?.attributes).toMatchObject({
      'saga.dead_reason': 'retries-exhausted',
    });
    const bad = await eventually(
      () => spansOf(malformed.id),
      (s) => s.length >= 1,
    );
    expect(bad[0]?.events[0]?.attributes).toMatchObject({ 'saga.dead_reason': 'malformed-json' });
    expect(bad[0]?.name).toBe(`process ${exchange}.shipment`);
  });
});

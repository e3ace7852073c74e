/**
 * The runner's pipeline over a transport of the test's own (deliveries in, settlements recorded)
 * and a real SQLite database: what it settles for each delivery, and what its hooks hear. The same
 * pipeline against RabbitMQ is test/integration/runner.test.ts.
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { loadConfig } from '../../common/config.ts';
import { openDatabase } from '../../common/db.ts';
import { emit } from '../../common/events.ts';
import { createLogger } from '../../common/logger.ts';
import type { OutboxRelay } from '../../common/outbox.ts';
import { Runner, type SettledDelivery } from '../../common/runner.ts';
import type { Delivery, Settlement, Transport } from '../../common/transport.ts';
import { anEvent, anOrderCreated } from '../../support/builders.ts';
import { eventually } from '../support/wait.ts';

/** A transport that hands out what the test delivers and records how the runner settles it. */
class RecordingTransport implements Transport {
  readonly queue = 'test.runner';
  readonly handled: Delivery[] = [];
  readonly retried: { delivery: Delivery; tier: number; delayMs: number }[] = [];
  readonly parked: { delivery: Delivery; reason: string; error: string }[] = [];
  private listener?: (delivery: Delivery) => void;

  readonly settlement: Settlement = {
    handled: (deliveries) => {
      this.handled.push(...deliveries);
    },
    retry: async (delivery, tier, delayMs) => {
      this.retried.push({ delivery, tier, delayMs });
    },
    park: async (delivery, reason, error) => {
      this.parked.push({ delivery, reason, error });
    },
  };

  async consume(listener: (delivery: Delivery) => void): Promise<void> {
    this.listener = listener;
  }

  async stopConsuming(): Promise<void> {
    this.listener = undefined;
  }

  deliver(body: unknown, overrides: Partial<Delivery> = {}): Delivery {
    const content = Buffer.isBuffer(body) ? body : Buffer.from(JSON.stringify(body));
    const delivery: Delivery = {
      content,
      headers: {},
      messageId: (body as { id?: string }).id,
      type: undefined,
      routingKey: 'order.created',
      redelivered: false,
      attempt: 1,
      ...overrides,
    };
    this.listener?.(delivery);
    return delivery;
  }
}

let behaviour: 'ok' | 'throw' = 'ok';
const dataDir = mkdtempSync(join(tmpdir(), 'runner-unit-'));
const config = loadConfig('shipment', { DATA_DIR: dataDir, RETRY_ATTEMPTS: '3', RETRY_BASE_DELAY_MS: '100' });
const log = createLogger('shipment', 'silent');
const relay = { wake: () => {} } as unknown as OutboxRelay;
let db: Awaited<ReturnType<typeof openDatabase>>;
let transport: RecordingTransport;
let heard: SettledDelivery[];
let runner: Runner<unknown, object>;

beforeAll(async () => {
  db = await openDatabase(dataDir, 'shipment', {});
});

beforeEach(async () => {
  behaviour = 'ok';
  transport = new RecordingTransport();
  heard = [];
  runner = new Runner<unknown, object>({
    db,
    transport,
    relay,
    store: () => ({}),
    handlers: {
      'order.created': (event) => {
        if (behaviour === 'throw') throw new Error('transient failure');
        return [emit('order.completed', { orderId: event.data.orderId })];
      },
    },
    hooks: { settled: (delivery) => heard.push(delivery) },
    config,
    log,
  });
  await runner.start();
  return () => runner.stop(Date.now() + 1000);
});

afterAll(async () => {
  await db?.destroy();
  rmSync(dataDir, { recursive: true, force: true });
});

const heardOnce = () =>
  eventually(
    () => heard,
    (h) => h.length > 0,
    5_000,
    5,
  );

describe('the runner, over any transport', () => {
  it('settles a handled delivery as handled, and its hook hears it with its routing key and id', async () => {
    const event = anOrderCreated();

    const delivery = transport.deliver(event);
    const [settled] = await heardOnce();

    expect(transport.handled).toEqual([delivery]);
    expect(settled).toMatchObject({ outcome: 'handled', routingKey: 'order.created', messageId: event.id });
    expect(settled?.durationMs).toBeGreaterThanOrEqual(0);
  });

  it('settles a second delivery of the same message as handled, and the hook hears a duplicate', async () => {
    const event = anOrderCreated();
    transport.deliver(event);
    await heardOnce();

    transport.deliver(event, { redelivered: true });
    await eventually(
      () => heard,
      (h) => h.length === 2,
      5_000,
      5,
    );

    expect(heard.map((h) => h.outcome)).toEqual(['handled', 'duplicate']);
    expect(transport.handled).toHaveLength(2);
  });

  it('asks the transport to retry a failed first attempt from the first tier', async () => {
    behaviour = 'throw';

    const delivery = transport.deliver(anOrderCreated());
    const [settled] = await heardOnce();

    expect(transport.retried).toEqual([{ delivery, tier: 0, delayMs: 100 }]);
    expect(settled).toMatchObject({ outcome: 'retried', attempt: 1, delayMs: 100 });
    expect(transport.handled).toEqual([]);
  });

  it('asks the transport to park a delivery whose last attempt failed, with the error', async () => {
    behaviour = 'throw';

    const delivery = transport.deliver(anOrderCreated(), { attempt: 3 });
    const [settled] = await heardOnce();

    expect(transport.parked).toEqual([{ delivery, reason: 'retries-exhausted', error: 'transient failure' }]);
    expect(settled).toMatchObject({ outcome: 'parked', reason: 'retries-exhausted' });
  });

  it('parks a message that is not JSON at once, without calling the handler', async () => {
    behaviour = 'throw';

    transport.deliver(Buffer.from('{not json'), { messageId: 'poison' });
    const [settled] = await heardOnce();

    expect(transport.parked.map((p) => p.reason)).toEqual(['malformed-json']);
    expect(transport.retried).toEqual([]);
    expect(settled).toMatchObject({ outcome: 'parked', reason: 'malformed-json', messageId: 'poison' });
  });

  it('parks an event it has no handler for', async () => {
    const event = anEvent('order.cancelled', { orderId: randomUUID(), reason: 'SHIPMENT_FAILED' });

    transport.deliver(event, { routingKey: 'order.cancelled' });
    const [settled] = await heardOnce();

    expect(settled).toMatchObject({
      outcome: 'parked',
      reason: 'unknown-routing-key',
      routingKey: 'order.cancelled',
    });
  });

  it('keeps handling when a hook throws', async () => {
    const settled = vi.fn();
    await runner.stop(Date.now());
    runner = new Runner<unknown, object>({
      db,
      transport,
      relay,
      store: () => ({}),
      handlers: { 'order.created': () => [] },
      hooks: {
        settled: (delivery) => {
          settled(delivery);
          throw new Error('a broken hook');
        },
      },
      config,
      log,
    });
    await runner.start();

    transport.deliver(anOrderCreated());
    transport.deliver(anOrderCreated());
    await eventually(
      () => transport.handled.length,
      (n) => n === 2,
      5_000,
      5,
    );

    expect(transport.handled).toHaveLength(2);
    expect(settled).toHaveBeenCalledTimes(2);
  });
});

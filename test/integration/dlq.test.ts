/**
 * `npm run dlq` against a real RabbitMQ and the four services as real processes: list what is
 * parked without losing it, replay it to the saga exchange, purge it. The tool runs as a child
 * process, as an operator would run it.
 */
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import amqp, { type ChannelModel, type ConfirmChannel, type ConsumeMessage, type Options } from 'amqplib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { queueNames } from '../../common/broker/topology.ts';
import type { SagaEvent } from '../../common/events.ts';
import type { components } from '../../common/generated/api.ts';
import { ATTEMPT_HEADER, DEAD_HEADER } from '../../common/headers.ts';
import { aLine, anOrderCreated } from '../../support/builders.ts';
import { AMQP_URL, System } from '../../support/system.ts';
import { eventually } from '../support/wait.ts';

type Stock = components['schemas']['Stock'];
type Shipment = components['schemas']['Shipment'];

const ROOT = join(import.meta.dirname, '..', '..');

let system: System;
let connection: ChannelModel;
let channel: ConfirmChannel;
/** Every order.created the exchange routes, as a consumer would receive it. */
const routed: ConsumeMessage[] = [];

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the tool as a child process, stdin not a terminal, against this file's exchange. */
function dlq(args: string[], env: Record<string, string> = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(ROOT, 'scripts', 'dlq.ts'), ...args], {
      cwd: ROOT,
      env: { ...process.env, AMQP_URL, SAGA_EXCHANGE: system.exchange, ...env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    child.stdin.end();
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk.toString();
    });
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), 45_000);
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** The message ids a listing shows, in its order. */
const listedIds = (stdout: string) => [...stdout.matchAll(/^\s+\d+\. (\S+)$/gm)].map((m) => m[1]);

const inventory = () => queueNames(system.exchange, 'inventory');

async function parkedInInventory(): Promise<number> {
  const probe = await connection.createChannel();
  try {
    return (await probe.checkQueue(inventory().deadLetterQueue)).messageCount;
  } finally {
    await probe.close();
  }
}

async function publish(exchange: string, routingKey: string, content: Buffer, options: Options.Publish) {
  channel.publish(exchange, routingKey, content, { persistent: true, mandatory: true, ...options });
  await channel.waitForConfirms();
}

/** A valid order.created of 7 widgets, as a customer of these tests places it. */
const anOrderCreatedHere = () =>
  anOrderCreated({ customerId: 'customer-dlq', items: [aLine('WIDGET-1', 7)] });

/** The event as the runner would have parked it after its retries ran out on a transient fault. */
async function parkAfterTransientFailure(event: SagaEvent<'order.created'>): Promise<void> {
  await publish(inventory().deadLetterExchange, inventory().queue, Buffer.from(JSON.stringify(event)), {
    messageId: event.id,
    type: event.type,
    correlationId: event.orderId,
    contentType: 'application/json',
    timestamp: Math.floor(Date.now() / 1000),
    headers: {
      traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
      'x-causation-id': 'cause-1',
      [ATTEMPT_HEADER]: 5,
      [DEAD_HEADER.reason]: 'handler-error',
      [DEAD_HEADER.error]: 'SQLITE_BUSY: database is locked',
      [DEAD_HEADER.attempts]: 5,
      [DEAD_HEADER.routingKey]: 'order.created',
      [DEAD_HEADER.queue]: inventory().queue,
      [DEAD_HEADER.at]: new Date().toISOString(),
    },
  });
}

const stockOf = async (sku: string) => (await system.get<Stock>('inventory', `/stock/${sku}`)).body;
const shipmentsOf = async (orderId: string) =>
  (await system.get<Shipment[]>('shipment', `/shipments?orderId=${orderId}`)).body;

const poisonId = randomUUID();
const invalidId = randomUUID();
const valid = anOrderCreatedHere();

beforeAll(async () => {
  system = await System.start();
  connection = await amqp.connect(AMQP_URL);
  channel = await connection.createConfirmChannel();
  const { queue } = await channel.assertQueue('', { exclusive: true });
  await channel.bindQueue(queue, system.exchange, 'order.created');
  await channel.bindQueue(queue, system.exchange, 'inventory.reserved');
  await channel.consume(queue, (m) => m && routed.push(m), { noAck: true });
}, 120_000);

afterAll(async () => {
  await connection?.close().catch(() => {});
  await system?.destroy();
}, 120_000);

describe('npm run dlq', () => {
  it('lists the messages inventory parked, with their reasons, and leaves them parked', async () => {
    await publish(system.exchange, 'order.created', Buffer.from('{not json'), {
      messageId: poisonId,
      contentType: 'application/json',
    });
    const invalid = { ...anOrderCreatedHere(), id: invalidId, data: { orderId: 'nope' } };
    await publish(system.exchange, 'order.created', Buffer.from(JSON.stringify(invalid)), {
      messageId: invalidId,
      type: 'order.created',
      contentType: 'application/json',
    });
    expect(await eventually(parkedInInventory, (n) => n === 2)).toBe(2);

    const all = await dlq(['list']);

    expect(all.code, all.stderr).toBe(0);
    expect(all.stdout).toContain(`inventory: 2 parked in ${inventory().deadLetterQueue}`);
    // Only inventory consumes order.created (order-creation records its own events as it emits them).
    expect(all.stdout).toMatch(/^order-creation: 0 parked/m);
    expect(all.stdout).toMatch(/^replenishment: 0 parked/m);
    expect(all.stdout).toMatch(/^shipment: 0 parked/m);
    const poisonLine = all.stdout.slice(all.stdout.indexOf(poisonId));
    expect(poisonLine).toMatch(
      /routing key: order\.created\s+reason: malformed-json\s+attempts: 1\s+parked: \d{4}-/,
    );
    expect(poisonLine).toMatch(/error: body is not JSON/);
    expect(all.stdout.slice(all.stdout.indexOf(invalidId))).toMatch(/reason: schema-invalid/);
    // Read, not consumed: both are still there, and a second listing shows them again, in the same order.
    expect(await eventually(parkedInInventory, (n) => n === 2)).toBe(2);
    for (let i = 0; i < 2; i++) {
      const again = await dlq(['list', '--service', 'inventory']);
      expect(listedIds(again.stdout)).toEqual([poisonId, invalidId]);
    }

    const one = await dlq(['list', '--service', 'inventory', '--limit', '1']);

    expect(one.code, one.stderr).toBe(0);
    expect(one.stdout).not.toContain('order-creation:');
    expect([one.stdout.includes(poisonId), one.stdout.includes(invalidId)].filter(Boolean)).toHaveLength(1);
    expect(one.stdout).toContain('… and 1 more');
    expect(await eventually(parkedInInventory, (n) => n === 2)).toBe(2);
  });

  it('replays a parked message to the exchange with its original routing key: the order is reserved and shipped', async () => {
    await parkAfterTransientFailure(valid);
    expect(await eventually(parkedInInventory, (n) => n === 3)).toBe(3);
    const before = await stockOf('WIDGET-1');

    const run = await dlq(['replay', '--service', 'inventory']);

    expect(run.code, `${run.stdout}\n${run.stderr}`).toBe(0);
    expect(run.stdout).toContain('inventory: replayed 3 of 3 parked messages');
    const shipments = await eventually(
      () => shipmentsOf(valid.orderId as string),
      (s) => s.length > 0,
    );
    expect(shipments).toHaveLength(1);
    const after = await eventually(
      () => stockOf('WIDGET-1'),
      (s) => s.onHand === before.onHand - 7 && s.reserved === before.reserved,
    );
    expect(after).toMatchObject({ onHand: before.onHand - 7, reserved: before.reserved });
    // The two broken ones are parked again (with a fresh reason); the valid one is gone for good.
    expect(await eventually(parkedInInventory, (n) => n === 2)).toBe(2);
    const listed = await dlq(['list', '--service', 'inventory']);
    expect(listed.stdout).not.toContain(valid.id);
    expect(listed.stdout).toContain(poisonId);
  });

  it('sends the message back to the queue that parked it only, with its saga context', async () => {
    // Not through the exchange: any other consumer of order.created would get it again.
    expect(routed.filter((m) => m.properties.messageId === valid.id)).toHaveLength(0);
    // Inventory handled it with its headers intact: its answer continues the trace and names its cause.
    const answer = routed.find(
      (m) => m.fields.routingKey === 'inventory.reserved' && m.properties.correlationId === valid.orderId,
    );
    expect(answer).toBeDefined();
    expect(String(answer?.properties.headers?.traceparent)).toMatch(/^00-0af7651916cd43dd8448eb211c80319c-/);
    expect(answer?.properties.headers?.['x-causation-id']).toBe(valid.id);
  });

  it('replaying a message already handled has no second effect', async () => {
    const before = await stockOf('WIDGET-1');
    await parkAfterTransientFailure(valid); // the same message, parked once more
    expect(await eventually(parkedInInventory, (n) => n === 3)).toBe(3);

    const run = await dlq(['replay', '--service', 'inventory']);

    expect(run.code, `${run.stdout}\n${run.stderr}`).toBe(0);
    expect(run.stdout).toContain('inventory: replayed 3 of 3 parked messages');
    expect(await eventually(parkedInInventory, (n) => n === 2)).toBe(2);
    await new Promise((r) => setTimeout(r, 1500)); // room for a second, wrong, effect
    expect(await shipmentsOf(valid.orderId as string)).toHaveLength(1);
    expect(await stockOf('WIDGET-1')).toMatchObject({ onHand: before.onHand, reserved: before.reserved });
  });

  it('refuses to purge without --yes when there is no terminal to ask', async () => {
    const run = await dlq(['purge', '--service', 'inventory']);

    expect(run.code).toBe(1);
    expect(run.stdout).toContain('inventory: 2 parked');
    expect(run.stderr).toContain('--yes');
    expect(await parkedInInventory()).toBe(2);
  });

  it('purges a service’s dead-letter queue with --yes', async () => {
    const run = await dlq(['purge', '--service', 'inventory', '--yes']);

    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toContain('inventory: purged 2');
    expect(await parkedInInventory()).toBe(0);
    expect((await dlq(['list', '--service', 'inventory'])).stdout).toContain('inventory: 0 parked');
  });

  it.each([
    [[]],
    [['frob']],
    [['list', '--bogus']],
    [['list', '--service', 'warehouse']],
    [['list', '--limit', 'many']],
    [['purge', '--limit', '3']],
  ])('answers %j with the usage text and exit code 2', async (args) => {
    const run = await dlq(args);

    expect(run.code).toBe(2);
    expect(run.stderr).toContain('usage: npm run dlq');
  });

  it('names the broker, password hidden, when it cannot reach it', async () => {
    const run = await dlq(['list'], { AMQP_URL: 'amqp://guest:s3cret@127.0.0.1:1' });

    expect(run.code).toBe(2);
    expect(run.stderr).toContain('amqp://guest:***@127.0.0.1:1');
    expect(run.stderr + run.stdout).not.toContain('s3cret');
  });
});

/**
 * What a service declares on the broker, and the names of it: the saga's topic exchange, the
 * service's work queue bound to its subscriptions, its delay queues (one per retry tier) and its
 * dead-letter queue on the saga's dead-letter exchange.
 */
import type { Channel } from 'amqplib';
import type { Config } from '../config.ts';
import { ROUTING_KEYS, type RoutingKey } from '../events.ts';

/** Names of everything a service declares, all derived from the exchange and the service name. */
export interface QueueNames {
  exchange: string;
  queue: string;
  /** Where messages that cannot be handled are parked, with their reason in headers. */
  deadLetterExchange: string;
  deadLetterQueue: string;
  /** Delay queues: a message waits there for its TTL, then dead-letters back to the work queue. */
  retryQueue: (tier: number) => string;
}

/** Where every service of the saga parks its messages (routing key: the parking queue's name). */
export const deadLetterExchangeOf = (exchange: string): string => `${exchange}.dead-letter`;

/** The names a service's topology gets under the saga's exchange. */
export function queueNames(exchange: string, service: string): QueueNames {
  const queue = `${exchange}.${service}`;
  return {
    exchange,
    queue,
    deadLetterExchange: deadLetterExchangeOf(exchange),
    deadLetterQueue: `${queue}.dead-letter`,
    retryQueue: (tier) => `${queue}.retry.${tier}`,
  };
}

/**
 * How far a retried copy's wait strays from its tier's delay, either way (±25 %), so that copies
 * that failed together do not all come back together. The tier queue's TTL is the delay plus it.
 */
export const RETRY_JITTER = 0.25;

/** What one service declares. */
export interface Topology {
  names: QueueNames;
  /** The routing keys the work queue is bound to: the service's subscriptions, and only those. */
  bindings: readonly RoutingKey[];
  /** Delay of each retry tier, in ms; tier i holds a message for about delays[i]. */
  retryDelaysMs: readonly number[];
}

/**
 * On a cluster a classic queue lives on one node: while that node is down, declaring the queue
 * fails with 404 and closes the channel. The work queue is a quorum queue, on every node.
 */
function homeNodeDown(error: unknown): boolean {
  const { code, message } = error as { code?: number; message?: string };
  return code === 404 && /home node .* is down/.test(message ?? '');
}

/**
 * Declares the topology (idempotent: run after every connect). A queue declared with other
 * arguments fails with 406. Resolves with the delay and dead-letter queues that could not be
 * declared because the cluster node they live on is down: the saga goes on without them, and a
 * retry or a parking waits in the work queue meanwhile (see settlement.ts).
 */
export async function declareTopology(
  open: () => Promise<Channel>,
  topology: Topology,
  config: Pick<Config, 'queueType' | 'deliveryLimit'>,
): Promise<string[]> {
  let channel = await open();
  const { names, bindings, retryDelaysMs } = topology;
  const { queueType, deliveryLimit } = config;
  await channel.assertExchange(names.exchange, 'topic', { durable: true });
  await channel.assertExchange(names.deadLetterExchange, 'direct', { durable: true });

  const quorum: Record<string, unknown> =
    queueType === 'quorum'
      ? {
          'x-queue-type': 'quorum',
          'x-delivery-limit': deliveryLimit,
          // The broker keeps a message until the dead-letter queue confirms it has it.
          'x-dead-letter-strategy': 'at-least-once',
          'x-overflow': 'reject-publish',
        }
      : { 'x-queue-type': 'classic' };
  await channel.assertQueue(names.queue, {
    durable: true,
    arguments: {
      ...quorum,
      'x-dead-letter-exchange': names.deadLetterExchange,
      'x-dead-letter-routing-key': names.queue,
    },
  });
  for (const key of bindings) await channel.bindQueue(names.queue, names.exchange, key);
  // Bindings outlive the code that made them: drop any an earlier version left (a no-op if none).
  for (const key of ROUTING_KEYS.filter((k) => !bindings.includes(k)))
    await channel.unbindQueue(names.queue, names.exchange, key);

  const unavailable: string[] = [];
  const sideQueue = async (queue: string, declare: (c: Channel) => Promise<unknown>) => {
    try {
      await declare(channel);
    } catch (error) {
      if (!homeNodeDown(error)) throw error;
      unavailable.push(queue);
      channel = await open();
    }
  };
  // Classic on purpose: parked messages are listed (and requeued) by operators, and a quorum
  // queue's delivery limit would one day drop them.
  await sideQueue(names.deadLetterQueue, async (c) => {
    await c.assertQueue(names.deadLetterQueue, { durable: true, arguments: { 'x-queue-type': 'classic' } });
    await c.bindQueue(names.deadLetterQueue, names.deadLetterExchange, names.queue);
  });

  for (const [tier, delay] of retryDelaysMs.entries()) {
    await sideQueue(names.retryQueue(tier), (c) =>
      c.assertQueue(names.retryQueue(tier), {
        durable: true,
        arguments: {
          'x-queue-type': 'classic',
          'x-message-ttl': Math.round(delay * (1 + RETRY_JITTER)),
          'x-dead-letter-exchange': '',
          'x-dead-letter-routing-key': names.queue,
        },
      }),
    );
  }
  await channel.close();
  return unavailable;
}

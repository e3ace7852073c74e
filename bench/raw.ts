/**
 * The raw ceiling of the broker on this machine: one amqplib publisher and one consumer on a
 * temporary durable queue of the type the services use, persistent messages about the size of a
 * saga event, publisher confirms in windows, manual ack with the services' prefetch.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { performance } from 'node:perf_hooks';
import amqp from '../common/broker/client.ts';
import { anOrderCreated } from '../test/support/builders.ts';

export interface RawOptions {
  url: string;
  queueType: 'quorum' | 'classic';
  /** Stop publishing after this many messages… */
  maxMessages: number;
  /** …or after this long, whichever comes first. */
  maxSeconds: number;
  /** Messages published before waiting for their confirms. */
  window: number;
  prefetch: number;
}

export interface RawResult {
  queueType: 'quorum' | 'classic';
  messageBytes: number;
  window: number;
  prefetch: number;
  published: number;
  consumed: number;
  /** From the first publish to the last confirm. */
  publishSeconds: number;
  /** From the first publish to the last ack. */
  endToEndSeconds: number;
  publishedPerSecond: number;
  /** Messages published, confirmed, delivered and acked per second, end to end. */
  messagesPerSecond: number;
}

/** A body shaped like an `order.created` envelope (~400 bytes of JSON). */
export const sampleEvent = (): Buffer => Buffer.from(JSON.stringify(anOrderCreated()));

export async function measureRaw(options: RawOptions): Promise<RawResult> {
  const queue = `bench-raw-${process.pid}-${randomBytes(3).toString('hex')}`;
  const publisherConnection = await amqp.connect(options.url);
  const consumerConnection = await amqp.connect(options.url);
  let messageBytes = 0;
  try {
    const publisher = await publisherConnection.createConfirmChannel();
    await publisher.assertQueue(queue, { durable: true, arguments: { 'x-queue-type': options.queueType } });
    const consumer = await consumerConnection.createChannel();
    await consumer.prefetch(options.prefetch);

    let published = 0;
    let consumed = 0;
    let publishing = true;
    let lastAckAt = 0;
    let allConsumed: () => void = () => {};
    const done = new Promise<void>((resolve) => {
      allConsumed = resolve;
    });
    await consumer.consume(
      queue,
      (message) => {
        if (!message) return;
        consumer.ack(message);
        consumed += 1;
        lastAckAt = performance.now();
        if (!publishing && consumed >= published) allConsumed();
      },
      { noAck: false },
    );

    const started = performance.now();
    const stopAt = started + options.maxSeconds * 1000;
    while (published < options.maxMessages && performance.now() < stopAt) {
      for (let i = 0; i < options.window && published < options.maxMessages; i++) {
        const content = sampleEvent();
        messageBytes = content.length;
        const id = randomUUID();
        const written = publisher.publish('', queue, content, {
          persistent: true,
          mandatory: true,
          messageId: id,
          type: 'order.created',
          correlationId: id,
          contentType: 'application/json',
          timestamp: Math.floor(Date.now() / 1000),
          headers: {
            traceparent: `00-${randomBytes(16).toString('hex')}-${randomBytes(8).toString('hex')}-01`,
            'x-causation-id': id,
          },
        });
        published += 1;
        if (!written) await once(publisher, 'drain');
      }
      await publisher.waitForConfirms();
    }
    const publishEnded = performance.now();
    publishing = false;
    if (consumed >= published) allConsumed();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([done, new Promise((resolve) => (timer = setTimeout(resolve, 30_000)))]);
    clearTimeout(timer);

    const publishSeconds = (publishEnded - started) / 1000;
    const endToEndSeconds = (Math.max(lastAckAt, publishEnded) - started) / 1000;
    await publisher.deleteQueue(queue);
    return {
      queueType: options.queueType,
      messageBytes,
      window: options.window,
      prefetch: options.prefetch,
      published,
      consumed,
      publishSeconds,
      endToEndSeconds,
      publishedPerSecond: published / publishSeconds,
      messagesPerSecond: consumed / endToEndSeconds,
    };
  } catch (error) {
    // Best effort: never leave the temporary queue behind.
    try {
      const channel = await publisherConnection.createChannel();
      await channel.deleteQueue(queue);
    } catch {}
    throw error;
  } finally {
    await consumerConnection.close().catch(() => {});
    await publisherConnection.close().catch(() => {});
  }
}

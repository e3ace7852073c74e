/**
 * Settling deliveries on RabbitMQ: ack what is committed (one `multiple` ack for a burst where it
 * can), schedule a retry as a copy in a delay queue, park a copy on the dead-letter exchange. A
 * delivery is acked only once its copy is confirmed by the broker; if the copy cannot be published,
 * the delivery goes back to its queue (a retry) or to the queue's own dead-letter exchange (parking).
 */
import type { Channel, ConsumeMessage } from 'amqplib';
import { nowIso } from '../db.ts';
import { ATTEMPT_HEADER, DEAD_HEADER } from '../headers.ts';
import type { Logger } from '../logger.ts';
import type { Delivery, Settlement } from '../transport.ts';
import type { Broker } from './connection.ts';
import { RETRY_JITTER } from './topology.ts';

/** One consumer channel: deliveries are acked on the channel that delivered them. */
export interface ConsumerChannel {
  readonly channel: Channel;
  /** The queue it consumes. */
  readonly queue: string;
  /** Delivery tags not settled yet: what a `multiple` ack would cover. */
  readonly unacked: Set<number>;
}

const NO_HEADERS: Readonly<Record<string, unknown>> = Object.freeze({});

/** A delivery from RabbitMQ, as the runner sees it; read from the message when asked. */
export class AmqpDelivery implements Delivery {
  readonly message: ConsumeMessage;
  readonly consumer: ConsumerChannel;

  constructor(message: ConsumeMessage, consumer: ConsumerChannel) {
    this.message = message;
    this.consumer = consumer;
    consumer.unacked.add(message.fields.deliveryTag);
  }

  get content(): Buffer {
    return this.message.content;
  }

  get headers(): Readonly<Record<string, unknown>> {
    return this.message.properties.headers ?? NO_HEADERS;
  }

  get messageId(): string | undefined {
    return this.message.properties.messageId;
  }

  get type(): string | undefined {
    return this.message.properties.type;
  }

  get redelivered(): boolean {
    return this.message.fields.redelivered;
  }

  get routingKey(): string {
    const kept = this.message.properties.headers?.[DEAD_HEADER.routingKey];
    if (typeof kept === 'string') return kept;
    // Back from a delay queue, the routing key is the work queue's name.
    const { routingKey } = this.message.fields;
    return routingKey === this.consumer.queue ? String(this.message.properties.type ?? '') : routingKey;
  }

  get attempt(): number {
    const value = Number(this.message.properties.headers?.[ATTEMPT_HEADER] ?? 1);
    return Number.isInteger(value) && value > 0 ? value : 1;
  }
}

/** The settlement of the deliveries of one service's Broker. */
export class BrokerSettlement implements Settlement {
  private readonly broker: Broker;
  private readonly log: Logger;

  constructor(broker: Broker, log: Logger) {
    this.broker = broker;
    this.log = log;
  }

  /**
   * One `multiple` ack for the burst when every unacked delivery up to its last one is in it
   * (the usual case); otherwise one ack each, so that a message still being parked or retried
   * is never acked before its copy is safe.
   */
  handled(deliveries: readonly Delivery[]): void {
    const burst = deliveries as readonly AmqpDelivery[];
    const [first] = burst;
    if (!first) return;
    const { consumer } = first;
    const tags = new Set(burst.map((d) => d.message.fields.deliveryTag));
    const last = burst.reduce((a, b) =>
      b.message.fields.deliveryTag > a.message.fields.deliveryTag ? b : a,
    );
    const lastTag = last.message.fields.deliveryTag;
    const oneChannel = burst.every((d) => d.consumer === consumer);
    if (burst.length > 1 && oneChannel && [...consumer.unacked].every((t) => t > lastTag || tags.has(t))) {
      for (const tag of tags) consumer.unacked.delete(tag);
      settle(() => consumer.channel.ack(last.message, true));
      return;
    }
    for (const delivery of burst) ack(delivery);
  }

  /** Publishes a copy to the tier's delay queue, as attempt + 1; then acks the delivery. */
  async retry(delivery: Delivery, tier: number, delayMs: number): Promise<void> {
    const { message } = delivery as AmqpDelivery;
    try {
      await this.broker.publish([
        {
          exchange: '',
          routingKey: this.broker.names.retryQueue(tier),
          content: message.content,
          options: {
            ...message.properties,
            // The tier queue's TTL is the delay plus the jitter: a message waits at most the jitter
            // width behind a longer-lived one, no real head-of-line blocking.
            expiration: String(Math.round(delayMs * (1 - RETRY_JITTER + Math.random() * 2 * RETRY_JITTER))),
            headers: {
              ...message.properties.headers,
              [ATTEMPT_HEADER]: delivery.attempt + 1,
              [DEAD_HEADER.routingKey]: delivery.routingKey,
            },
          },
        },
      ]);
      ack(delivery as AmqpDelivery);
    } catch (publishError) {
      this.log.warn(
        { err: (publishError as Error).message },
        'could not schedule the retry; the message goes back to the queue',
      );
      nack(delivery as AmqpDelivery, true);
    }
  }

  /** Publishes the message unchanged to the dead-letter exchange, with headers saying why; then acks it. */
  async park(delivery: Delivery, reason: string, error: string): Promise<void> {
    const { message } = delivery as AmqpDelivery;
    const { names } = this.broker;
    try {
      await this.broker.publish([
        {
          exchange: names.deadLetterExchange,
          routingKey: names.queue,
          content: message.content,
          options: {
            ...message.properties,
            expiration: undefined,
            headers: {
              ...message.properties.headers,
              [DEAD_HEADER.reason]: reason,
              [DEAD_HEADER.error]: error.slice(0, 1000),
              [DEAD_HEADER.attempts]: delivery.attempt,
              [DEAD_HEADER.routingKey]: delivery.routingKey,
              [DEAD_HEADER.queue]: names.queue,
              [DEAD_HEADER.at]: nowIso(),
            },
          },
        },
      ]);
      ack(delivery as AmqpDelivery);
    } catch {
      // The queue's own dead-letter exchange parks it (with x-death headers instead of ours).
      nack(delivery as AmqpDelivery, false);
    }
  }
}

function ack({ consumer, message }: AmqpDelivery): void {
  consumer.unacked.delete(message.fields.deliveryTag);
  settle(() => consumer.channel.ack(message));
}

function nack({ consumer, message }: AmqpDelivery, requeue: boolean): void {
  consumer.unacked.delete(message.fields.deliveryTag);
  settle(() => consumer.channel.nack(message, false, requeue));
}

// A channel may have closed since the delivery (broker restart): the message will be redelivered
// and the inbox makes the second handling a no-op, so a failed ack is not an error.
function settle(acknowledge: () => void): void {
  try {
    acknowledge();
  } catch {}
}

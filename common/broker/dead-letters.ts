/**
 * The operator's side of the dead-letter queues: count what is parked, read it without taking it,
 * send it back to the queue that parked it, purge it. What `npm run dlq` does on the broker.
 */
import amqp, { type ChannelModel, type ConfirmChannel, type GetMessage, type Options } from 'amqplib';
import { ATTEMPT_HEADER, DEAD_HEADER } from '../headers.ts';

/** A parked message as an operator sees it. */
export interface ParkedMessage {
  messageId: string | undefined;
  /** The AMQP type: in the saga, the routing key it was published with. */
  type: string | undefined;
  headers: Readonly<Record<string, unknown>>;
}

/** What the broker itself records when it dead-letters a message (the first `x-death` entry). */
export interface BrokerDeath {
  reason?: unknown;
  count?: unknown;
  time?: unknown;
  'routing-keys'?: unknown;
}

/** What a replay did: how many went back, and why the others stayed (or why it stopped). */
export interface Replayed {
  replayed: number;
  problems: string[];
}

/** Headers the dead-lettering added (ours and the broker's): a replayed message starts afresh without them. */
const DEAD_LETTER_HEADERS = new Set<string>([
  ...Object.values(DEAD_HEADER),
  ATTEMPT_HEADER,
  'x-death',
  'x-first-death-exchange',
  'x-first-death-queue',
  'x-first-death-reason',
  'x-last-death-exchange',
  'x-last-death-queue',
  'x-last-death-reason',
]);

/** A header value as text: strings as they are, AMQP timestamps as ISO dates, the rest as JSON. */
export function headerText(value: unknown): string | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value === 'string') return value;
  if (Buffer.isBuffer(value)) return value.toString('utf8');
  if (typeof value === 'object' && (value as { '!'?: unknown })['!'] === 'timestamp') {
    return new Date(Number((value as { value: unknown }).value) * 1000).toISOString();
  }
  return typeof value === 'object' ? JSON.stringify(value) : String(value);
}

/** The broker's own record, when it parked the message itself (a delivery limit, a refused publish). */
export function brokerDeath(message: ParkedMessage): BrokerDeath | undefined {
  const deaths: unknown = message.headers['x-death'];
  return Array.isArray(deaths) ? (deaths[0] as BrokerDeath) : undefined;
}

/**
 * The routing key the message was first published with: our header when the runner parked it,
 * else the broker's x-death record, else the AMQP type (which the saga sets to the routing key).
 */
export function originalRoutingKey(message: ParkedMessage): string | undefined {
  const kept = headerText(message.headers[DEAD_HEADER.routingKey]);
  if (kept) return kept;
  const keys = brokerDeath(message)?.['routing-keys'];
  if (Array.isArray(keys) && keys.length > 0) return headerText(keys[0]);
  return headerText(message.type);
}

const parked = (message: GetMessage): ParkedMessage => ({
  messageId: message.properties.messageId,
  type: message.properties.type,
  headers: message.properties.headers ?? {},
});

/** One operator's connection to the broker, for the dead-letter queues. */
export class DeadLetters {
  private readonly connection: ChannelModel;

  private constructor(connection: ChannelModel) {
    this.connection = connection;
  }

  /** Connects (or rejects within 10 s), naming the connection `name` on the broker. */
  /** Connects to the first of the cluster's nodes that answers; throws the last node's error. */
  static async connect(urls: readonly string[], name: string): Promise<DeadLetters> {
    let failure: unknown;
    for (const url of urls) {
      try {
        const connection = await amqp.connect(url, {
          timeout: 10_000,
          clientProperties: { connection_name: name },
        });
        connection.on('error', () => {});
        return new DeadLetters(connection);
      } catch (error) {
        failure = error;
      }
    }
    throw failure;
  }

  /** Ready messages in the queue, or undefined when it does not exist (a 404 closes the channel). */
  async count(queue: string): Promise<number | undefined> {
    const channel = await this.connection.createChannel();
    channel.on('error', () => {});
    try {
      return (await channel.checkQueue(queue)).messageCount;
    } catch (error) {
      if ((error as { code?: number }).code === 404) return undefined;
      throw error;
    } finally {
      await channel.close().catch(() => {});
    }
  }

  /**
   * The first `limit` messages, left parked: held unacknowledged on one channel, which is then
   * closed, so that they all return to the queue in their order.
   */
  async peek(queue: string, limit: number): Promise<ParkedMessage[]> {
    const channel = await this.connection.createChannel();
    const seen: ParkedMessage[] = [];
    try {
      while (seen.length < limit) {
        const message = await channel.get(queue, { noAck: false });
        if (!message) break;
        seen.push(parked(message));
      }
    } finally {
      await channel.close();
    }
    return seen;
  }

  /**
   * Sends up to `max` parked messages back to `workQueue`, the queue that parked them (not through
   * the exchange, which would deliver them to every other consumer too), with their body and
   * properties minus the dead-letter headers. A parked copy is acked only once the broker has
   * confirmed its republication; one that cannot go back stays parked.
   */
  async replay(queue: string, workQueue: string, max: number): Promise<Replayed> {
    const channel = await this.connection.createConfirmChannel();
    let returned = false;
    channel.on('return', () => {
      returned = true;
    });
    let closedBy: Error | undefined;
    channel.on('error', (error: Error) => {
      closedBy = error;
    });
    let replayed = 0;
    const problems: string[] = [];
    try {
      for (let i = 0; i < max; i++) {
        const message = await channel.get(queue, { noAck: false });
        if (!message) break;
        const id = message.properties.messageId ?? '(no message id)';
        const routingKey = originalRoutingKey(parked(message));
        if (!routingKey) {
          problems.push(`${id}: no original routing key; left parked`);
          continue; // stays unacked until the channel closes, so it is not fetched again
        }
        returned = false;
        await confirmPublish(channel, workQueue, message, republishOptions(message, routingKey));
        // The broker returns an unroutable message before it confirms it.
        if (returned) {
          problems.push(`${id}: the queue ${workQueue} does not exist; left parked`);
          continue;
        }
        channel.ack(message);
        replayed++;
      }
    } catch (error) {
      problems.push(`stopped: ${(closedBy ?? (error as Error)).message}`);
    } finally {
      await channel.close().catch(() => {});
    }
    return { replayed, problems };
  }

  /** Deletes every message in the queue; resolves with how many there were. */
  async purge(queue: string): Promise<number> {
    const channel = await this.connection.createChannel();
    try {
      return (await channel.purgeQueue(queue)).messageCount;
    } finally {
      await channel.close().catch(() => {});
    }
  }

  async close(): Promise<void> {
    await this.connection.close().catch(() => {});
  }
}

/**
 * The parked message's properties for its republication: unchanged but for the dead-letter
 * headers; the original routing key stays, since the message goes straight to its queue.
 */
function republishOptions(message: GetMessage, routingKey: string): Options.Publish {
  const p = message.properties;
  const headers = {
    ...Object.fromEntries(
      Object.entries(p.headers ?? {}).filter(([name]) => !DEAD_LETTER_HEADERS.has(name.toLowerCase())),
    ),
    [DEAD_HEADER.routingKey]: routingKey,
  };
  const options: Options.Publish = {
    mandatory: true,
    persistent: p.deliveryMode === 2,
    headers,
    contentType: p.contentType,
    contentEncoding: p.contentEncoding,
    correlationId: p.correlationId,
    messageId: p.messageId,
    type: p.type,
    timestamp: p.timestamp,
    appId: p.appId,
    priority: p.priority,
    replyTo: p.replyTo,
  };
  return Object.fromEntries(
    Object.entries(options).filter(([, value]) => value !== undefined),
  ) as Options.Publish;
}

function confirmPublish(
  channel: ConfirmChannel,
  queue: string,
  message: GetMessage,
  options: Options.Publish,
): Promise<void> {
  return new Promise((resolve, reject) => {
    channel.publish('', queue, message.content, options, (error) =>
      error ? reject(error instanceof Error ? error : new Error(`the broker nacked ${queue}`)) : resolve(),
    );
  });
}

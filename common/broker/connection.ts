/**
 * The service's connection to the broker: connect (with bounded retries at start, unbounded
 * reconnection after), declare the topology, publish with confirms and `mandatory`, consume with
 * manual ack. After a reconnect it declares the topology again, opens fresh channels and resumes
 * consuming; after a nack it publishes on a new channel.
 */
import { EventEmitter, once } from 'node:events';
import type { Socket } from 'node:net';
import amqp, { type Channel, type ConfirmChannel, type Options, type RecoveringChannelModel } from 'amqplib';
import { type Config, redactUrl } from '../config.ts';
import type { Logger } from '../logger.ts';
import type { Delivery, Transport } from '../transport.ts';
import { BrokerNodes } from './nodes.ts';
import { AmqpDelivery, BrokerSettlement } from './settlement.ts';
import { declareTopology, type QueueNames, type Topology } from './topology.ts';

/** A message to publish: where to, its body, and its AMQP properties. */
export interface OutgoingMessage {
  exchange: string;
  routingKey: string;
  content: Buffer;
  options: Options.Publish;
}

export class BrokerUnreachableError extends Error {
  override name = 'BrokerUnreachableError';
}

/** A message seen by `watchAll`: as published, nothing settled. */
export interface WatchedMessage {
  routingKey: string;
  /** The event's id (AMQP messageId), if the publisher set one. */
  messageId: string | undefined;
  content: Buffer;
}

/** A publish the broker could not route to any queue (mandatory flag): an error, never silence. */
export class UnroutableError extends Error {
  override name = 'UnroutableError';
}

/** One service's broker: its connection, its topology, and the transport its runner consumes from. */
export class Broker extends EventEmitter<{ ready: []; lost: [Error] }> implements Transport {
  private connection?: RecoveringChannelModel;
  /** The live connection underneath the recovering one, set by each setup. */
  private model?: amqp.ChannelModel;
  private publisher?: ConfirmChannel;
  private consumer?: Channel;
  private consumerTag?: string;
  private listener?: (delivery: Delivery) => void;
  private watcher?: (message: WatchedMessage) => void;
  /** The routing keys the watcher is to see, and its open queue with the keys bound to it. */
  private watchedKeys: readonly string[] = [];
  private watching?: { channel: Channel; queue: string; bound: Set<string> };
  private readonly returned = new Set<string>();
  /** Publisher channels replaced after a nack: closing them is no loss of the connection. */
  private readonly retired = new WeakSet<Channel>();
  private renewing = false;
  private fatal?: Error;
  private closing = false;
  ready = false;
  /** Settles what this broker delivered: acks, retried and parked copies. */
  readonly settlement: BrokerSettlement;
  private readonly config: Config;
  private readonly topology: Topology;
  private readonly log: Logger;
  private readonly nodes: BrokerNodes;

  constructor(config: Config, topology: Topology, log: Logger) {
    super();
    this.config = config;
    this.nodes = new BrokerNodes(config.amqpUrls);
    this.topology = topology;
    this.log = log;

    this.settlement = new BrokerSettlement(this, log);
  }

  get names(): QueueNames {
    return this.topology.names;
  }

  /** The service's work queue. */
  get queue(): string {
    return this.topology.names.queue;
  }

  /**
   * Connects, retrying an unreachable broker for BROKER_CONNECT_TIMEOUT_MS; then throws a
   * BrokerUnreachableError naming the URL. Once connected, reconnection never gives up.
   */
  async connect(): Promise<void> {
    const { nodes } = this;
    let lastError: Error | undefined;
    // amqplib types the address as a URL string or a plain options object; ours is the latter.
    const connection = await amqp.connect(nodes.address as unknown as Options.Connect, {
      // How the RabbitMQ console names this connection: which service, which instance of it.
      clientProperties: { connection_name: `${this.config.service} ${this.config.instance}` },
      // Without it, a publish right after an ack waits for the broker's delayed TCP ack (~40 ms a hop).
      noDelay: true,
      recovery: {
        waitForConnect: false,
        maxRetries: Number.POSITIVE_INFINITY,
        calculateDelay: (attempt) => {
          const base = Math.min(5000, 200 * 2 ** Math.min(attempt - 1, 10));
          return base / 2 + Math.random() * (base / 2);
        },
        setup: (model: amqp.ChannelModel) => this.setup(model),
      },
    });
    this.connection = connection;
    connection.on('connect-failed', (error) => {
      lastError = error;
      this.log.warn(
        { err: redactUrl(error.message), url: nodes.current },
        'broker connection failed, retrying',
      );
      nodes.next();
    });
    connection.on('disconnect', (error) => {
      this.markLost(error);
      // The node we had may be the one that went: the next attempt dials another.
      nodes.next();
    });
    connection.on('connect', () => {
      this.ready = true;
      this.log.info({ url: nodes.current }, 'broker connected, topology declared');
      this.emit('ready');
    });
    connection.on('error', (error) => this.log.warn({ err: error.message }, 'broker connection error'));
    connection.on('handler-error', (error) =>
      this.log.error({ err: error }, 'error in a broker event handler'),
    );

    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const cause = this.fatal ?? lastError;
        reject(
          new BrokerUnreachableError(
            this.fatal
              ? `RabbitMQ at ${nodes.current} refused the topology: ${this.fatal.message}`
              : `RabbitMQ is unreachable at ${nodes.all} after ${this.config.brokerConnectTimeoutMs} ms` +
                  `${cause ? ` (${cause.message})` : ''}. Start one (Debian: \`rabbitmq-server -detached\`; ` +
                  'Docker: `docker run -d -p 5672:5672 -p 15672:15672 rabbitmq:3-management`) or set AMQP_URL.',
          ),
        );
      }, this.config.brokerConnectTimeoutMs);
    });
    try {
      await Promise.race([connection.waitForConnect(), timeout]);
    } catch (error) {
      await connection.close().catch(() => {});
      throw error;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Runs after every successful (re)connect: topology, channels, consumer. */
  private async setup(model: amqp.ChannelModel): Promise<void> {
    this.model = model;
    // A connection that fails during setup has no other listener yet: unheard, its error would
    // end the process. Recovery hears of the failure through the setup's rejection.
    model.on('error', (error: Error) => this.log.warn({ err: error.message }, 'broker connection error'));
    coalesceWrites(model);
    try {
      const unavailable = await declareTopology(
        async () => {
          const channel = await model.createChannel();
          // A declaration the broker refuses closes its channel and rejects the call: the caller
          // hears it there. Unheard, the channel's 'error' would close the whole connection.
          channel.on('error', () => {});
          return channel;
        },
        this.topology,
        this.config,
      );
      if (unavailable.length > 0)
        this.log.warn(
          { queues: unavailable, url: this.nodes.current },
          'queues whose cluster node is down: retries and parking wait in the work queue until it is back',
        );
    } catch (error) {
      // 406 PRECONDITION_FAILED: a queue exists with other arguments. Retrying cannot fix it.
      if ((error as { code?: number }).code === 406) {
        this.fatal = error as Error;
        setImmediate(() => this.connection?.close().catch(() => {}));
      }
      throw error;
    }

    this.publisher = await this.openPublisher(model);

    if (this.listener) await this.openConsumer(model);
    if (this.watcher) await this.openWatch(model);
  }

  private async openPublisher(model: amqp.ChannelModel): Promise<ConfirmChannel> {
    const publisher = await model.createConfirmChannel();
    publisher.on('return', (message) => {
      const id = message.properties.messageId;
      if (id) this.returned.add(id);
    });
    publisher.on('nack', () => this.renewPublisher(publisher, model));
    this.watchChannel(publisher, 'publisher');
    return publisher;
  }

  /**
   * A nacked channel may go on nacking every later publish to that queue, so it is replaced.
   * RabbitMQ (3.10) keeps, per channel and quorum queue, the node it first asks: the leader that
   * the queue's record names when the channel first publishes to it. Right after that node
   * crashes, before a new leader is elected, the record still names it; the broker then nacks
   * the publish and asks the same dead node again on every later one on that channel, for as
   * long as the channel lives. A new channel reads the record again. The old one is closed
   * once what was published on it has its answer.
   */
  private renewPublisher(nacked: ConfirmChannel, model: amqp.ChannelModel): void {
    if (this.renewing || this.publisher !== nacked || this.model !== model) return;
    this.renewing = true;
    this.openPublisher(model)
      .then((fresh) => {
        // If the connection was lost meanwhile, its reconnect opens a publisher of its own.
        const stale = this.publisher === nacked ? nacked : fresh;
        if (stale === nacked) this.publisher = fresh;
        this.retired.add(stale);
        stale
          .waitForConfirms()
          .catch(() => {})
          .then(() => stale.close())
          .catch(() => {});
        this.log.warn('a publish was nacked: publishing on a new channel');
      })
      .catch((error) => this.log.warn({ err: error.message }, 'could not open a new publisher channel'))
      .finally(() => {
        this.renewing = false;
      });
  }

  /** Sees every event published on the exchange: `watch` with `#`. */
  watchAll(listener: (message: WatchedMessage) => void): Promise<void> {
    return this.watch(listener, ['#']);
  }

  /**
   * Sees the events published on the exchange under these routing keys (`#`: all of them), beside
   * the service's topology: a queue of this connection's own (server-named, exclusive,
   * auto-deleted), consumed without acks. No inbox, no outbox, nothing handled: a viewer. Opened
   * again after a reconnect; what was published while it was away is not seen.
   */
  async watch(listener: (message: WatchedMessage) => void, keys: readonly string[]): Promise<void> {
    this.watcher = listener;
    this.watchedKeys = keys;
    if (this.model && this.ready) await this.openWatch(this.model);
  }

  /**
   * Sees these routing keys from now on. The new ones are bound before the old ones are unbound:
   * an event under a key in both is never missed. Resolves once the broker routes by them.
   */
  async rewatch(keys: readonly string[]): Promise<void> {
    this.watchedKeys = keys;
    const watching = this.watching;
    // Not open: it binds these when it opens.
    if (!watching) return;
    const { exchange } = this.topology.names;
    for (const key of keys) {
      if (watching.bound.has(key)) continue;
      watching.bound.add(key);
      await watching.channel.bindQueue(watching.queue, exchange, key);
    }
    for (const key of watching.bound) {
      if (keys.includes(key)) continue;
      watching.bound.delete(key);
      await watching.channel.unbindQueue(watching.queue, exchange, key);
    }
  }

  /**
   * How many consumers besides this one the service's queue has (other instances of the service),
   * as the broker counts them; undefined while this one is not consuming or not watching.
   */
  async otherConsumers(): Promise<number | undefined> {
    // Asked on the watch channel: if the question fails, that channel closes and opens again.
    const channel = this.watching?.channel;
    if (!channel || !this.consumer) return undefined;
    const { consumerCount } = await channel.checkQueue(this.queue);
    return Math.max(0, consumerCount - 1);
  }

  private async openWatch(model: amqp.ChannelModel): Promise<void> {
    const listener = this.watcher;
    if (!listener) return;
    const channel = await model.createChannel();
    // A viewer's channel failing is no reason to reconnect the service: open another one.
    channel.on('error', (error) => this.log.warn({ err: error.message }, 'watch channel error'));
    channel.on('close', () => {
      if (this.watching?.channel === channel) this.watching = undefined;
      if (this.closing || this.model !== model) return;
      setTimeout(() => {
        if (!this.closing && this.model === model) this.openWatch(model).catch(() => {});
      }, 1000).unref();
    });
    const { queue } = await channel.assertQueue('', {
      exclusive: true,
      autoDelete: true,
      durable: false,
      // A viewer that falls behind loses its oldest messages rather than filling the broker.
      arguments: { 'x-queue-type': 'classic', 'x-max-length': 100_000, 'x-overflow': 'drop-head' },
    });
    const keys = this.watchedKeys;
    for (const key of keys) await channel.bindQueue(queue, this.topology.names.exchange, key);
    await channel.consume(
      queue,
      (message) => {
        if (!message) return;
        const { messageId } = message.properties;
        listener({
          routingKey: message.fields.routingKey,
          messageId: typeof messageId === 'string' ? messageId : undefined,
          content: message.content,
        });
      },
      { noAck: true, exclusive: true },
    );
    this.watching = { channel, queue, bound: new Set(keys) };
    // Keys changed while it opened: bind those now.
    if (this.watchedKeys !== keys) await this.rewatch(this.watchedKeys);
  }

  /** A channel the broker closes (a protocol error) while the connection lives: reconnect everything. */
  private watchChannel(channel: Channel, role: string): void {
    channel.on('error', (error) => this.log.warn({ err: error.message, role }, 'channel error'));
    channel.on('close', () => {
      if (this.closing || this.retired.has(channel)) return;
      if (role === 'publisher' && this.publisher === channel) this.publisher = undefined;
      if (role === 'consumer' && this.consumer === channel) this.consumer = undefined;
      this.markLost(new Error(`${role} channel closed`));
      this.forceReconnect();
    });
  }

  private markLost(error: Error): void {
    if (!this.ready) return;
    this.ready = false;
    this.publisher = undefined;
    this.consumer = undefined;
    this.log.warn({ err: error.message }, 'broker connection lost, reconnecting');
    this.emit('lost', error);
  }

  private forceReconnect(): void {
    // Closing the underlying connection makes the recovering one start over.
    this.model?.close().catch(() => {});
  }

  private async openConsumer(model: amqp.ChannelModel): Promise<void> {
    const listener = this.listener;
    if (!listener) return;
    const channel = await model.createChannel();
    this.watchChannel(channel, 'consumer');
    await channel.prefetch(this.config.prefetch);
    const consumer = { channel, queue: this.queue, unacked: new Set<number>() };
    const { consumerTag } = await channel.consume(
      this.queue,
      (message) => {
        if (message) listener(new AmqpDelivery(message, consumer));
        else this.forceReconnect(); // the broker cancelled us (queue deleted): declare again
      },
      { noAck: false },
    );
    this.consumer = channel;
    this.consumerTag = consumerTag;
  }

  /** Starts consuming the service's queue; after a reconnect the consumer is opened again. */
  async consume(listener: (delivery: Delivery) => void): Promise<void> {
    this.listener = listener;
    if (this.model && this.ready && !this.consumer) await this.openConsumer(this.model);
  }

  /** Stops deliveries; messages already delivered can still be acked. */
  async stopConsuming(): Promise<void> {
    this.listener = undefined;
    const { consumer, consumerTag } = this;
    if (consumer && consumerTag) await consumer.cancel(consumerTag).catch(() => {});
  }

  /**
   * Publishes each message and resolves when the broker has confirmed all of them. Rejects if the
   * broker is not connected, nacks one, or returns one as unroutable (every message is `mandatory`
   * unless its options say otherwise).
   */
  async publish(messages: readonly OutgoingMessage[]): Promise<void> {
    const results = await Promise.allSettled(await this.send(messages));
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
  }

  /**
   * Writes each message to the channel (waiting out backpressure) and resolves once they are all
   * written, with one promise per message that settles on the broker's answer, as in `publish`.
   * Lets a caller write more before the broker has confirmed these.
   */
  async send(messages: readonly OutgoingMessage[]): Promise<Promise<void>[]> {
    const channel = this.publisher;
    if (!channel || !this.ready) throw new Error('broker not connected');
    const confirms: Promise<void>[] = [];
    try {
      for (const message of messages) {
        const options = { mandatory: true, ...message.options };
        let written = true;
        confirms.push(
          new Promise((resolve, reject) => {
            written = channel.publish(
              message.exchange,
              message.routingKey,
              message.content,
              options,
              (error) => {
                const id = options.messageId;
                // amqplib answers a nack, and a channel that closed first, alike: say which.
                if (error)
                  reject(new Error(`${message.routingKey} ${id ?? ''} not confirmed: ${error.message}`));
                else if (id && this.returned.delete(id))
                  reject(
                    new UnroutableError(
                      `no queue is bound to ${message.exchange}/${message.routingKey} (${id})`,
                    ),
                  );
                else resolve();
              },
            );
          }),
        );
        if (!written) await once(channel, 'drain');
      }
    } catch (error) {
      // What was written still gets an answer (a rejection, as the channel closes): handled here.
      void Promise.allSettled(confirms);
      throw error;
    }
    return confirms;
  }

  async close(): Promise<void> {
    this.closing = true;
    this.ready = false;
    await this.connection?.close().catch(() => {});
  }
}

/**
 * amqplib writes each frame to the socket on its own: a batch of publishes, or an ack next to
 * them, costs one system call (and one TCP segment for the broker to read) per frame. Corking
 * the socket at the first write of a tick and uncorking it on the next one sends them all in one
 * writev. The socket is amqplib's, not in its types: if it is not there, nothing changes.
 */
function coalesceWrites(model: amqp.ChannelModel): void {
  const socket = (model as unknown as { connection?: { stream?: Socket } }).connection?.stream;
  if (!socket || typeof socket.cork !== 'function') return;
  const write = socket.write;
  const uncork = () => socket.uncork();
  socket.write = function (this: Socket, ...args: Parameters<Socket['write']>) {
    if (this.writableCorked === 0) {
      this.cork();
      process.nextTick(uncork);
    }
    return write.apply(this, args);
  } as Socket['write'];
}

/**
 * The runner: the one piece of I/O every service shares. For each delivered message:
 * decode and validate it, skip it if this consumer already handled it (inbox), and otherwise, in
 * ONE local transaction, record it in the inbox, call the handler and write the events it
 * returns to the outbox; commit; then ack. A handler never touches a channel.
 *
 * Failures: a message no retry can fix (bad JSON, unknown routing key, schema violation) is
 * parked at once in the service's dead-letter queue with its reason. A handler that throws is
 * retried through delay queues with exponential backoff; after the last attempt it is parked too.
 * A message is acked only once its outcome (committed, retried or parked) is safe with the broker.
 */
import type { Channel, ConsumeMessage } from 'amqplib';
import type { Kysely } from 'kysely';
import type { Broker } from './broker/connection.ts';
import type { Config } from './config.ts';
import { contracts } from './contracts.ts';
import {
  type Db,
  nowIso,
  type Params,
  prepare,
  type RunnerTables,
  runnerDb,
  runnerTx,
  type Tx,
} from './db.ts';
import { PermanentError } from './errors.ts';
import {
  type Emit,
  FAIL_AT_VALUES,
  type FailAt,
  isRoutingKey,
  type RoutingKey,
  type SagaContext,
  type SagaEvent,
} from './events.ts';
import { GroupCommit, type Unit } from './group-commit.ts';
import { ATTEMPT_HEADER, DEAD_HEADER, SAGA_HEADER } from './headers.ts';
import type { Logger } from './logger.ts';
import { type OutboxRelay, writeOutbox } from './outbox.ts';
import { type RetryPolicy, recoveryFor, retryPolicy } from './recoverability.ts';
import { within } from './timers.ts';

export interface HandlerContext {
  /** The step this order's saga was asked to fail at (`x-fail-at`), when fault injection is on. */
  failAt?: FailAt;
  /** The saga context that events emitted for this order carry (for events emitted later, by a timer). */
  saga: SagaContext;
  config: Config;
  log: Logger;
}

/** A handler: the event and a transaction-bound store in, the events to emit out. */
export type Handler<K extends RoutingKey, S> = (
  event: SagaEvent<K>,
  store: S,
  context: HandlerContext,
) => Promise<Emit[]> | Emit[];

/** Routing key → handler: a service's whole subscription list, readable at a glance. */
export type Handlers<S> = { [K in RoutingKey]?: Handler<K, S> };

/** What a piece of work outside a message (an HTTP request, a timer) produced. */
export interface Outcome<R> {
  value: R;
  emit: Emit[];
}

/** What such work returned once committed, with the events it wrote to the outbox. */
export interface Committed<R> {
  value: R;
  emitted: SagaEvent[];
}

export interface RunnerOptions<T, S> {
  db: Db<T>;
  broker: Broker;
  relay: OutboxRelay;
  handlers: Handlers<S>;
  /** Builds the service's store over a transaction. */
  store: (trx: Tx<T>) => S;
  /** Called in the transaction with every event written to the outbox (order-creation's timeline). */
  onEmitted?: (trx: Tx<T>, events: SagaEvent[]) => Promise<void>;
  /** Called after each commit, with the events it emitted (maybe none). */
  afterCommit?: (events: SagaEvent[]) => void;
  config: Config;
  log: Logger;
}

/** A unit of the group commit: a delivered message, or work from outside a message (an HTTP request, a timer). */
interface RunnerUnit<T> extends Unit<T> {
  /** The delivery to ack once the unit is committed; none for work from outside a message. */
  delivery?: { channel: Channel; message: ConsumeMessage };
}

const insertInbox = prepare(
  (db: Kysely<RunnerTables>, p: Params<{ messageId: string; consumer: string; at: string }>) =>
    db
      .insertInto('inbox')
      .values({ message_id: p('messageId'), consumer: p('consumer'), handled_at: p('at') })
      .onConflict((oc) => oc.doNothing()),
);

export class Runner<T, S> {
  private readonly inFlight = new Set<Promise<void>>();
  private readonly commits: GroupCommit<T, RunnerUnit<T>>;
  private readonly retries: RetryPolicy;
  private pruneTimer?: NodeJS.Timeout;

  private readonly options: RunnerOptions<T, S>;

  constructor(options: RunnerOptions<T, S>) {
    this.options = options;
    this.retries = retryPolicy(options.config);
    this.commits = new GroupCommit(options.db, (burst, events) => {
      if (events.length > 0) options.relay.wake();
      options.afterCommit?.(events);
      this.ackBurst(burst.flatMap((unit) => (unit.delivery ? [unit.delivery] : [])));
    });
  }

  get subscriptions(): RoutingKey[] {
    return Object.keys(this.options.handlers) as RoutingKey[];
  }

  async start(): Promise<void> {
    await this.options.broker.consume((message, channel) => {
      this.track(channel, message);
      const work = this.handle(message, channel).catch((error) =>
        this.options.log.error({ err: error }, 'message handling failed unexpectedly'),
      );
      this.inFlight.add(work);
      void work.finally(() => this.inFlight.delete(work));
    });
    this.pruneTimer = setInterval(
      () => void this.prune(),
      Math.min(this.options.config.inboxRetentionMs, 3_600_000),
    );
    this.pruneTimer.unref();
  }

  /** Stops taking messages and waits (until the deadline) for the ones being handled. */
  async stop(deadline: number): Promise<boolean> {
    clearInterval(this.pruneTimer);
    const cancelled = await within(this.options.broker.stopConsuming(), deadline);
    const drained = await within(Promise.all(this.inFlight), deadline);
    return cancelled && drained;
  }

  /**
   * Runs work outside any message (an HTTP request, a timer) in one transaction and writes the
   * events it returns to the outbox, with the given saga context. It shares the transaction of
   * whatever else is waiting (group commit); if anything in it fails, each unit runs again alone.
   */
  transact<R>(work: (store: S) => Promise<Outcome<R>>, context: SagaContext = {}): Promise<Committed<R>> {
    const { store } = this.options;
    return new Promise((resolve, reject) => {
      let committed: Committed<R>;
      this.commits.enqueue({
        apply: async (trx) => {
          const outcome = await work(store(trx));
          const emitted = await this.writeEvents(trx, outcome.emit, context);
          committed = { value: outcome.value, emitted };
          return emitted;
        },
        committed: () => resolve(committed),
        failed: async (error) => reject(error),
      });
    });
  }

  private async writeEvents(trx: Tx<T>, emit: Emit[], context: SagaContext): Promise<SagaEvent[]> {
    const events = await writeOutbox(runnerTx(trx), emit, context);
    if (events.length > 0) await this.options.onEmitted?.(trx, events);
    return events;
  }

  private async handle(message: ConsumeMessage, channel: Channel): Promise<void> {
    const { handlers, config, store, log, broker } = this.options;
    let event: SagaEvent;
    try {
      event = decode(message);
    } catch (error) {
      return this.recover(message, channel, error);
    }
    const handler = handlers[event.type] as Handler<RoutingKey, S> | undefined;
    if (!handler) {
      return this.recover(
        message,
        channel,
        new PermanentError('unknown-routing-key', `no handler for ${event.type}`),
        event,
      );
    }
    const headers = message.properties.headers ?? {};
    const failAtHeader = headers[SAGA_HEADER.failAt];
    // The context carries it on either way; only a service with fault injection on acts on it.
    const requested = FAIL_AT_VALUES.includes(failAtHeader) ? (failAtHeader as FailAt) : undefined;
    const failAt = config.faultInjection ? requested : undefined;
    const context: SagaContext = {
      orderId: event.orderId,
      traceparent: stringHeader(headers[SAGA_HEADER.traceparent]),
      causationId: event.id,
      failAt: requested,
    };
    return new Promise<void>((done) => {
      this.commits.enqueue({
        apply: async (trx) => {
          const inserted = await insertInbox(runnerTx(trx), {
            messageId: event.id,
            consumer: broker.names.queue,
            at: nowIso(),
          });
          if (Number(inserted.numAffectedRows ?? 0) === 0) {
            log.debug({ id: event.id, type: event.type }, 'duplicate delivery skipped');
            return undefined;
          }
          const emit = await handler(event, store(trx), { failAt, saga: context, config, log });
          return this.writeEvents(trx, emit, context);
        },
        committed: done,
        failed: async (error) => {
          await this.recover(message, channel, error, event);
          done();
        },
        delivery: { channel, message },
      });
    });
  }

  /**
   * One `multiple` ack for the burst when every unacked delivery up to its last one is in it
   * (the usual case); otherwise one ack each, so that a message still being parked or retried
   * is never acked before its copy is safe.
   */
  private ackBurst(burst: { channel: Channel; message: ConsumeMessage }[]): void {
    const [first] = burst;
    if (!first) return;
    const { channel } = first;
    const outstanding = this.unacked.get(channel);
    const tags = new Set(burst.map((d) => d.message.fields.deliveryTag));
    const last = burst.reduce((a, b) =>
      b.message.fields.deliveryTag > a.message.fields.deliveryTag ? b : a,
    );
    const lastTag = last.message.fields.deliveryTag;
    const oneChannel = burst.every((d) => d.channel === channel);
    if (
      burst.length > 1 &&
      oneChannel &&
      outstanding &&
      [...outstanding].every((t) => t > lastTag || tags.has(t))
    ) {
      for (const tag of tags) outstanding.delete(tag);
      settle(() => channel.ack(last.message, true));
      return;
    }
    for (const { channel, message } of burst) this.ack(channel, message);
  }

  // Deliveries not yet acked, per channel: what a `multiple` ack would cover.
  private readonly unacked = new WeakMap<Channel, Set<number>>();

  private track(channel: Channel, message: ConsumeMessage): void {
    const tags = this.unacked.get(channel) ?? new Set<number>();
    this.unacked.set(channel, tags);
    tags.add(message.fields.deliveryTag);
  }

  private ack(channel: Channel, message: ConsumeMessage): void {
    this.unacked.get(channel)?.delete(message.fields.deliveryTag);
    settle(() => channel.ack(message));
  }

  private nack(channel: Channel, message: ConsumeMessage, requeue: boolean): void {
    this.unacked.get(channel)?.delete(message.fields.deliveryTag);
    settle(() => channel.nack(message, false, requeue));
  }

  /** Retries or parks a message that failed, as the retry policy says. */
  private recover(
    message: ConsumeMessage,
    channel: Channel,
    error: unknown,
    event?: SagaEvent,
  ): Promise<void> {
    const attempt = attemptOf(message);
    const recovery = recoveryFor(error, attempt, this.retries);
    if (recovery.action === 'park') return this.park(message, channel, error, recovery.reason);
    this.options.log.warn(
      { err: messageOf(error), type: event?.type, id: event?.id, attempt, retryInMs: recovery.delayMs },
      'handler failed, will retry',
    );
    return this.retry(message, channel, recovery.tier, recovery.delayMs);
  }

  /** Sends the message to the tier's delay queue, as attempt + 1. */
  private async retry(message: ConsumeMessage, channel: Channel, tier: number, delay: number): Promise<void> {
    const { broker, log } = this.options;
    const attempt = attemptOf(message);
    try {
      await broker.publish([
        {
          exchange: '',
          routingKey: broker.names.retryQueue(tier),
          content: message.content,
          options: {
            ...message.properties,
            // The tier's queue TTL is 1.25×delay; jitter the message below it. A message waits at most
            // the jitter width behind a longer-lived one: no real head-of-line blocking.
            expiration: String(Math.round(delay * (0.75 + Math.random() * 0.5))),
            headers: {
              ...message.properties.headers,
              [ATTEMPT_HEADER]: attempt + 1,
              // Back from the delay queue, the routing key is the queue's name: keep the original.
              [DEAD_HEADER.routingKey]: this.originalRoutingKey(message),
            },
          },
        },
      ]);
      this.ack(channel, message);
    } catch (publishError) {
      log.warn(
        { err: (publishError as Error).message },
        'could not schedule the retry; the message goes back to the queue',
      );
      this.nack(channel, message, true);
    }
  }

  /** Parks the message unchanged in the dead-letter queue, with headers saying why; then acks it. */
  private async park(message: ConsumeMessage, channel: Channel, error: unknown, why: string): Promise<void> {
    const { broker, log } = this.options;
    const routingKey = this.originalRoutingKey(message);
    log.error(
      { reason: why, err: messageOf(error), routingKey, messageId: message.properties.messageId },
      'message parked in the dead-letter queue',
    );
    try {
      await broker.publish([
        {
          exchange: broker.names.deadLetterExchange,
          routingKey: broker.names.queue,
          content: message.content,
          options: {
            ...message.properties,
            expiration: undefined,
            headers: {
              ...message.properties.headers,
              [DEAD_HEADER.reason]: why,
              [DEAD_HEADER.error]: messageOf(error).slice(0, 1000),
              [DEAD_HEADER.attempts]: attemptOf(message),
              [DEAD_HEADER.routingKey]: routingKey,
              [DEAD_HEADER.queue]: broker.names.queue,
              [DEAD_HEADER.at]: nowIso(),
            },
          },
        },
      ]);
      this.ack(channel, message);
    } catch {
      // The queue's own dead-letter exchange parks it (with x-death headers instead of ours).
      this.nack(channel, message, false);
    }
  }

  private originalRoutingKey(message: ConsumeMessage): string {
    const kept = message.properties.headers?.[DEAD_HEADER.routingKey];
    if (typeof kept === 'string') return kept;
    const { routingKey } = message.fields;
    return routingKey === this.options.broker.names.queue
      ? String(message.properties.type ?? '')
      : routingKey;
  }

  /** Forgets handled message ids and published outbox rows older than the retention window. */
  async prune(): Promise<void> {
    const db = runnerDb(this.options.db);
    const { config } = this.options;
    const before = new Date(Date.now() - config.inboxRetentionMs).toISOString();
    await db.deleteFrom('inbox').where('handled_at', '<', before).execute();
    await db
      .deleteFrom('outbox')
      .where('published_at', 'is not', null)
      .where('published_at', '<', before)
      .execute();
  }
}

/** Parses and validates a delivery; throws a PermanentError that says what is wrong with it. */
export function decode(message: ConsumeMessage): SagaEvent {
  let body: unknown;
  try {
    body = JSON.parse(message.content.toString('utf8'));
  } catch (error) {
    throw new PermanentError('malformed-json', `body is not JSON: ${(error as Error).message}`);
  }
  const envelopeProblems = contracts().validator('#/components/schemas/Envelope')(body);
  if (envelopeProblems.length > 0) {
    throw new PermanentError('schema-invalid', `invalid envelope: ${JSON.stringify(envelopeProblems)}`);
  }
  const event = body as SagaEvent;
  if (!isRoutingKey(event.type))
    throw new PermanentError('unknown-routing-key', `unknown event type ${event.type}`);
  const type = message.properties.type;
  if (type !== undefined && type !== event.type) {
    throw new PermanentError(
      'schema-invalid',
      `AMQP type ${String(type)} differs from the body's type ${event.type}`,
    );
  }
  const problems = contracts().validator(`#/components/schemas/${event.type}`, '/data')(event.data);
  if (problems.length > 0)
    throw new PermanentError('schema-invalid', `invalid ${event.type}: ${JSON.stringify(problems)}`);
  return event;
}

function attemptOf(message: ConsumeMessage): number {
  const value = Number(message.properties.headers?.[ATTEMPT_HEADER] ?? 1);
  return Number.isInteger(value) && value > 0 ? value : 1;
}

// A handler may throw anything, not only an Error.
function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function stringHeader(value: unknown): string | undefined {
  return typeof value === 'string' ? value : undefined;
}

// A channel may have closed since the delivery (broker restart): the message will be redelivered
// and the inbox makes the second handling a no-op, so a failed ack is not an error.
function settle(acknowledge: () => void): void {
  try {
    acknowledge();
  } catch {}
}

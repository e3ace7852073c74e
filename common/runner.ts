/**
 * The runner: the pipeline every service shares. For each delivery: decode and validate it; in
 * the group commit's transaction, skip it if this consumer already handled it (inbox), else record
 * it in the inbox, call the handler and write the events it returns to the outbox; once committed,
 * the transport settles it. A handler never touches a channel, and neither does the runner.
 *
 * Failures: what to do with a message that failed is the retry policy's answer (recoverability.ts):
 * a message no retry can fix (bad JSON, unknown routing key, schema violation) is parked at once
 * with its reason; a handler that throws is retried with exponential backoff, then parked too.
 * A message is settled only once its outcome (committed, retried or parked) is safe.
 */
import type { Kysely } from 'kysely';
import type { Config } from './config.ts';
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
import { decode, sagaContextOf } from './decode.ts';
import { PermanentError } from './errors.ts';
import type { Emit, FailAt, RoutingKey, SagaContext, SagaEvent } from './events.ts';
import { GroupCommit, type Rerun, type Unit } from './group-commit.ts';
import type { Logger } from './logger.ts';
import { type OutboxRelay, writeOutbox } from './outbox.ts';
import { type ParkReason, type RetryPolicy, recoveryFor, retryPolicy } from './recoverability.ts';
import type { DeliveryScope } from './telemetry.ts';
import { within } from './timers.ts';
import type { Delivery, Transport } from './transport.ts';

// Decoding was the runner's before it had a module of its own: where its callers find it.
export { decode } from './decode.ts';

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

/** What became of a delivery (saga.md's outcomes of `saga_messages_total`). */
export type DeliveryOutcome =
  | { outcome: 'handled' }
  /** Handled before: the inbox skipped it. */
  | { outcome: 'duplicate' }
  /** Attempt `attempt` failed: it is tried again in about `delayMs`. */
  | { outcome: 'retried'; attempt: number; delayMs: number }
  | { outcome: 'parked'; reason: ParkReason };

/** A delivery whose outcome is final: committed, or its retry or parked copy safe with the broker. */
export type SettledDelivery = DeliveryOutcome & {
  routingKey: string;
  messageId: string | undefined;
  /** From the delivery reaching the runner to its outcome being final, waiting for its burst included. */
  durationMs: number;
};

/**
 * Where metrics and tracing hang on the runner without touching its loop. Called on the writer's
 * path: keep it quick. What it throws is logged and otherwise ignored.
 */
export interface RunnerHooks {
  /**
   * Once per delivery as it reaches the runner (with its event, when it decoded): the scope its
   * handling runs in (a consumer span, the ids its log lines carry), ended with its outcome.
   */
  received?(delivery: Delivery, event?: SagaEvent): DeliveryScope;
  /** Once per delivery, when its outcome is final. */
  settled(delivery: SettledDelivery): void;
  /** Each time the writer runs a transaction again (see GroupCommit), with the units it held. */
  rerun?(reason: Rerun, units: number): void;
}

export interface RunnerOptions<T, S> {
  db: Db<T>;
  /** Where deliveries come from, and how they are settled. */
  transport: Transport;
  relay: OutboxRelay;
  handlers: Handlers<S>;
  /** Builds the service's store over a transaction. */
  store: (trx: Tx<T>) => S;
  /** Called in the transaction with every event written to the outbox (order-creation's timeline). */
  onEmitted?: (trx: Tx<T>, events: SagaEvent[]) => Promise<void>;
  /** Called after each commit, with the events it emitted and the deliveries it handled (maybe none). */
  afterCommit?: (events: SagaEvent[], handled: SagaEvent[]) => void;
  /** None by default: then the runner neither times deliveries nor builds their outcomes. */
  hooks?: RunnerHooks;
  /** Keep with each outbox row the traceparent of its cause, for the relay's producer span (when tracing). */
  traced?: boolean;
  config: Config;
  log: Logger;
}

/** A unit of the group commit: a delivered message, or work from outside a message (an HTTP request, a timer). */
interface RunnerUnit<T> extends Unit<T> {
  /** The delivery to settle as handled once the unit is committed; none for work from outside a message. */
  delivery?: Delivery;
  /** Its event, once handled (not a duplicate). */
  handled?: SagaEvent;
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
  private readonly options: RunnerOptions<T, S>;

  constructor(options: RunnerOptions<T, S>) {
    this.options = options;
    this.retries = retryPolicy(options.config);
    const { settlement } = options.transport;
    this.commits = new GroupCommit(
      options.db,
      (burst, events) => {
        if (events.length > 0) options.relay.wake();
        options.afterCommit?.(
          events,
          burst.flatMap((unit) => (unit.handled ? [unit.handled] : [])),
        );
        settlement.handled(burst.flatMap((unit) => (unit.delivery ? [unit.delivery] : [])));
      },
      options.hooks?.rerun,
    );
  }

  get subscriptions(): RoutingKey[] {
    return Object.keys(this.options.handlers) as RoutingKey[];
  }

  async start(): Promise<void> {
    await this.options.transport.consume((delivery) => {
      const work = this.handle(delivery).catch((error) =>
        this.options.log.error({ err: error }, 'message handling failed unexpectedly'),
      );
      this.inFlight.add(work);
      void work.finally(() => this.inFlight.delete(work));
    });
  }

  /** Stops taking messages and waits (until the deadline) for the ones being handled. */
  async stop(deadline: number): Promise<boolean> {
    const cancelled = await within(this.options.transport.stopConsuming(), deadline);
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
    const events = await writeOutbox(runnerTx(trx), emit, context, this.options.traced);
    if (events.length > 0) await this.options.onEmitted?.(trx, events);
    return events;
  }

  private async handle(delivery: Delivery): Promise<void> {
    const { handlers, config, store, log, transport, hooks } = this.options;
    const started = hooks ? performance.now() : 0;
    let event: SagaEvent;
    try {
      event = decode(delivery);
    } catch (error) {
      return this.recover(delivery, error, started, undefined, this.scopeOf(delivery));
    }
    const scope = this.scopeOf(delivery, event);
    const handler = handlers[event.type] as Handler<RoutingKey, S> | undefined;
    if (!handler) {
      const error = new PermanentError('unknown-routing-key', `no handler for ${event.type}`);
      return this.recover(delivery, error, started, event, scope);
    }
    const context = sagaContextOf(event, delivery.headers);
    // Events this handling causes continue its consumer span, and so do stored contexts.
    if (scope?.traceparent) context.traceparent = scope.traceparent;
    // The context carries x-fail-at on either way; only a service with fault injection on acts on it.
    const failAt = config.faultInjection ? context.failAt : undefined;
    return new Promise<void>((done) => {
      let duplicate = false;
      const apply = async (trx: Tx<T>) => {
        // A burst rolled back runs its units again: only the attempt that commits counts.
        unit.handled = undefined;
        const inserted = await insertInbox(runnerTx(trx), {
          messageId: event.id,
          consumer: transport.queue,
          at: nowIso(),
        });
        if (Number(inserted.numAffectedRows ?? 0) === 0) {
          log.debug({ id: event.id, type: event.type }, 'duplicate delivery skipped');
          duplicate = true;
          return undefined;
        }
        const emit = await handler(event, store(trx), { failAt, saga: context, config, log });
        unit.handled = event;
        return this.writeEvents(trx, emit, context);
      };
      const unit: RunnerUnit<T> = {
        apply: scope ? (trx) => scope.run(() => apply(trx)) : apply,
        committed: hooks
          ? () => {
              this.report(delivery, { outcome: duplicate ? 'duplicate' : 'handled' }, started, scope);
              done();
            }
          : done,
        failed: async (error) => {
          await this.recover(delivery, error, started, event, scope);
          done();
        },
        delivery,
      };
      this.commits.enqueue(unit);
    });
  }

  private scopeOf(delivery: Delivery, event?: SagaEvent): DeliveryScope | undefined {
    try {
      return this.options.hooks?.received?.(delivery, event);
    } catch (error) {
      // Handled without its span rather than not at all.
      this.options.log.error({ err: error }, 'a runner hook failed');
      return undefined;
    }
  }

  /** Retries or parks a delivery that failed, as the retry policy says; the transport carries it out. */
  private recover(
    delivery: Delivery,
    error: unknown,
    started: number,
    event?: SagaEvent,
    scope?: DeliveryScope,
  ): Promise<void> {
    return scope
      ? scope.run(() => this.recoverIn(delivery, error, started, event, scope))
      : this.recoverIn(delivery, error, started, event);
  }

  private recoverIn(
    delivery: Delivery,
    error: unknown,
    started: number,
    event?: SagaEvent,
    scope?: DeliveryScope,
  ): Promise<void> {
    const { log, transport, hooks } = this.options;
    const { attempt } = delivery;
    const recovery = recoveryFor(error, attempt, this.retries);
    if (recovery.action === 'park') {
      const { reason } = recovery;
      const { routingKey, messageId } = delivery;
      log.error(
        { reason, err: messageOf(error), routingKey, messageId },
        'message parked in the dead-letter queue',
      );
      scope?.parked(reason, messageOf(error));
      const parked = transport.settlement.park(delivery, reason, messageOf(error));
      return hooks
        ? parked.then(() => this.report(delivery, { outcome: 'parked', reason }, started, scope))
        : parked;
    }
    log.warn(
      { err: messageOf(error), type: event?.type, id: event?.id, attempt, retryInMs: recovery.delayMs },
      'handler failed, will retry',
    );
    scope?.retried(attempt, recovery.delayMs, messageOf(error));
    const retried = transport.settlement.retry(delivery, recovery.tier, recovery.delayMs);
    if (!hooks) return retried;
    const outcome = { outcome: 'retried', attempt, delayMs: recovery.delayMs } as const;
    return retried.then(() => this.report(delivery, outcome, started, scope));
  }

  private report(
    delivery: Delivery,
    outcome: DeliveryOutcome,
    started: number,
    scope: DeliveryScope | undefined,
  ): void {
    const { routingKey, messageId } = delivery;
    try {
      scope?.end(outcome.outcome);
      this.options.hooks?.settled({
        ...outcome,
        routingKey,
        messageId,
        durationMs: performance.now() - started,
      });
    } catch (error) {
      this.options.log.error({ err: error }, 'a runner hook failed');
    }
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

// A handler may throw anything, not only an Error.
function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

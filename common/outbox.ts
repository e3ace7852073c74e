/**
 * The transactional outbox. Handlers' events are written in the same transaction as the state
 * change that caused them; the relay publishes committed rows with publisher confirms and marks
 * them published. It wakes at once after a commit, sweeps on start and after every reconnect,
 * and retries with a delay while the broker is away, so nothing committed is ever lost. It does
 * not wait for the broker to confirm one batch before it publishes the next: a commit's events
 * go out at once, not a confirm round trip later.
 */
import { type Kysely, sql, type Transaction } from 'kysely';
import type { Broker, OutgoingMessage } from './broker/connection.ts';
import { contracts } from './contracts.ts';
import { isPostgres, nowIso, type Params, prepare, type RunnerTables } from './db.ts';
import {
  type Emit,
  NOTIFICATIONS,
  orderIdOf,
  type RoutingKey,
  type SagaContext,
  type SagaEvent,
  type ServiceName,
} from './events.ts';
import { SAGA_HEADER } from './headers.ts';
import { childTraceparent, newId } from './ids.ts';
import type { Logger } from './logger.ts';
import type { Metrics } from './metrics.ts';
import type { PublishScope, Telemetry } from './telemetry.ts';
import { type Repeating, repeat, within } from './timers.ts';

/**
 * The saga headers an emitted event travels with: its own order's context when it brings one,
 * else the context of the event being handled, whose id is always the cause. An injected failure
 * belongs to its order: an event about another order, or about none (stock.low), never carries it.
 */
export function sagaHeaders(e: Emit, handled: SagaContext): Record<string, string> {
  const saga = sagaOf(e, handled);
  const orderId = orderIdOf(e.data);
  const headers: Record<string, string> = { [SAGA_HEADER.traceparent]: childTraceparent(saga.traceparent) };
  if (saga.causationId) headers[SAGA_HEADER.causationId] = saga.causationId;
  if (saga.failAt && orderId && orderId === saga.orderId) headers[SAGA_HEADER.failAt] = saga.failAt;
  return headers;
}

// Another order's context replaces the handled one whole: none of its x-fail-at may leak in.
// The cause is the event being handled; outside a message (a timer), the one the context names.
function sagaOf(e: Emit, handled: SagaContext): SagaContext {
  return e.context ? { ...e.context, causationId: handled.causationId ?? e.context.causationId } : handled;
}

/**
 * Writes the events in the transaction, as envelopes carrying the saga context. Each event is
 * validated against its schema first: an invalid one is a bug and rolls the transaction back.
 * When `traced`, each row keeps the traceparent of its cause (the span that emitted it, or the
 * order's stored context), which the relay's producer span continues.
 */
export async function writeOutbox(
  trx: Transaction<RunnerTables>,
  emitted: readonly Emit[],
  context: SagaContext,
  traced = false,
): Promise<SagaEvent[]> {
  if (emitted.length === 0) return [];
  const now = nowIso();
  const events: SagaEvent[] = [];
  for (const e of emitted) {
    const problems = contracts().validator(`#/components/schemas/${e.type}`, '/data')(e.data);
    if (problems.length > 0) {
      throw new Error(`refusing to publish an invalid ${e.type}: ${JSON.stringify(problems)}`);
    }
    const orderId = orderIdOf(e.data);
    const event = {
      id: newId(),
      type: e.type,
      version: 1,
      occurredAt: now,
      ...(orderId ? { orderId } : {}),
      data: e.data,
    } as SagaEvent;
    events.push(event);
    await insertOutbox(trx, {
      id: event.id,
      routing_key: e.type,
      body: JSON.stringify(event),
      headers: JSON.stringify(sagaHeaders(e, context)),
      created_at: now,
      trace_context: traced ? (sagaOf(e, context).traceparent ?? null) : null,
    });
  }
  return events;
}

type NewOutboxRow = Omit<RunnerTables['outbox'], 'seq' | 'published_at'>;
const insertOutbox = prepare((db: Kysely<RunnerTables>, p: Params<NewOutboxRow>) =>
  db.insertInto('outbox').values({
    ...p.row('id', 'routing_key', 'body', 'headers', 'created_at', 'trace_context'),
    published_at: null,
  }),
);

const unpublished = prepare((db: Kysely<RunnerTables>, p: Params<{ after: number; limit: number }>) =>
  db
    .selectFrom('outbox')
    .select(['seq', 'id', 'routing_key', 'body', 'headers', 'created_at', 'trace_context'])
    .where('published_at', 'is', null)
    .where('seq', '>', p('after'))
    .orderBy('seq')
    .limit(p('limit')),
);

// Commits are serialized, so a batch is every unpublished row in its range: one fixed statement.
const markPublished = prepare(
  (db: Kysely<RunnerTables>, p: Params<{ from: number; to: number; at: string }>) =>
    db
      .updateTable('outbox')
      .set({ published_at: p('at') })
      .where('seq', '>=', p('from'))
      .where('seq', '<=', p('to'))
      .where('published_at', 'is', null),
);

/**
 * PostgreSQL, where several instances relay one outbox: each takes a batch of unsent rows and
 * locks them for as long as it publishes them; the others skip those and take the next. No
 * high-water mark: a row that commits late, behind a higher seq already sent, is still unsent
 * and found. An instance that dies lets go of its rows with its connection.
 */
const claimUnpublished = prepare((db: Kysely<RunnerTables>, p: Params<{ limit: number }>) =>
  db
    .selectFrom('outbox')
    .select(['seq', 'id', 'routing_key', 'body', 'headers', 'created_at', 'trace_context'])
    .where('published_at', 'is', null)
    .orderBy('seq')
    .limit(p('limit'))
    .forUpdate()
    .skipLocked(),
);

type OutboxRow = Omit<RunnerTables['outbox'], 'published_at' | 'seq'> & { seq: number };

const BATCH = 256;
/** Batches published and not yet confirmed, at most. */
const IN_FLIGHT = 8;

export class OutboxRelay {
  private drainer?: Repeating;
  /** Rows up to this seq have been handed to the broker; a failed batch sets it back, to send again. */
  private sentUpTo = 0;
  /** Bumped by every setback: a batch read before one is not sent, it may skip the rows set back. */
  private setbacks = 0;
  private readonly confirming = new Set<Promise<void>>();

  private readonly db: Kysely<RunnerTables>;
  private readonly broker: Broker;
  private readonly service: ServiceName;
  private readonly log: Logger;

  private readonly metrics?: Pick<Metrics, 'published'>;
  /** When tracing: each publish is a producer span. */
  private readonly telemetry?: Telemetry;

  /** Claim rows (PostgreSQL: other instances relay the same outbox), or follow a high-water mark (SQLite). */
  private readonly claims: boolean;

  constructor(
    db: Kysely<RunnerTables>,
    broker: Broker,
    service: ServiceName,
    log: Logger,
    telemetry?: Telemetry,
    metrics?: Pick<Metrics, 'published'>,
  ) {
    this.claims = isPostgres(db);
    this.metrics = metrics;
    this.db = db;
    this.telemetry = telemetry?.enabled ? telemetry : undefined;
    this.broker = broker;
    this.service = service;
    this.log = log;
  }

  /**
   * Drains at start, when woken (after each commit, after each reconnect), and every second: the
   * safety net that also sends again, a second later, what a failure set back.
   */
  start(): void {
    this.broker.on('ready', () => this.wake());
    this.drainer = repeat(
      1000,
      () => this.drain(),
      (error) => this.log.error({ err: error }, 'outbox relay failed'),
    );
  }

  /** Publish what is committed, now (coalesces: one run at a time, another right after if needed). */
  wake(): void {
    this.drainer?.wake();
  }

  /**
   * Publishes what is committed and not yet sent, a batch at a time, without waiting for the
   * confirms of earlier batches (up to IN_FLIGHT of them). Rows are marked published once
   * confirmed; what the broker refused, or what a failure left unsent, goes again a second later.
   */
  private async drain(): Promise<void> {
    if (this.claims) return this.drainClaimed();
    let from = this.sentUpTo + 1;
    try {
      for (;;) {
        if (!this.broker.ready) return; // the 'ready' event wakes us
        while (this.confirming.size >= IN_FLIGHT) await Promise.race(this.confirming);
        const setbacks = this.setbacks;
        const { rows } = await unpublished(this.db, { after: this.sentUpTo, limit: BATCH });
        if (setbacks !== this.setbacks) continue;
        const first = rows[0]?.seq;
        const last = rows.at(-1)?.seq;
        if (first === undefined || last === undefined) return;
        from = first;
        this.sentUpTo = last;
        // Handed over in order, batch after batch; confirmed in the background.
        const { answers } = await this.publish(rows);
        const settled: Promise<void> = answers
          .then((answers) => this.confirmed(rows, answers))
          .catch((error) => this.setBack(first, error))
          .finally(() => this.confirming.delete(settled));
        this.confirming.add(settled);
        if (rows.length < BATCH) return;
      }
    } catch (error) {
      this.setBack(from, error);
    }
  }

  /**
   * With claims (PostgreSQL): a batch at a time, each in a transaction that holds its rows from
   * the claim until they are marked published. What the broker refused stays unsent, for the
   * next run.
   */
  private async drainClaimed(): Promise<void> {
    for (;;) {
      if (!this.broker.ready) return;
      const claimed = await this.db.transaction().execute(async (trx) => {
        const { rows } = await claimUnpublished(trx, { limit: BATCH });
        if (rows.length === 0) return 0;
        const answers = await (await this.publish(rows)).answers;
        const sent = rows.filter((_, i) => answers[i]?.status === 'fulfilled');
        this.metrics?.published(sent.map((row) => row.created_at));
        if (sent.length > 0) {
          await sql`update outbox set published_at = ${nowIso()}
            where seq = any(${sent.map((row) => row.seq)}::bigint[])`.execute(trx);
        }
        const refused = answers.find((a) => a.status === 'rejected');
        if (refused) {
          this.log.warn(
            { err: (refused.reason as Error).message },
            'outbox relay refused, retrying within 1 s',
          );
        }
        return refused ? 0 : rows.length;
      });
      if (claimed < BATCH) return;
    }
  }

  /**
   * Hands the rows to the broker (each a producer span, when tracing); `answers` settles with
   * the broker's confirm or refusal of each.
   */
  private async publish(rows: OutboxRow[]): Promise<{ answers: Promise<PromiseSettledResult<void>[]> }> {
    const { telemetry } = this;
    const spans: PublishScope[] = [];
    const messages = rows.map((row) => {
      const message = this.toMessage(row);
      if (telemetry) {
        const span = telemetry.publishing(
          message.exchange,
          row,
          message.options.headers ?? {},
          message.options.correlationId,
        );
        message.options.headers = span.headers;
        spans.push(span);
      }
      return message;
    });
    const confirms = await this.broker.send(messages);
    const answers = Promise.allSettled(confirms).then((settled) => {
      for (const [i, span] of spans.entries()) {
        const answer = settled[i];
        span.end(answer?.status === 'rejected' ? answer.reason : undefined);
      }
      return settled;
    });
    return { answers };
  }

  /**
   * Marks what the broker confirmed. A refused row (nacked, or unroutable) is sent again later,
   * with what follows it and is not yet confirmed; rows confirmed after it do not wait for it.
   */
  private async confirmed(
    rows: { seq: number; created_at: string }[],
    answers: PromiseSettledResult<void>[],
  ): Promise<void> {
    const refused = answers.findIndex((a) => a.status === 'rejected');
    const at = nowIso();
    this.metrics?.published(
      rows.flatMap((row, i) => (answers[i]?.status === 'fulfilled' ? [row.created_at] : [])),
    );
    if (refused === -1) {
      await markPublished(this.db, { from: rows[0]?.seq ?? 0, to: rows.at(-1)?.seq ?? 0, at });
      return;
    }
    for (const [i, { seq }] of rows.entries()) {
      if (answers[i]?.status === 'fulfilled') await markPublished(this.db, { from: seq, to: seq, at });
    }
    this.setBack(rows[refused]?.seq ?? 0, (answers[refused] as PromiseRejectedResult).reason);
  }

  /** Rows from `from` on are to be sent again (some may have been confirmed: consumers dedupe). */
  private setBack(from: number, error: unknown): void {
    this.sentUpTo = Math.min(this.sentUpTo, from - 1);
    this.setbacks++;
    this.log.warn({ err: (error as Error).message }, 'outbox relay failed, retrying within 1 s');
  }

  private toMessage(row: {
    id: string;
    routing_key: string;
    body: string;
    headers: string;
    created_at: string;
  }): OutgoingMessage {
    const event = JSON.parse(row.body) as SagaEvent;
    return {
      exchange: this.broker.names.exchange,
      routingKey: row.routing_key,
      content: Buffer.from(row.body),
      options: {
        persistent: true,
        mandatory: !NOTIFICATIONS.has(row.routing_key as RoutingKey),
        messageId: row.id,
        type: row.routing_key,
        correlationId: event.orderId,
        contentType: 'application/json',
        timestamp: Math.floor(Date.parse(row.created_at) / 1000),
        appId: this.service,
        headers: JSON.parse(row.headers),
      },
    };
  }

  /** Unpublished rows (for readiness and tests). */
  async pending(): Promise<number> {
    const { n } = await this.db
      .selectFrom('outbox')
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .where('published_at', 'is', null)
      .executeTakeFirstOrThrow();
    return Number(n);
  }

  /** At shutdown: keep publishing until nothing is pending or the deadline passes. */
  async flush(deadline: number): Promise<boolean> {
    while (Date.now() < deadline) {
      await within(Promise.all([this.drainer?.idle(), ...this.confirming]), deadline);
      if ((await this.pending()) === 0) return true;
      this.wake();
      await new Promise((r) => setTimeout(r, 50));
    }
    return (await this.pending()) === 0;
  }

  stop(): void {
    this.drainer?.stop();
  }
}

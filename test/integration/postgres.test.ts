/**
 * The scale-out guarantees on a real PostgreSQL and a real RabbitMQ: several instances of a probe
 * service on one schema, each with its own pool and its own broker connection, as separate
 * processes would have. Each test has a database and an exchange of its own, removed after it.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import amqp, { type ChannelModel } from 'amqplib';
import { type QueryExecutorProvider, sql } from 'kysely';
import type { Migration } from 'kysely/migration';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { Broker } from '../../common/broker/connection.ts';
import { queueNames } from '../../common/broker/topology.ts';
import { loadConfig } from '../../common/config.ts';
import {
  type Db,
  exclusively,
  listen,
  notify,
  openPostgres,
  runnerDb,
  runnerTx,
  type Tx,
} from '../../common/db.ts';
import { emit, type SagaEvent, type ServiceName } from '../../common/events.ts';
import { createLogger } from '../../common/logger.ts';
import { OutboxRelay, writeOutbox } from '../../common/outbox.ts';
import { retryDelays } from '../../common/recoverability.ts';
import { type Handlers, Runner, type SettledDelivery } from '../../common/runner.ts';
import { migrations as inventoryMigrations } from '../../services/inventory/store.ts';
import { migrations as orderMigrations } from '../../services/order-creation/store.ts';
import { anOrderCreated } from '../../support/builders.ts';
import {
  AMQP_URL,
  createDatabase,
  deleteTopology,
  dropDatabase,
  freePort,
  POSTGRES_URL,
} from '../../support/system.ts';
import { eventually } from '../support/wait.ts';

// Several instances, child processes and thousands of rows on a shared two-core machine.
vi.setConfig({ testTimeout: 180_000, hookTimeout: 120_000 });

const root = join(import.meta.dirname, '../..');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface ProbeTables {
  effects: { message_id: string; instance: string };
  counters: { name: string; value: number };
}

const probeMigrations: Record<string, Migration> = {
  '0001_probe': {
    async up(db) {
      await db.schema
        .createTable('effects')
        .addColumn('message_id', 'text', (c) => c.notNull())
        .addColumn('instance', 'text', (c) => c.notNull())
        .execute();
      await db.schema
        .createTable('counters')
        .addColumn('name', 'text', (c) => c.primaryKey())
        .addColumn('value', 'integer', (c) => c.notNull())
        .execute();
    },
  },
};

/** The probe's handlers work on the transaction itself. */
type ProbeStore = Tx<ProbeTables>;

/** The outbox-only tests run as this service: its schema has the runner's tables and nothing else. */
const RELAY: ServiceName = 'replenishment';
/** The tests with handlers run as this one, with the probe's tables. */
const PROBE: ServiceName = 'shipment';

interface Scope {
  databaseUrl: string;
  exchange: string;
}

/** Undone after each test, last first: instances stop before their database and exchange go. */
const cleanups: (() => Promise<unknown>)[] = [];
let amqpConnection: ChannelModel;
let serial = 0;

beforeAll(async () => {
  amqpConnection = await amqp.connect(AMQP_URL);
});

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => {});
});

afterAll(async () => {
  await amqpConnection?.close();
});

/** A database and an exchange of the test's own. */
async function isolated(): Promise<Scope> {
  serial++;
  const databaseUrl = await createDatabase(POSTGRES_URL, `pgtests_${process.pid}_${serial}`);
  const exchange = `test-pg-${process.pid}-${serial}`;
  cleanups.push(
    () => dropDatabase(databaseUrl),
    () => deleteTopology(exchange),
  );
  return { databaseUrl, exchange };
}

const envOf = (scope: Scope, instance: string) => ({
  AMQP_URL,
  SAGA_EXCHANGE: scope.exchange,
  DATABASE_URL: scope.databaseUrl,
  INSTANCE_NAME: instance,
  RETRY_ATTEMPTS: '3',
  RETRY_BASE_DELAY_MS: '50',
  LOG_LEVEL: 'silent',
});

/** A connection of the test's own to the scope's database, closed after the test. */
async function openDb<T>(scope: Scope, service: ServiceName, migrations: Record<string, Migration> = {}) {
  const db = await openPostgres<T>(scope.databaseUrl, service, migrations);
  cleanups.push(() => db.destroy());
  return db;
}

interface Instance {
  db: Db<ProbeTables>;
  relay: OutboxRelay;
  runner: Runner<ProbeTables, ProbeStore>;
  /** The outcome of every delivery it settled, in order. */
  settled: SettledDelivery[];
  /** Rows its relay published (confirmed by the broker). */
  published: number;
}

/**
 * One instance of a service as startService wires it (its own pool, broker connection, relay and
 * runner), with the runner's hooks at hand. The relay starts unless told not to.
 */
async function startInstance(
  scope: Scope,
  instance: string,
  options: { service?: ServiceName; handlers?: Handlers<ProbeStore>; relay?: boolean } = {},
): Promise<Instance> {
  const service = options.service ?? PROBE;
  const handlers = options.handlers ?? {};
  const config = loadConfig(service, envOf(scope, instance));
  const log = createLogger(service, config.logLevel);
  const db = await openPostgres<ProbeTables>(
    scope.databaseUrl,
    service,
    service === PROBE ? probeMigrations : {},
  );
  const broker = new Broker(
    config,
    {
      names: queueNames(scope.exchange, service),
      bindings: Object.keys(handlers) as never,
      retryDelaysMs: retryDelays(config),
    },
    log,
  );
  const settled: SettledDelivery[] = [];
  const probe: Instance = { db, settled, published: 0 } as Instance;
  probe.relay = new OutboxRelay(runnerDb(db), broker, service, log, undefined, {
    published: (rows) => {
      probe.published += rows.length;
    },
  });
  probe.runner = new Runner<ProbeTables, ProbeStore>({
    db,
    transport: broker,
    relay: probe.relay,
    handlers,
    store: (trx) => trx,
    hooks: { settled: (delivery) => settled.push(delivery) },
    config,
    log,
  });
  await broker.connect();
  cleanups.push(async () => {
    await probe.runner.stop(Date.now() + 5000);
    probe.relay.stop();
    await broker.close();
    await db.destroy();
  });
  if (options.relay !== false) probe.relay.start();
  await probe.runner.start();
  return probe;
}

/** How many times each message id was published on the exchange with this routing key. */
async function deliveriesOn(exchange: string, routingKey = 'order.completed'): Promise<Map<string, number>> {
  const channel = await amqpConnection.createChannel();
  await channel.assertExchange(exchange, 'topic', { durable: true });
  const { queue } = await channel.assertQueue('', { exclusive: true });
  await channel.bindQueue(queue, exchange, routingKey);
  const counts = new Map<string, number>();
  await channel.consume(
    queue,
    (message) => {
      const id = String(message?.properties.messageId);
      counts.set(id, (counts.get(id) ?? 0) + 1);
    },
    { noAck: true },
  );
  cleanups.push(() => channel.close());
  return counts;
}

/** Publishes each event on the exchange (copies: as many times), and waits for the broker's confirms. */
async function publishAll(exchange: string, events: readonly SagaEvent[], copies = 1): Promise<void> {
  const channel = await amqpConnection.createConfirmChannel();
  for (const event of events) {
    for (let i = 0; i < copies; i++) {
      channel.publish(exchange, event.type, Buffer.from(JSON.stringify(event)), {
        persistent: true,
        messageId: event.id,
        contentType: 'application/json',
      });
    }
  }
  await channel.waitForConfirms();
  await channel.close();
}

/** `n` events written to the outbox in one transaction; their ids. */
async function writeEvents<T>(db: Db<T>, n: number): Promise<string[]> {
  const events = await db.transaction().execute((trx) =>
    writeOutbox(
      runnerTx(trx),
      Array.from({ length: n }, () => emit('order.completed', { orderId: randomUUID() })),
      {},
    ),
  );
  return events.map((e) => e.id);
}

/** Waits until the condition holds; fails the test if it does not within `ms`. */
async function until(condition: () => boolean | Promise<boolean>, ms: number): Promise<void> {
  expect(await eventually(condition, (held) => held, ms), `not within ${ms} ms: ${condition}`).toBe(true);
}

const moreThanOnce = (counts: Map<string, number>) => [...counts].filter(([, n]) => n > 1);

/** A promise and the way to resolve it. */
function gate(): { opened: Promise<void>; open: () => void } {
  let open = () => {};
  const opened = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { opened, open };
}

/** Terminates the server processes behind these connections, as a crash or a network cut would. */
async function terminate(db: QueryExecutorProvider, pids: number[]): Promise<void> {
  await sql`select pg_terminate_backend(pid) from unnest(${pids}::int[]) as pid`.execute(db);
}

interface Child {
  process: ChildProcess;
  /** Its stdout, line by line. */
  lines: string[];
  /** Its exit code (null when a signal ended it). */
  exited: Promise<number | null>;
}

/** A node process running `script` (an ES module) with this environment, killed after the test. */
function child(script: string, env: Record<string, string>, stdin = false): Child {
  const running = spawn(process.execPath, ['--input-type=module', '-e', script], {
    env: { ...process.env, ...env },
    stdio: [stdin ? 'pipe' : 'ignore', 'pipe', 'inherit'],
  });
  const lines: string[] = [];
  running.stdout?.setEncoding('utf8').on('data', (chunk: string) => lines.push(...chunk.split('\n')));
  const exited = new Promise<number | null>((resolve) => running.once('exit', resolve));
  cleanups.push(async () => {
    running.kill('SIGKILL');
    await exited;
  });
  return { process: running, lines, exited };
}

async function kill(running: Child): Promise<void> {
  running.process.kill('SIGKILL');
  await running.exited;
}

describe('the outbox relay, several instances on one outbox', () => {
  it('never publishes a row twice while both relays are alive, and publishes every row', async () => {
    const scope = await isolated();
    const writer = await openDb(scope, RELAY);
    const counts = await deliveriesOn(scope.exchange);
    const a = await startInstance(scope, 'a', { service: RELAY, relay: false });
    const b = await startInstance(scope, 'b', { service: RELAY, relay: false });
    const backlog = (await Promise.all(Array.from({ length: 4 }, () => writeEvents(writer, 500)))).flat();

    // Both start on the same backlog, and both are woken after every commit that follows.
    a.relay.start();
    b.relay.start();
    const later: string[] = [];
    for (let i = 0; i < 100; i++) {
      later.push(...(await writeEvents(writer, 10)));
      a.relay.wake();
      b.relay.wake();
    }
    const all = [...backlog, ...later];
    await until(async () => counts.size === all.length && (await a.relay.pending()) === 0, 90_000);
    await sleep(500); // room for a late, second copy

    expect(moreThanOnce(counts)).toEqual([]);
    expect(all.filter((id) => !counts.has(id))).toEqual([]);
    expect(a.published + b.published).toBe(all.length);
    // Both took part: this was two relays at once, not one after the other.
    expect(a.published).toBeGreaterThan(0);
    expect(b.published).toBeGreaterThan(0);
  });

  it('publishes a row that commits after a later row (higher seq) was already published', async () => {
    const scope = await isolated();
    const writer = await openDb(scope, RELAY);
    const counts = await deliveriesOn(scope.exchange);
    const relay = await startInstance(scope, 'a', { service: RELAY });
    const inserted = gate();
    const release = gate();
    let late: string[] = [];
    const lateCommit = writer.transaction().execute(async (trx) => {
      late = (await writeOutbox(runnerTx(trx), [emit('order.completed', { orderId: randomUUID() })], {})).map(
        (e) => e.id,
      );
      inserted.open();
      await release.opened;
    });
    await inserted.opened;

    const [after] = await writeEvents(relay.db, 1);
    relay.relay.wake();
    await until(() => counts.has(after ?? ''), 15_000);
    release.open();
    await lateCommit;
    // Not woken: another instance committed it; the relay's own sweep finds it.

    const seqs = await runnerDb(writer).selectFrom('outbox').select(['id', 'seq']).orderBy('seq').execute();
    expect(seqs.map((row) => row.id)).toEqual([...late, after]); // it had the lower seq
    expect(
      await eventually(
        () => counts.get(late[0] ?? '') ?? 0,
        (n) => n > 0,
        15_000,
      ),
    ).toBe(1);
    expect(await relay.relay.pending()).toBe(0);
  });

  it('leaves rows another connection claimed, and sends them once that connection is gone', async () => {
    const scope = await isolated();
    const claimer = await openDb(scope, RELAY);
    const counts = await deliveriesOn(scope.exchange);
    const claimedIds = await writeEvents(claimer, 5);
    // A relay mid-batch: its rows claimed as drainClaimed claims them, not yet marked published.
    const claimed = gate();
    const confirmed = gate();
    let claimerPid = 0;
    const claim = claimer
      .transaction()
      .execute(async (trx) => {
        const { rows } = await sql<{ pid: number }>`select pg_backend_pid() as pid`.execute(trx);
        claimerPid = rows[0]?.pid ?? 0;
        await sql`select seq from outbox where published_at is null for update skip locked`.execute(trx);
        claimed.open();
        await confirmed.opened; // the broker is slow to confirm
        await sql`update outbox set published_at = ${new Date().toISOString()} where published_at is null`.execute(
          trx,
        );
      })
      .catch((error: unknown) => error);
    cleanups.push(async () => confirmed.open()); // a failed test lets go of its claim
    await claimed.opened;

    const relay = await startInstance(scope, 'b', { service: RELAY });
    const others = await writeEvents(relay.db, 5);
    relay.relay.wake();
    // The other relay is not held up by the claim: it sends the rows nobody holds.
    await until(() => others.every((id) => counts.has(id)), 15_000);
    await sleep(1500); // more than a sweep: still it leaves the claimed rows alone
    expect(claimedIds.filter((id) => counts.has(id))).toEqual([]);

    await terminate(relay.db, [claimerPid]);
    confirmed.open();
    expect(await claim).toBeInstanceOf(Error); // it could not mark them

    await until(() => claimedIds.every((id) => counts.has(id)), 15_000);
    await sleep(300);
    expect(moreThanOnce(counts)).toEqual([]);
    expect(await relay.relay.pending()).toBe(0);
  });

  it('sends what a relay whose process was killed mid-drain left unsent, each row at most one batch twice', async () => {
    const scope = await isolated();
    const writer = await openDb(scope, RELAY);
    const counts = await deliveriesOn(scope.exchange);
    const ids = (await Promise.all(Array.from({ length: 10 }, () => writeEvents(writer, 500)))).flat();

    const script = `
      import { Broker } from ${JSON.stringify(join(root, 'common/broker/connection.ts'))};
      import { queueNames } from ${JSON.stringify(join(root, 'common/broker/topology.ts'))};
      import { loadConfig } from ${JSON.stringify(join(root, 'common/config.ts'))};
      import { openPostgres, runnerDb } from ${JSON.stringify(join(root, 'common/db.ts'))};
      import { createLogger } from ${JSON.stringify(join(root, 'common/logger.ts'))};
      import { OutboxRelay } from ${JSON.stringify(join(root, 'common/outbox.ts'))};
      const config = loadConfig(${JSON.stringify(RELAY)});
      const log = createLogger('relay', 'silent');
      const db = await openPostgres(config.databaseUrl, ${JSON.stringify(RELAY)}, {});
      const names = queueNames(config.exchange, ${JSON.stringify(RELAY)});
      const broker = new Broker(config, { names, bindings: [], retryDelaysMs: [] }, log);
      await broker.connect();
      new OutboxRelay(runnerDb(db), broker, ${JSON.stringify(RELAY)}, log).start();
      console.log('relaying');`;
    const doomed = child(script, envOf(scope, 'doomed'));
    await eventually(
      () => counts.size,
      (n) => n >= 1000,
      60_000,
    );
    await kill(doomed);
    const sentBeforeTheKill = counts.size;
    expect(sentBeforeTheKill).toBeLessThan(ids.length); // killed mid-drain

    const survivor = await startInstance(scope, 'survivor', { service: RELAY });
    await until(
      async () => ids.every((id) => counts.has(id)) && (await survivor.relay.pending()) === 0,
      60_000,
    );

    expect(ids.filter((id) => !counts.has(id))).toEqual([]);
    // Sent twice: at most the batch the dead relay had published but not marked (BATCH rows).
    expect(moreThanOnce(counts).length).toBeLessThanOrEqual(256);
    expect(survivor.published).toBeGreaterThan(0);
  });
});

const probeEvent = () => anOrderCreated();

describe('the inbox, several instances on one queue', () => {
  it('gives a message delivered to two instances at once its effect once; the loser is a duplicate', async () => {
    const scope = await isolated();
    const counts = await deliveriesOn(scope.exchange);
    const handlers = (instance: string): Handlers<ProbeStore> => ({
      'order.created': async (event, trx) => {
        await trx.insertInto('effects').values({ message_id: event.id, instance }).execute();
        await sleep(5); // while the copy is in the other instance's hands
        return [emit('order.completed', { orderId: event.data.orderId })];
      },
    });
    const a = await startInstance(scope, 'a', { handlers: handlers('a') });
    const b = await startInstance(scope, 'b', { handlers: handlers('b') });
    const events = Array.from({ length: 40 }, probeEvent);

    await publishAll(scope.exchange, events, 2); // two copies each, one after the other: one to each consumer
    await eventually(
      () => a.settled.length + b.settled.length,
      (n) => n >= events.length * 2,
      60_000,
    );

    const effects = await a.db.selectFrom('effects').selectAll().execute();
    expect(effects.map((e) => e.message_id).sort()).toEqual(events.map((e) => e.id).sort());
    const outcomes = new Map<string, { instance: string; outcome: string }[]>();
    for (const [instance, probe] of Object.entries({ a, b }))
      for (const { messageId = '', outcome } of probe.settled)
        outcomes.set(messageId, [...(outcomes.get(messageId) ?? []), { instance, outcome }]);
    for (const event of events)
      expect(
        outcomes
          .get(event.id)
          ?.map((o) => o.outcome)
          .sort(),
      ).toEqual(['duplicate', 'handled']);
    // The copies really were in two instances' hands.
    const split = events.filter((e) => new Set(outcomes.get(e.id)?.map((o) => o.instance)).size === 2);
    expect(split.length).toBeGreaterThan(events.length / 2);
    await eventually(
      () => counts.size,
      (n) => n >= events.length,
      15_000,
    );
    await sleep(300);
    expect(counts.size).toBe(events.length);
    expect(moreThanOnce(counts)).toEqual([]);
  });
});

describe('conflicts between instances', () => {
  /** Adds one to the row `hot` the way a handler written as if alone would: read, then write. */
  const increment = async (trx: Tx<ProbeTables>) => {
    const { value } = await trx
      .selectFrom('counters')
      .select('value')
      .where('name', '=', 'hot')
      .executeTakeFirstOrThrow();
    await trx
      .updateTable('counters')
      .set({ value: value + 1 })
      .where('name', '=', 'hot')
      .execute();
  };
  const hotValue = async (db: Db<ProbeTables>) =>
    (await db.selectFrom('counters').select('value').where('name', '=', 'hot').executeTakeFirstOrThrow())
      .value;
  /** Handlers that increment `hot` for each order.created, and count how often they ran. */
  const incrementing = () => {
    const counted = { runs: 0 };
    const handlers: Handlers<ProbeStore> = {
      'order.created': async (_event, trx) => {
        counted.runs++;
        await increment(trx);
        return [];
      },
    };
    return { handlers, counted };
  };
  /** Waits until the instances together have handled `n` deliveries. */
  const handled = (instances: Instance[], n: number, ms: number) =>
    eventually(
      () => instances.flatMap((i) => i.settled).filter((d) => d.outcome === 'handled').length,
      (count) => count >= n,
      ms,
    );

  it('has the instances take turns: a read-modify-write of one row by two instances is never aborted', async () => {
    const scope = await isolated();
    const { handlers, counted } = incrementing();
    const a = await startInstance(scope, 'a', { handlers });
    const b = await startInstance(scope, 'b', { handlers });
    await a.db.insertInto('counters').values({ name: 'hot', value: 0 }).execute();
    const events = Array.from({ length: 300 }, probeEvent);

    await publishAll(scope.exchange, events);
    await handled([a, b], events.length, 90_000);

    expect(await hotValue(a.db)).toBe(events.length);
    expect(a.settled.length).toBeGreaterThan(0);
    expect(b.settled.length).toBeGreaterThan(0);
    expect(counted.runs).toBe(events.length); // each ran once: no burst was aborted and run again
  });

  it('retries serialization failures at once: a burst that loses to a writer outside the runner runs again', async () => {
    const scope = await isolated();
    const { handlers, counted } = incrementing();
    const a = await startInstance(scope, 'a', { handlers });
    await a.db.insertInto('counters').values({ name: 'hot', value: 0 }).execute();
    const events = Array.from({ length: 20 }, probeEvent);
    // A writer that does not take turns holds the row while the burst reads it and waits to
    // write it: once the writer commits, PostgreSQL aborts the burst (40001).
    const outside = await openDb<ProbeTables>(scope, PROBE, probeMigrations);
    await outside
      .transaction()
      .setIsolationLevel('serializable')
      .execute(async (trx) => {
        await increment(trx);
        await publishAll(scope.exchange, events);
        await until(() => counted.runs > 0, 30_000);
        await sleep(300);
      });

    await handled([a], events.length, 60_000);
    expect(await hotValue(a.db)).toBe(events.length + 1);
    expect(a.settled.filter((d) => d.outcome !== 'handled')).toEqual([]);
    expect(counted.runs).toBeGreaterThan(events.length); // the database did abort some: they ran again
  });

  it('retries deadlocks at once: rows locked in opposite orders by the runner and a writer outside it', async () => {
    const scope = await isolated();
    const { databaseUrl } = scope;
    const database = new URL(databaseUrl).pathname.slice(1);
    let runs = 0;
    const handlers: Handlers<ProbeStore> = {
      'order.created': async (_event, trx) => {
        runs++;
        for (const name of ['a', 'b']) {
          await trx.updateTable('counters').set({ value: sql`value + 1` }).where('name', '=', name).execute();
          await sleep(50);
        }
        return [];
      },
    };
    const admin = await openDb<ProbeTables>(scope, PROBE, probeMigrations);
    // Found sooner than the default second, by the connections opened from now on.
    await sql.raw(`alter database ${database} set deadlock_timeout = '100ms'`).execute(admin);
    const a = await startInstance(scope, 'a', { handlers });
    await admin
      .insertInto('counters')
      .values([
        { name: 'a', value: 0 },
        { name: 'b', value: 0 },
      ])
      .execute();
    const deadlocksBefore = await deadlocks(admin, database);
    const events = Array.from({ length: 8 }, () => anOrderCreated());
    // The writer takes b, lets the burst take a, then wants a while the burst wants b: a
    // deadlock, there by the time the burst's wait (100 ms) has PostgreSQL look for one. The
    // writer would look only after 5 s: the runner's transaction is the one aborted.
    const outside = await openDb<ProbeTables>(scope, PROBE, probeMigrations);
    await outside.transaction().execute(async (trx) => {
      await sql`set local deadlock_timeout = '5s'`.execute(trx);
      await trx.updateTable('counters').set({ value: sql`value + 1` }).where('name', '=', 'b').execute();
      await publishAll(scope.exchange, events);
      await until(() => runs > 0, 30_000);
      await sleep(20);
      await trx.updateTable('counters').set({ value: sql`value + 1` }).where('name', '=', 'a').execute();
    });

    await handled([a], events.length, 60_000);
    const counters = await admin.selectFrom('counters').selectAll().orderBy('name').execute();
    expect(counters).toEqual([
      { name: 'a', value: events.length + 1 },
      { name: 'b', value: events.length + 1 },
    ]);
    expect(a.settled.filter((d) => d.outcome !== 'handled')).toEqual([]);
    expect(runs).toBeGreaterThan(events.length);
    expect(
      await eventually(
        () => deadlocks(admin, database),
        (n) => n > deadlocksBefore,
        15_000,
      ),
    ).toBeGreaterThan(deadlocksBefore);
  });
});

async function deadlocks(db: QueryExecutorProvider, database: string): Promise<number> {
  const { rows } = await sql<{ n: number }>`
    select deadlocks as n from pg_stat_database where datname = ${database}`.execute(db);
  return Number(rows[0]?.n ?? 0);
}

describe('a connection lost mid-burst', () => {
  it('is waited out: the burst runs again, each delivery handled once and none retried', async () => {
    const scope = await isolated();
    let cut = false;
    const handlers: Handlers<ProbeStore> = {
      'order.created': async (event, trx) => {
        await trx.insertInto('effects').values({ message_id: event.id, instance: 'a' }).execute();
        if (!cut) {
          cut = true; // as a restart of the server would, under the transaction's feet
          await sql`select pg_terminate_backend(pg_backend_pid())`.execute(trx);
        }
        return [];
      },
    };
    const a = await startInstance(scope, 'a', { handlers });
    const events = Array.from({ length: 20 }, probeEvent);

    await publishAll(scope.exchange, events);
    await until(() => a.settled.length >= events.length, 60_000);

    expect(cut).toBe(true);
    expect(a.settled.filter((d) => d.outcome !== 'handled')).toEqual([]);
    const effects = await a.db.selectFrom('effects').select('message_id').execute();
    expect(effects.map((e) => e.message_id).sort()).toEqual(events.map((e) => e.id).sort());
  });
});

describe('exclusively: a periodic task once across instances', () => {
  it('runs the task in one of two instances calling at once; the other skips its turn', async () => {
    const scope = await isolated();
    const one = await openDb(scope, RELAY);
    const two = await openDb(scope, RELAY);
    let running = 0;
    let most = 0;
    const task = async () => {
      most = Math.max(most, ++running);
      await sleep(300);
      running--;
      return 'swept';
    };

    const outcomes = await Promise.all([
      exclusively(one, 'sweep', task),
      exclusively(two, 'sweep', task),
      exclusively(one, 'sweep', task),
    ]);

    expect(outcomes.filter((o) => o.ran)).toEqual([{ ran: true, value: 'swept' }]);
    expect(most).toBe(1);
    // Another task's name is another lock, and the lock is free again once the task is done.
    const [prune, againInOne] = await Promise.all([
      exclusively(two, 'prune', task),
      exclusively(one, 'sweep', task),
    ]);
    expect([prune.ran, againInOne.ran]).toEqual([true, true]);
    expect((await exclusively(two, 'sweep', task)).ran).toBe(true);
  });

  it("lets the task run elsewhere once its holder's process is killed", async () => {
    const scope = await isolated();
    const other = await openDb(scope, RELAY);
    const script = `
      import { exclusively, openPostgres } from ${JSON.stringify(join(root, 'common/db.ts'))};
      const db = await openPostgres(process.env.DATABASE_URL, ${JSON.stringify(RELAY)}, {});
      await exclusively(db, 'sweep', () => { console.log('holding'); return new Promise(() => {}); });`;
    const holder = child(script, envOf(scope, 'holder'));
    await until(() => holder.lines.includes('holding'), 60_000);
    let ran = 0;
    const task = async () => ++ran;

    expect(await exclusively(other, 'sweep', task)).toEqual({ ran: false });
    await kill(holder);

    expect(
      await eventually(
        () => exclusively(other, 'sweep', task),
        (run) => run.ran,
        15_000,
      ),
    ).toEqual({ ran: true, value: 1 });
  });

  it('lets the task run elsewhere once the holding connection is cut', async () => {
    const scope = await isolated();
    const holder = await openDb(scope, RELAY);
    const other = await openDb(scope, RELAY);
    const held = gate();
    const release = gate();
    const holding = exclusively(holder, 'sweep', async () => {
      held.open();
      await release.opened;
    });
    await held.opened;
    expect(await exclusively(other, 'sweep', async () => 'ran')).toEqual({ ran: false });

    const { rows } = await sql<{ pid: number }>`
      select pid from pg_locks where locktype = 'advisory' and database =
        (select oid from pg_database where datname = current_database())`.execute(other);
    expect(rows).toHaveLength(1);
    await terminate(
      other,
      rows.map((r) => r.pid),
    );

    expect(
      await eventually(
        () => exclusively(other, 'sweep', async () => 'ran'),
        (run) => run.ran,
        15_000,
      ),
    ).toEqual({ ran: true, value: 'ran' });
    release.open();
    await holding;
  });
});

describe('listen and notify across instances', () => {
  /** The server processes LISTENing on the channel in the scope's database. */
  const listeners = async (db: QueryExecutorProvider, channel: string) =>
    (
      await sql<{ pid: number }>`
        select pid from pg_stat_activity
        where datname = current_database() and query ilike ${`listen %${channel}%`}`.execute(db)
    ).rows.map((r) => r.pid);

  it("hears another instance's notify once its transaction commits, not before", async () => {
    const scope = await isolated();
    const listening = await openDb(scope, 'order-creation');
    const notifying = await openDb(scope, 'order-creation');
    const heard: string[] = [];
    const stop = listen(listening, 'order_changed', (id) => heard.push(id));
    cleanups.push(stop);
    await eventually(
      () => listeners(notifying, 'order_changed'),
      (pids) => pids.length === 1,
      15_000,
    );

    await notifying.transaction().execute(async (trx) => {
      await notify(trx, 'order_changed', 'order-1');
      await sleep(300);
      expect(heard).toEqual([]);
    });
    await eventually(
      () => heard.length,
      (n) => n > 0,
      15_000,
    );

    expect(heard).toEqual(['order-1']);
    await stop();
    expect(await listeners(notifying, 'order_changed')).toEqual([]);
  });

  it('hears a channel by its exact name', async () => {
    const scope = await isolated();
    const listening = await openDb(scope, 'order-creation');
    const notifying = await openDb(scope, 'order-creation');
    const heard: string[] = [];
    cleanups.push(listen(listening, 'orderChanged', (id) => heard.push(id)));
    await eventually(
      () => listeners(notifying, 'orderChanged'),
      (pids) => pids.length === 1,
      15_000,
    );

    await notify(notifying, 'orderChanged', 'order-1');

    await until(() => heard.length > 0, 15_000);
    expect(heard).toEqual(['order-1']);
  });

  it('stopped before it is listening, it never listens', async () => {
    const scope = await isolated();
    const listening = await openDb(scope, 'order-creation');

    await listen(listening, 'order_changed', () => {})();
    await sleep(2000); // its connection would have been open and listening by now

    expect(await listeners(listening, 'order_changed')).toEqual([]);
  });

  it('listens again after its connection is cut', async () => {
    const scope = await isolated();
    const listening = await openDb(scope, 'order-creation');
    const notifying = await openDb(scope, 'order-creation');
    const heard: string[] = [];
    cleanups.push(listen(listening, 'order_changed', (id) => heard.push(id)));
    const [first] = await eventually(
      () => listeners(notifying, 'order_changed'),
      (pids) => pids.length === 1,
      15_000,
    );

    await terminate(notifying, [first ?? 0]);
    const [second] = await eventually(
      () => listeners(notifying, 'order_changed'),
      (pids) => pids.length === 1 && pids[0] !== first,
      15_000,
    );
    expect(second).not.toBe(first);
    await notify(notifying, 'order_changed', 'after-the-cut');

    expect(
      await eventually(
        () => heard,
        (ids) => ids.includes('after-the-cut'),
        15_000,
      ),
    ).toEqual(['after-the-cut']);
  });
});

describe('migrations', () => {
  it('run once when several instances of several services start at once on a new database', async () => {
    const scope = await isolated();
    const opening = [
      ...Array.from({ length: 3 }, () => openPostgres(scope.databaseUrl, 'inventory', inventoryMigrations)),
      ...Array.from({ length: 3 }, () => openPostgres(scope.databaseUrl, 'order-creation', orderMigrations)),
    ];
    const opened = await Promise.allSettled(opening);
    for (const outcome of opened)
      if (outcome.status === 'fulfilled') cleanups.push(() => outcome.value.destroy());

    expect(opened.filter((o) => o.status === 'rejected')).toEqual([]);
    const [db] = opened.flatMap((o) => (o.status === 'fulfilled' ? [o.value] : []));
    if (!db) throw new Error('nothing opened');
    for (const [schema, migrations] of [
      ['inventory', inventoryMigrations],
      ['order_creation', orderMigrations],
    ] as const) {
      const { rows } = await sql<{ name: string }>`
        select name from ${sql.id(schema, 'kysely_migration')} order by name`.execute(db);
      expect(rows.map((r) => r.name)).toEqual(
        ['0000_runner', '0000_runner_trace_context', ...Object.keys(migrations)].sort(),
      );
    }
  });
});

describe('statements', () => {
  it('are parsed once per connection, then only bound and run', async () => {
    const scope = await isolated();
    const db = await openDb<ProbeTables>(scope, PROBE, probeMigrations);
    const prepared = await db.connection().execute(async (connection) => {
      for (const value of [1, 2, 3])
        await connection
          .insertInto('counters')
          .values({ name: `c${value}`, value })
          .execute();
      const { rows } = await sql<{ statement: string; calls: number }>`
        select statement, generic_plans + custom_plans as calls from pg_prepared_statements
        where statement like 'insert into "counters"%'`.execute(connection);
      return rows;
    });
    // One named statement, run three times: unnamed, there would be none.
    expect(prepared).toHaveLength(1);
    expect(Number(prepared[0]?.calls)).toBe(3);
  });
});

describe('a connection cut while in use', () => {
  it('fails the work on it, not the process; the next work gets another connection', async () => {
    const scope = await isolated();
    const admin = await openDb(scope, RELAY);
    // What the relay does between its claim and its update, and a periodic task with its lock:
    // hold a connection from the pool while waiting on something else.
    const script = `
      import { sql } from 'kysely';
      import { openPostgres, retryable } from ${JSON.stringify(join(root, 'common/db.ts'))};
      const db = await openPostgres(process.env.DATABASE_URL, ${JSON.stringify(RELAY)}, {});
      const cut = new Promise((resolve) => process.stdin.once('data', resolve));
      const work = db.transaction().execute(async (trx) => {
        const { rows } = await sql\`select pg_backend_pid() as pid\`.execute(trx);
        console.log('holding ' + rows[0].pid);
        await cut;
        await sql\`select 1\`.execute(trx);
      });
      const failed = await work.then(() => 'committed', (error) => retryable(error) ?? error.message);
      const { rows } = await sql\`select 1 as one\`.execute(db);
      console.log('work ' + failed + ', then ' + rows[0].one);
      await db.destroy();`;
    const holder = child(script, envOf(scope, 'holder'), true);
    const line = await eventually(
      () => holder.lines.find((l) => l.startsWith('holding ')),
      (found) => found !== undefined,
      60_000,
    );
    await terminate(admin, [Number(line?.split(' ')[1])]);
    await sleep(200); // the client hears of it while idle, before it runs anything
    holder.process.stdin?.end('go\n');
    const code = await holder.exited;

    expect(holder.lines).toContain('work unavailable, then 1');
    expect(code).toBe(0);
  });
});

describe('a service started against PostgreSQL', () => {
  const startInventory = (databaseUrl: string) =>
    spawnSync(process.execPath, [join(root, 'services/inventory/main.ts')], {
      encoding: 'utf8',
      timeout: 90_000,
      env: {
        ...process.env,
        DATABASE_URL: databaseUrl,
        DATABASE_CONNECT_TIMEOUT_MS: '1000',
        INVENTORY_PORT: '0',
        SAGA_EXCHANGE: `test-pg-${process.pid}-unstarted`,
      },
    });

  it('exits non-zero with one line naming the unreachable database, its password hidden', async () => {
    const port = await freePort(); // nothing listens there
    const child = startInventory(`postgres://saga:s3,cret@127.0.0.1:${port}/saga`);

    expect(child.status).toBe(1);
    expect(child.stderr.trim().split('\n')).toEqual([
      expect.stringMatching(
        new RegExp(
          `^inventory: cannot reach PostgreSQL at postgres://saga:\\*\\*\\*@127\\.0\\.0\\.1:${port}/saga \\(tried for \\d+ ms\\): .*ECONNREFUSED`,
        ),
      ),
    ]);
    expect(child.stdout + child.stderr).not.toContain('cret');
  });

  it('exits non-zero at once, naming DATABASE_URL, when the server refuses it', () => {
    const url = new URL(POSTGRES_URL);
    url.password = 's3,cret';
    url.pathname = `/pgtests_${process.pid}_missing`;
    const child = startInventory(url.toString());

    expect(child.status).toBe(1);
    expect(child.stderr).toContain(
      `DATABASE_URL="${url.protocol}//${url.username}:***@${url.host}${url.pathname}": PostgreSQL refused it: ` +
        `database "pgtests_${process.pid}_missing" does not exist`,
    );
    expect(child.stderr).not.toMatch(/^\s+at /m); // a message, not a stack
    expect(child.stdout + child.stderr).not.toContain('cret');
  });
});

/**
 * Each service owns its database, opened and migrated at start: by default one SQLite file (WAL)
 * under DATA_DIR, held by one process; with DATABASE_URL, a schema of its own in PostgreSQL,
 * shared by every instance of the service. Queries go through Kysely, so the handlers and stores
 * are the same on both; what differs between the two stays in this module.
 */
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import SQLite from 'better-sqlite3';
import {
  type Compilable,
  CompiledQuery,
  type Generated,
  Kysely,
  PostgresAdapter,
  PostgresDialect,
  type QueryExecutorProvider,
  type QueryResult,
  type RawBuilder,
  type SqliteDatabase,
  SqliteDialect,
  sql,
  type Transaction,
} from 'kysely';
import { type Migration, Migrator } from 'kysely/migration';
import pg from 'pg';
import { type Config, ConfigError, redactPassword } from './config.ts';
import type { Logger } from './logger.ts';

/** The runner's own tables, present in every service's database. */
export interface RunnerTables {
  /** Messages already handled, per consumer: a redelivery finds its row and is skipped. */
  inbox: { message_id: string; consumer: string; handled_at: string };
  /** Events committed with the state change that caused them, waiting for (or done with) publication. */
  outbox: {
    seq: Generated<number>;
    id: string;
    routing_key: string;
    body: string;
    headers: string;
    created_at: string;
    published_at: string | null;
    /** The traceparent of what caused the row, when tracing: the producer span continues it. */
    trace_context: string | null;
  };
}

export type Db<T> = Kysely<T & RunnerTables>;
export type Tx<T> = Transaction<T & RunnerTables>;

/** The runner's view of any service's database: only its own tables. */
export const runnerDb = <T>(db: Db<T>): Kysely<RunnerTables> => db as unknown as Kysely<RunnerTables>;
export const runnerTx = <T>(trx: Tx<T>): Transaction<RunnerTables> =>
  trx as unknown as Transaction<RunnerTables>;

/** Whether the database is PostgreSQL (else SQLite): for the few statements that differ. */
export const isPostgres = (db: QueryExecutorProvider): boolean =>
  db.getExecutor().adapter instanceof PostgresAdapter;

/**
 * The end of a CREATE TABLE keyed by its primary key: in SQLite, stored in that key's b-tree
 * alone (one write per row instead of table + index); PostgreSQL has no such option.
 */
export const keyedTable = (db: QueryExecutorProvider): RawBuilder<unknown> =>
  isPostgres(db) ? sql`` : sql`without rowid`;

/**
 * The type of a `seq` primary key that numbers rows as they are inserted. SQLite's rowid (no
 * AUTOINCREMENT, whose bookkeeping is one more page per commit); PostgreSQL's sequence.
 */
export const serialKey = (db: QueryExecutorProvider) => (isPostgres(db) ? 'bigserial' : 'integer');

const runnerMigration: Migration = {
  async up(db) {
    await db.schema
      .createTable('inbox')
      .addColumn('message_id', 'text', (c) => c.notNull())
      .addColumn('consumer', 'text', (c) => c.notNull())
      .addColumn('handled_at', 'text', (c) => c.notNull())
      .addPrimaryKeyConstraint('inbox_pk', ['message_id', 'consumer'])
      .modifyEnd(keyedTable(db))
      .execute();
    await db.schema.createIndex('inbox_handled_at').on('inbox').column('handled_at').execute();
    await db.schema
      .createTable('outbox')
      .addColumn('seq', serialKey(db), (c) => c.primaryKey())
      .addColumn('id', 'text', (c) => c.notNull())
      .addColumn('routing_key', 'text', (c) => c.notNull())
      .addColumn('body', 'text', (c) => c.notNull())
      .addColumn('headers', 'text', (c) => c.notNull())
      .addColumn('created_at', 'text', (c) => c.notNull())
      .addColumn('published_at', 'text')
      .execute();
    await db.schema
      .createIndex('outbox_unpublished')
      .on('outbox')
      .column('seq')
      .where(sql.ref('published_at'), 'is', null)
      .execute();
  },
};

const traceContextMigration: Migration = {
  async up(db) {
    await db.schema.alterTable('outbox').addColumn('trace_context', 'text').execute();
  },
};

/**
 * Kysely's SQLite driver prepares every query anew, BEGIN and COMMIT included: a third of the
 * database time under load. Statements are reusable (the driver runs one query at a time), so
 * keep them, keyed by their SQL; `where in (…)` lists make the set open-ended, hence the cap.
 */
function withStatementCache(sqlite: SQLite.Database, max = 1000): SqliteDatabase {
  const statements = new Map<string, SQLite.Statement>();
  return {
    close: () => sqlite.close(),
    prepare(sql: string) {
      let statement = statements.get(sql);
      if (!statement) {
        if (statements.size >= max) statements.clear();
        statement = sqlite.prepare(sql);
        statements.set(sql, statement);
      }
      return statement;
    },
  };
}

const databaseFile = (dataDir: string, name: string) => join(dataDir, `${name}.sqlite`);

const inUse = (file: string, name: string) =>
  new ConfigError([
    `DATA_DIR: ${file} is in use by another process (another ${name} with the same DATA_DIR?). ` +
      'Each instance of a service needs its own database: stop the other one or set another DATA_DIR.',
  ]);

/**
 * Throws the ConfigError openDatabase would throw if another process holds the database, without
 * creating it: a launcher can say so before it starts anything.
 */
export function assertDatabaseFree(dataDir: string, name: string): void {
  const file = databaseFile(dataDir, name);
  if (!existsSync(file)) return;
  const sqlite = new SQLite(file, { fileMustExist: true, timeout: 0 });
  try {
    // The holder keeps an exclusive lock (locking_mode=EXCLUSIVE): even a read is refused.
    sqlite.prepare('select 1 from sqlite_master limit 1').get();
  } catch (error) {
    if ((error as { code?: string }).code === 'SQLITE_BUSY') throw inUse(file, name);
    throw error;
  } finally {
    sqlite.close();
  }
}

/** Opens (creating if needed) `<DATA_DIR>/<name>.sqlite` and applies the runner's and the service's migrations. */
export async function openDatabase<T>(
  dataDir: string,
  name: string,
  migrations: Record<string, Migration>,
): Promise<Db<T>> {
  mkdirSync(dataDir, { recursive: true });
  const file = databaseFile(dataDir, name);
  const sqlite = new SQLite(file);
  sqlite.pragma('busy_timeout = 2000');
  // Before WAL: one process owns the file, so SQLite keeps its WAL index in memory and takes no
  // file locks per transaction (a system call each, on every read and commit).
  sqlite.pragma('locking_mode = EXCLUSIVE');
  try {
    sqlite.pragma('journal_mode = WAL');
  } catch (error) {
    sqlite.close();
    if ((error as { code?: string }).code !== 'SQLITE_BUSY') throw error;
    throw inUse(file, name);
  }
  // NORMAL in WAL mode: a commit survives a crash of the process; only a power loss can lose the last ones.
  sqlite.pragma('synchronous = NORMAL');
  // A checkpoint copies each page once however often it changed since the last one: fewer,
  // larger checkpoints copy far less (hot pages such as the outbox's tail change in every commit).
  sqlite.pragma('wal_autocheckpoint = 10000');
  sqlite.pragma('foreign_keys = ON');
  const db = new Kysely<T & RunnerTables>({
    dialect: new SqliteDialect({ database: withStatementCache(sqlite) }),
  });
  await migrate(db, file, migrations);
  return db;
}

/** The runner's and the service's migrations, applied; a failure closes the database and says where. */
async function migrate<T>(
  db: Db<T>,
  where: string,
  migrations: Record<string, Migration>,
  migrationTableSchema?: string,
): Promise<void> {
  const migrator = new Migrator({
    db,
    ...(migrationTableSchema ? { migrationTableSchema } : {}),
    provider: {
      getMigrations: async () => ({
        '0000_runner': runnerMigration,
        '0000_runner_trace_context': traceContextMigration,
        ...migrations,
      }),
    },
    // The runner's and the service's migrations are two sequences in one list: a database made
    // before the runner's second one has run the service's later ones already.
    allowUnorderedMigrations: true,
  });
  const { error, results } = await migrator.migrateToLatest();
  if (error) {
    await db.destroy();
    const failed = results?.find((r) => r.status === 'Error')?.migrationName;
    throw new Error(`Migrating ${where} failed${failed ? ` at ${failed}` : ''}: ${String(error)}`);
  }
}

/** The schema of a service in a shared PostgreSQL database: `order_creation`, `inventory`, … */
export const schemaOf = (name: string): string => name.replaceAll('-', '_');

/** PostgreSQL could not be reached at start: said once, the service exits non-zero. */
export class DatabaseUnreachableError extends Error {
  constructor(url: string, cause: unknown, ms: number) {
    super(
      `cannot reach PostgreSQL at ${redactPassword(url)} (tried for ${ms} ms): ${(cause as Error).message ?? String(cause)}`,
    );
    this.name = 'DatabaseUnreachableError';
  }
}

// bigint (a bigserial, a count) arrives as a string by default; every one here fits a double.
pg.types.setTypeParser(pg.types.builtins.INT8, Number);

/**
 * Opens the service's schema in the PostgreSQL database at `url` (creating it if needed) and
 * applies the migrations. Several instances may start at once: the migrator holds an advisory
 * lock while it works, so one migrates and the others find the work done. Connections set the
 * schema as their search_path: the service sees its own tables only.
 */
export async function openPostgres<T>(
  url: string,
  name: string,
  migrations: Record<string, Migration>,
  options: { log?: Logger; connectTimeoutMs?: number } = {},
): Promise<Db<T>> {
  const schema = schemaOf(name);
  const started = Date.now();
  const timeout = options.connectTimeoutMs ?? 0;
  for (;;) {
    const probe = new pg.Client({ connectionString: url });
    try {
      await probe.connect();
      // Two instances creating the schema at once: one wins, the other finds it there.
      await probe.query(`create schema if not exists ${schema}`).catch((error) => {
        if (!['23505', '42P06'].includes(error.code)) throw error;
      });
      break;
    } catch (error) {
      if (!unavailable(error) || Date.now() - started >= timeout) {
        if (unavailable(error)) throw new DatabaseUnreachableError(url, error, Date.now() - started);
        // The server answered no (no such database or role, a wrong password, no right to create
        // the schema): the configuration's to fix, and no retry will.
        if (error instanceof pg.DatabaseError)
          throw new ConfigError([
            `DATABASE_URL="${redactPassword(url)}": PostgreSQL refused it: ${error.message}`,
          ]);
        throw error;
      }
      options.log?.warn({ err: (error as Error).message }, 'PostgreSQL unreachable, retrying');
      await new Promise((r) => setTimeout(r, 500));
    } finally {
      await probe.end().catch(() => {});
    }
  }
  const pool = new pg.Pool({ connectionString: url, max: 10, options: `-c search_path=${schema}` });
  // A connection the server closed (a restart, a cut) fails the work on it and is dropped from the
  // pool; the next query opens another. The pool hears the errors of its idle connections only:
  // one lost while lent (a transaction awaiting a broker's confirm, a periodic task's lock)
  // would, unheard, end the process.
  pool.on('connect', (client) => {
    client.on('error', (error) => options.log?.warn({ err: error.message }, 'PostgreSQL connection lost'));
    namingStatements(client);
  });
  pool.on('error', () => {}); // heard by the connection's own listener
  const db = new Kysely<T & RunnerTables>({ dialect: new PostgresDialect({ pool }) });
  postgresUrls.set(db, url);
  await migrate(db, `schema ${schema} of ${redactPassword(url)}`, migrations, schema);
  return db;
}

const postgresUrls = new WeakMap<object, string>();

/** Statement names by SQL text, shared by every connection; beyond the cap, statements go unnamed. */
const statementNames = new Map<string, string>();
const MAX_NAMED_STATEMENTS = 2000;

/**
 * pg sends a query with parameters as an unnamed statement, which PostgreSQL parses and plans
 * anew every time: for the short statements of a message's handling, that is most of the
 * server's work. Named, each connection parses a statement once and then only binds and runs it.
 */
function namingStatements(client: pg.PoolClient): void {
  const query = client.query.bind(client) as (...args: unknown[]) => unknown;
  client.query = ((text: unknown, values?: unknown, ...rest: unknown[]) => {
    if (typeof text !== 'string' || !Array.isArray(values) || values.length === 0)
      return query(text, values, ...rest);
    let name = statementNames.get(text);
    if (!name && statementNames.size < MAX_NAMED_STATEMENTS) {
      name = `s${statementNames.size}`;
      statementNames.set(text, name);
    }
    return query(name ? { name, text, values } : { text, values }, ...rest);
  }) as typeof client.query;
}

/**
 * Runs `task` unless another instance of the service is running the task of this name, and says
 * whether it ran. On PostgreSQL, a session advisory lock on a connection held for the run: an
 * instance that dies lets go of it with its connection. SQLite has one instance: it always runs.
 */
export async function exclusively<DB, R>(
  db: Kysely<DB>,
  name: string,
  task: () => Promise<R>,
): Promise<{ ran: true; value: R } | { ran: false }> {
  if (!isPostgres(db)) return { ran: true, value: await task() };
  return db.connection().execute(async (connection) => {
    const key = sql`hashtext(current_schema() || ':' || ${name})`;
    const { rows } = await sql<{ got: boolean }>`select pg_try_advisory_lock(${key}) as got`.execute(
      connection,
    );
    if (!rows[0]?.got) return { ran: false } as const;
    try {
      return { ran: true, value: await task() } as const;
    } finally {
      await sql`select pg_advisory_unlock(${key})`.execute(connection).catch(() => {});
    }
  });
}

/** Tells every instance listening on `channel` once the transaction commits (PostgreSQL); SQLite has no others. */
export async function notify(trx: QueryExecutorProvider, channel: string, payload: string): Promise<void> {
  if (isPostgres(trx)) await sql`select pg_notify(${channel}, ${payload})`.execute(trx);
}

/**
 * Hears `notify` from every instance (PostgreSQL: LISTEN on a connection of its own, opened again
 * when lost). On SQLite it hears nothing: there is no other instance. Returns the way to stop.
 */
export function listen(
  db: QueryExecutorProvider,
  channel: string,
  onNotice: (payload: string) => void,
  log?: Logger,
): () => Promise<void> {
  const url = postgresUrls.get(db);
  if (!url) return async () => {};
  let client: pg.Client | undefined;
  let closed = false;
  const open = async (): Promise<void> => {
    while (!closed) {
      const next = new pg.Client({ connectionString: url });
      next.on('error', () => {});
      try {
        await next.connect();
        next.on('notification', (n) => {
          if (n.channel === channel) onNotice(n.payload ?? '');
        });
        // Quoted: unquoted, PostgreSQL would fold the name to lower case, and pg_notify does not.
        await next.query(`listen "${channel.replaceAll('"', '""')}"`);
        // Once listening: an attempt that failed is retried by this loop, not by another one too.
        next.on('end', () => {
          if (!closed) setTimeout(() => void open(), 500).unref();
        });
        client = next;
        if (closed) await next.end(); // stopped while it connected
        return;
      } catch (error) {
        log?.warn({ err: (error as Error).message, channel }, 'cannot listen on PostgreSQL, retrying');
        await next.end().catch(() => {});
        await new Promise((r) => setTimeout(r, 1000).unref());
      }
    }
  };
  void open();
  return async () => {
    closed = true;
    await client?.end().catch(() => {});
  };
}

/** The service's database as the configuration says: PostgreSQL with DATABASE_URL, else SQLite. */
export function openStore<T>(
  config: Pick<Config, 'databaseUrl' | 'dataDir' | 'databaseConnectTimeoutMs'>,
  name: string,
  migrations: Record<string, Migration>,
  log?: Logger,
): Promise<Db<T>> {
  return config.databaseUrl
    ? openPostgres<T>(config.databaseUrl, name, migrations, {
        log,
        connectTimeoutMs: config.databaseConnectTimeoutMs,
      })
    : openDatabase<T>(config.dataDir, name, migrations);
}

/**
 * What a failed transaction's error says about trying again: `conflict` (PostgreSQL aborted it
 * for a serialization failure or a deadlock; run it again at once), `unavailable` (the database
 * cannot be reached right now; run it again once it can), or undefined (a fault of the work).
 */
export function retryable(error: unknown): 'conflict' | 'unavailable' | undefined {
  const code = (error as { code?: unknown })?.code;
  if (code === '40001' || code === '40P01') return 'conflict';
  return unavailable(error) ? 'unavailable' : undefined;
}

const UNAVAILABLE_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
  'ETIMEDOUT',
  'ENOTFOUND',
  'EAI_AGAIN',
]);

function unavailable(error: unknown): boolean {
  const { code, message } = (error ?? {}) as { code?: unknown; message?: unknown };
  if (typeof code === 'string') {
    // Connection exceptions (08), the server shutting down or starting (57P01–57P03).
    if (code.startsWith('08') || ['57P01', '57P02', '57P03'].includes(code)) return true;
    if (UNAVAILABLE_CODES.has(code)) return true;
  }
  return (
    typeof message === 'string' &&
    /Connection terminated|connection timeout|Client has encountered a connection error/i.test(message)
  );
}

/** Stands in for a named parameter while a prepared query is compiled. */
class Placeholder {
  readonly name: string;

  constructor(name: string) {
    this.name = name;
  }
}

/** `p('name')` in a prepared query: the parameter `name`, typed as its value. */
export interface Params<P> {
  <K extends keyof P & string>(name: K): P[K];
  /** The named parameters as one row, for `values(p.row('id', 'status'))`. */
  row<K extends keyof P & string>(...names: K[]): Pick<P, K>;
}

function placeholders<P>(): Params<P> {
  const p = ((name: string) => new Placeholder(name)) as unknown as Params<P>;
  p.row = (...names) => Object.fromEntries(names.map((name) => [name, new Placeholder(name)])) as never;
  return p;
}

/**
 * A query that Kysely builds and compiles once, then runs with new parameter values each time.
 * Per statement, Kysely's builder and compiler cost more than SQLite itself, and every message
 * runs several: the statements of the hot path are prepared. Only values vary, not the query's
 * shape: no optional clauses, no `in` lists.
 */
export function prepare<DB, P, O>(
  build: (db: Kysely<DB>, p: Params<P>) => Compilable<O>,
): (db: Kysely<DB>, params: P) => Promise<QueryResult<O>> {
  // One per dialect: the SQL differs (`?` or `$1`), the parameters' order does not.
  const compiledFor = new Map<unknown, { sql: string; slots: readonly unknown[] }>();
  return (db, params) => {
    const dialect = db.getExecutor().adapter.constructor;
    let compiled = compiledFor.get(dialect);
    if (!compiled) {
      const { sql, parameters } = build(db, placeholders<P>()).compile();
      compiled = { sql, slots: parameters };
      compiledFor.set(dialect, compiled);
    }
    const values = compiled.slots.map((slot) =>
      slot instanceof Placeholder ? params[slot.name as keyof P] : slot,
    );
    return db.executeQuery<O>(CompiledQuery.raw(compiled.sql, values));
  };
}

/** Timestamps are stored as ISO-8601 text: sortable, readable, the same in SQLite and PostgreSQL. */
export const nowIso = (): string => new Date().toISOString();

/**
 * Each service owns one SQLite database (WAL) under DATA_DIR, opened and migrated at start.
 * Queries go through Kysely, which also speaks PostgreSQL when a service outgrows one file.
 */
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import SQLite from 'better-sqlite3';
import {
  type Compilable,
  CompiledQuery,
  type Generated,
  Kysely,
  type QueryResult,
  type SqliteDatabase,
  SqliteDialect,
  sql,
  type Transaction,
} from 'kysely';
import { type Migration, Migrator } from 'kysely/migration';
import { ConfigError } from './config.ts';

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

const runnerMigration: Migration = {
  async up(db) {
    await db.schema
      .createTable('inbox')
      .addColumn('message_id', 'text', (c) => c.notNull())
      .addColumn('consumer', 'text', (c) => c.notNull())
      .addColumn('handled_at', 'text', (c) => c.notNull())
      .addPrimaryKeyConstraint('inbox_pk', ['message_id', 'consumer'])
      // Keyed by its primary key alone: one b-tree to write per message instead of table + index.
      .modifyEnd(sql`without rowid`)
      .execute();
    await db.schema.createIndex('inbox_handled_at').on('inbox').column('handled_at').execute();
    await db.schema
      .createTable('outbox')
      // The rowid: new rows always come after every row still there (no AUTOINCREMENT, whose
      // bookkeeping is one more page to write per commit).
      .addColumn('seq', 'integer', (c) => c.primaryKey())
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
  const migrator = new Migrator({
    db,
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
    throw new Error(`Migrating ${file} failed${failed ? ` at ${failed}` : ''}: ${String(error)}`);
  }
  return db;
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
  let compiled: { sql: string; slots: readonly unknown[] } | undefined;
  return (db, params) => {
    if (!compiled) {
      const { sql, parameters } = build(db, placeholders<P>()).compile();
      compiled = { sql, slots: parameters };
    }
    const values = compiled.slots.map((slot) =>
      slot instanceof Placeholder ? params[slot.name as keyof P] : slot,
    );
    return db.executeQuery<O>(CompiledQuery.raw(compiled.sql, values));
  };
}

/** Timestamps are stored as ISO-8601 text: sortable, readable, the same in SQLite and PostgreSQL. */
export const nowIso = (): string => new Date().toISOString();

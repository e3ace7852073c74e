/**
 * Each service owns one SQLite database (WAL) under DATA_DIR, opened and migrated at start.
 * Queries go through Kysely, which also speaks PostgreSQL when a service outgrows one file.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import SQLite from 'better-sqlite3';
import {
  type Generated,
  Kysely,
  type Migration,
  Migrator,
  type SqliteDatabase,
  SqliteDialect,
  sql,
  type Transaction,
} from 'kysely';

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
      .execute();
    await db.schema.createIndex('inbox_handled_at').on('inbox').column('handled_at').execute();
    await db.schema
      .createTable('outbox')
      .addColumn('seq', 'integer', (c) => c.primaryKey().autoIncrement())
      .addColumn('id', 'text', (c) => c.notNull().unique())
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

/** Opens (creating if needed) `<DATA_DIR>/<name>.sqlite` and applies the runner's and the service's migrations. */
export async function openDatabase<T>(
  dataDir: string,
  name: string,
  migrations: Record<string, Migration>,
): Promise<Db<T>> {
  mkdirSync(dataDir, { recursive: true });
  const file = join(dataDir, `${name}.sqlite`);
  const sqlite = new SQLite(file);
  sqlite.pragma('journal_mode = WAL');
  // NORMAL in WAL mode: a commit survives a crash of the process; only a power loss can lose the last ones.
  sqlite.pragma('synchronous = NORMAL');
  sqlite.pragma('busy_timeout = 5000');
  sqlite.pragma('foreign_keys = ON');
  const db = new Kysely<T & RunnerTables>({
    dialect: new SqliteDialect({ database: withStatementCache(sqlite) }),
  });
  const migrator = new Migrator({
    db,
    provider: { getMigrations: async () => ({ '0000_runner': runnerMigration, ...migrations }) },
  });
  const { error, results } = await migrator.migrateToLatest();
  if (error) {
    await db.destroy();
    const failed = results?.find((r) => r.status === 'Error')?.migrationName;
    throw new Error(`Migrating ${file} failed${failed ? ` at ${failed}` : ''}: ${String(error)}`);
  }
  return db;
}

/** Timestamps are stored as ISO-8601 text: sortable, readable, the same in SQLite and PostgreSQL. */
export const nowIso = (): string => new Date().toISOString();

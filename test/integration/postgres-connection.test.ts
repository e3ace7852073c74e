/**
 * A service's PostgreSQL connections against a real server, in a database of the test's own: a
 * connection the server ends (a restart) while the service holds it costs the statement, never
 * the process.
 */
import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Db, openPostgres, retryable } from '../../common/db.ts';
import { POSTGRES_URL } from '../../support/system.ts';

const name = `conn_${randomUUID().replaceAll('-', '').slice(0, 12)}`;
const url = Object.assign(new URL(POSTGRES_URL), { pathname: `/${name}` }).toString();
let db: Db<object>;

async function onServer<T>(query: string, values: unknown[] = [], at = POSTGRES_URL): Promise<T[]> {
  const client = new pg.Client({ connectionString: at });
  await client.connect();
  try {
    return (await client.query(query, values)).rows;
  } finally {
    await client.end();
  }
}

beforeAll(async () => {
  await onServer(`create database ${name}`);
  db = await openPostgres(url, 'inventory', {});
});

afterAll(async () => {
  await db?.destroy();
  await onServer(`drop database if exists ${name} with (force)`);
});

describe('a PostgreSQL connection ended by the server', () => {
  it('between two statements of a transaction fails the next one, retryably, and the process lives on', async () => {
    const outcome = db.transaction().execute(async (trx) => {
      const [{ pid }] = (await sql<{ pid: number }>`select pg_backend_pid() as pid`.execute(trx)).rows as [
        { pid: number },
      ];
      // As a restart does: the server ends the connection while nothing runs on it.
      await onServer('select pg_terminate_backend($1)', [pid]);
      await new Promise((r) => setTimeout(r, 300)); // the notice reaches the client meanwhile
      await sql`select 1`.execute(trx);
    });
    const error = await outcome.then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error, 'the statement after the end failed').toBeDefined();
    expect(retryable(error)).toBe('unavailable');
    // The pool dropped the dead connection: the next work gets another.
    expect((await sql<{ one: number }>`select 1 as one`.execute(db)).rows).toEqual([{ one: 1 }]);
  });
});

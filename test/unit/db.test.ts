/**
 * The database layer on a real SQLite file: prepared queries bind each placeholder to its own
 * parameter wherever it appears, keep the constants of the query, and run inside a transaction.
 * Each service owns its file: a second process cannot open it, and can tell before it tries.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql } from 'kysely';
import type { Migration } from 'kysely/migration';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { assertDatabaseFree, type Db, openDatabase, type Params, prepare } from '../../common/db.ts';

interface Tables {
  counters: { name: string; kind: string; value: number; changes: number };
}

const migrations: Record<string, Migration> = {
  '0001_counters': {
    up: (db) =>
      db.schema
        .createTable('counters')
        .addColumn('name', 'text', (c) => c.primaryKey())
        .addColumn('kind', 'text', (c) => c.notNull())
        .addColumn('value', 'integer', (c) => c.notNull())
        .addColumn('changes', 'integer', (c) => c.notNull())
        .execute(),
  },
};

const insertCounter = prepare((db: Db<Tables>, p: Params<{ name: string; value: number }>) =>
  db.insertInto('counters').values({ name: p('name'), kind: 'plain', value: p('value'), changes: 0 }),
);
// The same placeholder twice, next to a constant.
const addTo = prepare((db: Db<Tables>, p: Params<{ name: string; by: number }>) =>
  db
    .updateTable('counters')
    .set({ value: sql`value + ${p('by')} * 2 - ${p('by')}`, changes: sql`changes + ${1}` })
    .where('name', '=', p('name')),
);
const counter = prepare((db: Db<Tables>, p: Params<{ name: string }>) =>
  db.selectFrom('counters').selectAll().where('name', '=', p('name')),
);

const dir = mkdtempSync(join(tmpdir(), 'db-test-'));
let db: Db<Tables>;

beforeAll(async () => {
  db = await openDatabase<Tables>(dir, 'probe', migrations);
});

afterAll(async () => {
  await db.destroy();
  rmSync(dir, { recursive: true, force: true });
});

describe('prepare', () => {
  it('binds every placeholder to its own value, each time it runs', async () => {
    await insertCounter(db, { name: 'a', value: 10 });
    await insertCounter(db, { name: 'b', value: 100 });
    await addTo(db, { name: 'a', by: 5 });
    await addTo(db, { name: 'a', by: 7 });

    expect((await counter(db, { name: 'a' })).rows).toEqual([
      { name: 'a', kind: 'plain', value: 22, changes: 2 },
    ]);
    expect((await counter(db, { name: 'b' })).rows[0]?.value).toBe(100);
    expect((await counter(db, { name: 'missing' })).rows).toEqual([]);
  });

  it('runs in the transaction it is given, rolled back with it', async () => {
    await insertCounter(db, { name: 'c', value: 1 });
    await expect(
      db.transaction().execute(async (trx) => {
        await addTo(trx, { name: 'c', by: 41 });
        expect((await counter(trx, { name: 'c' })).rows[0]?.value).toBe(42);
        throw new Error('roll back');
      }),
    ).rejects.toThrow('roll back');

    expect((await counter(db, { name: 'c' })).rows[0]?.value).toBe(1);
  });
});

describe('openDatabase', () => {
  it('refuses a second process on the same file, saying which DATA_DIR', () => {
    const script = `
      import { openDatabase } from ${JSON.stringify(join(import.meta.dirname, '../../common/db.ts'))};
      try { await openDatabase(${JSON.stringify(dir)}, 'probe', {}); console.log('opened'); }
      catch (error) { console.log(error.name + ': ' + error.message); }`;
    const child = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
      encoding: 'utf8',
      timeout: 30_000,
    });

    expect(child.stdout).toContain('ConfigError');
    expect(child.stdout).toContain(`${join(dir, 'probe.sqlite')} is in use by another process`);
  });
});

describe('assertDatabaseFree', () => {
  const inAnotherProcess = (name: string) => {
    const script = `
      import { assertDatabaseFree } from ${JSON.stringify(join(import.meta.dirname, '../../common/db.ts'))};
      try { assertDatabaseFree(${JSON.stringify(dir)}, ${JSON.stringify(name)}); console.log('free'); }
      catch (error) { console.log(error.name + ': ' + error.message); }`;
    return spawnSync(process.execPath, ['--input-type=module', '-e', script], {
      encoding: 'utf8',
      timeout: 30_000,
    }).stdout;
  };

  it('says, as openDatabase would, that another process holds the file', () => {
    const answer = inAnotherProcess('probe');

    expect(answer).toContain('ConfigError');
    expect(answer).toContain(`${join(dir, 'probe.sqlite')} is in use by another process`);
  });

  it('finds a database nobody holds free, and one not created yet', async () => {
    const other = await openDatabase<Tables>(dir, 'closed', migrations);
    await other.destroy();

    expect(inAnotherProcess('closed')).toBe('free\n');
    expect(() => assertDatabaseFree(dir, 'not-created')).not.toThrow();
    expect(existsSync(join(dir, 'not-created.sqlite'))).toBe(false);
  });
});

/**
 * The group commit on a real SQLite file: units waiting while a burst runs go together in the
 * next one; when anything in a burst fails, it rolls back and its units run again alone, each
 * with its own outcome, and the writer says it ran them again (saga_transaction_reruns_total).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Migration } from 'kysely/migration';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { type Db, openDatabase } from '../../common/db.ts';
import { GroupCommit, type Rerun, type Unit } from '../../common/group-commit.ts';

interface Tables {
  marks: { name: string };
}

const migrations: Record<string, Migration> = {
  '0001_marks': {
    up: (db) =>
      db.schema
        .createTable('marks')
        .addColumn('name', 'text', (c) => c.primaryKey())
        .execute(),
  },
};

const dir = mkdtempSync(join(tmpdir(), 'group-commit-test-'));
let db: Db<Tables>;

beforeAll(async () => {
  db = await openDatabase<Tables>(dir, 'probe', migrations);
});

afterAll(async () => {
  await db.destroy();
  rmSync(dir, { recursive: true, force: true });
});

it('runs the units of a failed burst alone, keeps what the others wrote, and says it ran them again', async () => {
  const bursts: string[][] = [];
  const reruns: [Rerun, number][] = [];
  const commits = new GroupCommit<Tables, Unit<Tables> & { name: string }>(
    db,
    (burst) => bursts.push(burst.map((unit) => unit.name)),
    (reason, units) => reruns.push([reason, units]),
  );
  let open!: () => void;
  const gate = new Promise<void>((resolve) => {
    open = resolve;
  });
  const run = (name: string, refuse = false) =>
    new Promise<string>((resolve) =>
      commits.enqueue({
        name,
        apply: async (trx) => {
          if (name === 'first') await gate;
          await trx.insertInto('marks').values({ name }).execute();
          if (refuse) throw new Error(`${name} refused`);
          return undefined;
        },
        committed: () => resolve('committed'),
        failed: async (error) => resolve((error as Error).message),
      }),
    );

  // The first holds the writer: the next three wait, and go in one burst.
  const outcomes = Promise.all([run('first'), run('a'), run('b', true), run('c')]);
  open();

  expect(await outcomes).toEqual(['committed', 'committed', 'b refused', 'committed']);
  expect(reruns).toEqual([['split', 3]]);
  expect(bursts).toEqual([['first'], ['a'], ['c']]);
  const marks = await db.selectFrom('marks').select('name').orderBy('name').execute();
  expect(marks.map((m) => m.name)).toEqual(['a', 'c', 'first']);
});

/**
 * Tombstones: the mark that an order was called off before a step of it ran here. Messages
 * arrive late and out of order, so a compensation can come before the step it undoes; it then
 * finds nothing to undo and leaves a tombstone, and the late step finds the tombstone and is
 * refused rather than done and never undone (saga.md, "Failures and compensation").
 *
 * Every service that compensates keeps them the same way: a `tombstones` table (its tables
 * extend TombstoneTables; one of its migrations calls `createTombstones`) and `tombstones(trx)`
 * in its store. The step asks `has` before anything else; the compensation calls `leave`.
 */
import type { Kysely } from 'kysely';
import { keyedTable, nowIso, type Params, prepare, type Tx } from './db.ts';

export interface TombstoneTables {
  tombstones: {
    order_id: string;
    /** Why the order was called off (the cancellation's reason), where it was known. */
    reason: string | null;
    left_at: string;
  };
}

/** Creates the `tombstones` table, in the migration that brings it to a service's database. */
export async function createTombstones(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .createTable('tombstones')
    .addColumn('order_id', 'text', (c) => c.primaryKey())
    .addColumn('reason', 'text')
    .addColumn('left_at', 'text', (c) => c.notNull())
    .modifyEnd(keyedTable(db))
    .execute();
}

type Tombstone = TombstoneTables['tombstones'];

const insertTombstone = prepare((db: Kysely<TombstoneTables>, p: Params<Tombstone>) =>
  db
    .insertInto('tombstones')
    .values(p.row('order_id', 'reason', 'left_at'))
    .onConflict((oc) => oc.column('order_id').doNothing()),
);
const tombstoneOf = prepare((db: Kysely<TombstoneTables>, p: Params<{ orderId: string }>) =>
  db.selectFrom('tombstones').select('order_id').where('order_id', '=', p('orderId')),
);

/** The tombstones of a service's database, in the transaction of the message being handled. */
export interface Tombstones {
  /** Leaves the order's tombstone. Safe to repeat: the first one stays, with its reason. */
  leave(orderId: string, reason?: string): Promise<void>;
  /** Whether the order was called off here before this step. */
  has(orderId: string): Promise<boolean>;
}

export function tombstones<T extends TombstoneTables>(trx: Tx<T>): Tombstones {
  const db = trx as unknown as Kysely<TombstoneTables>;
  return {
    async leave(orderId, reason) {
      await insertTombstone(db, { order_id: orderId, reason: reason ?? null, left_at: nowIso() });
    },
    async has(orderId) {
      return (await tombstoneOf(db, { orderId })).rows.length > 0;
    },
  };
}

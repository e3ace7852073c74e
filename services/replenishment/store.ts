/** Replenishment's tables: purchase requests to the supplier, and tombstones of cancelled orders. */
import { sql } from 'kysely';
import type { Migration } from 'kysely/migration';
import { type Db, nowIso, type Params, prepare, type Tx } from '../../common/db.ts';
import type { SagaContext } from '../../common/events.ts';
import { newId } from '../../common/ids.ts';
import { type StoredContext, storeContext } from '../../common/saga-context.ts';
import { createTombstones, type TombstoneTables, tombstones } from '../../common/tombstones.ts';

export type ReplenishmentStatus = 'PENDING' | 'COMPLETED' | 'FAILED' | 'CANCELLED';
export type Trigger = 'inventory.backordered' | 'stock.low';

export interface ReplenishmentTables extends TombstoneTables {
  replenishments: {
    id: string;
    sku: string;
    quantity: number;
    order_id: string | null;
    trigger: Trigger;
    status: ReplenishmentStatus;
    detail: string | null;
    /** The saga context of the triggering event, copied onto the event the supplier's answer emits. */
    context: StoredContext;
    created_at: string;
    due_at: string;
    settled_at: string | null;
  };
}

export const migrations: Record<string, Migration> = {
  '0001_replenishment': {
    async up(db) {
      await db.schema
        .createTable('replenishments')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('sku', 'text', (c) => c.notNull())
        .addColumn('quantity', 'integer', (c) => c.notNull())
        .addColumn('order_id', 'text')
        .addColumn('trigger', 'text', (c) => c.notNull())
        .addColumn('status', 'text', (c) => c.notNull())
        .addColumn('detail', 'text')
        .addColumn('context', 'text', (c) => c.notNull())
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addColumn('due_at', 'text', (c) => c.notNull())
        .execute();
      await db.schema
        .createIndex('replenishments_due')
        .on('replenishments')
        .columns(['status', 'due_at'])
        .execute();
      await db.schema.createIndex('replenishments_order').on('replenishments').column('order_id').execute();
      await db.schema
        .createTable('cancelled_orders')
        .addColumn('order_id', 'text', (c) => c.primaryKey())
        .addColumn('cancelled_at', 'text', (c) => c.notNull())
        .execute();
    },
  },
  '0002_settled_at': {
    async up(db) {
      await db.schema.alterTable('replenishments').addColumn('settled_at', 'text').execute();
    },
  },
  '0003_restocks_by_sku': {
    async up(db) {
      // Every stock.low asks whether a restock of its SKU is underway: without it, a table scan.
      await db.schema
        .createIndex('replenishments_restocks')
        .on('replenishments')
        .columns(['sku', 'trigger', 'status', 'settled_at'])
        .execute();
    },
  },
  '0004_tombstones': {
    async up(db) {
      await createTombstones(db);
      // An earlier version kept them in a table of its own, without the reason.
      await sql`insert into tombstones (order_id, reason, left_at)
        select order_id, null, cancelled_at from cancelled_orders`.execute(db);
      await db.schema.dropTable('cancelled_orders').execute();
    },
  },
};

export type Replenishment = ReplenishmentTables['replenishments'];

// The statements every request runs through (prepared once: see `prepare`).
const insertRequest = prepare((db: Db<ReplenishmentTables>, p: Params<Replenishment>) =>
  db
    .insertInto('replenishments')
    .values(
      p.row(
        'id',
        'sku',
        'quantity',
        'order_id',
        'trigger',
        'status',
        'detail',
        'context',
        'created_at',
        'due_at',
        'settled_at',
      ),
    ),
);
const restockSince = prepare((db: Db<ReplenishmentTables>, p: Params<{ sku: string; since: string }>) =>
  db
    .selectFrom('replenishments')
    .select('id')
    .where('sku', '=', p('sku'))
    .where('trigger', '=', 'stock.low')
    .where((eb) =>
      eb.or([
        eb('status', '=', 'PENDING'),
        eb.and([eb('status', '=', 'COMPLETED'), eb('settled_at', '>=', p('since'))]),
      ]),
    )
    .limit(1),
);
type Settlement = Pick<Replenishment, 'id' | 'status' | 'detail' | 'settled_at'>;
const settlePending = prepare((db: Db<ReplenishmentTables>, p: Params<Settlement>) =>
  db
    .updateTable('replenishments')
    .set({ status: p('status'), detail: p('detail'), settled_at: p('settled_at') })
    .where('id', '=', p('id'))
    .where('status', '=', 'PENDING')
    .returningAll(),
);

export function replenishmentStore(trx: Tx<ReplenishmentTables>) {
  return {
    tombstones: tombstones(trx),

    async request(r: {
      sku: string;
      quantity: number;
      orderId?: string;
      trigger: Trigger;
      context: SagaContext;
      delayMs: number;
    }): Promise<void> {
      const now = Date.now();
      await insertRequest(trx, {
        id: newId(),
        sku: r.sku,
        quantity: r.quantity,
        order_id: r.orderId ?? null,
        trigger: r.trigger,
        status: 'PENDING',
        detail: null,
        context: storeContext(r.context),
        created_at: new Date(now).toISOString(),
        due_at: new Date(now + r.delayMs).toISOString(),
        settled_at: null,
      });
    },

    /**
     * A restock of the SKU is on its way, or arrived after `since` (the stock.low was sent before
     * the delivery reached inventory): ordering again would overshoot.
     */
    async restockUnderway(sku: string, since: string): Promise<boolean> {
      return (await restockSince(trx, { sku, since })).rows.length > 0;
    },

    /** Moves a PENDING request on and returns it; undefined if something else (a cancellation) got there first. */
    async settle(
      id: string,
      status: Exclude<ReplenishmentStatus, 'PENDING'>,
      detail?: string,
    ): Promise<Replenishment | undefined> {
      const settlement = { id, status, detail: detail ?? null, settled_at: nowIso() };
      return (await settlePending(trx, settlement)).rows[0];
    },

    /** Cancels the order's pending requests: the supplier answers none of them. */
    /** Calls off the order's pending purchases; returns their ids. */
    async cancelPending(orderId: string): Promise<string[]> {
      const rows = await trx
        .updateTable('replenishments')
        .set({ status: 'CANCELLED', detail: 'order cancelled', settled_at: nowIso() })
        .where('order_id', '=', orderId)
        .where('status', '=', 'PENDING')
        .returning('id')
        .execute();
      return rows.map((r) => r.id);
    },
  };
}

export type ReplenishmentStore = ReturnType<typeof replenishmentStore>;

const pendingByDueTime = prepare((db: Db<ReplenishmentTables>, p: Params<{ dueBy: string; limit: number }>) =>
  db
    .selectFrom('replenishments')
    .selectAll()
    .where('status', '=', 'PENDING')
    .where('due_at', '<=', p('dueBy'))
    .orderBy('due_at')
    .limit(p('limit')),
);

/** Requests whose supplier delay has passed. */
export async function dueRequests(db: Db<ReplenishmentTables>, limit = 100): Promise<Replenishment[]> {
  return (await pendingByDueTime(db, { dueBy: nowIso(), limit })).rows;
}

/** When the earliest pending request falls due (epoch ms), if any is pending. */
export async function nextDue(db: Db<ReplenishmentTables>): Promise<number | undefined> {
  // Due by any time: ISO-8601 timestamps all sort before '9999'.
  const [next] = (await pendingByDueTime(db, { dueBy: '9999', limit: 1 })).rows;
  return next && Date.parse(next.due_at);
}

export async function listReplenishments(
  db: Db<ReplenishmentTables>,
  filter: { orderId?: string; sku?: string },
) {
  let query = db.selectFrom('replenishments').selectAll().orderBy('created_at', 'desc').limit(1000);
  if (filter.orderId) query = query.where('order_id', '=', filter.orderId);
  if (filter.sku) query = query.where('sku', '=', filter.sku);
  return (await query.execute()).map((r) => ({
    id: r.id,
    sku: r.sku,
    quantity: r.quantity,
    ...(r.order_id ? { orderId: r.order_id } : {}),
    trigger: r.trigger,
    status: r.status,
    ...(r.detail ? { detail: r.detail } : {}),
    createdAt: r.created_at,
    dueAt: r.due_at,
  }));
}

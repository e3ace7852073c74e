/** Replenishment's tables: purchase requests to the supplier, and tombstones of cancelled orders. */
import type { Migration } from 'kysely';
import { type Db, nowIso, type Tx } from '../../common/db.ts';
import type { SagaContext } from '../../common/events.ts';
import { newId } from '../../common/ids.ts';

export type ReplenishmentStatus = 'PENDING' | 'COMPLETED' | 'FAILED' | 'CANCELLED';
export type Trigger = 'inventory.backordered' | 'stock.low';

export interface ReplenishmentTables {
  replenishments: {
    id: string;
    sku: string;
    quantity: number;
    order_id: string | null;
    trigger: Trigger;
    status: ReplenishmentStatus;
    detail: string | null;
    /** The saga context of the triggering event, copied onto the event the supplier's answer emits. */
    context: string;
    created_at: string;
    due_at: string;
    settled_at: string | null;
  };
  cancelled_orders: { order_id: string; cancelled_at: string };
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
};

export type Replenishment = ReplenishmentTables['replenishments'];

export function replenishmentStore(trx: Tx<ReplenishmentTables>) {
  return {
    async request(r: {
      sku: string;
      quantity: number;
      orderId?: string;
      trigger: Trigger;
      context: SagaContext;
      delayMs: number;
    }): Promise<void> {
      const now = Date.now();
      await trx
        .insertInto('replenishments')
        .values({
          id: newId(),
          sku: r.sku,
          quantity: r.quantity,
          order_id: r.orderId ?? null,
          trigger: r.trigger,
          status: 'PENDING',
          detail: null,
          context: JSON.stringify(r.context),
          created_at: new Date(now).toISOString(),
          due_at: new Date(now + r.delayMs).toISOString(),
          settled_at: null,
        })
        .execute();
    },

    /**
     * A restock of the SKU is on its way, or arrived after `since` (the stock.low was sent before
     * the delivery reached inventory): ordering again would overshoot.
     */
    async restockUnderway(sku: string, since: string): Promise<boolean> {
      const row = await trx
        .selectFrom('replenishments')
        .select('id')
        .where('sku', '=', sku)
        .where('trigger', '=', 'stock.low')
        .where((eb) =>
          eb.or([
            eb('status', '=', 'PENDING'),
            eb.and([eb('status', '=', 'COMPLETED'), eb('settled_at', '>=', since)]),
          ]),
        )
        .executeTakeFirst();
      return row !== undefined;
    },

    /** Moves a PENDING request on; false if something else (a cancellation) got there first. */
    async settle(
      id: string,
      status: Exclude<ReplenishmentStatus, 'PENDING'>,
      detail?: string,
    ): Promise<Replenishment | undefined> {
      const updated = await trx
        .updateTable('replenishments')
        .set({ status, detail: detail ?? null, settled_at: nowIso() })
        .where('id', '=', id)
        .where('status', '=', 'PENDING')
        .executeTakeFirst();
      if (Number(updated.numUpdatedRows) === 0) return undefined;
      return trx.selectFrom('replenishments').selectAll().where('id', '=', id).executeTakeFirst();
    },

    /** Cancels the order's pending requests and leaves a tombstone against late backorders. */
    async cancelOrder(orderId: string): Promise<number> {
      await trx
        .insertInto('cancelled_orders')
        .values({ order_id: orderId, cancelled_at: nowIso() })
        .onConflict((oc) => oc.doNothing())
        .execute();
      const result = await trx
        .updateTable('replenishments')
        .set({ status: 'CANCELLED', detail: 'order cancelled', settled_at: nowIso() })
        .where('order_id', '=', orderId)
        .where('status', '=', 'PENDING')
        .executeTakeFirst();
      return Number(result.numUpdatedRows);
    },

    async isCancelled(orderId: string): Promise<boolean> {
      const row = await trx
        .selectFrom('cancelled_orders')
        .select('order_id')
        .where('order_id', '=', orderId)
        .executeTakeFirst();
      return row !== undefined;
    },
  };
}

export type ReplenishmentStore = ReturnType<typeof replenishmentStore>;

/** Requests whose supplier delay has passed. */
export async function dueRequests(db: Db<ReplenishmentTables>, limit = 100): Promise<Replenishment[]> {
  return db
    .selectFrom('replenishments')
    .selectAll()
    .where('status', '=', 'PENDING')
    .where('due_at', '<=', nowIso())
    .orderBy('due_at')
    .limit(limit)
    .execute();
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

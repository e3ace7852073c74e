/** Inventory's tables: stock per SKU, the orders it has seen, reservations, backorders and tombstones. */
import { type Generated, sql } from 'kysely';
import type { Migration } from 'kysely/migration';
import { type Db, keyedTable, nowIso, type Params, prepare, serialKey, type Tx } from '../../common/db.ts';
import { DEMO_CATALOG } from '../../common/demo-catalog.ts';
import type { EventData, SagaContext } from '../../common/events.ts';
import { readContext, type StoredContext, storeContext } from '../../common/saga-context.ts';
import { createTombstones, type TombstoneTables, tombstones } from '../../common/tombstones.ts';
import { allocate, type NowReserved, type StockLevel } from './domain.ts';

/** What inventory knows of an order it has reserved (or rejected). */
export type InventoryOrderStatus = 'RESERVED' | 'BACKORDERED' | 'REJECTED' | 'DEDUCTED' | 'RELEASED';

export interface InventoryTables extends TombstoneTables {
  stock: {
    sku: string;
    name: string;
    on_hand: number;
    reserved: number;
    reorder_point: number;
    discontinued: number;
    initial: number;
    replenished: number;
    dispatched: number;
  };
  /** The orders it has decided on; one cancelled before its order.created has a tombstone instead. */
  orders: {
    order_id: string;
    status: InventoryOrderStatus;
    shipping_address: string | null;
    /** The order's saga context, for events about it emitted while handling another order's. */
    context: StoredContext | null;
    updated_at: string;
  };
  reservations: { order_id: string; sku: string; requested: number; quantity: number };
  /**
   * Waiting lines, filled first come first served. A `held` one waits for its own order's
   * replenishment only: the order was told to fail there (X-Fail-At: replenishment).
   */
  backorders: { seq: Generated<number>; order_id: string; sku: string; missing: number; held: number };
}

export const migrations: Record<string, Migration> = {
  '0001_inventory': {
    async up(db) {
      await db.schema
        .createTable('stock')
        .addColumn('sku', 'text', (c) => c.primaryKey())
        .addColumn('name', 'text', (c) => c.notNull())
        .addColumn('on_hand', 'integer', (c) => c.notNull())
        .addColumn('reserved', 'integer', (c) => c.notNull().defaultTo(0))
        .addColumn('reorder_point', 'integer', (c) => c.notNull())
        .addColumn('discontinued', 'integer', (c) => c.notNull().defaultTo(0))
        .addColumn('initial', 'integer', (c) => c.notNull())
        .addColumn('replenished', 'integer', (c) => c.notNull().defaultTo(0))
        .addColumn('dispatched', 'integer', (c) => c.notNull().defaultTo(0))
        .addCheckConstraint('never_oversold', sql`reserved >= 0 and on_hand >= reserved`)
        .modifyEnd(keyedTable(db))
        .execute();
      await db.schema
        .createTable('orders')
        .addColumn('order_id', 'text', (c) => c.primaryKey())
        .addColumn('status', 'text', (c) => c.notNull())
        .addColumn('shipping_address', 'text')
        .addColumn('updated_at', 'text', (c) => c.notNull())
        .modifyEnd(keyedTable(db))
        .execute();
      await db.schema
        .createTable('reservations')
        .addColumn('order_id', 'text', (c) => c.notNull())
        .addColumn('sku', 'text', (c) => c.notNull())
        .addColumn('requested', 'integer', (c) => c.notNull())
        .addColumn('quantity', 'integer', (c) => c.notNull())
        .addPrimaryKeyConstraint('reservations_pk', ['order_id', 'sku'])
        .modifyEnd(keyedTable(db))
        .execute();
      await db.schema
        .createTable('backorders')
        .addColumn('seq', serialKey(db), (c) => c.primaryKey())
        .addColumn('order_id', 'text', (c) => c.notNull())
        .addColumn('sku', 'text', (c) => c.notNull())
        .addColumn('missing', 'integer', (c) => c.notNull())
        .execute();
      await db.schema.createIndex('backorders_by_sku').on('backorders').columns(['sku', 'seq']).execute();
      await db.schema.createIndex('backorders_by_order').on('backorders').column('order_id').execute();
    },
  },
  '0002_held_backorders': {
    async up(db) {
      await db.schema
        .alterTable('backorders')
        .addColumn('held', 'integer', (c) => c.notNull().defaultTo(0))
        .execute();
    },
  },
  '0003_order_context': {
    async up(db) {
      await db.schema.alterTable('orders').addColumn('context', 'text').execute();
    },
  },
  '0004_tombstones': {
    async up(db) {
      await createTombstones(db);
      // An earlier version kept a tombstone as an order row in status CANCELLED.
      await sql`insert into tombstones (order_id, reason, left_at)
        select order_id, null, updated_at from orders where status = 'CANCELLED'`.execute(db);
      await db.deleteFrom('orders').where('status', '=', 'CANCELLED').execute();
    },
  },
};

type Address = EventData<'order.created'>['shippingAddress'];
type Items = EventData<'inventory.reserved'>['items'];

const toLevel = (row: InventoryTables['stock']): StockLevel => ({
  sku: row.sku,
  onHand: row.on_hand,
  reserved: row.reserved,
  reorderPoint: row.reorder_point,
  discontinued: row.discontinued === 1,
});

// The statements every order runs through (prepared once: see `prepare`).
const stockBySku = prepare((db: Db<InventoryTables>, p: Params<{ sku: string }>) =>
  db.selectFrom('stock').selectAll().where('sku', '=', p('sku')),
);
const orderById = prepare((db: Db<InventoryTables>, p: Params<{ orderId: string }>) =>
  db.selectFrom('orders').selectAll().where('order_id', '=', p('orderId')),
);
type OrderRow = InventoryTables['orders'];
const upsertOrder = prepare((db: Db<InventoryTables>, p: Params<OrderRow>) =>
  db
    .insertInto('orders')
    .values(p.row('order_id', 'status', 'shipping_address', 'context', 'updated_at'))
    .onConflict((oc) =>
      oc.column('order_id').doUpdateSet((eb) => ({
        status: eb.ref('excluded.status'),
        updated_at: eb.ref('excluded.updated_at'),
        // Given once, with the order's first status; later changes leave them be.
        shipping_address: eb.fn.coalesce('excluded.shipping_address', 'orders.shipping_address'),
        context: eb.fn.coalesce('excluded.context', 'orders.context'),
      })),
    ),
);
const addReserved = prepare((db: Db<InventoryTables>, p: Params<{ sku: string; quantity: number }>) =>
  db
    .updateTable('stock')
    .set({ reserved: sql`reserved + ${p('quantity')}` })
    .where('sku', '=', p('sku')),
);
const upsertReservation = prepare((db: Db<InventoryTables>, p: Params<InventoryTables['reservations']>) =>
  db
    .insertInto('reservations')
    .values(p.row('order_id', 'sku', 'requested', 'quantity'))
    .onConflict((oc) =>
      oc
        .columns(['order_id', 'sku'])
        .doUpdateSet({ quantity: sql`reservations.quantity + excluded.quantity` }),
    ),
);
const reservationsOf = prepare((db: Db<InventoryTables>, p: Params<{ orderId: string }>) =>
  db.selectFrom('reservations').selectAll().where('order_id', '=', p('orderId')).orderBy('sku'),
);
const insertBackorder = prepare(
  (db: Db<InventoryTables>, p: Params<Omit<InventoryTables['backorders'], 'seq'>>) =>
    db.insertInto('backorders').values(p.row('order_id', 'sku', 'missing', 'held')),
);
const addOnHand = prepare((db: Db<InventoryTables>, p: Params<{ sku: string; quantity: number }>) =>
  db
    .updateTable('stock')
    .set({ on_hand: sql`on_hand + ${p('quantity')}`, replenished: sql`replenished + ${p('quantity')}` })
    .where('sku', '=', p('sku')),
);
/** A held backorder waits for its own order's replenishment (`own`); nothing else fills it. */
const waitingBackorders = prepare((db: Db<InventoryTables>, p: Params<{ sku: string; own: string | null }>) =>
  db
    .selectFrom('backorders')
    .select(['seq', 'order_id as orderId', 'missing'])
    .where('sku', '=', p('sku'))
    .where((eb) => eb.or([eb('held', '=', 0), eb('order_id', '=', p('own'))]))
    .orderBy('seq'),
);
const addToReservation = prepare(
  (db: Db<InventoryTables>, p: Params<{ orderId: string; sku: string; quantity: number }>) =>
    db
      .updateTable('reservations')
      .set({ quantity: sql`quantity + ${p('quantity')}` })
      .where('order_id', '=', p('orderId'))
      .where('sku', '=', p('sku')),
);
const shrinkBackorder = prepare((db: Db<InventoryTables>, p: Params<{ seq: number; quantity: number }>) =>
  db
    .updateTable('backorders')
    .set({ missing: sql`missing - ${p('quantity')}` })
    .where('seq', '=', p('seq')),
);
const dropFilledBackorders = prepare((db: Db<InventoryTables>, p: Params<{ sku: string }>) =>
  db.deleteFrom('backorders').where('sku', '=', p('sku')).where('missing', '<=', 0),
);
const firstBackorderOf = prepare((db: Db<InventoryTables>, p: Params<{ orderId: string }>) =>
  db.selectFrom('backorders').select('seq').where('order_id', '=', p('orderId')).limit(1),
);
const deductStock = prepare((db: Db<InventoryTables>, p: Params<{ sku: string; quantity: number }>) =>
  db
    .updateTable('stock')
    .set({
      on_hand: sql`on_hand - ${p('quantity')}`,
      reserved: sql`reserved - ${p('quantity')}`,
      dispatched: sql`dispatched + ${p('quantity')}`,
    })
    .where('sku', '=', p('sku')),
);

export function inventoryStore(trx: Tx<InventoryTables>) {
  const store = {
    tombstones: tombstones(trx),

    async stock(skus: readonly string[]): Promise<Map<string, StockLevel>> {
      const levels = new Map<string, StockLevel>();
      for (const sku of new Set(skus)) {
        const [row] = (await stockBySku(trx, { sku })).rows;
        if (row) levels.set(sku, toLevel(row));
      }
      return levels;
    },

    async order(orderId: string) {
      return (await orderById(trx, { orderId })).rows[0];
    },

    /** Records the order's status; the first time, with its shipping address and saga context. */
    async setOrder(
      orderId: string,
      status: InventoryOrderStatus,
      first?: { shippingAddress: Address; context: SagaContext },
    ): Promise<void> {
      await upsertOrder(trx, {
        order_id: orderId,
        status,
        shipping_address: first ? JSON.stringify(first.shippingAddress) : null,
        context: first ? storeContext(first.context) : null,
        updated_at: nowIso(),
      });
    },

    /** Reserves `quantity` more of `sku` for the order (the line asked for `requested`). */
    async reserve(orderId: string, sku: string, requested: number, quantity: number): Promise<void> {
      if (quantity > 0) await addReserved(trx, { sku, quantity });
      await upsertReservation(trx, { order_id: orderId, sku, requested, quantity });
    },

    async addBackorder(orderId: string, sku: string, missing: number, held = false): Promise<void> {
      await insertBackorder(trx, { order_id: orderId, sku, missing, held: held ? 1 : 0 });
    },

    async reservations(orderId: string) {
      return (await reservationsOf(trx, { orderId })).rows;
    },

    /** Gives back every unit reserved for the order and drops its backorders; returns what was released. */
    async release(orderId: string): Promise<{ sku: string; quantity: number }[]> {
      const held = await store.reservations(orderId);
      for (const { sku, quantity } of held) {
        if (quantity > 0) {
          await trx
            .updateTable('stock')
            .set({ reserved: sql`reserved - ${quantity}` })
            .where('sku', '=', sku)
            .execute();
        }
      }
      await trx.updateTable('reservations').set({ quantity: 0 }).where('order_id', '=', orderId).execute();
      await trx.deleteFrom('backorders').where('order_id', '=', orderId).execute();
      return held.filter((r) => r.quantity > 0).map(({ sku, quantity }) => ({ sku, quantity }));
    },

    /** The reservation leaves the warehouse: on hand and reserved both go down. */
    async deduct(orderId: string): Promise<void> {
      for (const { sku, quantity } of await store.reservations(orderId)) {
        await deductStock(trx, { sku, quantity });
      }
    },

    async addStock(sku: string, quantity: number): Promise<boolean> {
      const { numAffectedRows } = await addOnHand(trx, { sku, quantity });
      return Number(numAffectedRows) > 0;
    },

    /**
     * Gives free stock of these SKUs to waiting backorders, first come first served, and returns
     * the orders that have nothing left waiting.
     */
    async fillBackorders(skus: readonly string[], ownReplenishmentOf?: string): Promise<NowReserved[]> {
      const touched = new Set<string>();
      for (const [sku, level] of await store.stock(skus)) {
        const { rows: waiting } = await waitingBackorders(trx, { sku, own: ownReplenishmentOf ?? null });
        for (const { seq, orderId, take } of allocate(waiting, level.onHand - level.reserved)) {
          await addReserved(trx, { sku, quantity: take });
          await addToReservation(trx, { orderId, sku, quantity: take });
          await shrinkBackorder(trx, { seq, quantity: take });
          touched.add(orderId);
        }
        await dropFilledBackorders(trx, { sku });
      }
      const ready: NowReserved[] = [];
      for (const orderId of touched) {
        const [left] = (await firstBackorderOf(trx, { orderId })).rows;
        const order = await store.order(orderId);
        if (left || order?.status !== 'BACKORDERED') continue;
        await store.setOrder(orderId, 'RESERVED');
        const items = (await store.reservations(orderId)).map(({ sku, requested }) => ({
          sku,
          quantity: requested,
        }));
        ready.push({
          orderId,
          items: items as Items,
          shippingAddress: JSON.parse(order.shipping_address ?? 'null'),
          context: readContext(order.context),
        });
      }
      return ready;
    },
  };
  return store;
}

export type InventoryStore = ReturnType<typeof inventoryStore>;

/** Seeds the demo catalog into an empty stock table. */
export async function seedCatalog(db: Db<InventoryTables>): Promise<number> {
  const existing = await db.selectFrom('stock').select('sku').limit(1).executeTakeFirst();
  if (existing) return 0;
  await db
    .insertInto('stock')
    .values(
      DEMO_CATALOG.map((entry) => ({
        sku: entry.sku,
        name: entry.name,
        on_hand: entry.onHand,
        reserved: 0,
        reorder_point: entry.reorderPoint,
        discontinued: entry.discontinued ? 1 : 0,
        initial: entry.onHand,
        replenished: 0,
        dispatched: 0,
      })),
    )
    // Two instances starting at once on one database: the second finds the catalog there.
    .onConflict((oc) => oc.column('sku').doNothing())
    .execute();
  return DEMO_CATALOG.length;
}

/** The read API's view of one SKU. */
export async function readStock(db: Db<InventoryTables>, sku?: string) {
  let query = db.selectFrom('stock').selectAll().orderBy('sku');
  if (sku) query = query.where('sku', '=', sku);
  const rows = await query.execute();
  return rows.map((row) => ({
    sku: row.sku,
    name: row.name,
    onHand: row.on_hand,
    reserved: row.reserved,
    available: row.on_hand - row.reserved,
    reorderPoint: row.reorder_point,
    discontinued: row.discontinued === 1,
    initial: row.initial,
    replenished: row.replenished,
    dispatched: row.dispatched,
  }));
}

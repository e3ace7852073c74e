/**
 * Shipment's tables: one row per order it has shipped or failed to ship, and the tombstones of
 * the orders it promised never to dispatch.
 */
import { sql } from 'kysely';
import type { Migration } from 'kysely/migration';
import { type Db, keyedTable, nowIso, type Params, prepare, type Tx } from '../../common/db.ts';
import { createTombstones, type TombstoneTables, tombstones } from '../../common/tombstones.ts';

/**
 * What GET /shipments shows of an order. CANCELLED is the promise never to dispatch it: its
 * tombstone, left by a cancel before dispatch or by a cancellation that came first.
 */
export type ShipmentStatus = 'DISPATCHED' | 'FAILED' | 'CANCELLED';

export interface ShipmentTables extends TombstoneTables {
  shipments: {
    order_id: string;
    id: string | null;
    status: Exclude<ShipmentStatus, 'CANCELLED'>;
    carrier: string | null;
    tracking_number: string | null;
    country: string | null;
    detail: string | null;
    created_at: string;
  };
}

export const migrations: Record<string, Migration> = {
  '0001_shipment': {
    async up(db) {
      await db.schema
        .createTable('shipments')
        .addColumn('order_id', 'text', (c) => c.primaryKey())
        .addColumn('id', 'text', (c) => c.unique())
        .addColumn('status', 'text', (c) => c.notNull())
        .addColumn('carrier', 'text')
        .addColumn('tracking_number', 'text')
        .addColumn('country', 'text')
        .addColumn('detail', 'text')
        .addColumn('created_at', 'text', (c) => c.notNull())
        .modifyEnd(keyedTable(db))
        .execute();
    },
  },
  '0002_tombstones': {
    async up(db) {
      await createTombstones(db);
      // An earlier version kept the promise as a shipment row in status CANCELLED, the reason as its detail.
      await sql`insert into tombstones (order_id, reason, left_at)
        select order_id, detail, created_at from shipments where status = 'CANCELLED'`.execute(db);
      await db.deleteFrom('shipments').where('status', '=', 'CANCELLED').execute();
    },
  },
};

type Row = ShipmentTables['shipments'];

// The statements every order runs through (prepared once: see `prepare`).
const shipmentOf = prepare((db: Db<ShipmentTables>, p: Params<{ orderId: string }>) =>
  db.selectFrom('shipments').selectAll().where('order_id', '=', p('orderId')),
);
const insertShipment = prepare((db: Db<ShipmentTables>, p: Params<Row>) =>
  db
    .insertInto('shipments')
    .values(
      p.row('order_id', 'id', 'status', 'carrier', 'tracking_number', 'country', 'detail', 'created_at'),
    ),
);

export function shipmentStore(trx: Tx<ShipmentTables>) {
  return {
    tombstones: tombstones(trx),
    async shipment(orderId: string): Promise<Row | undefined> {
      return (await shipmentOf(trx, { orderId })).rows[0];
    },
    async record(row: Omit<Row, 'created_at'>): Promise<void> {
      await insertShipment(trx, { ...row, created_at: nowIso() });
    },
  };
}

export type ShipmentStore = ReturnType<typeof shipmentStore>;

const LISTED = 1000;

/** The newest shipments (of one order, if given), the promises never to dispatch among them. */
export async function listShipments(db: Db<ShipmentTables>, orderId?: string) {
  let shipped = db.selectFrom('shipments').selectAll().orderBy('created_at', 'desc').limit(LISTED);
  let promised = db.selectFrom('tombstones').selectAll().orderBy('left_at', 'desc').limit(LISTED);
  if (orderId) {
    shipped = shipped.where('order_id', '=', orderId);
    promised = promised.where('order_id', '=', orderId);
  }
  const shipments = (await shipped.execute()).map((r) => ({
    ...(r.id ? { id: r.id } : {}),
    orderId: r.order_id,
    status: r.status,
    ...(r.carrier ? { carrier: r.carrier } : {}),
    ...(r.tracking_number ? { trackingNumber: r.tracking_number } : {}),
    ...(r.country ? { country: r.country } : {}),
    ...(r.detail ? { detail: r.detail } : {}),
    createdAt: r.created_at,
  }));
  const promises = (await promised.execute()).map((t) => ({
    orderId: t.order_id,
    status: 'CANCELLED' as const,
    ...(t.reason ? { detail: t.reason } : {}),
    createdAt: t.left_at,
  }));
  return [...shipments, ...promises].sort((a, b) => b.createdAt.localeCompare(a.createdAt)).slice(0, LISTED);
}

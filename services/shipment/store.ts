/** Shipment's table: one row per order it has decided on (dispatched, failed, or promised never to ship). */
import { sql } from 'kysely';
import type { Migration } from 'kysely/migration';
import { type Db, nowIso, type Params, prepare, type Tx } from '../../common/db.ts';

/** CANCELLED is the promise never to dispatch the order (also a tombstone against a late reservation). */
export type ShipmentStatus = 'DISPATCHED' | 'FAILED' | 'CANCELLED';

export interface ShipmentTables {
  shipments: {
    order_id: string;
    id: string | null;
    status: ShipmentStatus;
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
        // Stored in its primary key's b-tree: one write per row, not a table and an index.
        .modifyEnd(sql`without rowid`)
        .execute();
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
  const store = {
    async shipment(orderId: string): Promise<Row | undefined> {
      return (await shipmentOf(trx, { orderId })).rows[0];
    },
    /** The promise never to dispatch the order: a CANCELLED row, which refuses a later reservation. */
    async neverDispatch(orderId: string, reason: string): Promise<void> {
      await store.record({
        order_id: orderId,
        id: null,
        status: 'CANCELLED',
        carrier: null,
        tracking_number: null,
        country: null,
        detail: reason,
      });
    },
    async record(row: Omit<Row, 'created_at'>): Promise<void> {
      await insertShipment(trx, { ...row, created_at: nowIso() });
    },
  };
  return store;
}

export type ShipmentStore = ReturnType<typeof shipmentStore>;

export async function listShipments(db: Db<ShipmentTables>, orderId?: string) {
  let query = db.selectFrom('shipments').selectAll().orderBy('created_at', 'desc').limit(1000);
  if (orderId) query = query.where('order_id', '=', orderId);
  return (await query.execute()).map((r) => ({
    ...(r.id ? { id: r.id } : {}),
    orderId: r.order_id,
    status: r.status,
    ...(r.carrier ? { carrier: r.carrier } : {}),
    ...(r.tracking_number ? { trackingNumber: r.tracking_number } : {}),
    ...(r.country ? { country: r.country } : {}),
    ...(r.detail ? { detail: r.detail } : {}),
    createdAt: r.created_at,
  }));
}

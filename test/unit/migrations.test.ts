/**
 * A database an earlier version left still opens: each service's new migrations convert the rows
 * of the old forms (saga context, tombstones) into the common ones, and the store reads them.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql } from 'kysely';
import type { Migration } from 'kysely/migration';
import { afterEach, describe, expect, it } from 'vitest';
import { type Db, openDatabase } from '../../common/db.ts';
import type { ServiceName } from '../../common/events.ts';
import { readContext } from '../../common/saga-context.ts';
import { type TombstoneTables, tombstones } from '../../common/tombstones.ts';
import { type InventoryTables, migrations as inventoryMigrations } from '../../services/inventory/store.ts';
import { type OrderTables, migrations as orderMigrations } from '../../services/order-creation/store.ts';
import {
  type ReplenishmentTables,
  migrations as replenishmentMigrations,
} from '../../services/replenishment/store.ts';
import {
  listShipments,
  type ShipmentTables,
  migrations as shipmentMigrations,
} from '../../services/shipment/store.ts';

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

/**
 * The service's database as the version whose last migration was `last` left it, with `rows`
 * written by that version's SQL; then opened (and migrated) by this version.
 */
async function upgraded<T>(
  service: ServiceName,
  migrations: Record<string, Migration>,
  last: string,
  rows: (db: Db<unknown>) => Promise<unknown>,
): Promise<Db<T>> {
  const dir = mkdtempSync(join(tmpdir(), `saga-migrations-${service}-`));
  dirs.push(dir);
  const earlier = Object.fromEntries(Object.entries(migrations).filter(([name]) => name <= last));
  const old = await openDatabase<unknown>(dir, service, earlier);
  await rows(old);
  await old.destroy();
  return openDatabase<T>(dir, service, migrations);
}

describe('order-creation, from a database with traceparent and fail_at columns', () => {
  it("keeps each order's saga context in the common form", async () => {
    const traceparent = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
    const db = await upgraded<OrderTables>('order-creation', orderMigrations, '0001_orders', async (old) => {
      for (const [id, tp, failAt] of [
        ['order-traced', traceparent, 'shipment'],
        ['order-plain', null, null],
      ])
        await sql`insert into orders (id, customer_id, status, items, shipping_address, traceparent, fail_at, created_at, updated_at, deadline_at)
          values (${id}, 'c-1', 'PENDING', '[]', '{}', ${tp}, ${failAt}, '2025-01-01T00:00:00.000Z', '2025-01-01T00:00:00.000Z', '2025-01-01T00:00:30.000Z')`.execute(
          old,
        );
    });

    const rows = await db.selectFrom('orders').selectAll().orderBy('id').execute();
    await db.destroy();

    expect(rows.map((row) => ({ id: row.id, context: readContext(row.context) }))).toEqual([
      { id: 'order-plain', context: { orderId: 'order-plain' } },
      { id: 'order-traced', context: { orderId: 'order-traced', traceparent, failAt: 'shipment' } },
    ]);
    expect(Object.keys(rows[0] ?? {})).not.toContain('traceparent');
    expect(Object.keys(rows[0] ?? {})).not.toContain('fail_at');
  });
});

const AT = '2025-01-01T00:00:00.000Z';

/** Whether the store of this version finds the order's tombstone. */
const tombstoned = <T extends TombstoneTables>(db: Db<T>, orderId: string) =>
  db.transaction().execute((trx) => tombstones(trx).has(orderId));

describe('inventory, from a database whose tombstones were order rows in status CANCELLED', () => {
  it('keeps each as a tombstone and the other orders as they were', async () => {
    const db = await upgraded<InventoryTables>(
      'inventory',
      inventoryMigrations,
      '0003_order_context',
      (old) =>
        sql`insert into orders (order_id, status, shipping_address, context, updated_at) values
        ('order-called-off', 'CANCELLED', null, null, ${AT}),
        ('order-reserved', 'RESERVED', '{}', '{"orderId":"order-reserved"}', ${AT})`.execute(old),
    );

    const orders = await db.selectFrom('orders').select(['order_id', 'status']).execute();
    const kept = await db.selectFrom('tombstones').selectAll().execute();
    const refused = await tombstoned(db, 'order-called-off');
    await db.destroy();

    expect(orders).toEqual([{ order_id: 'order-reserved', status: 'RESERVED' }]);
    expect(kept).toEqual([{ order_id: 'order-called-off', reason: null, left_at: AT }]);
    expect(refused).toBe(true);
  });
});

describe('replenishment, from a database with a cancelled_orders table', () => {
  it('keeps each cancelled order as a tombstone, and the old table goes', async () => {
    const db = await upgraded<ReplenishmentTables>(
      'replenishment',
      replenishmentMigrations,
      '0003_restocks_by_sku',
      (old) =>
        sql`insert into cancelled_orders (order_id, cancelled_at) values ('order-called-off', ${AT})`.execute(
          old,
        ),
    );

    const kept = await db.selectFrom('tombstones').selectAll().execute();
    const tables = await db.introspection.getTables();
    await db.destroy();

    expect(kept).toEqual([{ order_id: 'order-called-off', reason: null, left_at: AT }]);
    expect(tables.map((t) => t.name)).not.toContain('cancelled_orders');
  });
});

describe('shipment, from a database whose promises never to dispatch were shipment rows in status CANCELLED', () => {
  it('keeps each as a tombstone with its reason, and GET /shipments shows the same as before', async () => {
    const db = await upgraded<ShipmentTables>('shipment', shipmentMigrations, '0001_shipment', (old) =>
      sql`insert into shipments (order_id, id, status, carrier, tracking_number, country, detail, created_at) values
        ('order-promised', null, 'CANCELLED', null, null, null, 'CUSTOMER_CANCELLED', ${AT}),
        ('order-shipped', '0198c2a0-0000-7000-8000-000000000001', 'DISPATCHED', 'DHL', 'DH0123456789', 'DE', null, '2025-01-01T00:00:01.000Z')`.execute(
        old,
      ),
    );

    const listed = await listShipments(db);
    const refused = await tombstoned(db, 'order-promised');
    const rows = await db.selectFrom('shipments').select('status').execute();
    await db.destroy();

    expect(listed).toEqual([
      {
        id: '0198c2a0-0000-7000-8000-000000000001',
        orderId: 'order-shipped',
        status: 'DISPATCHED',
        carrier: 'DHL',
        trackingNumber: 'DH0123456789',
        country: 'DE',
        createdAt: '2025-01-01T00:00:01.000Z',
      },
      { orderId: 'order-promised', status: 'CANCELLED', detail: 'CUSTOMER_CANCELLED', createdAt: AT },
    ]);
    expect(refused).toBe(true);
    expect(rows).toEqual([{ status: 'DISPATCHED' }]);
  });
});

/**
 * A database an earlier version left still opens: each service's new migrations convert the rows
 * of the old forms (saga context, tombstones) into the common ones, and the store reads them.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Migration, sql } from 'kysely';
import { afterEach, describe, expect, it } from 'vitest';
import { type Db, openDatabase } from '../../common/db.ts';
import type { ServiceName } from '../../common/events.ts';
import { readContext } from '../../common/saga-context.ts';
import { type OrderTables, migrations as orderMigrations } from '../../services/order-creation/store.ts';

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

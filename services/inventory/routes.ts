/** Inventory's read API: GET /stock and GET /stock/{sku}. */
import type { Db } from '../../common/db.ts';
import { NotFoundError } from '../../common/errors.ts';
import type { HttpServer } from '../../common/http.ts';
import { type InventoryTables, readStock } from './store.ts';

export function addRoutes(http: HttpServer, db: Db<InventoryTables>): void {
  http.route('get', '/stock', async () => ({ status: 200, body: await readStock(db) }));
  http.route('get', '/stock/{sku}', async ({ params }) => {
    const [stock] = await readStock(db, String(params.sku));
    if (!stock) throw new NotFoundError(`No SKU ${String(params.sku)}.`);
    return { status: 200, body: stock };
  });
}

/** Replenishment's read API: GET /replenishments. */
import type { Db } from '../../common/db.ts';
import type { HttpServer } from '../../common/http.ts';
import { listReplenishments, type ReplenishmentTables } from './store.ts';

export function addRoutes(http: HttpServer, db: Db<ReplenishmentTables>): void {
  http.route('get', '/replenishments', async ({ query }) => ({
    status: 200,
    body: await listReplenishments(db, query as { orderId?: string; sku?: string }),
  }));
}

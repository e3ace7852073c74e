/** Shipment's read API: GET /shipments?orderId=. */
import type { Db } from '../../common/db.ts';
import type { HttpServer } from '../../common/http.ts';
import { listShipments, type ShipmentTables } from './store.ts';

export function addRoutes(http: HttpServer, db: Db<ShipmentTables>): void {
  http.route('get', '/shipments', async ({ query }) => ({
    status: 200,
    body: await listShipments(db, query.orderId as string | undefined),
  }));
}

/**
 * shipment: shipments with carrier and tracking number. Owns the pivot: after dispatch an order
 * cannot be cancelled.
 *
 * Consumes: inventory.reserved, order.cancel_requested, order.cancelled
 * Emits:    shipment.dispatched, shipment.failed, shipment.cancelled, shipment.cancel_rejected
 */
import { runService } from '../../common/service.ts';
import { handlers } from './handlers.ts';
import { addRoutes } from './routes.ts';
import { migrations, type ShipmentTables, shipmentStore } from './store.ts';

await runService<ShipmentTables, ReturnType<typeof shipmentStore>>({
  name: 'shipment',
  migrations,
  handlers,
  store: shipmentStore,
  setup({ db, http }) {
    addRoutes(http, db);
  },
});

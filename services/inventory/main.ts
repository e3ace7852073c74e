/**
 * inventory: stock per SKU, reservations per order, backorders.
 *
 * Consumes: order.created, replenishment.completed, replenishment.failed, shipment.dispatched, order.cancelled
 * Emits:    inventory.reserved, inventory.backordered, inventory.rejected, inventory.released, stock.low
 */
import { runService } from '../../common/service.ts';
import { handlers } from './handlers.ts';
import { addRoutes } from './routes.ts';
import { type InventoryTables, inventoryStore, migrations, seedCatalog } from './store.ts';

await runService<InventoryTables, ReturnType<typeof inventoryStore>>({
  name: 'inventory',
  migrations,
  handlers,
  store: inventoryStore,
  async setup({ db, http, log }) {
    const seeded = await seedCatalog(db);
    if (seeded > 0) log.info({ skus: seeded }, 'seeded the demo catalog');
    addRoutes(http, db);
  },
});

/**
 * replenishment: purchase requests to a simulated supplier, answered after SUPPLIER_DELAY_MS.
 *
 * Consumes: inventory.backordered, stock.low, order.cancelled
 * Emits:    replenishment.completed, replenishment.failed
 */
import { runService } from '../../common/service.ts';
import { deliver, handlers } from './handlers.ts';
import { addRoutes } from './routes.ts';
import { dueRequests, migrations, type ReplenishmentTables, replenishmentStore } from './store.ts';

await runService<ReplenishmentTables, ReturnType<typeof replenishmentStore>>({
  name: 'replenishment',
  migrations,
  handlers,
  store: replenishmentStore,
  setup({ db, http, runner, config, every }) {
    addRoutes(http, db);
    // The supplier answers each request once its delay has passed; requests are stored, so a
    // restart loses none.
    every(Math.max(50, Math.min(250, config.supplierDelayMs / 2)), async () => {
      const due = await dueRequests(db);
      // All at once: they share one transaction, and any that fails runs again alone.
      await Promise.all(
        due.map((request) => runner.transact((store) => deliver(store, request, config.faultInjection))),
      );
    });
  },
});

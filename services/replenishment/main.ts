/**
 * replenishment: purchase requests to a simulated supplier, answered after SUPPLIER_DELAY_MS.
 *
 * Consumes: inventory.backordered, stock.low, order.cancelled
 * Emits:    replenishment.completed, replenishment.failed, replenishment.cancelled
 */
import { runService } from '../../common/service.ts';
import { deliver, handlers } from './handlers.ts';
import { addRoutes } from './routes.ts';
import { dueRequests, migrations, nextDue, type ReplenishmentTables, replenishmentStore } from './store.ts';

await runService<ReplenishmentTables, ReturnType<typeof replenishmentStore>>({
  name: 'replenishment',
  migrations,
  handlers,
  store: replenishmentStore,
  setup({ db, http, runner, config, every, onCommit }) {
    addRoutes(http, db);
    // The supplier answers each request when its delay has passed: at the due time of the next
    // one, looked up again after every commit (it may have written a request due sooner), and
    // once a second at least. Requests are stored, so a restart loses none.
    const supplier = every(
      1000,
      async () => {
        const next = await nextDue(db);
        if (next === undefined || next > Date.now()) return next;
        const due = await dueRequests(db);
        // All at once: they share one transaction, and any that fails runs again alone.
        await Promise.all(
          due.map((request) => runner.transact((store) => deliver(store, request, config.faultInjection))),
        );
        return nextDue(db);
      },
      'supplier',
    );
    onCommit(() => supplier.wake());
  },
});

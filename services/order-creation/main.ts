/**
 * order-creation: the public order API; owns the orders, their status and timeline, and the
 * fate of every order (it turns each failure into order.cancelled).
 *
 * Consumes: inventory.reserved, inventory.backordered, inventory.rejected, inventory.released,
 *           replenishment.completed, replenishment.failed, replenishment.cancelled,
 *           shipment.dispatched, shipment.failed, shipment.cancelled, shipment.cancel_rejected
 * Emits:    order.created, order.cancel_requested, order.cancelled, order.completed (a notification:
 *           no queue of the saga binds it)
 */
import { EMITTED_BY, ROUTING_KEYS } from '../../common/events.ts';
import { feedEverything, LiveFeed } from '../../common/live-feed.ts';
import { runService } from '../../common/service.ts';
import { addDashboard } from './dashboard.ts';
import { isCompensation } from './domain.ts';
import { handlers } from './handlers.ts';
import { addRoutes, cancelOrder, OrderWatch, placeOrder } from './routes.ts';
import {
  migrations,
  ORDER_CHANGED,
  type OrderStore,
  type OrderTables,
  orderStore,
  ordersInFlight,
  overdueOrders,
} from './store.ts';

const watch = new OrderWatch();

await runService<OrderTables, OrderStore>({
  name: 'order-creation',
  migrations,
  handlers,
  store: orderStore,
  // Its own events enter the timeline in the transaction that emits them.
  onEmitted: (trx, events) => orderStore(trx).record(events),
  setup({ db, http, runner, config, log, metrics, every, listen, onCommit, onShutdown, broker }) {
    addRoutes(http, { db, runner, config, watch });
    metrics?.countOrders(() => ordersInFlight(db));
    if (config.dashboard) {
      // Every saga event, for the dashboard.
      const feed = new LiveFeed({ maxEvents: config.dashboardHistory, maxAgeMs: 10 * 60_000 });
      const own = ROUTING_KEYS.filter((key) => key in handlers || EMITTED_BY[key] === 'order-creation');
      feedEverything(feed, { broker, onCommit, every, own, log });
      const closeDashboard = addDashboard(http, {
        config,
        log,
        feed,
        place: (order, failAt) => placeOrder(runner, config, order, failAt),
      });
      onShutdown(() => {
        feed.close();
        void closeDashboard();
      });
    }
    // Readers of `?wait` look again when the order may have settled: completed, cancelled, or a
    // compensation reported.
    onCommit((events, handled) => {
      for (const event of events) {
        if (event.orderId && (event.type === 'order.completed' || event.type === 'order.cancelled'))
          watch.notify(event.orderId);
      }
      for (const event of handled)
        if (event.orderId && isCompensation(event.type)) watch.notify(event.orderId);
    });
    // An order another instance changed (PostgreSQL): its readers look again too.
    listen(ORDER_CHANGED, (id) => watch.notify(id));
    onShutdown(() => watch.close());
    // The deadline is stored with the order, so it survives a restart of this service.
    every(
      Math.min(1000, config.sagaDeadlineMs),
      async () => {
        for (const id of await overdueOrders(db)) await cancelOrder(runner, id, 'DEADLINE_EXCEEDED');
      },
      'deadline sweep',
    );
  },
});

/** The public order API: place, read, list and cancel orders; plus Swagger UI and the document. */
import { EventEmitter } from 'node:events';
import type { Config } from '../../common/config.ts';
import type { Db } from '../../common/db.ts';
import { ConflictError, NotFoundError, ValidationError } from '../../common/errors.ts';
import { emit, type FailAt, type SagaContext } from '../../common/events.ts';
import type { components } from '../../common/generated/api.ts';
import type { HttpServer } from '../../common/http.ts';
import { newId } from '../../common/ids.ts';
import type { Runner } from '../../common/runner.ts';
import { readContext, storeContext } from '../../common/saga-context.ts';
import { requestTraceparent } from '../../common/telemetry.ts';
import { type CancelReason, type OrderStatus, requestCancel } from './domain.ts';
import {
  listOrders,
  type Order,
  type OrderStore,
  type OrderTables,
  orderRow,
  readOrder,
  toOrder,
  withTimeline,
} from './store.ts';

type CreateOrder = components['schemas']['CreateOrderRequest'];

/** Wakes `?wait=` readers when an order's fate is committed. */
export class OrderWatch {
  private readonly emitter = new EventEmitter().setMaxListeners(0);
  private closed = false;

  notify(orderId: string): void {
    this.emitter.emit(orderId);
  }

  /** Resolves on the next notification for the order, after `ms`, or at shutdown. */
  next(orderId: string, ms: number): Promise<void> {
    if (this.closed) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.emitter.off(orderId, done);
        this.emitter.off('close', done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.emitter.once(orderId, done);
      this.emitter.once('close', done);
    });
  }

  close(): void {
    this.closed = true;
    this.emitter.emit('close');
  }
}

/** CANCELLING + order.cancel_requested, in one transaction; the outcome says what the order was. */
export async function cancelOrder(runner: Runner<OrderTables, OrderStore>, id: string, reason: CancelReason) {
  const { value } = await runner.transact(async (store) => {
    const order = await store.order(id);
    if (!order) return { value: 'missing' as const, emit: [] };
    const decision = requestCancel({ id, status: order.status }, reason);
    if (decision.outcome !== 'requested') return { value: decision.outcome, emit: [] };
    await store.update(id, { status: 'CANCELLING', cancelReason: reason });
    return {
      value: decision.outcome,
      emit: decision.emit.map((e) => ({ ...e, context: readContext(order.context) })),
    };
  });
  return value;
}

/** Places an order (PENDING + order.created, one transaction); `failAt` is refused without fault injection. */
export async function placeOrder(
  runner: Runner<OrderTables, OrderStore>,
  config: Config,
  request: CreateOrder,
  failAt?: FailAt,
): Promise<Order> {
  if (failAt && !config.faultInjection) {
    throw new ValidationError(
      [
        {
          pointer: '/headers/x-fail-at',
          detail: 'fault injection is disabled here (FAULT_INJECTION=false)',
        },
      ],
      'X-Fail-At is refused: fault injection is disabled by configuration.',
    );
  }
  const id = newId();
  const now = new Date();
  const context: SagaContext = {
    orderId: id,
    // The request's span when tracing (continuing an incoming traceparent), else a new trace.
    traceparent: requestTraceparent(),
    ...(failAt ? { failAt } : {}),
  };
  const { value: order, emitted } = await runner.transact(async (store) => {
    const order = await store.create({
      id,
      customer_id: request.customerId,
      items: JSON.stringify(request.items),
      shipping_address: JSON.stringify(request.shippingAddress),
      context: storeContext(context),
      created_at: now.toISOString(),
      deadline_at: new Date(now.getTime() + config.sagaDeadlineMs).toISOString(),
    });
    return {
      value: order,
      emit: [
        emit('order.created', {
          orderId: id,
          customerId: request.customerId,
          items: request.items,
          shippingAddress: request.shippingAddress,
        }),
      ],
    };
  }, context);
  // The order as committed, without reading it back: its only event so far is order.created.
  return toOrder(order, emitted);
}

export function addRoutes(
  http: HttpServer,
  {
    db,
    runner,
    config,
    watch,
  }: { db: Db<OrderTables>; runner: Runner<OrderTables, OrderStore>; config: Config; watch: OrderWatch },
): void {
  http.route('post', '/orders', async ({ body, headers }) => {
    const order = await placeOrder(
      runner,
      config,
      body as CreateOrder,
      headers['x-fail-at'] as FailAt | undefined,
    );
    return { status: 201, body: order, headers: { location: `/orders/${order.id}` } };
  });

  http.route('get', '/orders', async ({ query }) => {
    const page = await listOrders(db, {
      status: query.status as OrderStatus | undefined,
      limit: Number(query.limit ?? 50),
      cursor: query.cursor as string | undefined,
    });
    if (!page)
      throw new ValidationError([{ pointer: '/query/cursor', detail: 'is not a cursor this API gave' }]);
    return { status: 200, body: page };
  });

  http.route('get', '/orders/{id}', async ({ params, query }) => {
    const id = String(params.id);
    const deadline = Date.now() + Number(query.wait ?? 0);
    let row = await orderRow(db, id);
    while (row && !row.settled_at && Date.now() < deadline) {
      // Woken at once when the order settles, here or on another instance (see ORDER_CHANGED);
      // the cap is a safety net for a wake lost with a PostgreSQL connection.
      await watch.next(id, Math.min(1000, deadline - Date.now()));
      row = await orderRow(db, id);
    }
    if (!row) throw new NotFoundError(`No order ${id}.`);
    return { status: 200, body: await withTimeline(db, row) };
  });

  http.route('post', '/orders/{id}/cancel', async ({ params }) => {
    const id = String(params.id);
    const outcome = await cancelOrder(runner, id, 'CUSTOMER_CANCELLED');
    if (outcome === 'missing') throw new NotFoundError(`No order ${id}.`);
    const order = await readOrder(db, id);
    if (outcome === 'terminal')
      throw new ConflictError(`Order ${id} is already ${order?.status}: there is nothing to cancel.`);
    return { status: 202, body: order };
  });

  http.serveDocs();
}

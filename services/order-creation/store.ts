/** order-creation's tables: orders with their status, and the timeline of every saga event about them. */
import { type Generated, sql } from 'kysely';
import type { Migration } from 'kysely/migration';
import {
  type Db,
  isPostgres,
  keyedTable,
  notify,
  nowIso,
  type Params,
  prepare,
  serialKey,
  type Tx,
} from '../../common/db.ts';
import { EMITTED_BY, type SagaEvent } from '../../common/events.ts';
import type { components } from '../../common/generated/api.ts';
import type { StoredContext } from '../../common/saga-context.ts';
import type { CancelReason, Compensation, FailureReason, OrderStatus } from './domain.ts';

type Schemas = components['schemas'];
export type Order = Schemas['Order'];
export type OrderSummary = Schemas['OrderSummary'];

export interface OrderTables {
  orders: {
    id: string;
    customer_id: string;
    status: OrderStatus;
    reason: FailureReason | null;
    cancel_reason: CancelReason | null;
    items: string;
    shipping_address: string;
    /** The saga context of the order, for events emitted outside a message (cancel, deadline). */
    context: StoredContext;
    created_at: string;
    updated_at: string;
    deadline_at: string;
    /** The compensation facts a CANCELLED order still waits for (JSON array). */
    owed: string;
    /** When the saga was over: at completion, or once the last compensation owed reported. */
    settled_at: string | null;
  };
  timeline: {
    seq: Generated<number>;
    order_id: string;
    event_id: string;
    type: string;
    at: string;
    source: string;
    detail: string | null;
    data: string;
  };
}

export const migrations: Record<string, Migration> = {
  '0001_orders': {
    async up(db) {
      await db.schema
        .createTable('orders')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('customer_id', 'text', (c) => c.notNull())
        .addColumn('status', 'text', (c) => c.notNull())
        .addColumn('reason', 'text')
        .addColumn('cancel_reason', 'text')
        .addColumn('items', 'text', (c) => c.notNull())
        .addColumn('shipping_address', 'text', (c) => c.notNull())
        .addColumn('traceparent', 'text')
        .addColumn('fail_at', 'text')
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addColumn('updated_at', 'text', (c) => c.notNull())
        .addColumn('deadline_at', 'text', (c) => c.notNull())
        .modifyEnd(keyedTable(db))
        .execute();
      await db.schema.createIndex('orders_page').on('orders').columns(['created_at', 'id']).execute();
      // Also finds the overdue orders: only open ones are looked at, and few are open at a time.
      await db.schema
        .createIndex('orders_status_page')
        .on('orders')
        .columns(['status', 'created_at', 'id'])
        .execute();
      await db.schema
        .createTable('timeline')
        .addColumn('seq', serialKey(db), (c) => c.primaryKey())
        .addColumn('order_id', 'text', (c) => c.notNull())
        .addColumn('event_id', 'text', (c) => c.notNull().unique())
        .addColumn('type', 'text', (c) => c.notNull())
        .addColumn('at', 'text', (c) => c.notNull())
        .addColumn('source', 'text', (c) => c.notNull())
        .addColumn('detail', 'text')
        .addColumn('data', 'text', (c) => c.notNull())
        .execute();
      await db.schema
        .createIndex('timeline_order')
        .on('timeline')
        .columns(['order_id', 'at', 'seq'])
        .execute();
    },
  },
  '0002_saga_context': {
    async up(db) {
      // The order's traceparent and fail_at columns become its saga context in the common form.
      await db.schema
        .alterTable('orders')
        .addColumn('context', 'text', (c) => c.notNull().defaultTo('{}'))
        .execute();
      // json_patch drops the members that are null: absent fields stay out, as storeContext does.
      // (Databases from before this migration are SQLite files: PostgreSQL came later.)
      if (!isPostgres(db))
        await sql`update orders set context = json_patch('{}', json_object('orderId', id, 'traceparent', traceparent, 'failAt', fail_at))`.execute(
          db,
        );
      await db.schema.alterTable('orders').dropColumn('traceparent').execute();
      await db.schema.alterTable('orders').dropColumn('fail_at').execute();
    },
  },
  '0003_settlement': {
    async up(db) {
      await db.schema
        .alterTable('orders')
        .addColumn('owed', 'text', (c) => c.notNull().defaultTo('[]'))
        .execute();
      await db.schema.alterTable('orders').addColumn('settled_at', 'text').execute();
      // Orders decided before compensations were counted: their last change is the best we know.
      await sql`update orders set settled_at = updated_at where status in ('COMPLETED', 'CANCELLED')`.execute(
        db,
      );
    },
  },
};

type OrderRow = OrderTables['orders'];

/** Where an instance that changed an order tells the others (their `?wait` readers look again). */
export const ORDER_CHANGED = 'order_changed';

function toSummary(row: OrderRow): OrderSummary {
  return {
    id: row.id,
    status: row.status,
    ...(row.reason ? { reason: row.reason } : {}),
    customerId: row.customer_id,
    items: JSON.parse(row.items),
    shippingAddress: JSON.parse(row.shipping_address),
    createdAt: row.created_at,
    updatedAt: row.updated_at,
    deadlineAt: row.deadline_at,
    ...(row.settled_at ? { settledAt: row.settled_at } : {}),
  };
}

// The statements every order runs through (prepared once: see `prepare`).
const insertOrder = prepare((db: Db<OrderTables>, p: Params<OrderRow>) =>
  db
    .insertInto('orders')
    .values(
      p.row(
        'id',
        'customer_id',
        'status',
        'reason',
        'cancel_reason',
        'items',
        'shipping_address',
        'context',
        'created_at',
        'updated_at',
        'deadline_at',
        'owed',
        'settled_at',
      ),
    ),
);
const orderById = prepare((db: Db<OrderTables>, p: Params<{ id: string }>) =>
  db.selectFrom('orders').selectAll().where('id', '=', p('id')),
);
type StatusChange = Pick<OrderRow, 'id' | 'status' | 'reason' | 'cancel_reason' | 'updated_at'> & {
  owed: string | null;
  settled_at: string | null;
};
const updateStatus = prepare((db: Db<OrderTables>, p: Params<StatusChange>) =>
  db
    .updateTable('orders')
    .set((eb) => ({
      status: p('status'),
      updated_at: p('updated_at'),
      // A reason, once given, stays: a later change without one keeps it.
      reason: eb.fn.coalesce(eb.val(p('reason')), 'reason'),
      cancel_reason: eb.fn.coalesce(eb.val(p('cancel_reason')), 'cancel_reason'),
      owed: eb.fn.coalesce(eb.val(p('owed')), 'owed'),
      settled_at: eb.fn.coalesce('settled_at', eb.val(p('settled_at'))),
    }))
    .where('id', '=', p('id')),
);
type TimelineRow = Omit<OrderTables['timeline'], 'seq'>;
const insertTimeline = prepare((db: Db<OrderTables>, p: Params<TimelineRow>) =>
  db
    .insertInto('timeline')
    .values(p.row('order_id', 'event_id', 'type', 'at', 'source', 'detail', 'data'))
    .onConflict((oc) => oc.column('event_id').doNothing()),
);
const timelineOf = prepare((db: Db<OrderTables>, p: Params<{ orderId: string }>) =>
  db.selectFrom('timeline').selectAll().where('order_id', '=', p('orderId')).orderBy('at').orderBy('seq'),
);

/** Writes and reads that run inside a transaction (handlers, POST, cancel, deadline). */
export function orderStore(trx: Tx<OrderTables>) {
  return {
    /** A new order, PENDING; returns the row as stored. */
    async create(
      row: Omit<OrderRow, 'status' | 'reason' | 'cancel_reason' | 'updated_at' | 'owed' | 'settled_at'>,
    ): Promise<OrderRow> {
      const order: OrderRow = {
        ...row,
        status: 'PENDING',
        reason: null,
        cancel_reason: null,
        updated_at: row.created_at,
        owed: '[]',
        settled_at: null,
      };
      await insertOrder(trx, order);
      return order;
    },

    async order(id: string): Promise<OrderRow | undefined> {
      return (await orderById(trx, { id })).rows[0];
    },

    /** A new status, and what changes with it; `settled` stamps settledAt once (a later one keeps it). */
    async update(
      id: string,
      change: {
        status: OrderStatus;
        reason?: FailureReason;
        cancelReason?: CancelReason;
        owed?: readonly Compensation[];
        settled?: boolean;
      },
    ): Promise<void> {
      const now = nowIso();
      await updateStatus(trx, {
        id,
        status: change.status,
        reason: change.reason ?? null,
        cancel_reason: change.cancelReason ?? null,
        updated_at: now,
        owed: change.owed ? JSON.stringify(change.owed) : null,
        settled_at: change.settled ? now : null,
      });
      // What a `?wait` reader waits for, on whichever instance it waits.
      if (change.settled) await notify(trx, ORDER_CHANGED, id);
    },

    /** Adds the event to its order's timeline; an event already there (redelivered, or our own) is skipped. */
    async record(events: readonly SagaEvent[]): Promise<void> {
      for (const e of events) {
        if (!e.orderId) continue;
        const entry = timelineEntry(e);
        await insertTimeline(trx, {
          order_id: e.orderId,
          event_id: entry.eventId,
          type: entry.type,
          at: entry.at,
          source: entry.source,
          detail: entry.detail ?? null,
          data: JSON.stringify(entry.data),
        });
      }
    },
  };
}

export type OrderStore = ReturnType<typeof orderStore>;

/** The order's row alone (what a reader waiting for its fate polls). */
export async function orderRow(db: Db<OrderTables>, id: string): Promise<OrderRow | undefined> {
  return (await orderById(db, { id })).rows[0];
}

type TimelineEntry = Order['timeline'][number];

function timelineEntry(e: SagaEvent): TimelineEntry {
  const { detail } = e.data as { detail?: string };
  return {
    eventId: e.id,
    type: e.type,
    at: e.occurredAt,
    source: EMITTED_BY[e.type],
    ...(detail ? { detail } : {}),
    data: e.data,
  };
}

/** The order as the API shows it, from its row and the events of its timeline. */
export function toOrder(row: OrderRow, events: readonly SagaEvent[]): Order {
  return { ...toSummary(row), timeline: events.map(timelineEntry) };
}

/** The order with its timeline, or undefined. */
export async function readOrder(db: Db<OrderTables>, id: string): Promise<Order | undefined> {
  const row = await orderRow(db, id);
  return row && withTimeline(db, row);
}

/** The order of this row, with its timeline read. */
export async function withTimeline(db: Db<OrderTables>, row: OrderRow): Promise<Order> {
  const { rows: timeline } = await timelineOf(db, { orderId: row.id });
  return {
    ...toSummary(row),
    timeline: timeline.map((t) => ({
      eventId: t.event_id,
      type: t.type,
      at: t.at,
      source: t.source as TimelineEntry['source'],
      ...(t.detail ? { detail: t.detail } : {}),
      data: JSON.parse(t.data),
    })),
  };
}

const encodeCursor = (row: { created_at: string; id: string }) =>
  Buffer.from(`${row.created_at}|${row.id}`).toString('base64url');
function decodeCursor(cursor: string): { createdAt: string; id: string } | undefined {
  const [createdAt, id] = Buffer.from(cursor, 'base64url').toString('utf8').split('|');
  return createdAt && id ? { createdAt, id } : undefined;
}

/** Newest first; `cursor` is the `nextCursor` of the previous page. Undefined for a bad cursor. */
export async function listOrders(
  db: Db<OrderTables>,
  page: { status?: OrderStatus; limit: number; cursor?: string },
): Promise<{ items: OrderSummary[]; nextCursor?: string } | undefined> {
  let query = db
    .selectFrom('orders')
    .selectAll()
    .orderBy('created_at', 'desc')
    .orderBy('id', 'desc')
    .limit(page.limit + 1);
  if (page.status) query = query.where('status', '=', page.status);
  if (page.cursor) {
    const after = decodeCursor(page.cursor);
    if (!after) return undefined;
    query = query.where((eb) =>
      eb.or([
        eb('created_at', '<', after.createdAt),
        eb.and([eb('created_at', '=', after.createdAt), eb('id', '<', after.id)]),
      ]),
    );
  }
  const rows = await query.execute();
  const items = rows.slice(0, page.limit);
  const last = items.at(-1);
  return {
    items: items.map(toSummary),
    ...(rows.length > page.limit && last ? { nextCursor: encodeCursor(last) } : {}),
  };
}

/** Non-terminal orders, not already cancelling, whose deadline has passed. */
/** Orders not yet completed or cancelled, by status (for the metrics). */
export async function ordersInFlight(db: Db<OrderTables>): Promise<Record<string, number>> {
  const rows = await db
    .selectFrom('orders')
    .select(['status', (eb) => eb.fn.countAll<number>().as('n')])
    .where('status', 'not in', ['COMPLETED', 'CANCELLED'])
    .groupBy('status')
    .execute();
  return Object.fromEntries(rows.map((r) => [r.status, Number(r.n)]));
}

export async function overdueOrders(db: Db<OrderTables>, limit = 100): Promise<string[]> {
  const rows = await db
    .selectFrom('orders')
    .select('id')
    .where('status', 'in', ['PENDING', 'AWAITING_STOCK', 'RESERVED'])
    .where('deadline_at', '<=', nowIso())
    .limit(limit)
    .execute();
  return rows.map((r) => r.id);
}

/** order-creation's tables: orders with their status, and the timeline of every saga event about them. */
import type { Generated, Migration } from 'kysely';
import { type Db, nowIso, type Tx } from '../../common/db.ts';
import { EMITTED_BY, type SagaEvent } from '../../common/events.ts';
import type { components } from '../../common/generated/api.ts';
import type { CancelReason, FailureReason, OrderStatus } from './domain.ts';

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
    traceparent: string | null;
    fail_at: string | null;
    created_at: string;
    updated_at: string;
    deadline_at: string;
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
        .execute();
      await db.schema.createIndex('orders_page').on('orders').columns(['created_at', 'id']).execute();
      await db.schema
        .createIndex('orders_status_page')
        .on('orders')
        .columns(['status', 'created_at', 'id'])
        .execute();
      await db.schema
        .createIndex('orders_deadline')
        .on('orders')
        .columns(['status', 'deadline_at'])
        .execute();
      await db.schema
        .createTable('timeline')
        .addColumn('seq', 'integer', (c) => c.primaryKey().autoIncrement())
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
};

type OrderRow = OrderTables['orders'];

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
  };
}

/** Writes and reads that run inside a transaction (handlers, POST, cancel, deadline). */
export function orderStore(trx: Tx<OrderTables>) {
  return {
    async create(row: Omit<OrderRow, 'status' | 'reason' | 'cancel_reason' | 'updated_at'>): Promise<void> {
      await trx
        .insertInto('orders')
        .values({ ...row, status: 'PENDING', reason: null, cancel_reason: null, updated_at: row.created_at })
        .execute();
    },

    async order(id: string): Promise<OrderRow | undefined> {
      return trx.selectFrom('orders').selectAll().where('id', '=', id).executeTakeFirst();
    },

    async update(
      id: string,
      change: { status: OrderStatus; reason?: FailureReason; cancelReason?: CancelReason },
    ): Promise<void> {
      await trx
        .updateTable('orders')
        .set({
          status: change.status,
          updated_at: nowIso(),
          ...(change.reason ? { reason: change.reason } : {}),
          ...(change.cancelReason ? { cancel_reason: change.cancelReason } : {}),
        })
        .where('id', '=', id)
        .execute();
    },

    /** Adds the event to its order's timeline; an event already there (redelivered, or our own) is skipped. */
    async record(events: readonly SagaEvent[]): Promise<void> {
      const rows = events
        .filter((e) => e.orderId)
        .map((e) => {
          const detail = (e.data as { detail?: string }).detail;
          return {
            order_id: e.orderId as string,
            event_id: e.id,
            type: e.type,
            at: e.occurredAt,
            source: EMITTED_BY[e.type],
            detail: detail ?? null,
            data: JSON.stringify(e.data),
          };
        });
      if (rows.length > 0) {
        await trx
          .insertInto('timeline')
          .values(rows)
          .onConflict((oc) => oc.column('event_id').doNothing())
          .execute();
      }
    },
  };
}

export type OrderStore = ReturnType<typeof orderStore>;

/** Just the status (cheap enough to poll while a reader waits). */
export async function orderStatus(db: Db<OrderTables>, id: string): Promise<OrderStatus | undefined> {
  const row = await db.selectFrom('orders').select('status').where('id', '=', id).executeTakeFirst();
  return row?.status;
}

/** The order with its timeline, or undefined. */
export async function readOrder(db: Db<OrderTables>, id: string): Promise<Order | undefined> {
  const row = await db.selectFrom('orders').selectAll().where('id', '=', id).executeTakeFirst();
  if (!row) return undefined;
  const timeline = await db
    .selectFrom('timeline')
    .selectAll()
    .where('order_id', '=', id)
    .orderBy('at')
    .orderBy('seq')
    .execute();
  return {
    ...toSummary(row),
    timeline: timeline.map((t) => ({
      eventId: t.event_id,
      type: t.type,
      at: t.at,
      source: t.source as Order['timeline'][number]['source'],
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

/**
 * Unit-test support: a service's real SQLite database in a fresh temp directory, and handlers run
 * the way the runner runs them (handler, then its events written to the outbox, in ONE
 * transaction: an event its schema refuses rolls everything back) but without a broker.
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Migration } from 'kysely/migration';
import { expect, onTestFinished } from 'vitest';
import { loadConfig } from '../../common/config.ts';
import { type Db, openDatabase, runnerDb, runnerTx, type Tx } from '../../common/db.ts';
import { DEMO_CATALOG } from '../../common/demo-catalog.ts';
import type { Emit, EventData, FailAt, RoutingKey, SagaEvent, ServiceName } from '../../common/events.ts';
import { createLogger } from '../../common/logger.ts';
import { writeOutbox } from '../../common/outbox.ts';
import type { Handler, HandlerContext, Handlers } from '../../common/runner.ts';
import {
  type InventoryStore,
  type InventoryTables,
  migrations as inventoryMigrations,
  inventoryStore,
  readStock,
  seedCatalog,
} from '../../services/inventory/store.ts';
import {
  type ReplenishmentStore,
  type ReplenishmentTables,
  migrations as replenishmentMigrations,
  replenishmentStore,
} from '../../services/replenishment/store.ts';
import {
  type ShipmentStore,
  type ShipmentTables,
  migrations as shipmentMigrations,
  shipmentStore,
} from '../../services/shipment/store.ts';
import { anAddress, anEvent, anOrderCreated } from '../../support/builders.ts';

export { anEvent };

/** `order.created` of these items for a new order (a fresh orderId unless given). */
export const orderCreated = (
  items: EventData<'order.created'>['items'],
  overrides: Partial<EventData<'order.created'>> = {},
): SagaEvent<'order.created'> => anOrderCreated({ items, ...overrides });

export const orderCancelled = (
  orderId: string,
  reason: EventData<'order.cancelled'>['reason'] = 'SHIPMENT_FAILED',
  compensations?: EventData<'order.cancelled'>['compensations'],
) => anEvent('order.cancelled', { orderId, reason, ...(compensations ? { compensations } : {}) });

export const replenishmentCompleted = (sku: string, quantity: number, orderId?: string) =>
  anEvent('replenishment.completed', {
    replenishmentId: randomUUID(),
    sku,
    quantity,
    ...(orderId ? { orderId } : {}),
  });

export const replenishmentFailed = (sku: string, orderId?: string, detail = `${sku} is discontinued`) =>
  anEvent('replenishment.failed', {
    replenishmentId: randomUUID(),
    sku,
    reason: 'REPLENISHMENT_FAILED',
    detail,
    ...(orderId ? { orderId } : {}),
  });

export const shipmentDispatched = (orderId: string) =>
  anEvent('shipment.dispatched', {
    orderId,
    shipmentId: randomUUID(),
    carrier: 'Royal Mail',
    trackingNumber: 'RO0123456789',
  });

export const inventoryReserved = (
  orderId: string,
  shippingAddress = anAddress(),
  items: EventData<'inventory.reserved'>['items'] = [{ sku: 'WIDGET-1', quantity: 1 }],
) => anEvent('inventory.reserved', { orderId, items, shippingAddress });

/**
 * The context the runner gives a handler for `event`: its saga context belongs to the event's
 * order (x-fail-at only travels on events about that order).
 */
export function aContext(
  service: ServiceName,
  failAt?: FailAt,
  env: NodeJS.ProcessEnv = {},
  event?: Pick<SagaEvent, 'id' | 'orderId'>,
): HandlerContext {
  return {
    ...(failAt ? { failAt } : {}),
    saga: {
      ...(event?.orderId ? { orderId: event.orderId } : {}),
      ...(event ? { causationId: event.id } : {}),
      ...(failAt ? { failAt } : {}),
    },
    config: loadConfig(service, env),
    log: createLogger(service, 'silent'),
  };
}

export interface ServiceDb<T, S> {
  db: Db<T>;
  /** Runs the handler and writes what it emits to the outbox, in one transaction; returns what it emitted. */
  handle<K extends RoutingKey>(handler: Handler<K, S>, event: SagaEvent<K>, failAt?: FailAt): Promise<Emit[]>;
  /** Runs work against the store in one transaction, writing what it emits to the outbox. */
  transact<R>(
    work: (store: S) => Promise<{ value: R; emit: Emit[] }>,
  ): Promise<{ value: R; emitted: Emit[] }>;
  /** The events committed to the outbox so far, oldest first. */
  outbox(): Promise<{ type: string; data: unknown }[]>;
}

/** Opens the service's database in a temp directory that is removed when the test finishes. */
export async function openServiceDb<T, S>(
  service: ServiceName,
  migrations: Record<string, Migration>,
  store: (trx: Tx<T>) => S,
  env: NodeJS.ProcessEnv = {},
): Promise<ServiceDb<T, S>> {
  const dir = mkdtempSync(join(tmpdir(), `saga-unit-${service}-`));
  const db = await openDatabase<T>(dir, service, migrations);
  onTestFinished(async () => {
    await db.destroy();
    rmSync(dir, { recursive: true, force: true });
  });
  return {
    db,
    async handle(handler, event, failAt) {
      const context = aContext(service, failAt, env, event);
      return db.transaction().execute(async (trx) => {
        const emitted = await handler(event, store(trx), context);
        await writeOutbox(runnerTx(trx), emitted, context.saga);
        return emitted;
      });
    },
    async transact(work) {
      return db.transaction().execute(async (trx) => {
        const { value, emit } = await work(store(trx));
        await writeOutbox(runnerTx(trx), emit, {});
        return { value, emitted: emit };
      });
    },
    async outbox() {
      const rows = await runnerDb(db).selectFrom('outbox').select('body').orderBy('seq').execute();
      return rows.map((row) => {
        const event = JSON.parse(row.body) as SagaEvent;
        return { type: event.type, data: event.data };
      });
    },
  };
}

/** The service's handler for `key`; fails the test if the service does not subscribe to it. */
export function handlerFor<S, K extends RoutingKey>(handlers: Handlers<S>, key: K): Handler<K, S> {
  const handler = handlers[key] as Handler<K, S> | undefined;
  if (!handler) throw new Error(`no handler for ${key}`);
  return handler;
}

/** The data of every emitted event of this type, in order. */
export function emittedOf<K extends RoutingKey>(emitted: readonly Emit[], type: K): EventData<K>[] {
  return emitted.filter((e) => e.type === type).map((e) => e.data as EventData<K>);
}

export const typesOf = (emitted: readonly { type: string }[]): string[] => emitted.map((e) => e.type);

/** One SKU's stock row as the read API shows it (with its initial, replenished and dispatched counters). */
export async function stockOf(db: Db<InventoryTables>, sku: string) {
  const [row] = await readStock(db, sku);
  if (!row) throw new Error(`no stock row for ${sku}`);
  return row;
}

/**
 * The saga's stock invariants, per SKU of the demo catalog: never oversold
 * (available = onHand - reserved >= 0) and onHand = initial + replenished - dispatched, where
 * `replenished` and `dispatched` are what the test itself applied (not only the store's counters).
 */
export async function expectStockInvariants(
  db: Db<InventoryTables>,
  applied: { replenished?: Record<string, number>; dispatched?: Record<string, number> } = {},
): Promise<void> {
  const rows = await readStock(db);
  expect(rows.map((r) => r.sku)).toEqual(DEMO_CATALOG.map((e) => e.sku).sort());
  for (const row of rows) {
    const initial = DEMO_CATALOG.find((e) => e.sku === row.sku)?.onHand;
    const replenished = applied.replenished?.[row.sku] ?? 0;
    const dispatched = applied.dispatched?.[row.sku] ?? 0;
    expect({ sku: row.sku, available: row.available }).toEqual({
      sku: row.sku,
      available: row.onHand - row.reserved,
    });
    expect(row.available, `${row.sku} is oversold`).toBeGreaterThanOrEqual(0);
    expect(row.reserved, `${row.sku} has a negative reservation`).toBeGreaterThanOrEqual(0);
    expect({
      sku: row.sku,
      initial: row.initial,
      replenished: row.replenished,
      dispatched: row.dispatched,
    }).toEqual({
      sku: row.sku,
      initial,
      replenished,
      dispatched,
    });
    expect(row.onHand, `${row.sku}: onHand = initial + replenished - dispatched`).toBe(
      (initial ?? Number.NaN) + replenished - dispatched,
    );
  }
}

/** inventory's database, with the demo catalog seeded. */
export async function openInventory(): Promise<ServiceDb<InventoryTables, InventoryStore>> {
  const service = await openServiceDb('inventory', inventoryMigrations, inventoryStore);
  await seedCatalog(service.db);
  return service;
}

export const openShipment = (
  env: NodeJS.ProcessEnv = {},
): Promise<ServiceDb<ShipmentTables, ShipmentStore>> =>
  openServiceDb('shipment', shipmentMigrations, shipmentStore, env);

export const openReplenishment = (): Promise<ServiceDb<ReplenishmentTables, ReplenishmentStore>> =>
  openServiceDb('replenishment', replenishmentMigrations, replenishmentStore);

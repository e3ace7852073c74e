/**
 * The forward saga through HTTP, with the four services as real processes on a real RabbitMQ.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { components } from '../../common/generated/api.ts';
import { aLine, anOrder } from '../../support/builders.ts';
import { System } from '../../support/system.ts';
import { expectConsistent } from '../support/saga.ts';

type Order = components['schemas']['Order'];
type Stock = components['schemas']['Stock'];
type Shipment = components['schemas']['Shipment'];

let system: System;

beforeAll(async () => {
  system = await System.start();
});

afterAll(async () => {
  await system?.destroy();
});

async function placeAndAwait(order = anOrder(), headers: Record<string, string> = {}) {
  const created = await system.request<Order>('order-creation', 'POST', '/orders', order, headers);
  expect(created.status).toBe(201);
  const done = await system.get<Order>('order-creation', `/orders/${created.body.id}?wait=20000`);
  return { created, order: done.body };
}

describe('the order API', () => {
  it('answers 201 with Location and the PENDING order, whose saga then completes', async () => {
    const created = await system.request<Order>('order-creation', 'POST', '/orders', anOrder());

    expect(created.status).toBe(201);
    expect(created.headers.get('location')).toBe(`/orders/${created.body.id}`);
    expect(created.body).toMatchObject({ status: 'PENDING', customerId: 'customer-42' });
    expect(created.body.timeline.map((t) => t.type)).toEqual(['order.created']);

    const done = await system.get<Order>('order-creation', `/orders/${created.body.id}?wait=20000`);
    expect(done.body.status).toBe('COMPLETED');
    expect(done.body.timeline.map((t) => t.type)).toEqual([
      'order.created',
      'inventory.reserved',
      'shipment.dispatched',
      'order.completed',
    ]);
    expect(new Set(done.body.timeline.map((t) => t.source))).toEqual(
      new Set(['order-creation', 'inventory', 'shipment']),
    );
  });

  it('rejects invalid input with 400 problem+json naming every invalid field, unknown fields included', async () => {
    const response = await system.request<{ status: number; errors: { pointer: string }[] }>(
      'order-creation',
      'POST',
      '/orders',
      {
        customerId: '',
        items: [{ sku: 'widget', quantity: 0 }],
        shippingAddress: { name: 'A', line1: 'B', city: 'C', postalCode: '1', country: 'Great Britain' },
        coupon: 'FREE',
      },
    );

    expect(response.status).toBe(400);
    expect(response.headers.get('content-type')).toContain('application/problem+json');
    expect(response.body.status).toBe(400);
    expect(response.body.errors.map((e) => e.pointer).sort()).toEqual([
      '/body/coupon',
      '/body/customerId',
      '/body/items/0/quantity',
      '/body/items/0/sku',
      '/body/shippingAddress/country',
    ]);
  });

  it.each([
    ['malformed JSON', '{"customerId":', 'application/json', 400],
    ['a wrong content type', 'customerId=1', 'application/x-www-form-urlencoded', 415],
    ['a body over the limit', JSON.stringify({ customerId: 'x'.repeat(70_000) }), 'application/json', 413],
  ])('answers %s with a problem', async (_, body, type, status) => {
    const response = await fetch(system.url('order-creation', '/orders'), {
      method: 'POST',
      headers: { 'content-type': type },
      body,
    });

    expect(response.status).toBe(status);
    expect(response.headers.get('content-type')).toContain('application/problem+json');
    expect(await response.json()).toMatchObject({ status, title: expect.any(String) });
  });

  it('answers an unknown order, route or method with a 404/405 problem', async () => {
    const missing = await system.get('order-creation', `/orders/${crypto.randomUUID()}`);
    const badId = await system.get<{ errors: { pointer: string }[] }>('order-creation', '/orders/not-a-uuid');
    const noRoute = await system.get('order-creation', '/nothing-here');

    expect(missing.status).toBe(404);
    expect(badId.status).toBe(400);
    expect(badId.body.errors[0]?.pointer).toBe('/path/id');
    expect(noRoute.status).toBe(404);
    expect(noRoute.headers.get('content-type')).toContain('application/problem+json');
  });

  it('pages orders newest first with a cursor', async () => {
    await placeAndAwait();
    await placeAndAwait();
    const first = await system.get<{ items: Order[]; nextCursor?: string }>(
      'order-creation',
      '/orders?limit=1',
    );
    const second = await system.get<{ items: Order[] }>(
      'order-creation',
      `/orders?limit=1&cursor=${first.body.nextCursor}`,
    );

    expect(first.body.items).toHaveLength(1);
    expect(first.body.nextCursor).toBeTruthy();
    expect(second.body.items[0]?.id).not.toBe(first.body.items[0]?.id);
    expect((second.body.items[0]?.createdAt ?? '') <= (first.body.items[0]?.createdAt ?? '')).toBe(true);
  });

  it('serves Swagger UI and the document, and every service its health', async () => {
    const docs = await fetch(system.url('order-creation', '/docs'));
    const bundle = await fetch(system.url('order-creation', '/docs/swagger-ui-bundle.js'));
    const spec = await system.get<{
      openapi: string;
      paths: Record<string, { servers?: { url: string }[] }>;
    }>('order-creation', '/openapi.json');

    expect(docs.status).toBe(200);
    expect(await docs.text()).toContain('/docs/swagger-ui-bundle.js');
    expect(bundle.status).toBe(200);
    expect(spec.body.openapi).toBe('3.1.0');
    expect(spec.body.paths['/stock']?.servers?.[0]?.url).toBe(`http://127.0.0.1:${system.ports.inventory}`);
    for (const service of ['order-creation', 'inventory', 'replenishment', 'shipment'] as const) {
      expect((await system.get(service, '/health/ready')).body).toMatchObject({ status: 'ok', service });
    }
  });
});

describe('the forward saga', () => {
  it('completes 50 orders mixing the plain and the replenishment path, each with one shipment, stock adding up', async () => {
    const before = (await system.get<Stock[]>('inventory', '/stock')).body;
    const orders = Array.from({ length: 50 }, (_, i) =>
      i % 5 === 0
        ? anOrder({ items: [aLine('GIZMO-3', 6 + (i % 3))] }) // more than is on hand: backorder, then replenishment
        : anOrder({ items: [aLine('WIDGET-1', 1 + (i % 3)), aLine('GADGET-2', 1)] }),
    );

    const results = await Promise.all(orders.map((o) => placeAndAwait(o)));

    expect(results.map((r) => r.order.status)).toEqual(orders.map(() => 'COMPLETED'));
    const waited = results.filter((r) => r.order.timeline.some((t) => t.type === 'inventory.backordered'));
    expect(waited.length).toBeGreaterThanOrEqual(1);
    for (const { order } of waited) {
      // Filled first come first served: by its own replenishment or an earlier one.
      expect(order.timeline.map((t) => t.type).slice(0, 2)).toEqual([
        'order.created',
        'inventory.backordered',
      ]);
      expect(order.timeline.map((t) => t.type)).toContain('inventory.reserved');
    }
    const replenishments = (await system.get<{ status: string }[]>('replenishment', '/replenishments')).body;
    expect(replenishments.filter((r) => r.status === 'COMPLETED').length).toBeGreaterThanOrEqual(1);
    for (const { order } of results) {
      const shipments = (await system.get<Shipment[]>('shipment', `/shipments?orderId=${order.id}`)).body;
      expect(shipments.filter((s) => s.status === 'DISPATCHED')).toHaveLength(1);
    }
    const after = (await system.get<Stock[]>('inventory', '/stock')).body;
    for (const sku of after) {
      const ordered = orders
        .flatMap((o) => o.items)
        .filter((l) => l.sku === sku.sku)
        .reduce((n, l) => n + l.quantity, 0);
      const was = before.find((s) => s.sku === sku.sku);
      expect(sku.reserved, sku.sku).toBe(0);
      expect(sku.available, sku.sku).toBe(sku.onHand - sku.reserved);
      expect(sku.onHand, sku.sku).toBe((sku.initial ?? 0) + (sku.replenished ?? 0) - (sku.dispatched ?? 0));
      expect((sku.dispatched ?? 0) - (was?.dispatched ?? 0), sku.sku).toBe(ordered);
    }
    await expectConsistent(system);
  });
});

describe('shutdown', () => {
  it('stops every service on SIGTERM with exit code 0 within 10 s', async () => {
    const exits = await system.stop('SIGTERM');

    for (const exit of exits) {
      expect(exit, exit.service).toMatchObject({ code: 0 });
      expect(exit.ms, exit.service).toBeLessThan(10_000);
    }
  });
});

/**
 * Seeing inside, with the four services as real processes: one order with a compensation is one
 * trace in an OTLP receiver (a real HTTP server decoding OTLP JSON), its spans from every service
 * linked across the hops; `/metrics` counts what was delivered; log lines carry the trace.
 */
import amqp from 'amqplib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SERVICES } from '../../common/events.ts';
import { aLine, anEvent, anOrder } from '../../support/builders.ts';
import { OtlpReceiver, type ReceivedSpan, SPAN_KIND, treeOf } from '../../support/otlp.ts';
import { AMQP_URL, System } from '../../support/system.ts';
import { awaitTerminal, place, quiesce, settled } from '../support/saga.ts';
import { eventually } from '../support/wait.ts';

let system: System;
let receiver: OtlpReceiver;
const logs: string[] = [];

beforeAll(async () => {
  receiver = await OtlpReceiver.start();
  system = await System.start({
    logs,
    env: {
      OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint,
      OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
      OTEL_BSP_SCHEDULE_DELAY: '100',
    },
  });
});

afterAll(async () => {
  await system?.destroy();
  await receiver?.close();
});

/** The span of `service`'s handling of the message routed by `key`. */
const consumerOf = (spans: readonly ReceivedSpan[], service: string, key: string) =>
  spans.find(
    (s) =>
      s.kind === SPAN_KIND.consumer &&
      s.service === service &&
      s.attributes['messaging.rabbitmq.destination.routing_key'] === key,
  );

const TRACE_ID = '4bf92f3577b34da6a3ce929d0e0e4736';
const REPLENISHED = '5cf92f3577b34da6a3ce929d0e0e4737';

describe('one order is one trace across the four services', () => {
  it('continues the caller traceparent through every hop, the compensations included', async () => {
    const order = await place(system, anOrder(), {
      'X-Fail-At': 'shipment',
      traceparent: `00-${TRACE_ID}-00f067aa0ba902b7-01`,
    });
    expect(await awaitTerminal(system, order.id)).toMatchObject({ status: 'CANCELLED' });
    await settled(system, order.id, (v) => v.types.includes('inventory.released'));

    // Each service exports its spans on its own schedule, a handling's span ends after the commit
    // that the test saw, and a publish's after the broker's confirm: wait for every hop asserted
    // on below and for the parent of every span, not for a count of spans.
    const hops: [service: string, key: string][] = [
      ['inventory', 'order.created'],
      ['order-creation', 'inventory.reserved'],
      ['shipment', 'inventory.reserved'],
      ['order-creation', 'shipment.failed'],
      ['inventory', 'order.cancelled'],
      ['shipment', 'order.cancelled'],
      ['replenishment', 'order.cancelled'],
      ['order-creation', 'inventory.released'],
    ];
    const spans = await eventually(
      () => receiver.trace(TRACE_ID),
      (s) =>
        hops.every(([service, key]) => consumerOf(s, service, key)) &&
        s.every((span) => span.name === 'POST /orders' || s.some((p) => p.spanId === span.parentSpanId)),
      15_000,
    );
    const tree = treeOf(spans);
    expect(new Set(spans.map((s) => s.service))).toEqual(new Set(SERVICES));
    const root = spans.find((s) => s.name === 'POST /orders');
    expect(root).toMatchObject({
      service: 'order-creation',
      kind: SPAN_KIND.server,
      parentSpanId: '00f067aa0ba902b7',
    });

    const byId = new Map(spans.map((s) => [s.spanId, s]));
    const consumers = spans.filter((s) => s.kind === SPAN_KIND.consumer);
    for (const consumer of consumers) {
      // Every handling continues the publish of the message it handles, in another service or its own.
      const publish = byId.get(consumer.parentSpanId ?? '');
      expect(publish, tree).toMatchObject({ kind: SPAN_KIND.producer, name: `publish ${system.exchange}` });
      expect(publish?.attributes['messaging.message.id']).toBe(consumer.attributes['messaging.message.id']);
      expect(consumer.name).toBe(`process ${system.exchange}.${consumer.service}`);
      expect(consumer.attributes).toMatchObject({
        'messaging.system': 'rabbitmq',
        'messaging.message.conversation_id': order.id,
        'saga.outcome': 'handled',
      });
    }
    for (const publish of spans.filter((s) => s.kind === SPAN_KIND.producer)) {
      // And every publish continues what wrote its outbox row: the request, or a handling.
      expect([SPAN_KIND.server, SPAN_KIND.consumer], tree).toContain(
        byId.get(publish.parentSpanId ?? '')?.kind,
      );
    }
    const hop = (service: string, key: string) => consumerOf(spans, service, key);
    // The compensation: shipment.failed → order.cancelled → inventory.released, each a child of the one before.
    const released = hop('order-creation', 'inventory.released');
    const releasing = byId.get(byId.get(released?.parentSpanId ?? '')?.parentSpanId ?? '');
    expect(releasing, tree).toMatchObject({ service: 'inventory' });
    expect(releasing?.attributes['messaging.rabbitmq.destination.routing_key']).toBe('order.cancelled');
    expect(hop('replenishment', 'order.cancelled'), tree).toBeDefined();
    expect(hop('shipment', 'order.cancelled'), tree).toBeDefined();
    expect(spans[0]?.resource['service.instance.id']).toMatch(/^[a-z-]+ .+:\d+$/);
  });

  it('keeps the trace across the supplier timer of the replenishment path', async () => {
    const order = await place(system, anOrder({ items: [aLine('GIZMO-3', 8)] }), {
      traceparent: `00-${REPLENISHED}-00f067aa0ba902b7-01`,
    });
    const done = await awaitTerminal(system, order.id);
    expect(done.timeline.map((t) => t.type)).toContain('replenishment.completed');
    const spans = await eventually(
      () => receiver.trace(REPLENISHED),
      // Each service exports on its own schedule: wait for the last hop and for all four.
      (s) =>
        new Set(s.map((span) => span.service)).size === SERVICES.length &&
        s.some(
          (span) =>
            span.kind === SPAN_KIND.consumer &&
            span.attributes['messaging.rabbitmq.destination.routing_key'] === 'shipment.dispatched',
        ),
    );
    const tree = treeOf(spans);
    const byId = new Map(spans.map((s) => [s.spanId, s]));
    // The supplier's answer is published from a timer, yet continues the handling of stock.low.
    const completed = spans.find(
      (s) =>
        s.kind === SPAN_KIND.producer &&
        s.attributes['messaging.rabbitmq.destination.routing_key'] === 'replenishment.completed',
    );
    expect(completed, tree).toMatchObject({ service: 'replenishment' });
    expect(byId.get(completed?.parentSpanId ?? '')?.kind, tree).toBe(SPAN_KIND.consumer);
    expect(new Set(spans.map((s) => s.service))).toEqual(new Set(SERVICES));
  });

  it('starts a trace when the request brings none', async () => {
    const order = await place(system, anOrder());
    await awaitTerminal(system, order.id);
    const roots = await eventually(
      () => receiver.spans.filter((s) => s.name === 'POST /orders' && !s.parentSpanId),
      (r) => r.length > 0,
    );
    const completed = await eventually(
      () =>
        receiver.spans.filter(
          (s) =>
            s.attributes['messaging.message.conversation_id'] === order.id &&
            s.attributes['messaging.rabbitmq.destination.routing_key'] === 'shipment.dispatched',
        ),
      (s) => s.length > 0,
    );
    expect(roots.map((r) => r.traceId)).toContain(completed[0]?.traceId);
  });
});

describe('the logs and the metrics', () => {
  it('writes the trace, the span, the order and the message in a line logged while handling', async () => {
    const connection = await amqp.connect(AMQP_URL);
    try {
      const channel = await connection.createConfirmChannel();
      const stray = anEvent('inventory.rejected', {
        orderId: '01900000-0000-7000-8000-000000000001',
        reason: 'UNKNOWN_SKU',
        detail: 'a stray event',
      } as never);
      channel.publish(system.exchange, stray.type, Buffer.from(JSON.stringify(stray)), {
        messageId: stray.id,
        type: stray.type,
        headers: { traceparent: `00-${'ab'.repeat(16)}-${'cd'.repeat(8)}-01` },
      });
      await channel.waitForConfirms();
      const line = await eventually(
        () => logs.find((l) => l.includes('does not know') && l.includes(stray.id)),
        (l) => l !== undefined,
      );
      const fields = JSON.parse(line?.replace(/^\[[\w-]+\] /, '') ?? '{}');
      expect(fields).toMatchObject({
        trace_id: 'ab'.repeat(16),
        orderId: stray.orderId,
        messageId: stray.id,
      });
      const span = await eventually(
        () => receiver.spans.find((s) => s.attributes['messaging.message.id'] === stray.id),
        (s) => s !== undefined,
      );
      expect(fields.span_id).toBe(span?.spanId);
    } finally {
      await connection.close();
    }
  });

  it('counts every delivery once on /metrics: handled + duplicate + retried + parked = deliveries', async () => {
    await quiesce(system);
    const scrape = async (service: (typeof SERVICES)[number]) => {
      const response = await fetch(system.url(service, '/metrics'));
      expect(response.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
      return response.text();
    };
    const before = await scrape('inventory');
    const orders = 5;
    for (let i = 0; i < orders; i++) await awaitTerminal(system, (await place(system, anOrder())).id);
    await quiesce(system);
    const after = await scrape('inventory');
    const count = (text: string, outcome: string) =>
      [
        ...text.matchAll(
          new RegExp(`^saga_messages_total\\{routing_key="([^"]+)",outcome="${outcome}"\\} (\\d+)$`, 'gm'),
        ),
      ]
        .filter((m) => m[1] === 'order.created')
        .reduce((n, m) => n + Number(m[2]), 0);
    // inventory handles each order's order.created once: no retry, no duplicate, nothing parked.
    expect(count(after, 'handled') - count(before, 'handled')).toBe(orders);
    for (const outcome of ['duplicate', 'retried', 'parked'])
      expect(count(after, outcome) - count(before, outcome)).toBe(0);
    expect(after).toMatch(/^saga_handler_duration_seconds_count\{routing_key="order\.created"\} \d+$/m);
    expect(after).toMatch(/^saga_broker_connected 1$/m);
    expect(after).toMatch(/^saga_outbox_pending 0$/m);
    expect(after).toMatch(/^saga_outbox_publish_lag_seconds_count [1-9]\d*$/m);
    expect(after).toMatch(/^process_cpu_seconds_total /m);
    expect(after).not.toMatch(/[0-9a-f]{8}-[0-9a-f]{4}-7/); // no order id in any label

    const orderMetrics = await scrape('order-creation');
    expect(orderMetrics).toMatch(/^saga_orders_total\{status="COMPLETED",reason=""\} [1-9]\d*$/m);
    expect(orderMetrics).toMatch(/^saga_orders_total\{status="CANCELLED",reason="SHIPMENT_FAILED"\} 1$/m);
    expect(orderMetrics).toMatch(/^saga_order_duration_seconds_count\{outcome="COMPLETED"\} [1-9]\d*$/m);
    expect(orderMetrics).toMatch(
      /^saga_http_request_duration_seconds_count\{method="POST",route="\/orders",status="201"\} \d+$/m,
    );
    expect(orderMetrics).toMatch(/^# TYPE saga_orders_in_flight gauge$/m);
  });
});

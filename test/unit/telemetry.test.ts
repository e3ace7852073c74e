/**
 * Tracing's configuration: the standard variables validated at start, the exporter that each
 * OTLP protocol gets, and an outbox made before the trace column still opening.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { trace } from '@opentelemetry/api';
import { OTLPTraceExporter as JsonExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { OTLPTraceExporter as ProtoExporter } from '@opentelemetry/exporter-trace-otlp-proto';
import { sql } from 'kysely';
import { afterEach, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../common/config.ts';
import { openDatabase } from '../../common/db.ts';
import { contextOf, exporterOf, logFields, Telemetry, traceparentOf } from '../../common/telemetry.ts';
import { OtlpReceiver } from '../../support/otlp.ts';

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

describe('tracing configuration', () => {
  it('is off unless OTEL_EXPORTER_OTLP_ENDPOINT is set, and reads the standard variables', () => {
    expect(loadConfig('inventory', {}).tracing).toEqual({
      protocol: 'http/protobuf',
      sampler: 'parentbased_always_on',
      samplerArg: 1,
      batchDelayMs: 5000,
    });
    const tracing = loadConfig('inventory', {
      OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318',
      OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
      OTEL_TRACES_SAMPLER: 'parentbased_traceidratio',
      OTEL_TRACES_SAMPLER_ARG: '0.25',
      OTEL_SERVICE_NAME: 'stock',
    }).tracing;
    expect(tracing).toMatchObject({
      endpoint: 'http://collector:4318',
      protocol: 'http/json',
      sampler: 'parentbased_traceidratio',
      samplerArg: 0.25,
      serviceName: 'stock',
    });
  });

  it('refuses what it cannot use, naming each variable', () => {
    const load = () =>
      loadConfig('inventory', {
        OTEL_EXPORTER_OTLP_ENDPOINT: 'collector:4318',
        OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc',
        OTEL_TRACES_SAMPLER: 'sometimes',
        OTEL_TRACES_SAMPLER_ARG: '2',
      });
    expect(load).toThrow(ConfigError);
    const problems = (() => {
      try {
        load();
      } catch (error) {
        return (error as ConfigError).problems.join('\n');
      }
    })();
    for (const key of [
      'OTEL_EXPORTER_OTLP_ENDPOINT',
      'OTEL_EXPORTER_OTLP_PROTOCOL',
      'OTEL_TRACES_SAMPLER=',
      'OTEL_TRACES_SAMPLER_ARG',
    ])
      expect(problems).toContain(key);
  });

  it('exports protobuf or JSON as the protocol says', () => {
    expect(exporterOf('http/protobuf', 'http://127.0.0.1:4318')).toBeInstanceOf(ProtoExporter);
    expect(exporterOf('http/json', 'http://127.0.0.1:4318/')).toBeInstanceOf(JsonExporter);
  });

  it('sends a span as protobuf to <endpoint>/v1/traces by default', async () => {
    const receiver = await OtlpReceiver.start();
    try {
      const config = loadConfig('inventory', { OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint });
      const telemetry = new Telemetry(config);
      const traceId = '0af7651916cd43dd8448eb211c80319c';
      telemetry.request('GET', '/stock/{sku}', { traceparent: `00-${traceId}-b7ad6b7169203331-01` }).end(200);
      await telemetry.shutdown();
      expect(receiver.protobuf).toHaveLength(1);
      // The trace id travels as its 16 raw bytes, the route as text.
      expect(receiver.protobuf[0]?.includes(Buffer.from(traceId, 'hex'))).toBe(true);
      expect(receiver.protobuf[0]?.includes(Buffer.from('GET /stock/{sku}'))).toBe(true);
    } finally {
      await receiver.close();
    }
  });

  it('reads a traceparent into a context and back, and a log line outside any handling has no trace', () => {
    const traceparent = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
    const span = trace.getSpanContext(contextOf(traceparent));
    expect(span && traceparentOf(span)).toBe(traceparent);
    expect(trace.getSpanContext(contextOf('garbage'))).toBeUndefined();
    expect(logFields()).toEqual({});
  });
});

describe('log fields with tracing off', () => {
  it('come from the delivery being handled: its saga traceparent, order and message', async () => {
    const telemetry = new Telemetry(loadConfig('inventory', {}));
    const delivery = {
      content: Buffer.from('{}'),
      headers: { traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' },
      messageId: 'm-1',
      type: 'order.created',
      routingKey: 'order.created',
      redelivered: false,
      attempt: 1,
    };
    const scope = telemetry.received(delivery, 'q', { orderId: 'o-1' } as never);
    // Across an await, as in a handler.
    const fields = await scope.run(async () => {
      await new Promise((r) => setTimeout(r, 1));
      return logFields();
    });
    expect(fields).toEqual({
      trace_id: '0af7651916cd43dd8448eb211c80319c',
      span_id: 'b7ad6b7169203331',
      orderId: 'o-1',
      messageId: 'm-1',
    });
    expect(scope.traceparent).toBe(delivery.headers.traceparent);
    expect(logFields()).toEqual({});
  });
});

describe('the outbox of a database made before tracing', () => {
  it('gains its trace_context column when opened', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'saga-trace-column-'));
    dirs.push(dir);
    const old = await openDatabase<unknown>(dir, 'inventory', {});
    // As the version before this one left it: no column, and its migration never run.
    await sql`alter table outbox drop column trace_context`.execute(old);
    await sql`delete from kysely_migration where name = '0000_runner_trace_context'`.execute(old);
    await old.destroy();
    const db = await openDatabase<unknown>(dir, 'inventory', {});
    const columns = await sql<{ name: string }>`select name from pragma_table_info('outbox')`.execute(db);
    expect(columns.rows.map((c) => c.name)).toContain('trace_context');
    await db.destroy();
  });
});

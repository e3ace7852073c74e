/**
 * Tracing with OpenTelemetry, set up once per process from the standard variables (see config.ts):
 * a consumer span per delivery, a producer span per outbox publish, a server span per request.
 * With OTEL_EXPORTER_OTLP_ENDPOINT unset no provider exists and no span is made; the saga's own
 * traceparent travels as before, and log lines still carry it.
 *
 * Causality through the outbox: the relay publishes from a timer, so the context active when it
 * publishes is not the cause of a row. The cause's traceparent is stored with the row instead
 * (`outbox.trace_context`), and the producer span continues it.
 */
import { hostname } from 'node:os';
import {
  type Context,
  context,
  createContextKey,
  ROOT_CONTEXT,
  type Span,
  type SpanContext,
  SpanKind,
  SpanStatusCode,
  type Tracer,
  trace,
} from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { OTLPTraceExporter as JsonExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { OTLPTraceExporter as ProtoExporter } from '@opentelemetry/exporter-trace-otlp-proto';
import { resourceFromAttributes } from '@opentelemetry/resources';
import {
  AlwaysOffSampler,
  AlwaysOnSampler,
  BatchSpanProcessor,
  ParentBasedSampler,
  type Sampler,
  type SpanExporter,
  TraceIdRatioBasedSampler,
  TracerProvider,
} from '@opentelemetry/sdk-trace';
import {
  ATTR_HTTP_REQUEST_METHOD,
  ATTR_HTTP_RESPONSE_STATUS_CODE,
  ATTR_HTTP_ROUTE,
  ATTR_SERVICE_NAME,
  ATTR_SERVICE_VERSION,
} from '@opentelemetry/semantic-conventions';
import type { Config, TracingConfig } from './config.ts';
import type { SagaEvent } from './events.ts';
import { childTraceparent } from './ids.ts';
import type { Delivery } from './transport.ts';

/**
 * What the active context says of the delivery or request being handled, in one value: one
 * context to make per message. `traceparent` is its span's (tracing) or the saga's (off).
 */
interface Handling {
  traceparent?: string;
  orderId?: string;
  messageId?: string;
  /** A request, whose traceparent a saga it starts begins with. */
  request?: boolean;
}
const HANDLING = createContextKey('saga.handling');
const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$/;
const propagator = new W3CTraceContextPropagator();
const headerGetter = {
  keys: (carrier: Readonly<Record<string, unknown>>) => Object.keys(carrier),
  get: (carrier: Readonly<Record<string, unknown>>, key: string) => {
    const value = carrier[key];
    return typeof value === 'string' ? value : undefined;
  },
};

let contextManager: AsyncLocalStorageContextManager | undefined;

/** The W3C traceparent of a span context. */
export function traceparentOf({ traceId, spanId, traceFlags }: SpanContext): string {
  return `00-${traceId}-${spanId}-${traceFlags.toString(16).padStart(2, '0')}`;
}

/** The context a `traceparent` (header or stored) names; the root context when it names none. */
export function contextOf(traceparent: unknown, base: Context = ROOT_CONTEXT): Context {
  return typeof traceparent === 'string' ? propagator.extract(base, { traceparent }, headerGetter) : base;
}

/**
 * The fields a log line gets from the active context: the trace and span it was written in,
 * and the order and message being handled. Empty outside any handling or request.
 */
export function logFields(): Record<string, string> {
  const handling = context.active().getValue(HANDLING) as Handling | undefined;
  const fields: Record<string, string> = {};
  if (!handling) return fields;
  // Parsed here, for the few lines written, rather than for every message.
  const ids = handling.traceparent ? TRACEPARENT.exec(handling.traceparent) : null;
  if (ids?.[1] && ids[2]) {
    fields.trace_id = ids[1];
    fields.span_id = ids[2];
  }
  if (handling.orderId) fields.orderId = handling.orderId;
  if (handling.messageId) fields.messageId = handling.messageId;
  return fields;
}

/**
 * The traceparent a saga started by the request being handled (a new order) begins with: its
 * server span's when tracing, else the incoming traceparent's trace (or a new one) with a new
 * span id. Outside a request: a new trace.
 */
export function requestTraceparent(): string {
  const handling = context.active().getValue(HANDLING) as Handling | undefined;
  return handling?.request && handling.traceparent ? handling.traceparent : childTraceparent();
}

/** How one delivery's handling is traced: what its handler runs in, and how its span ends. */
export interface DeliveryScope {
  /** The traceparent events caused by this delivery continue: its consumer span's, or the header's. */
  readonly traceparent: string | undefined;
  /** Runs `fn` in the delivery's context (log lines and spans written in it belong to the delivery). */
  run<R>(fn: () => R): R;
  /** A retry is scheduled for this delivery. */
  retried(attempt: number, delayMs: number, error: string): void;
  /** The delivery is parked in the dead-letter queue. */
  parked(reason: string, error: string): void;
  /** Its outcome is final. */
  end(outcome: string): void;
}

/** How one HTTP request is traced. */
export interface RequestScope {
  run<R>(fn: () => R): R;
  end(status: number): void;
}

/** One outbox row's publish, traced: the headers it goes out with, and how its span ends. */
export interface PublishScope {
  headers: Record<string, unknown>;
  end(error?: unknown): void;
}

const untraced = { retried() {}, parked() {}, end() {} };

/**
 * The tracing of one service process. `enabled` is false unless OTEL_EXPORTER_OTLP_ENDPOINT is
 * set: then no span is made and a delivery's scope only carries its ids for the logs.
 */
export class Telemetry {
  readonly enabled: boolean;
  private readonly provider?: TracerProvider;
  private readonly tracer?: Tracer;

  constructor(config: Config, tracing: TracingConfig = config.tracing) {
    if (!contextManager) {
      // Without a context manager no context crosses an await: log lines could not find their trace.
      contextManager = new AsyncLocalStorageContextManager().enable();
      context.setGlobalContextManager(contextManager);
    }
    this.enabled = tracing.endpoint !== undefined;
    if (!tracing.endpoint) return;
    this.provider = new TracerProvider({
      resource: resourceFromAttributes({
        [ATTR_SERVICE_NAME]: tracing.serviceName ?? config.service,
        [ATTR_SERVICE_VERSION]: '0.1.0',
        'service.namespace': 'order-saga',
        // The instance as the broker's connection names it (INSTANCE_NAME, or host:pid).
        'service.instance.id': `${config.service} ${config.instance}`,
        'host.name': hostname(),
        'process.pid': process.pid,
      }),
      sampler: samplerOf(tracing.sampler, tracing.samplerArg),
      spanProcessors: [
        new BatchSpanProcessor({
          exporter: exporterOf(tracing.protocol, tracing.endpoint),
          scheduledDelayMillis: tracing.batchDelayMs,
        }),
      ],
    });
    this.tracer = this.provider.getTracer('order-saga');
  }

  /** The scope of a delivery to `queue`: its consumer span continues the trace its headers carry. */
  received(delivery: Delivery, queue: string, event?: SagaEvent): DeliveryScope {
    const header =
      typeof delivery.headers.traceparent === 'string' ? delivery.headers.traceparent : undefined;
    const { messageId } = delivery;
    const orderId = event?.orderId;
    if (!this.tracer) {
      const active = ROOT_CONTEXT.setValue(HANDLING, { traceparent: header, orderId, messageId });
      return { traceparent: header, run: (fn) => context.with(active, fn), ...untraced };
    }
    const ctx = contextOf(header);
    const span = this.tracer.startSpan(
      `process ${queue}`,
      {
        kind: SpanKind.CONSUMER,
        attributes: {
          'messaging.system': 'rabbitmq',
          'messaging.operation.type': 'process',
          'messaging.operation.name': 'process',
          'messaging.destination.name': queue,
          'messaging.rabbitmq.destination.routing_key': delivery.routingKey,
          ...(delivery.messageId ? { 'messaging.message.id': delivery.messageId } : {}),
          ...(event?.orderId ? { 'messaging.message.conversation_id': event.orderId } : {}),
          'messaging.message.body.size': delivery.content.length,
          'saga.attempt': delivery.attempt,
        },
      },
      ctx,
    );
    const traceparent = traceparentOf(span.spanContext());
    const active = trace.setSpan(ctx, span).setValue(HANDLING, { traceparent, orderId, messageId });
    return {
      traceparent,
      run: (fn) => context.with(active, fn),
      retried(attempt, delayMs, error) {
        span.addEvent('retry scheduled', { 'saga.attempt': attempt, 'saga.retry_in_ms': delayMs, error });
        span.setStatus({ code: SpanStatusCode.ERROR, message: error });
      },
      parked(reason, error) {
        span.addEvent('parked', { 'saga.dead_reason': reason, error });
        span.setStatus({ code: SpanStatusCode.ERROR, message: `${reason}: ${error}` });
      },
      end(outcome) {
        span.setAttribute('saga.outcome', outcome);
        span.end();
      },
    };
  }

  /** The scope of a request to `route` (its template): its server span continues an incoming traceparent. */
  request(method: string, route: string, headers: Readonly<Record<string, unknown>>): RequestScope {
    if (!this.tracer) {
      const incoming = headers.traceparent;
      const traceparent = childTraceparent(typeof incoming === 'string' ? incoming : undefined);
      const ctx = ROOT_CONTEXT.setValue(HANDLING, { traceparent, request: true });
      return { run: (fn) => context.with(ctx, fn), end() {} };
    }
    const ctx = contextOf(headers.traceparent);
    const span = this.tracer.startSpan(
      `${method} ${route}`,
      { kind: SpanKind.SERVER, attributes: { [ATTR_HTTP_REQUEST_METHOD]: method, [ATTR_HTTP_ROUTE]: route } },
      ctx,
    );
    const active = trace
      .setSpan(ctx, span)
      .setValue(HANDLING, { traceparent: traceparentOf(span.spanContext()), request: true });
    return {
      run: (fn) => context.with(active, fn),
      end(status) {
        span.setAttribute(ATTR_HTTP_RESPONSE_STATUS_CODE, status);
        if (status >= 500) span.setStatus({ code: SpanStatusCode.ERROR });
        span.end();
      },
    };
  }

  /**
   * The producer span of one outbox row published to `exchange`, child of the context stored with
   * the row; the message goes out with the span's own traceparent. Only called when `enabled`.
   */
  publishing(
    exchange: string,
    row: { id: string; routing_key: string; trace_context: string | null },
    headers: Record<string, unknown>,
    orderId: string | undefined,
  ): PublishScope {
    const tracer = this.tracer as Tracer;
    const span: Span = tracer.startSpan(
      `publish ${exchange}`,
      {
        kind: SpanKind.PRODUCER,
        attributes: {
          'messaging.system': 'rabbitmq',
          'messaging.operation.type': 'send',
          'messaging.operation.name': 'publish',
          'messaging.destination.name': exchange,
          'messaging.rabbitmq.destination.routing_key': row.routing_key,
          'messaging.message.id': row.id,
          ...(orderId ? { 'messaging.message.conversation_id': orderId } : {}),
        },
      },
      contextOf(row.trace_context ?? undefined),
    );
    return {
      headers: { ...headers, traceparent: traceparentOf(span.spanContext()) },
      end(error) {
        if (error) span.setStatus({ code: SpanStatusCode.ERROR, message: String(error) });
        span.end();
      },
    };
  }

  /** Sends the spans still buffered (at shutdown). */
  async shutdown(): Promise<void> {
    await this.provider?.shutdown();
  }
}

function samplerOf(name: string, arg: number): Sampler {
  switch (name) {
    case 'always_on':
      return new AlwaysOnSampler();
    case 'always_off':
      return new AlwaysOffSampler();
    case 'traceidratio':
      return new TraceIdRatioBasedSampler(arg);
    case 'parentbased_always_off':
      return new ParentBasedSampler({ root: new AlwaysOffSampler() });
    case 'parentbased_traceidratio':
      return new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(arg) });
    default:
      return new ParentBasedSampler({ root: new AlwaysOnSampler() });
  }
}

/** The OTLP exporter for the protocol: protobuf or JSON, both over HTTP, to `<endpoint>/v1/traces`. */
export function exporterOf(protocol: TracingConfig['protocol'], endpoint: string): SpanExporter {
  const url = `${endpoint.replace(/\/+$/, '')}/v1/traces`;
  return protocol === 'http/json' ? new JsonExporter({ url }) : new ProtoExporter({ url });
}

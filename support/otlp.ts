/**
 * An OTLP/HTTP trace receiver that takes the JSON encoding (OTEL_EXPORTER_OTLP_PROTOCOL=http/json):
 * a real HTTP server on a free port that keeps every span it is sent, flattened. Protobuf bodies
 * are kept as they came. For the tests,
 * which check the traces the services export, and the benchmark, which exports every one.
 */
import { createServer, type Server } from 'node:http';

type AnyValue = {
  stringValue?: string;
  intValue?: number | string;
  boolValue?: boolean;
  doubleValue?: number;
};
type KeyValue = { key: string; value: AnyValue };

/** One span as received: its service (resource `service.name`) and its attributes as plain values. */
export interface ReceivedSpan {
  service: string;
  resource: Record<string, unknown>;
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  /** OTLP's SpanKind: 2 server, 4 producer, 5 consumer. */
  kind: number;
  attributes: Record<string, unknown>;
  events: { name: string; attributes: Record<string, unknown> }[];
  /** OTLP's status code: 2 is an error. */
  status: number;
}

export const SPAN_KIND = { server: 2, producer: 4, consumer: 5 } as const;

function plain(value: AnyValue): unknown {
  if (value.stringValue !== undefined) return value.stringValue;
  if (value.intValue !== undefined) return Number(value.intValue);
  if (value.doubleValue !== undefined) return value.doubleValue;
  return value.boolValue;
}

const record = (attributes: KeyValue[] = []) =>
  Object.fromEntries(attributes.map(({ key, value }) => [key, plain(value)]));

interface ExportRequest {
  resourceSpans?: {
    resource?: { attributes?: KeyValue[] };
    scopeSpans?: {
      spans?: {
        traceId: string;
        spanId: string;
        parentSpanId?: string;
        name: string;
        kind: number;
        attributes?: KeyValue[];
        events?: { name: string; attributes?: KeyValue[] }[];
        status?: { code?: number };
      }[];
    }[];
  }[];
}

export class OtlpReceiver {
  readonly spans: ReceivedSpan[] = [];
  /** Export requests received, whatever their content. */
  requests = 0;
  /** The bodies sent as protobuf (`http/protobuf`), kept undecoded. */
  readonly protobuf: Buffer[] = [];
  private readonly server: Server;

  private constructor(server: Server) {
    this.server = server;
  }

  static async start(): Promise<OtlpReceiver> {
    const receiver: OtlpReceiver = new OtlpReceiver(
      createServer((req, res) => {
        const chunks: Buffer[] = [];
        req.on('data', (chunk: Buffer) => chunks.push(chunk));
        req.on('end', () => {
          receiver.requests++;
          if (req.method !== 'POST' || req.url !== '/v1/traces') {
            res.statusCode = 404;
            res.end();
            return;
          }
          if (req.headers['content-type'] === 'application/x-protobuf') {
            receiver.protobuf.push(Buffer.concat(chunks));
            res.setHeader('content-type', 'application/x-protobuf');
            res.end();
            return;
          }
          try {
            receiver.add(JSON.parse(Buffer.concat(chunks).toString('utf8')) as ExportRequest);
            res.setHeader('content-type', 'application/json');
            res.end('{}');
          } catch {
            res.statusCode = 400;
            res.end();
          }
        });
      }),
    );
    await new Promise<void>((resolve) => receiver.server.listen(0, '127.0.0.1', resolve));
    return receiver;
  }

  /** The base URL to give as OTEL_EXPORTER_OTLP_ENDPOINT. */
  get endpoint(): string {
    const { port } = this.server.address() as { port: number };
    return `http://127.0.0.1:${port}`;
  }

  private add(request: ExportRequest): void {
    for (const { resource, scopeSpans = [] } of request.resourceSpans ?? []) {
      const attributes = record(resource?.attributes);
      for (const { spans = [] } of scopeSpans) {
        for (const span of spans) {
          this.spans.push({
            service: String(attributes['service.name']),
            resource: attributes,
            traceId: span.traceId,
            spanId: span.spanId,
            ...(span.parentSpanId ? { parentSpanId: span.parentSpanId } : {}),
            name: span.name,
            kind: span.kind,
            attributes: record(span.attributes),
            events: (span.events ?? []).map((e) => ({ name: e.name, attributes: record(e.attributes) })),
            status: span.status?.code ?? 0,
          });
        }
      }
    }
  }

  /** The spans of one trace. */
  trace(traceId: string): ReceivedSpan[] {
    return this.spans.filter((s) => s.traceId === traceId);
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

/** A trace as the tree of its span names (service: name), children indented under their parent. */
export function treeOf(spans: readonly ReceivedSpan[]): string {
  const ids = new Set(spans.map((s) => s.spanId));
  const children = new Map<string | undefined, ReceivedSpan[]>();
  for (const span of spans) {
    const parent = span.parentSpanId && ids.has(span.parentSpanId) ? span.parentSpanId : undefined;
    children.set(parent, [...(children.get(parent) ?? []), span]);
  }
  const lines: string[] = [];
  const walk = (parent: string | undefined, depth: number) => {
    for (const span of children.get(parent) ?? []) {
      const key = span.attributes['messaging.rabbitmq.destination.routing_key'];
      lines.push(`${'  '.repeat(depth)}${span.service}: ${span.name}${key ? ` (${key})` : ''}`);
      walk(span.spanId, depth + 1);
    }
  };
  walk(undefined, 0);
  return lines.join('\n');
}

/**
 * Configuration: the only reader of `process.env`. Every key, its default and its meaning is
 * listed in CONFIG_KEYS (the README's table is checked against it). Invalid values stop the
 * service at start with a message naming each one.
 */
import { hostname } from 'node:os';
import { resolve } from 'node:path';
import type { ServiceName } from './events.ts';

type Kind = 'string' | 'url' | 'port' | 'int' | 'bool' | 'list' | 'enum';
interface KeySpec {
  kind: Kind;
  default: string;
  doc: string;
  values?: readonly string[];
}

export const CONFIG_KEYS = {
  AMQP_URL: {
    kind: 'url',
    default: 'amqp://guest:guest@127.0.0.1:5672',
    doc: 'RabbitMQ connection URL (vhost in the path). The nodes of one cluster: their URLs, comma-separated; a service connects to one and goes round the others when it loses it.',
  },
  INSTANCE_NAME: {
    kind: 'string',
    default: '',
    doc: 'Names this instance of the service, in its broker connection (`<service> <instance>`, as the RabbitMQ console shows it) and its logs. Empty: `<host>:<pid>`.',
  },
  SAGA_EXCHANGE: {
    kind: 'string',
    default: 'saga',
    doc: 'The one durable topic exchange. Queue names derive from it (`<exchange>.<service>`), so another name gives an isolated copy of the topology.',
  },
  QUEUE_TYPE: {
    kind: 'enum',
    default: 'quorum',
    values: ['quorum', 'classic'],
    doc: 'Type of the work queues.',
  },
  DELIVERY_LIMIT: {
    kind: 'int',
    default: '20',
    doc: 'x-delivery-limit of quorum queues: deliveries before the broker dead-letters a message.',
  },
  RETRY_ATTEMPTS: {
    kind: 'int',
    default: '5',
    doc: 'Attempts at a message whose handler throws, before it is parked in the dead-letter queue.',
  },
  RETRY_BASE_DELAY_MS: {
    kind: 'int',
    default: '250',
    doc: 'Delay before the first retry; each next one doubles (with ±25% jitter).',
  },
  INBOX_RETENTION_HOURS: {
    kind: 'int',
    default: '168',
    doc: 'How long handled message ids (inbox) and published outbox rows are kept for deduplication and audit.',
  },
  PREFETCH: { kind: 'int', default: '64', doc: 'Unacknowledged messages a consumer holds at once.' },
  DATA_DIR: {
    kind: 'string',
    default: './data',
    doc: 'Directory of the SQLite databases, one file per service (held by one process at a time). Unused with DATABASE_URL.',
  },
  DATABASE_URL: {
    kind: 'string',
    default: '',
    doc: 'A PostgreSQL URL (`postgres://user:password@host:5432/db`): the services keep their tables there, each in a schema of its own, and any number of instances of each may run. Empty: SQLite under DATA_DIR.',
  },
  DATABASE_CONNECT_TIMEOUT_MS: {
    kind: 'int',
    default: '30000',
    doc: 'How long a service retries an unreachable PostgreSQL at start before it exits non-zero.',
  },
  HTTP_HOST: {
    kind: 'string',
    default: '127.0.0.1',
    doc: 'Address the HTTP servers listen on (0.0.0.0 to expose them).',
  },
  ORDER_CREATION_PORT: {
    kind: 'port',
    default: '3000',
    doc: 'HTTP port of order-creation (the public order API).',
  },
  INVENTORY_PORT: { kind: 'port', default: '3001', doc: 'HTTP port of inventory.' },
  REPLENISHMENT_PORT: { kind: 'port', default: '3002', doc: 'HTTP port of replenishment.' },
  SHIPMENT_PORT: { kind: 'port', default: '3003', doc: 'HTTP port of shipment.' },
  LOG_LEVEL: {
    kind: 'enum',
    default: 'info',
    values: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'],
    doc: 'pino log level.',
  },
  BODY_LIMIT_BYTES: { kind: 'int', default: '65536', doc: 'Largest accepted HTTP request body.' },
  BROKER_CONNECT_TIMEOUT_MS: {
    kind: 'int',
    default: '30000',
    doc: 'How long a service retries an unreachable broker at start before it exits non-zero.',
  },
  SHUTDOWN_TIMEOUT_MS: {
    kind: 'int',
    default: '8000',
    doc: 'Bound on the graceful drain at SIGTERM/SIGINT.',
  },
  FAULT_INJECTION: {
    kind: 'bool',
    default: 'true',
    doc: 'Honour the X-Fail-At header. Defaults to false when NODE_ENV=production.',
  },
  DASHBOARD: {
    kind: 'bool',
    default: 'true',
    doc: "order-creation's live dashboard (`/dashboard`) and the light subscriber that feeds it. `false`: neither, so no event is received twice and no event's data is shown.",
  },
  DASHBOARD_ACTIONS: {
    kind: 'bool',
    default: 'true',
    doc: "The dashboard's actions (place an order, start and stop traffic, replay parked messages). Defaults to false when NODE_ENV=production.",
  },
  DASHBOARD_HISTORY: {
    kind: 'int',
    default: '50000',
    doc: 'Saga events each order-creation instance keeps (at most 10 minutes of them) for dashboards that reconnect with Last-Event-ID.',
  },
  RABBITMQ_MANAGEMENT_URL: {
    kind: 'url',
    default: 'http://127.0.0.1:15672',
    doc: "RabbitMQ's management API, where the dashboard reads the queues (vhost from AMQP_URL).",
  },
  RABBITMQ_MANAGEMENT_USER: {
    kind: 'string',
    default: 'guest',
    doc: 'User for the management API (it needs the monitoring tag).',
  },
  RABBITMQ_MANAGEMENT_PASSWORD: {
    kind: 'string',
    default: 'guest',
    doc: 'Password of RABBITMQ_MANAGEMENT_USER.',
  },
  SAGA_DEADLINE_MS: {
    kind: 'int',
    default: '30000',
    doc: 'An order not terminal by then is cancelled with DEADLINE_EXCEEDED.',
  },
  SUPPLIER_DELAY_MS: {
    kind: 'int',
    default: '300',
    doc: 'How long the simulated supplier takes to deliver a replenishment.',
  },
  SUPPORTED_COUNTRIES: {
    kind: 'list',
    default: 'AT,BE,CH,DE,DK,ES,FI,FR,GB,IE,IT,NL,NO,PL,PT,SE,US,CA',
    doc: 'Destination countries shipment serves; any other makes the shipment fail.',
  },
  OTEL_EXPORTER_OTLP_ENDPOINT: {
    kind: 'string',
    default: '',
    doc: 'Where traces go (OTLP over HTTP; `/v1/traces` is appended), e.g. `http://127.0.0.1:4318`. Empty: tracing is off and costs nothing.',
  },
  OTEL_EXPORTER_OTLP_PROTOCOL: {
    kind: 'enum',
    default: 'http/protobuf',
    values: ['http/protobuf', 'http/json'],
    doc: 'OTLP encoding of the traces.',
  },
  OTEL_TRACES_SAMPLER: {
    kind: 'enum',
    default: 'parentbased_always_on',
    values: [
      'always_on',
      'always_off',
      'traceidratio',
      'parentbased_always_on',
      'parentbased_always_off',
      'parentbased_traceidratio',
    ],
    doc: 'Which traces are recorded. The parent-based ones follow the sampling decision of an incoming traceparent.',
  },
  OTEL_TRACES_SAMPLER_ARG: {
    kind: 'string',
    default: '1',
    doc: 'The ratio (0 to 1) of the `traceidratio` samplers.',
  },
  OTEL_SERVICE_NAME: {
    kind: 'string',
    default: '',
    doc: "The traces' `service.name`. Empty: the service's own name (order-creation, inventory, …).",
  },
  OTEL_BSP_SCHEDULE_DELAY: {
    kind: 'int',
    default: '5000',
    doc: 'Milliseconds between two exports of the spans buffered.',
  },
  METRICS: {
    kind: 'bool',
    default: 'true',
    doc: 'Count and time what the runner does for `GET /metrics`. A benchmark switch: false measures what metrics cost.',
  },
} as const satisfies Record<string, KeySpec>;

export type ConfigKey = keyof typeof CONFIG_KEYS;

/** The variable that sets each service's HTTP port. */
export const PORT_KEYS = {
  'order-creation': 'ORDER_CREATION_PORT',
  inventory: 'INVENTORY_PORT',
  replenishment: 'REPLENISHMENT_PORT',
  shipment: 'SHIPMENT_PORT',
} as const satisfies Record<ServiceName, ConfigKey>;

export interface Config {
  service: ServiceName;
  /** One URL, or the nodes of one cluster: connect to any, go round them. */
  amqpUrls: string[];
  /** This instance of the service among its others (host:pid unless INSTANCE_NAME says). */
  instance: string;
  exchange: string;
  queueType: 'quorum' | 'classic';
  deliveryLimit: number;
  prefetch: number;
  retryAttempts: number;
  retryBaseDelayMs: number;
  inboxRetentionMs: number;
  dataDir: string;
  /** PostgreSQL, shared by the instances; undefined: SQLite under dataDir. */
  databaseUrl?: string;
  databaseConnectTimeoutMs: number;
  httpHost: string;
  ports: Record<ServiceName, number>;
  port: number;
  logLevel: string;
  bodyLimitBytes: number;
  brokerConnectTimeoutMs: number;
  shutdownTimeoutMs: number;
  faultInjection: boolean;
  dashboard: boolean;
  dashboardActions: boolean;
  dashboardHistory: number;
  management: { url: string; user: string; password: string };
  sagaDeadlineMs: number;
  supplierDelayMs: number;
  supportedCountries: string[];
  tracing: TracingConfig;
  metrics: boolean;
}

/** OpenTelemetry's standard variables, as this project reads them (telemetry.ts). */
export interface TracingConfig {
  /** Unset: tracing is off. */
  endpoint?: string;
  protocol: 'http/protobuf' | 'http/json';
  sampler: (typeof CONFIG_KEYS.OTEL_TRACES_SAMPLER.values)[number];
  samplerArg: number;
  serviceName?: string;
  batchDelayMs: number;
}

export class ConfigError extends Error {
  readonly problems: string[];

  constructor(problems: string[]) {
    super(`Invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.problems = problems;
    this.name = 'ConfigError';
  }
}

/** Reads and validates the configuration of one service; throws ConfigError listing every bad key. */
export function loadConfig(service: ServiceName, env: NodeJS.ProcessEnv = process.env): Config {
  const problems: string[] = [];
  const raw = (key: ConfigKey): string => {
    const spec: KeySpec = CONFIG_KEYS[key];
    if (
      (key === 'FAULT_INJECTION' || key === 'DASHBOARD_ACTIONS') &&
      env[key] === undefined &&
      env.NODE_ENV === 'production'
    )
      return 'false';
    return (env[key] ?? spec.default).trim();
  };
  const int = (key: ConfigKey, min: number, max = Number.MAX_SAFE_INTEGER): number => {
    const value = raw(key);
    const n = Number(value);
    if (!/^\d+$/.test(value) || n < min || n > max)
      problems.push(`${key}="${value}" must be an integer from ${min} to ${max}`);
    return n;
  };
  const oneOf = <T extends string>(key: ConfigKey, values: readonly T[]): T => {
    const value = raw(key);
    if (!values.includes(value as T)) problems.push(`${key}="${value}" must be one of ${values.join(', ')}`);
    return value as T;
  };
  const bool = (key: ConfigKey): boolean => {
    const value = raw(key);
    if (value !== 'true' && value !== 'false') problems.push(`${key}="${value}" must be true or false`);
    return value === 'true';
  };
  const amqpUrls = raw('AMQP_URL')
    .split(',')
    .map((url) => url.trim());
  for (const url of amqpUrls) {
    const problem = amqpUrlProblem(url);
    if (problem) problems.push(`AMQP_URL has "${redactUrl(url)}": ${problem}`);
  }
  const databaseUrl = raw('DATABASE_URL');
  if (databaseUrl) {
    const problem = databaseUrlProblem(databaseUrl);
    if (problem) problems.push(`DATABASE_URL="${redactPassword(databaseUrl)}" ${problem}`);
  }
  const exchange = raw('SAGA_EXCHANGE');
  if (!/^[\w.-]{1,200}$/.test(exchange))
    problems.push(`SAGA_EXCHANGE="${exchange}" must be letters, digits, '.', '-' or '_'`);
  const managementUrl = raw('RABBITMQ_MANAGEMENT_URL').replace(/\/+$/, '');
  if (!/^https?:\/\/[^\s@]+$/.test(managementUrl))
    problems.push(
      `RABBITMQ_MANAGEMENT_URL="${managementUrl}" must be an http:// or https:// URL (credentials go in RABBITMQ_MANAGEMENT_USER and _PASSWORD)`,
    );
  const supportedCountries = raw('SUPPORTED_COUNTRIES')
    .split(',')
    .map((c) => c.trim().toUpperCase())
    .filter(Boolean);
  for (const country of supportedCountries) {
    if (!/^[A-Z]{2}$/.test(country))
      problems.push(`SUPPORTED_COUNTRIES has "${country}", not an ISO 3166 alpha-2 code`);
  }
  const ports: Record<ServiceName, number> = {
    'order-creation': int('ORDER_CREATION_PORT', 0, 65535),
    inventory: int('INVENTORY_PORT', 0, 65535),
    replenishment: int('REPLENISHMENT_PORT', 0, 65535),
    shipment: int('SHIPMENT_PORT', 0, 65535),
  };
  const endpoint = raw('OTEL_EXPORTER_OTLP_ENDPOINT');
  if (endpoint && !/^https?:\/\/[^\s]+$/.test(endpoint))
    problems.push(`OTEL_EXPORTER_OTLP_ENDPOINT="${endpoint}" must be an http:// or https:// URL, or empty`);
  const samplerArg = Number(raw('OTEL_TRACES_SAMPLER_ARG'));
  if (!(samplerArg >= 0 && samplerArg <= 1))
    problems.push(`OTEL_TRACES_SAMPLER_ARG="${raw('OTEL_TRACES_SAMPLER_ARG')}" must be a number from 0 to 1`);
  const tracing: TracingConfig = {
    ...(endpoint ? { endpoint } : {}),
    protocol: oneOf('OTEL_EXPORTER_OTLP_PROTOCOL', CONFIG_KEYS.OTEL_EXPORTER_OTLP_PROTOCOL.values),
    sampler: oneOf('OTEL_TRACES_SAMPLER', CONFIG_KEYS.OTEL_TRACES_SAMPLER.values),
    samplerArg,
    ...(raw('OTEL_SERVICE_NAME') ? { serviceName: raw('OTEL_SERVICE_NAME') } : {}),
    batchDelayMs: int('OTEL_BSP_SCHEDULE_DELAY', 1, 600_000),
  };
  const config: Config = {
    service,
    amqpUrls,
    instance: raw('INSTANCE_NAME') || `${hostname()}:${process.pid}`,
    exchange,
    queueType: oneOf('QUEUE_TYPE', ['quorum', 'classic'] as const),
    deliveryLimit: int('DELIVERY_LIMIT', 1, 1000),
    prefetch: int('PREFETCH', 1, 10000),
    retryAttempts: int('RETRY_ATTEMPTS', 1, 20),
    retryBaseDelayMs: int('RETRY_BASE_DELAY_MS', 1, 600_000),
    inboxRetentionMs: int('INBOX_RETENTION_HOURS', 1, 24 * 365) * 3_600_000,
    dataDir: resolve(raw('DATA_DIR')),
    ...(databaseUrl ? { databaseUrl } : {}),
    databaseConnectTimeoutMs: int('DATABASE_CONNECT_TIMEOUT_MS', 0, 3_600_000),
    httpHost: raw('HTTP_HOST'),
    ports,
    port: ports[service],
    logLevel: oneOf('LOG_LEVEL', CONFIG_KEYS.LOG_LEVEL.values),
    bodyLimitBytes: int('BODY_LIMIT_BYTES', 256, 100 * 1024 * 1024),
    brokerConnectTimeoutMs: int('BROKER_CONNECT_TIMEOUT_MS', 0, 3_600_000),
    shutdownTimeoutMs: int('SHUTDOWN_TIMEOUT_MS', 100, 600_000),
    faultInjection: bool('FAULT_INJECTION'),
    dashboard: bool('DASHBOARD'),
    dashboardActions: bool('DASHBOARD_ACTIONS'),
    dashboardHistory: int('DASHBOARD_HISTORY', 100, 10_000_000),
    management: {
      url: managementUrl,
      user: raw('RABBITMQ_MANAGEMENT_USER'),
      password: env.RABBITMQ_MANAGEMENT_PASSWORD ?? CONFIG_KEYS.RABBITMQ_MANAGEMENT_PASSWORD.default,
    },
    sagaDeadlineMs: int('SAGA_DEADLINE_MS', 100, 86_400_000),
    supplierDelayMs: int('SUPPLIER_DELAY_MS', 0, 3_600_000),
    supportedCountries,
    tracing,
    metrics: bool('METRICS'),
  };
  if (problems.length > 0) throw new ConfigError(problems);
  return config;
}

/** Every password in the text hidden (a URL, a comma-separated list of them, a message naming them). */
export function redactUrl(text: string): string {
  return text.replace(/\/\/([^:/@,\s]+):([^@,\s]*)@/g, '//$1:***@');
}

/**
 * One URL with its password hidden, whatever characters the password holds (a space, a comma,
 * an '@'): from the ':' after the user to the last '@', where a URL's parser ends it too.
 */
export function redactPassword(url: string): string {
  const at = url.lastIndexOf('@');
  const scheme = url.indexOf('://');
  const colon = url.indexOf(':', scheme === -1 ? 0 : scheme + 3);
  return colon === -1 || colon > at ? url : `${url.slice(0, colon + 1)}***${url.slice(at)}`;
}

/** What is wrong with one broker URL, or undefined: caught at start, not retried as a broker that is down. */
function amqpUrlProblem(url: string): string | undefined {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return 'not a URL (amqp://user:password@host:port/vhost)';
  }
  if (parsed.protocol !== 'amqp:' && parsed.protocol !== 'amqps:')
    return 'must be an amqp:// or amqps:// URL';
  if (!parsed.hostname) return 'has no host';
  if (parsed.port && !(Number(parsed.port) >= 1 && Number(parsed.port) <= 65535)) return 'has no valid port';
  return undefined;
}

function databaseUrlProblem(url: string): string | undefined {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return 'is not a URL (postgres://user:password@host:5432/database)';
  }
  if (parsed.protocol !== 'postgres:' && parsed.protocol !== 'postgresql:')
    return 'must be a postgres:// or postgresql:// URL';
  if (!parsed.hostname && !parsed.searchParams.get('host')) return 'has no host';
  return undefined;
}

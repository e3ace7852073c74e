/** The bench's flags (`npm run bench -- --help`): a bad value stops it with the usage, exit 2. */
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import type { Store } from '../support/system.ts';

const ROOT = join(import.meta.dirname, '..');

const usage = `npm run bench -- [flags]
  --orders N              orders in the measured phase (3000)
  --clients C             concurrent clients (50)
  --warmup N              warm-up orders, not measured (1000: with 100, V8 had not yet optimised the
                          services' hot paths and the first seconds of the phase ran ~1.6x slower)
  --ramp-ms MS            clients start evenly spread over MS, as on a live system, rather than all
                          C orders in the same millisecond after an idle pause (200)
  --replenish-share S     share of orders that take the replenishment path: 0.1, 10 or 10% (10%)
  --replenish-quantity Q  GIZMO-3 quantity of those orders (1000, the schema's maximum). It must exceed
                          the available stock; surplus from stock.low restocks can reach tens of units
  --supplier-delay-ms MS  SUPPLIER_DELAY_MS of the services (50)
  --queue-type T          quorum | classic (QUEUE_TYPE, else quorum)
  --store S               sqlite | postgres: PostgreSQL is a database of the bench's own on
                          TEST_POSTGRES_URL's server (postgres://postgres@127.0.0.1:5432/postgres),
                          dropped after the run (sqlite)
  --instances N           instances of each service, competing on its queue (PostgreSQL only) (1)
  --raw-messages N        raw ceiling: at most N messages (20000)
  --raw-seconds S         raw ceiling: at most S seconds of publishing (5)
  --raw-window W          raw ceiling: publishes per confirm wait (256)
  --skip-raw              skip the raw ceiling
  --cpu-profile           V8 CPU profile of each service over the measured phase (slows them down;
                          summary printed, .cpuprofile files kept under .tmp/bench-profiles/)
  --trace                 tracing on, every trace sampled: the services export to an OTLP/HTTP
                          receiver inside the bench (what tracing costs: compare with a run without)
  --trace-protocol P      http/protobuf | http/json: OTEL_EXPORTER_OTLP_PROTOCOL with --trace
                          (http/protobuf, the default of the services; only JSON spans are counted)
  --metrics-off           METRICS=false in the services (what metrics cost: compare with a run with)
  --dashboard-off         DASHBOARD=false in the services: no light subscriber (what the dashboard
                          costs with no page open: compare with a run without the flag)
  --dashboard             keep one dashboard open from the warm-up to the end of the measured phase
                          (its event stream read, its state polled every 2 s), to measure what it
                          costs against a run without
  --max-seconds S         stop starting orders after S seconds of the measured phase (120)
  --out FILE              results JSON (.tmp/bench-results.json)`;

export interface BenchConfig {
  orders: number;
  clients: number;
  warmup: number;
  rampMs: number;
  replenishShare: number;
  replenishQuantity: number;
  supplierDelayMs: number;
  queueType: 'quorum' | 'classic';
  store: Store;
  /** Instances of each service. */
  instances: number;
  rawMessages: number;
  rawSeconds: number;
  rawWindow: number;
  maxSeconds: number;
  prefetch: number;
  /** Every trace sampled and exported to the bench's receiver. */
  trace: boolean;
  /** The OTLP encoding of the exported spans. */
  traceProtocol: 'http/protobuf' | 'http/json';
  /** The services' METRICS switch. */
  metrics: boolean;
  /** The services' DASHBOARD switch. */
  dashboard: boolean;
}

export interface BenchOptions {
  config: BenchConfig;
  skipRaw: boolean;
  cpuProfile: boolean;
  /** One dashboard open over the measured phase. */
  dashboard: boolean;
  /** Where the results JSON goes. */
  out: string;
}

function positiveInt(name: string, value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) {
    console.error(`--${name}=${value} must be a non-negative integer\n\n${usage}`);
    process.exit(2);
  }
  return n;
}

function share(value: string): number {
  const n = Number(value.replace(/%$/, ''));
  const s = value.endsWith('%') || n > 1 ? n / 100 : n;
  if (!Number.isFinite(s) || s < 0 || s > 1) {
    console.error(`--replenish-share=${value} must be a share from 0 to 1 (or a percentage)\n\n${usage}`);
    process.exit(2);
  }
  return s;
}

/** The command line's options; `--help` prints the usage and exits. */
export function parseOptions(): BenchOptions {
  const { values: flags } = parseArgs({
    options: {
      orders: { type: 'string', default: '3000' },
      clients: { type: 'string', default: '50' },
      warmup: { type: 'string', default: '1000' },
      'ramp-ms': { type: 'string', default: '200' },
      'replenish-share': { type: 'string', default: '10%' },
      'replenish-quantity': { type: 'string', default: '1000' },
      'supplier-delay-ms': { type: 'string', default: '50' },
      'queue-type': { type: 'string', default: process.env.QUEUE_TYPE ?? 'quorum' },
      store: { type: 'string', default: 'sqlite' },
      instances: { type: 'string', default: '1' },
      'raw-messages': { type: 'string', default: '20000' },
      'raw-seconds': { type: 'string', default: '5' },
      'raw-window': { type: 'string', default: '256' },
      'skip-raw': { type: 'boolean', default: false },
      'cpu-profile': { type: 'boolean', default: false },
      dashboard: { type: 'boolean', default: false },
      'max-seconds': { type: 'string', default: '120' },
      trace: { type: 'boolean', default: false },
      'trace-protocol': { type: 'string', default: 'http/protobuf' },
      'metrics-off': { type: 'boolean', default: false },
      'dashboard-off': { type: 'boolean', default: false },
      out: { type: 'string', default: join(ROOT, '.tmp', 'bench-results.json') },
      help: { type: 'boolean', default: false },
    },
  });
  if (flags.help) {
    console.log(usage);
    process.exit(0);
  }
  const queueType = flags['queue-type'];
  if (queueType !== 'quorum' && queueType !== 'classic') {
    console.error(`--queue-type=${queueType} must be quorum or classic`);
    process.exit(2);
  }
  const store = flags.store;
  if (store !== 'sqlite' && store !== 'postgres') {
    console.error(`--store=${store} must be sqlite or postgres\n\n${usage}`);
    process.exit(2);
  }
  const instances = Math.max(1, positiveInt('instances', flags.instances));
  if (instances > 1 && store !== 'postgres') {
    console.error(
      `--instances=${instances} needs --store postgres: on SQLite each service is one process\n\n${usage}`,
    );
    process.exit(2);
  }
  if (flags.dashboard && flags['dashboard-off']) {
    console.error(`--dashboard and --dashboard-off: one or the other\n\n${usage}`);
    process.exit(2);
  }
  const traceProtocol = flags['trace-protocol'];
  if (traceProtocol !== 'http/protobuf' && traceProtocol !== 'http/json') {
    console.error(`--trace-protocol=${traceProtocol} must be http/protobuf or http/json`);
    process.exit(2);
  }
  return {
    config: {
      orders: positiveInt('orders', flags.orders),
      clients: Math.max(1, positiveInt('clients', flags.clients)),
      warmup: positiveInt('warmup', flags.warmup),
      rampMs: positiveInt('ramp-ms', flags['ramp-ms']),
      replenishShare: share(flags['replenish-share']),
      replenishQuantity: positiveInt('replenish-quantity', flags['replenish-quantity']),
      supplierDelayMs: positiveInt('supplier-delay-ms', flags['supplier-delay-ms']),
      queueType,
      store,
      instances,
      rawMessages: positiveInt('raw-messages', flags['raw-messages']),
      rawSeconds: positiveInt('raw-seconds', flags['raw-seconds']),
      rawWindow: Math.max(1, positiveInt('raw-window', flags['raw-window'])),
      maxSeconds: positiveInt('max-seconds', flags['max-seconds']),
      prefetch: 64,
      trace: flags.trace,
      traceProtocol,
      metrics: !flags['metrics-off'],
      dashboard: !flags['dashboard-off'],
    },
    skipRaw: flags['skip-raw'],
    cpuProfile: flags['cpu-profile'],
    dashboard: flags.dashboard,
    out: resolve(flags.out),
  };
}

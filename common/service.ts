/**
 * Wires one service: config, logger, database, broker, outbox relay, runner, HTTP server and
 * graceful shutdown. A service's main.ts hands it its definition and nothing else.
 */
import death from 'death';
import type { Migration } from 'kysely/migration';
import { Broker, BrokerUnreachableError } from './broker/connection.ts';
import { queueNames } from './broker/topology.ts';
import { type Config, ConfigError, loadConfig } from './config.ts';
import {
  DatabaseUnreachableError,
  type Db,
  exclusively,
  listen,
  openStore,
  runnerDb,
  type Tx,
} from './db.ts';
import type { SagaEvent, ServiceName } from './events.ts';
import { HttpServer } from './http.ts';
import { createLogger, type Logger } from './logger.ts';
import { Metrics } from './metrics.ts';
import { OutboxRelay } from './outbox.ts';
import { retryDelays } from './recoverability.ts';
import { type Handlers, Runner } from './runner.ts';
import { type RequestScope, Telemetry } from './telemetry.ts';
import { type Repeating, repeat, within } from './timers.ts';

const UNTRACED_ROUTES = new Set(['/health/live', '/health/ready', '/metrics']);
const NO_SPAN: RequestScope = { run: (fn) => fn(), end() {} };

export interface ServiceDefinition<T, S> {
  name: ServiceName;
  migrations: Record<string, Migration>;
  handlers: Handlers<S>;
  store: (trx: Tx<T>) => S;
  /** Called in the transaction with every event the service emits. */
  onEmitted?: (trx: Tx<T>, events: SagaEvent[]) => Promise<void>;
  /** Seeds, routes and timers: whatever the service adds to the shared wiring. */
  setup?: (app: App<T, S>) => Promise<void> | void;
}

/** What a service's setup gets to work with. */
export interface App<T, S> {
  config: Config;
  log: Logger;
  db: Db<T>;
  http: HttpServer;
  runner: Runner<T, S>;
  /** The service's Prometheus metrics; none with METRICS=false. */
  metrics?: Metrics;
  /**
   * Runs `task` now, then every `ms` until shutdown (see `repeat`: it can say when it is next
   * due, and be woken); a failure is logged, not fatal. Also at start: work that came due while
   * the service was down is not left waiting. With a `name`, one instance of the service at a
   * time runs it (the deadline sweep, the supplier): while another runs it, this one skips its
   * turn. Without, every instance runs its own.
   */
  every(ms: number, task: () => Promise<unknown>, name?: string): Pick<Repeating, 'wake'>;
  /**
   * Hears what any instance of the service `notify`-ed on the channel, once committed (see
   * db.ts); this instance's own commits are heard by `onCommit` too.
   */
  listen(channel: string, hear: (payload: string) => void): void;
  /**
   * Called after each commit of the service's transactions, with the events it emitted and the
   * ones it handled (maybe none).
   */
  onCommit(hook: (events: SagaEvent[], handled: SagaEvent[]) => void): void;
  /** Called first at shutdown, before HTTP closes (e.g. to release long-polling requests). */
  onShutdown(hook: () => void): void;
  /** The service's broker, for a viewer of the exchange beside the runner (Broker.watch). */
  broker: Broker;
}

/** Starts the service; resolves with a `stop` that drains it (safe to call twice). */
export async function startService<T, S>(definition: ServiceDefinition<T, S>, env = process.env) {
  const config = loadConfig(definition.name, env);
  const log = createLogger(definition.name, config.logLevel);
  const db = await openStore<T>(config, definition.name, definition.migrations, log);
  let databaseOpen = true;
  const broker = new Broker(
    config,
    {
      names: queueNames(config.exchange, definition.name),
      bindings: Object.keys(definition.handlers) as never,
      retryDelaysMs: retryDelays(config),
    },
    log,
  );
  const commitHooks: ((events: SagaEvent[], handled: SagaEvent[]) => void)[] = [];
  const telemetry = new Telemetry(config);
  const metrics: Metrics | undefined = config.metrics
    ? new Metrics({
        outboxPending: (): Promise<number> => relay.pending(),
        brokerConnected: () => broker.ready,
      })
    : undefined;
  if (metrics) commitHooks.push((events) => metrics.emitted(events));
  const relay = new OutboxRelay(runnerDb(db), broker, definition.name, log, telemetry, metrics);
  const { queue } = broker.names;
  const runner = new Runner<T, S>({
    db,
    transport: broker,
    relay,
    handlers: definition.handlers,
    store: definition.store,
    onEmitted: definition.onEmitted,
    afterCommit: (events, handled) => {
      for (const hook of commitHooks) hook(events, handled);
    },
    hooks: {
      received: (delivery, event) => telemetry.received(delivery, queue, event),
      settled: metrics ? (delivery) => metrics.settled(delivery) : () => {},
      ...(metrics ? { rerun: (reason) => metrics.rerun(reason) } : {}),
    },
    traced: telemetry.enabled,
    config,
    log,
  });
  const http = new HttpServer({
    config,
    log,
    checks: () => ({ broker: broker.ready, database: databaseOpen, topology: broker.ready }),
    observe: (method, route, headers) => {
      // Probes and scrapes would each be a trace of their own, burying the orders' in Jaeger.
      const scope = UNTRACED_ROUTES.has(route) ? NO_SPAN : telemetry.request(method, route, headers);
      if (!metrics) return scope;
      const started = performance.now();
      return {
        run: scope.run,
        end(status) {
          scope.end(status);
          metrics.request(method, route, status, (performance.now() - started) / 1000);
        },
      };
    },
  });
  if (metrics) {
    http.route(
      'get',
      '/metrics',
      async () => {
        const { body, contentType } = await metrics.exposition();
        return { status: 200, body, headers: { 'content-type': contentType } };
      },
      { documented: false },
    );
  }

  const timers: Repeating[] = [];
  const hooks: (() => void)[] = [];
  const every = (ms: number, task: () => Promise<unknown>, name?: string) => {
    const once = async () => {
      const run = await exclusively(db, name ?? '', task);
      return run.ran ? run.value : undefined;
    };
    const timer = repeat(ms, name ? once : task, (error) =>
      log.error({ err: error, task: name }, 'periodic task failed'),
    );
    timers.push(timer);
    return timer;
  };
  const listeners: (() => Promise<void>)[] = [];
  const app: App<T, S> = {
    config,
    log,
    db,
    http,
    runner,
    metrics,
    every,
    listen: (channel, hear) => listeners.push(listen(db, channel, hear, log)),
    onCommit: (hook) => commitHooks.push(hook),
    onShutdown: (hook) => hooks.push(hook),
    broker,
  };
  await definition.setup?.(app);
  // Handled message ids and published rows past the retention window.
  every(Math.min(config.inboxRetentionMs, 3_600_000), () => runner.prune(), 'prune');

  let stopping: Promise<boolean> | undefined;
  /** Drains in order: HTTP intake, timers, consumers and running handlers, outbox, broker, database. */
  const stop = (): Promise<boolean> => {
    stopping ??= (async () => {
      const deadline = Date.now() + config.shutdownTimeoutMs;
      log.info('shutting down');
      for (const hook of hooks) hook();
      await Promise.all(listeners.map((stop) => stop()));
      const httpClosed = http.close(deadline);
      for (const timer of timers) timer.stop();
      const drained = await runner.stop(deadline);
      const flushed = await relay.flush(deadline);
      relay.stop();
      await httpClosed;
      // A broker that no longer answers gets a second to say goodbye; the exit closes the socket.
      await within(broker.close(), Math.max(deadline, Date.now()) + 1000);
      await db.destroy();
      databaseOpen = false;
      // After the relay's last publish: its spans go out too.
      await within(telemetry.shutdown(), Math.max(deadline, Date.now()) + 1000);
      if (!drained || !flushed) {
        log.warn({ drained, flushed }, 'shutdown timed out; the broker redelivers what was not acked');
      }
      log.info('stopped');
      return drained && flushed;
    })();
    return stopping;
  };

  try {
    await http.listen();
    await broker.connect();
  } catch (error) {
    await http.close(Date.now()).catch(() => {});
    await db.destroy();
    throw error;
  }
  relay.start();
  await runner.start();
  log.info(
    { port: http.port, queue: broker.names.queue, subscriptions: runner.subscriptions.length },
    'ready',
  );
  return { app, stop, broker, relay };
}

/** The entry point of a service process: start, stop on SIGINT/SIGTERM, exit non-zero on failure. */
export async function runService<T, S>(definition: ServiceDefinition<T, S>): Promise<void> {
  try {
    const { stop } = await startService(definition);
    death({ uncaughtException: false })(async () => {
      process.exit((await stop()) ? 0 : 1);
    });
  } catch (error) {
    if (
      error instanceof ConfigError ||
      error instanceof BrokerUnreachableError ||
      error instanceof DatabaseUnreachableError
    ) {
      console.error(`${definition.name}: ${error.message}`);
    } else if ((error as NodeJS.ErrnoException).code === 'EADDRINUSE') {
      console.error(
        `${definition.name}: ${(error as Error).message}: another process holds the port; set the *_PORT variables.`,
      );
    } else {
      console.error(`${definition.name}: failed to start:`, error);
    }
    process.exit(1);
  }
}

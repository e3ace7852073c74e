/**
 * `npm start`: runs the four services as child processes, says how each one's start goes, and
 * once all four are ready, where to look; then their logs, prefixed by service. Ctrl-C or
 * SIGTERM stops them all gracefully.
 *
 * A database or a port that another process holds (a second `npm start`, most often) is found
 * before anything starts: one line says which, and it exits 1.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { relative } from 'node:path';
import { createInterface } from 'node:readline';
import { ConfigError, loadConfig, PORT_KEYS, redactPassword, redactUrl } from '../common/config.ts';
import { assertDatabaseFree } from '../common/db.ts';
import { SERVICES, type ServiceName } from '../common/events.ts';

const COLORS: Record<ServiceName, number> = {
  'order-creation': 36,
  inventory: 33,
  replenishment: 35,
  shipment: 32,
};
const LEVELS: Record<number, string> = {
  10: 'trace',
  20: 'debug',
  30: 'info',
  40: 'WARN',
  50: 'ERROR',
  60: 'FATAL',
};
const tty = process.stdout.isTTY;
const paint = (code: number, text: string) => (tty ? `\x1b[${code}m${text}\x1b[0m` : text);
const label = (service: ServiceName) => paint(COLORS[service], `[${service}]`.padEnd(16));

function fail(message: string): never {
  console.error(paint(31, `npm start: ${message}`));
  process.exit(1);
}

let config: ReturnType<typeof loadConfig>;
try {
  config = loadConfig('order-creation');
} catch (error) {
  console.error(error instanceof ConfigError ? error.message : error);
  process.exit(1);
}

/** Why a server cannot listen on host:port (EADDRINUSE, EACCES…), or undefined if it can. */
function listenError(host: string, port: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? error.message));
    server.listen(port, host, () => server.close(() => resolve(undefined)));
  });
}

/** What stops a service from starting that is known before it starts: its database or port held elsewhere. */
async function heldElsewhere(): Promise<string | undefined> {
  // PostgreSQL is shared by every instance: nothing to hold.
  for (const service of config.databaseUrl ? [] : SERVICES) {
    try {
      assertDatabaseFree(config.dataDir, service);
    } catch (error) {
      if (error instanceof ConfigError) return error.problems.join(' ');
      throw error;
    }
  }
  for (const service of SERVICES) {
    const port = config.ports[service];
    // Port 0: the system picks a free one.
    const error = port === 0 ? undefined : await listenError(config.httpHost, port);
    if (error === 'EADDRINUSE') {
      return `${PORT_KEYS[service]}: port ${port} on ${config.httpHost} is taken by another process (another npm start?): stop it, or set the *_PORT variables.`;
    }
    if (error) return `${PORT_KEYS[service]}: cannot listen on ${config.httpHost}:${port} (${error}).`;
  }
  return undefined;
}

const cause = await heldElsewhere();
if (cause) fail(cause);

/** One pino JSON line as `12:00:00.123 info  [inventory] message key=value`. */
function format(service: ServiceName, record: Record<string, unknown>): string {
  const { level, time, msg, service: _s, name: _n, pid: _p, hostname: _h, ...rest } = record;
  const fields = Object.entries(rest)
    .map(([k, v]) => `${k}=${typeof v === 'object' ? JSON.stringify(v) : String(v)}`)
    .join(' ');
  const clock = typeof time === 'string' ? time.slice(11, 23) : '';
  return `${clock} ${(LEVELS[level as number] ?? String(level)).padEnd(5)} ${label(service)} ${String(msg ?? '')}${fields ? ` ${paint(90, fields)}` : ''}`;
}

const dataDir = relative(process.cwd(), config.dataDir);
const data = config.databaseUrl
  ? redactPassword(config.databaseUrl)
  : dataDir.startsWith('..') || !dataDir
    ? config.dataDir
    : `./${dataDir}`;
console.log(
  `Starting the order saga: exchange ${config.exchange}, data in ${data}, broker ${redactUrl(config.amqpUrls.join(','))}`,
);

const children = new Map<ServiceName, ChildProcess>();
/** Routine log lines (below warn) written while the services start: shown after the banner, not between the progress lines. */
let heldBack: string[] | undefined = [];
let stopping = false;
let failed = false;

function stopAll(): void {
  stopping = true;
  for (const child of children.values()) child.kill('SIGTERM');
}

for (const service of SERVICES) {
  console.log(`  ${label(service)} starting`);
  const child = spawn(process.execPath, [`services/${service}/main.ts`], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: process.env,
  });
  children.set(service, child);
  for (const stream of [child.stdout, child.stderr]) {
    createInterface({ input: stream }).on('line', (line) => {
      let record: Record<string, unknown> | undefined;
      try {
        record = JSON.parse(line);
      } catch {}
      if (!record) return console.log(`${label(service)} ${line}`);
      if (heldBack && typeof record.level === 'number' && record.level < 40) {
        heldBack.push(format(service, record));
      } else {
        console.log(format(service, record));
      }
    });
  }
  child.on('exit', (code, signal) => {
    children.delete(service);
    if (!stopping) {
      failed = true;
      const how = signal ?? `code ${code}`;
      console.error(
        paint(
          31,
          heldBack
            ? `npm start: ${service} stopped before it was ready (${how}): the lines above say why. Stopping the others.`
            : `${service} exited (${how}); stopping the others.`,
        ),
      );
      stopAll();
    } else if (code !== 0) {
      failed = true;
    }
    if (children.size === 0) process.exit(failed ? 1 : 0);
  });
}

process.on('SIGINT', stopAll);
process.on('SIGTERM', stopAll);

async function ready(service: ServiceName): Promise<boolean> {
  try {
    const response = await fetch(`http://127.0.0.1:${config.ports[service]}/health/ready`, {
      signal: AbortSignal.timeout(2000),
    });
    return response.ok;
  } catch {
    return false;
  }
}

// The ports were free a moment ago, so whoever answers on them is the child just started.
const started = Date.now();
const waiting = new Set(SERVICES);
const giveUpAt = started + config.brokerConnectTimeoutMs + 15_000;
while (!stopping && waiting.size > 0 && Date.now() < giveUpAt) {
  await Promise.all(
    [...waiting].map(async (service) => {
      if (!(await ready(service)) || stopping) return;
      waiting.delete(service);
      console.log(`  ${label(service)} ready in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    }),
  );
  if (waiting.size > 0) await new Promise((r) => setTimeout(r, 200));
}

if (!stopping && waiting.size > 0) {
  failed = true;
  console.error(
    paint(
      31,
      `npm start: ${[...waiting].join(', ')} not ready after ${Math.round((Date.now() - started) / 1000)} s; stopping everything.`,
    ),
  );
  stopAll();
} else if (!stopping) {
  const host = config.httpHost === '0.0.0.0' ? 'localhost' : config.httpHost;
  const brokerHost = new URL(config.amqpUrls[0] ?? '').hostname;
  console.log(
    [
      '',
      paint(1, 'The order saga is running.'),
      `  Dashboard          http://${host}:${config.ports['order-creation']}/dashboard  (start here: watch sagas live; \`npm run traffic\` feeds it)`,
      `  Swagger UI         http://${host}:${config.ports['order-creation']}/docs  (the API: place an order by hand)`,
      `  Order API          http://${host}:${config.ports['order-creation']}/orders`,
      `  Stock              http://${host}:${config.ports.inventory}/stock`,
      `  RabbitMQ console   http://${brokerHost}:15672  (guest/guest; queues ${config.exchange}.*)`,
      `  Broker             ${redactUrl(config.amqpUrls.join(','))}, exchange ${config.exchange}`,
      "Ctrl-C stops everything. The services' logs follow.",
      '',
    ].join('\n'),
  );
  for (const line of heldBack ?? []) console.log(line);
  heldBack = undefined;
}

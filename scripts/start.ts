/**
 * `npm start`: runs the four services as child processes, prints their logs prefixed by service,
 * says where to look once they are ready, and stops them all gracefully on Ctrl-C or SIGTERM.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { ConfigError, loadConfig, redactUrl } from '../common/config.ts';
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

let config: ReturnType<typeof loadConfig>;
try {
  config = loadConfig('order-creation');
} catch (error) {
  console.error(error instanceof ConfigError ? error.message : error);
  process.exit(1);
}

/** One pino JSON line as `12:00:00.123 info  [inventory] message key=value`. */
function format(service: ServiceName, line: string): string {
  const prefix = paint(COLORS[service], `[${service}]`.padEnd(16));
  let record: Record<string, unknown>;
  try {
    record = JSON.parse(line);
  } catch {
    return `${prefix} ${line}`;
  }
  const { level, time, msg, service: _s, name: _n, pid: _p, hostname: _h, ...rest } = record;
  const fields = Object.entries(rest)
    .map(([k, v]) => `${k}=${typeof v === 'object' ? JSON.stringify(v) : String(v)}`)
    .join(' ');
  const clock = typeof time === 'string' ? time.slice(11, 23) : '';
  return `${clock} ${(LEVELS[level as number] ?? String(level)).padEnd(5)} ${prefix} ${String(msg ?? '')}${fields ? ` ${paint(90, fields)}` : ''}`;
}

const children = new Map<ServiceName, ChildProcess>();
let stopping = false;
let failed = false;

for (const service of SERVICES) {
  const child = spawn(process.execPath, [`services/${service}/main.ts`], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: process.env,
  });
  children.set(service, child);
  for (const stream of [child.stdout, child.stderr]) {
    createInterface({ input: stream }).on('line', (line) => console.log(format(service, line)));
  }
  child.on('exit', (code, signal) => {
    children.delete(service);
    if (!stopping) {
      failed = true;
      console.error(paint(31, `${service} exited (${signal ?? `code ${code}`}); stopping the others.`));
      stopAll();
    } else if (code !== 0) {
      failed = true;
    }
    if (children.size === 0) process.exit(failed ? 1 : 0);
  });
}

function stopAll(): void {
  stopping = true;
  for (const child of children.values()) child.kill('SIGTERM');
}

process.on('SIGINT', stopAll);
process.on('SIGTERM', stopAll);

async function ready(service: ServiceName): Promise<boolean> {
  try {
    const response = await fetch(`http://127.0.0.1:${config.ports[service]}/health/ready`);
    return response.ok;
  } catch {
    return false;
  }
}

const started = Date.now();
while (!stopping && Date.now() - started < config.brokerConnectTimeoutMs + 15_000) {
  const states = await Promise.all(SERVICES.map(ready));
  if (states.every(Boolean)) {
    const host = config.httpHost === '0.0.0.0' ? 'localhost' : config.httpHost;
    const brokerHost = new URL(config.amqpUrl.replace(/^amqps?:/, 'http:')).hostname;
    console.log(
      [
        '',
        paint(1, 'The order saga is running.'),
        `  Order API          http://${host}:${config.ports['order-creation']}/orders`,
        `  Swagger UI         http://${host}:${config.ports['order-creation']}/docs`,
        `  Stock              http://${host}:${config.ports.inventory}/stock`,
        `  RabbitMQ console   http://${brokerHost}:15672  (guest/guest; queues ${config.exchange}.*)`,
        `  Broker             ${redactUrl(config.amqpUrl)}, exchange ${config.exchange}`,
        'Ctrl-C stops everything.',
        '',
      ].join('\n'),
    );
    break;
  }
  await new Promise((r) => setTimeout(r, 300));
}

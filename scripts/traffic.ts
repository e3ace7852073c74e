/**
 * `npm run traffic -- --rate R --duration S [--failures P]`: a steady stream of orders through the
 * public API (`POST /orders`), mixing the forward paths and, for a share P of them (0 to 1,
 * default 0.2), the failures of saga.md, with a live progress line. For watching the dashboard
 * and the broker's console; not a benchmark (that is `npm run bench`).
 *
 * Exit codes: 0 done, 1 orders were refused or failed, 2 bad usage or configuration.
 */
import { parseArgs } from 'node:util';
import { ConfigError, loadConfig } from '../common/config.ts';
import { planProblems, runTraffic, type TrafficOrder, type TrafficPlan } from '../common/traffic.ts';

const USAGE = `usage: npm run traffic -- [--rate R] [--duration S] [--failures P] [--url URL]

  --rate R       orders per second (default 5)
  --duration S   seconds (default 60)
  --failures P   share of orders that fail on purpose, 0 to 1 (default 0.2)
  --url URL      the order API (default http://localhost:ORDER_CREATION_PORT)
  -h, --help     this text

Open http://localhost:3000/dashboard and the RabbitMQ console while it runs.`;

function usage(problem?: string): never {
  if (problem) console.error(`npm run traffic: ${problem}\n`);
  console.error(USAGE);
  process.exit(problem ? 2 : 0);
}

let plan: TrafficPlan;
let url: string;
try {
  const { values } = parseArgs({
    options: {
      rate: { type: 'string', default: '5' },
      duration: { type: 'string', default: '60' },
      failures: { type: 'string', default: '0.2' },
      url: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) usage();
  plan = { rate: Number(values.rate), durationS: Number(values.duration), failures: Number(values.failures) };
  const problems = planProblems(plan);
  if (problems.length > 0) usage(problems.join('; '));
  const config = loadConfig('order-creation');
  const host = config.httpHost === '0.0.0.0' ? 'localhost' : config.httpHost;
  url = (values.url ?? `http://${host}:${config.port}`).replace(/\/+$/, '');
} catch (error) {
  if (error instanceof ConfigError) {
    console.error(error.message);
    process.exit(2);
  }
  usage((error as Error).message);
}

const counts = { placed: 0, refused: 0, failed: 0 };
const byPath = new Map<string, number>();
let firstProblem: string | undefined;
const started = Date.now();
const total = Math.max(1, Math.round(plan.rate * plan.durationS));
const tty = process.stdout.isTTY;
let lastLine = Date.now();

function progress(final = false): void {
  const elapsed = (Date.now() - started) / 1000;
  const done = counts.placed + counts.refused + counts.failed;
  const line =
    `${done}/${total} orders in ${elapsed.toFixed(0)} s (${(done / Math.max(elapsed, 0.001)).toFixed(1)}/s): ` +
    `${counts.placed} placed${counts.refused ? `, ${counts.refused} refused` : ''}${counts.failed ? `, ${counts.failed} unanswered` : ''}`;
  // On a terminal the line is rewritten in place; into a file or a pipe, one line each 10 s.
  if (tty && !final) process.stdout.write(`\r${line}\x1b[K`);
  else if (final || Date.now() - lastLine >= 10_000) {
    lastLine = Date.now();
    console.log(tty ? `\r${line}\x1b[K` : line);
  }
}

async function place(order: TrafficOrder): Promise<void> {
  const response = await fetch(`${url}/orders`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(order.failAt ? { 'x-fail-at': order.failAt } : {}) },
    body: JSON.stringify(order.body),
    signal: AbortSignal.timeout(10_000),
  });
  if (response.status !== 201) {
    const body = (await response.json().catch(() => ({}))) as { detail?: string };
    throw Object.assign(new Error(`${response.status}: ${body.detail ?? response.statusText}`), {
      refused: true,
    });
  }
}

const stop = new AbortController();
process.once('SIGINT', () => stop.abort());
console.log(
  `Placing ${plan.rate} orders/s for ${plan.durationS} s at ${url}, ${Math.round(plan.failures * 100)} % failing on purpose. Ctrl-C stops.`,
);
const ticker = setInterval(() => progress(), tty ? 250 : 1000);
await runTraffic(plan, place, stop.signal, (order, outcome, error) => {
  if (outcome === 'ok') {
    counts.placed++;
    byPath.set(order.path, (byPath.get(order.path) ?? 0) + 1);
  } else {
    if ((error as { refused?: boolean }).refused) counts.refused++;
    else counts.failed++;
    firstProblem ??= (error as Error).message;
  }
});
clearInterval(ticker);
progress(true);
console.log(
  [...byPath]
    .sort((a, b) => b[1] - a[1])
    .map(([path, n]) => `  ${String(n).padStart(6)}  ${path}`)
    .join('\n'),
);
if (firstProblem) {
  console.error(`first problem: ${firstProblem}${counts.failed ? ' (is npm start running?)' : ''}`);
  process.exit(1);
}

/**
 * The saga benchmark (`npm run bench -- --orders 3000 --clients 50`).
 *
 * 1. Raw ceiling: what this broker does on this machine with one amqplib publisher/consumer pair
 *    on a durable queue of the services' type (persistent ~400-byte messages, confirms, manual ack).
 * 2. The four services as real processes (System), warmed up, then at once N orders from C
 *    concurrent clients (their starts spread over a ramp): POST /orders, then
 *    GET /orders/{id}?wait= until terminal; latency POST → COMPLETED. A share of the orders buys
 *    more GIZMO-3 than is in stock and takes the replenishment path.
 * 3. Broker deliveries per saga (management API counters before the warm-up and after the
 *    phase), CPU per process over the measured phase, a `top` snapshot in the middle of it, peak
 *    RSS of each service.
 *
 * Prints a table and writes everything to .tmp/bench-results.json. Flags: see `usage` below.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { availableParallelism } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { type RoutingKey, SERVICES } from '../common/events.ts';
import { handlers as inventoryHandlers } from '../services/inventory/handlers.ts';
import { handlers as orderHandlers } from '../services/order-creation/handlers.ts';
import { handlers as replenishmentHandlers } from '../services/replenishment/handlers.ts';
import { handlers as shipmentHandlers } from '../services/shipment/handlers.ts';
import { aLine, anOrder } from '../support/builders.ts';
import { AMQP_URL, System } from '../support/system.ts';
import {
  CLK_TCK,
  cpuSeconds,
  type MachineCpu,
  Management,
  machineCpu,
  machineCpuShare,
  memoryMiB,
  pidsByName,
  type QueueCounters,
  startTicks,
  topSnapshot,
} from './probe.ts';
import { type ProfileSummary, summarise } from './profile.ts';
import { measureRaw, type RawResult } from './raw.ts';

const ROOT = join(import.meta.dirname, '..');

/** The code measured: HEAD and the files changed since (a benchmark of a dirty tree must say so). */
function codeVersion(): { commit?: string; uncommitted: string[] } {
  try {
    // Not trimmed: a porcelain line starts with its status, which may be a space.
    const git = (...args: string[]) => execFileSync('git', args, { cwd: ROOT, encoding: 'utf8' }).trimEnd();
    const uncommitted = git(
      'status',
      '--porcelain',
      '--untracked-files=no',
      '--',
      'common',
      'services',
      'compensation',
    )
      .split('\n')
      .filter(Boolean)
      .map((line) => line.slice(3));
    return { commit: git('rev-parse', '--short', 'HEAD'), uncommitted };
  } catch {
    return { uncommitted: [] };
  }
}
const TARGET = { sagasPerSecond: 300, p99Ms: 250, clients: 50 };

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
  --raw-messages N        raw ceiling: at most N messages (20000)
  --raw-seconds S         raw ceiling: at most S seconds of publishing (5)
  --raw-window W          raw ceiling: publishes per confirm wait (256)
  --skip-raw              skip the raw ceiling
  --cpu-profile           V8 CPU profile of each service over the measured phase (slows them down;
                          summary printed, .cpuprofile files kept under .tmp/bench-profiles/)
  --max-seconds S         stop starting orders after S seconds of the measured phase (120)
  --out FILE              results JSON (.tmp/bench-results.json)`;

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
    'raw-messages': { type: 'string', default: '20000' },
    'raw-seconds': { type: 'string', default: '5' },
    'raw-window': { type: 'string', default: '256' },
    'skip-raw': { type: 'boolean', default: false },
    'cpu-profile': { type: 'boolean', default: false },
    'max-seconds': { type: 'string', default: '120' },
    out: { type: 'string', default: join(ROOT, '.tmp', 'bench-results.json') },
    help: { type: 'boolean', default: false },
  },
});
if (flags.help) {
  console.log(usage);
  process.exit(0);
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

const queueType = flags['queue-type'];
if (queueType !== 'quorum' && queueType !== 'classic') {
  console.error(`--queue-type=${queueType} must be quorum or classic`);
  process.exit(2);
}
const config = {
  orders: positiveInt('orders', flags.orders),
  clients: Math.max(1, positiveInt('clients', flags.clients)),
  warmup: positiveInt('warmup', flags.warmup),
  rampMs: positiveInt('ramp-ms', flags['ramp-ms']),
  replenishShare: share(flags['replenish-share']),
  replenishQuantity: positiveInt('replenish-quantity', flags['replenish-quantity']),
  supplierDelayMs: positiveInt('supplier-delay-ms', flags['supplier-delay-ms']),
  queueType: queueType as 'quorum' | 'classic',
  rawMessages: positiveInt('raw-messages', flags['raw-messages']),
  rawSeconds: positiveInt('raw-seconds', flags['raw-seconds']),
  rawWindow: Math.max(1, positiveInt('raw-window', flags['raw-window'])),
  maxSeconds: positiveInt('max-seconds', flags['max-seconds']),
  prefetch: 64,
};
const out = resolve(flags.out);

// ---------------------------------------------------------------------------------------------
// HTTP client: keep-alive sockets, one per client (a client waits for each answer before the next).

const agent = new http.Agent({ keepAlive: true, maxSockets: config.clients + 4 });

interface Answer {
  status: number;
  body: unknown;
}

function call(method: 'GET' | 'POST', url: string, body?: unknown, timeoutMs = 20_000): Promise<Answer> {
  return new Promise((resolvePromise, reject) => {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const request = http.request(
      url,
      {
        method,
        agent,
        headers: payload ? { 'content-type': 'application/json', 'content-length': payload.length } : {},
        timeout: timeoutMs,
      },
      (response) => {
        const chunks: Buffer[] = [];
        response.on('data', (chunk: Buffer) => chunks.push(chunk));
        response.on('error', reject);
        response.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let parsed: unknown = text;
          try {
            parsed = JSON.parse(text);
          } catch {}
          resolvePromise({ status: response.statusCode ?? 0, body: parsed });
        });
      },
    );
    request.on('timeout', () =>
      request.destroy(new Error(`${method} ${url} timed out after ${timeoutMs} ms`)),
    );
    request.on('error', reject);
    request.end(payload);
  });
}

// ---------------------------------------------------------------------------------------------
// Orders

type Path = 'plain' | 'replenishment';

interface Sample {
  /** The path the order was meant to take… */
  intended: Path;
  /** …and the one it took (an `inventory.backordered` in its timeline), once terminal. */
  path?: Path;
  status: string;
  reason?: string;
  /** POST sent → terminal status read, ms. */
  latencyMs?: number;
  postMs?: number;
  error?: string;
  /** Deliveries of the events in the order's timeline: one per queue bound to each event's key. */
  timelineDeliveries: number;
  /**
   * Where the time went: ms between consecutive steps, keyed "from → to". The steps are the POST
   * being sent, each timeline event (its `at` is when the emitting transaction wrote it) and the
   * terminal status being read. Same machine, same clock.
   */
  gaps?: [string, number][];
  /** When the order was placed, ms after the phase started. */
  startedMs?: number;
}

interface OrderView {
  id: string;
  status: string;
  reason?: string;
  timeline?: { type: string; at: string }[];
}

function gapsOf(
  sentAt: number,
  timeline: { type: string; at: string }[],
  readAt: number,
): [string, number][] {
  const steps: [string, number][] = [
    ['POST sent', sentAt],
    ...timeline.map((e): [string, number] => [e.type, Date.parse(e.at)]),
    ['terminal read', readAt],
  ];
  return steps.slice(1).map(([type, at], i) => {
    const [fromType, fromAt] = steps[i] ?? ['?', at];
    return [`${fromType} → ${type}`, at - fromAt];
  });
}

/** Queues bound to each routing key, from the services' own subscription lists. */
const SUBSCRIBERS = new Map<string, number>();
for (const handlers of [orderHandlers, inventoryHandlers, replenishmentHandlers, shipmentHandlers]) {
  for (const key of Object.keys(handlers) as RoutingKey[])
    SUBSCRIBERS.set(key, (SUBSCRIBERS.get(key) ?? 0) + 1);
}

const isTerminal = (status: string) => status === 'COMPLETED' || status === 'CANCELLED';
/** Order i takes the replenishment path when the running share crosses an integer: evenly spread. */
const isReplenishment = (i: number, s: number) => Math.floor((i + 1) * s) > Math.floor(i * s);

async function placeAndWait(system: System, intended: Path): Promise<Sample> {
  const body =
    intended === 'replenishment'
      ? anOrder({ items: [aLine('GIZMO-3', config.replenishQuantity)] })
      : anOrder();
  const started = performance.now();
  const sentAt = Date.now();
  try {
    const created = await call('POST', system.url('order-creation', '/orders'), body);
    const postMs = performance.now() - started;
    if (created.status !== 201) {
      return {
        intended,
        status: `HTTP ${created.status}`,
        error: JSON.stringify(created.body).slice(0, 300),
        timelineDeliveries: 0,
      };
    }
    let order = created.body as OrderView;
    const giveUpAt = started + 40_000;
    while (!isTerminal(order.status) && performance.now() < giveUpAt) {
      const read = await call('GET', system.url('order-creation', `/orders/${order.id}?wait=10000`));
      if (read.status !== 200) {
        return {
          intended,
          status: `HTTP ${read.status}`,
          postMs,
          error: JSON.stringify(read.body).slice(0, 300),
          timelineDeliveries: 0,
        };
      }
      order = read.body as OrderView;
    }
    const latencyMs = performance.now() - started;
    const readAt = Date.now();
    const timeline = order.timeline ?? [];
    return {
      intended,
      path: timeline.some((e) => e.type === 'inventory.backordered') ? 'replenishment' : 'plain',
      status: isTerminal(order.status) ? order.status : `STUCK ${order.status}`,
      ...(order.reason ? { reason: order.reason } : {}),
      ...(isTerminal(order.status) ? { latencyMs } : {}),
      postMs,
      timelineDeliveries: timeline.reduce((n, e) => n + (SUBSCRIBERS.get(e.type) ?? 0), 0),
      ...(order.status === 'COMPLETED' ? { gaps: gapsOf(sentAt, timeline, readAt) } : {}),
    };
  } catch (error) {
    return { intended, status: 'ERROR', error: (error as Error).message, timelineDeliveries: 0 };
  }
}

async function drive(
  system: System,
  count: number,
  onProgress?: (done: number) => void,
): Promise<{ samples: Sample[]; wallSeconds: number; notAttempted: number }> {
  const samples: Sample[] = [];
  let next = 0;
  const started = performance.now();
  const stopAt = started + config.maxSeconds * 1000;
  const clients = Math.min(config.clients, Math.max(count, 1));
  const client = async (k: number) => {
    await new Promise((r) => setTimeout(r, (k * config.rampMs) / clients));
    while (next < count && performance.now() < stopAt) {
      const i = next++;
      const startedMs = performance.now() - started;
      const sample = await placeAndWait(
        system,
        isReplenishment(i, config.replenishShare) ? 'replenishment' : 'plain',
      );
      samples.push({ ...sample, startedMs });
      onProgress?.(samples.length);
    }
  };
  await Promise.all(Array.from({ length: clients }, (_, k) => client(k)));
  return { samples, wallSeconds: (performance.now() - started) / 1000, notAttempted: count - next };
}

// ---------------------------------------------------------------------------------------------
// Statistics

const round = (n: number, digits = 1) => Math.round(n * 10 ** digits) / 10 ** digits;

interface Latency {
  n: number;
  p50?: number;
  p95?: number;
  p99?: number;
  max?: number;
  mean?: number;
}

function latency(values: number[]): Latency {
  if (values.length === 0) return { n: 0 };
  const sorted = [...values].sort((a, b) => a - b);
  const at = (q: number) => round(sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)] ?? 0);
  return {
    n: sorted.length,
    p50: at(0.5),
    p95: at(0.95),
    p99: at(0.99),
    max: round(sorted[sorted.length - 1] ?? 0),
    mean: round(sorted.reduce((a, b) => a + b, 0) / sorted.length),
  };
}

// ---------------------------------------------------------------------------------------------
// CPU accounting per process over a phase

interface CpuMark {
  at: number;
  processes: Map<string, number>;
  machine?: MachineCpu;
}

function cpuMark(pids: Map<string, number>): CpuMark {
  const processes = new Map<string, number>();
  for (const [label, pid] of pids) {
    const seconds =
      pid === process.pid ? process.cpuUsage().user / 1e6 + process.cpuUsage().system / 1e6 : cpuSeconds(pid);
    if (seconds !== undefined) processes.set(label, seconds);
  }
  return { at: performance.now(), processes, machine: machineCpu() };
}

/**
 * CPU per process between two marks: seconds, % of one core (200 % = both cores of a 2-core
 * machine) and, given the sagas completed meanwhile, CPU ms per saga. "other processes" is the
 * machine's busy time minus ours: load this bench does not control.
 */
function cpuBetween(before: CpuMark, after: CpuMark, sagas?: number) {
  const seconds = (after.at - before.at) / 1000;
  const perProcess: Record<string, { cpuSeconds: number; pctOfOneCore: number; msPerSaga?: number }> = {};
  const row = (cpu: number) => ({
    cpuSeconds: round(cpu, 2),
    pctOfOneCore: round((cpu / seconds) * 100),
    ...(sagas ? { msPerSaga: round((cpu * 1000) / sagas, 2) } : {}),
  });
  let ours = 0;
  for (const [label, end] of after.processes) {
    const start = before.processes.get(label);
    if (start === undefined) continue;
    ours += end - start;
    perProcess[label] = row(end - start);
  }
  if (before.machine && after.machine) {
    perProcess['other processes (not this bench)'] = row(
      Math.max(0, (after.machine.busy - before.machine.busy) / CLK_TCK - ours),
    );
  }
  // What the CPU alone allows: every saga costs the sum of our processes' CPU; the busiest
  // process is single-threaded (one core at most).
  let ceiling: { allCores: number; busiest: string; busiestAlone: number } | undefined;
  if (sagas) {
    const ourRows = Object.entries(perProcess).filter(([label]) => !label.startsWith('other'));
    const total = ourRows.reduce((n, [, r]) => n + (r.msPerSaga ?? 0), 0);
    const [busiest, top] = ourRows.sort((a, b) => (b[1].msPerSaga ?? 0) - (a[1].msPerSaga ?? 0))[0] ?? [];
    if (total > 0 && busiest && top?.msPerSaga) {
      ceiling = {
        allCores: Math.round((availableParallelism() * 1000) / total),
        busiest,
        busiestAlone: Math.round(1000 / top.msPerSaga),
      };
    }
  }
  return {
    seconds: round(seconds, 2),
    perProcess,
    ceiling,
    machine: before.machine && after.machine ? machineCpuShare(before.machine, after.machine) : undefined,
  };
}

// ---------------------------------------------------------------------------------------------
// Output

function table(rows: (string | number | undefined)[][], header?: string[]): string {
  const all = header ? [header, ...rows] : rows;
  const cells = all.map((r) => r.map((c) => (c === undefined ? '-' : String(c))));
  const widths = cells[0]?.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length))) ?? [];
  const line = (r: string[]) =>
    r.map((c, i) => (i === 0 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0))).join('  ');
  const lines = cells.map(line);
  if (header) lines.splice(1, 0, widths.map((w) => '-'.repeat(w)).join('  '));
  return lines.map((l) => `  ${l}`).join('\n');
}

const log = (message: string) => process.stderr.write(`[bench] ${message}\n`);

// ---------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const benchStarted = performance.now();
  const code = codeVersion();
  // The broker's node, not a CLI tool's short-lived one (rabbitmqctl runs a beam.smp too): the oldest.
  const brokerPids = pidsByName('beam.smp', /-s rabbit boot/)
    .sort((a, b) => (startTicks(a) ?? 0) - (startTicks(b) ?? 0))
    .slice(0, 1);
  const management = new Management();

  // 0. What else is running: this machine may be shared (other tests, builds).
  const idleMark = machineCpu();
  await new Promise((r) => setTimeout(r, 2000));
  const idleEnd = machineCpu();
  const backgroundLoadPct =
    idleMark && idleEnd ? round(((idleEnd.busy - idleMark.busy) / CLK_TCK / 2) * 100) : undefined;
  log(`background load before start: ${backgroundLoadPct ?? '?'} % of one core`);

  // 1. Raw ceiling, before the services exist (nothing else on the broker).
  let raw: (RawResult & { cpu: ReturnType<typeof cpuBetween> }) | undefined;
  if (!flags['skip-raw']) {
    log(
      `raw ceiling: ${config.queueType} queue, up to ${config.rawMessages} messages or ${config.rawSeconds} s …`,
    );
    const pids = new Map<string, number>([['bench (this process)', process.pid]]);
    for (const pid of brokerPids)
      pids.set(brokerPids.length > 1 ? `rabbitmq beam.smp ${pid}` : 'rabbitmq beam.smp', pid);
    const before = cpuMark(pids);
    const result = await measureRaw({
      url: AMQP_URL,
      queueType: config.queueType,
      maxMessages: config.rawMessages,
      maxSeconds: config.rawSeconds,
      window: config.rawWindow,
      prefetch: config.prefetch,
    });
    raw = { ...result, cpu: cpuBetween(before, cpuMark(pids)) };
    log(`raw ceiling: ${Math.round(raw.messagesPerSecond)} msg/s end to end`);
  }

  // 2. The system.
  const logs: string[] = [];
  log(
    `starting the services (QUEUE_TYPE=${config.queueType}, SUPPLIER_DELAY_MS=${config.supplierDelayMs}) …`,
  );
  const profileDir = flags['cpu-profile']
    ? join(ROOT, '.tmp', 'bench-profiles', String(Date.now()))
    : undefined;
  if (profileDir) mkdirSync(profileDir, { recursive: true });
  const system = await System.start({
    env: {
      LOG_LEVEL: 'warn',
      QUEUE_TYPE: config.queueType,
      SUPPLIER_DELAY_MS: String(config.supplierDelayMs),
      ...(profileDir
        ? {
            BENCH_CPU_PROFILE_DIR: profileDir,
            NODE_OPTIONS:
              `${process.env.NODE_OPTIONS ?? ''} --import ${pathToFileURL(join(import.meta.dirname, 'cpu-profile-hook.mjs')).href}`.trim(),
          }
        : {}),
    },
    logs,
  });
  let destroyed = false;
  const destroy = async () => {
    if (destroyed) return;
    destroyed = true;
    await system.destroy();
  };
  const interrupt = () => {
    log('interrupted: stopping the services');
    void destroy().finally(() => process.exit(130));
  };
  process.once('SIGINT', interrupt);
  process.once('SIGTERM', interrupt);

  try {
    const prefix = `${system.exchange}.`;
    const pids = new Map<string, number>();
    for (const service of SERVICES) {
      const pid = system.processes.get(service)?.pid;
      if (pid) pids.set(service, pid);
    }
    for (const pid of brokerPids)
      pids.set(brokerPids.length > 1 ? `rabbitmq beam.smp ${pid}` : 'rabbitmq beam.smp', pid);
    pids.set('bench (this process)', process.pid);

    // Counted from before the warm-up: the measured phase follows it at once, so that the services
    // do not cool down again in an idle pause.
    let managementError: string | undefined;
    let before: (QueueCounters & { settled: boolean }) | undefined;
    try {
      log('waiting for the broker counters to settle (stats refresh every 5 s) …');
      before = await management.settled(prefix);
    } catch (error) {
      managementError = (error as Error).message;
      log(`management API not reachable (${managementError}): deliveries will be estimated`);
    }

    log(`warm-up: ${config.warmup} orders …`);
    const warm = await drive(system, config.warmup);
    const warmFailed = warm.samples.filter((s) => s.status !== 'COMPLETED').length;
    if (warmFailed > 0) log(`warm-up: ${warmFailed} of ${config.warmup} orders did not complete`);

    // The measured phase.
    log(
      `measured phase: ${config.orders} orders, ${config.clients} clients, ${round(config.replenishShare * 100)} % replenishment …`,
    );
    let top: Promise<string[]> | undefined;
    let lastProgress = performance.now();
    const labels = new Map([...pids].map(([label, pid]) => [pid, label]));
    const toggleProfilers = () => {
      if (profileDir) for (const child of system.processes.values()) child.kill('SIGUSR2');
    };
    toggleProfilers();
    const cpuBefore = cpuMark(pids);
    const phase = await drive(system, config.orders, (done) => {
      if (!top && done >= config.orders * 0.25) top = topSnapshot(labels);
      if (performance.now() - lastProgress > 5000) {
        lastProgress = performance.now();
        log(`  ${done}/${config.orders} orders terminal`);
      }
    });
    const cpuAfter = cpuMark(pids);
    toggleProfilers();
    const topLines = top ? await top : [];
    const profiles: Record<string, ProfileSummary | undefined> = {};
    if (profileDir) {
      for (const service of SERVICES) {
        const file = join(profileDir, `${pids.get(service)}.cpuprofile`);
        for (let i = 0; i < 100 && !existsSync(file); i++) await new Promise((r) => setTimeout(r, 100));
        profiles[service] = summarise(file);
      }
    }

    let after: (QueueCounters & { settled: boolean }) | undefined;
    if (before) {
      try {
        log('waiting for the broker counters to settle …');
        after = await management.settled(prefix);
      } catch (error) {
        managementError = (error as Error).message;
      }
    }

    const rss: Record<string, number | undefined> = {};
    for (const service of SERVICES) {
      const pid = pids.get(service);
      rss[service] = pid ? round(memoryMiB(pid, 'VmHWM') ?? Number.NaN) : undefined;
    }
    const brokerRss = brokerPids.reduce((n, pid) => n + (memoryMiB(pid, 'VmRSS') ?? 0), 0);
    const benchPeakRss = process.resourceUsage().maxRSS / 1024;

    // 3. Figures.
    const samples = phase.samples;
    const completed = samples.filter((s) => s.status === 'COMPLETED');
    const byPath = (path: Path) => completed.filter((s) => s.path === path).map((s) => s.latencyMs ?? 0);
    const lat = {
      overall: latency(completed.map((s) => s.latencyMs ?? 0)),
      plain: latency(byPath('plain')),
      replenishment: latency(byPath('replenishment')),
      post: latency(samples.flatMap((s) => (s.postMs === undefined ? [] : [s.postMs]))),
    };
    const notCompleted = samples.length - completed.length + phase.notAttempted;
    // Latency by second of the phase (orders placed in it): shows warm-up left over, and stalls.
    const bySecond: number[][] = [];
    for (const s of completed) {
      const second = Math.floor((s.startedMs ?? 0) / 1000);
      bySecond[second] = [...(bySecond[second] ?? []), s.latencyMs ?? 0];
    }
    const overTime = [...bySecond.entries()].map(([second, values]) => ({
      second,
      ...latency(values ?? []),
    }));
    // Per path, the steps in the order they happen (the most common sequence first seen).
    const breakdown: Record<Path, { step: string; n: number; p50?: number; p95?: number; mean?: number }[]> =
      {
        plain: [],
        replenishment: [],
      };
    for (const path of ['plain', 'replenishment'] as const) {
      const byStep = new Map<string, number[]>();
      for (const sample of completed) {
        if (sample.path !== path) continue;
        for (const [step, ms] of sample.gaps ?? []) byStep.set(step, [...(byStep.get(step) ?? []), ms]);
      }
      const minimum = Math.max(1, Math.floor(completed.filter((c) => c.path === path).length * 0.2));
      for (const [step, values] of byStep) {
        if (values.length < minimum) continue;
        const { n, p50, p95, mean } = latency(values);
        breakdown[path].push({ step, n, p50, p95, mean });
      }
    }
    const outcomes: Record<string, number> = {};
    for (const s of samples) {
      const key = s.reason ? `${s.status} ${s.reason}` : s.status;
      outcomes[key] = (outcomes[key] ?? 0) + 1;
    }
    const errors = [...new Set(samples.flatMap((s) => (s.error ? [s.error] : [])))].slice(0, 5);
    const sagasPerSecond = completed.length / phase.wallSeconds;

    const estimate = samples.reduce((n, s) => n + s.timelineDeliveries, 0);
    const measured =
      before && after
        ? {
            deliverGet: after.deliverGet - before.deliverGet,
            ack: after.ack - before.ack,
            publish: after.publish - before.publish,
            redeliver: after.redeliver - before.redeliver,
            settled: before.settled && after.settled,
            queues: after.queues,
          }
        : undefined;
    const deliveries = measured?.deliverGet ?? estimate;
    // The broker's counters span the warm-up and the measured phase; the estimate, the phase.
    const countedSagas = measured ? warm.samples.length + samples.length : samples.length;
    const perSaga = countedSagas > 0 ? deliveries / countedSagas : undefined;
    const deliveriesPerSecond = (perSaga ?? 0) * sagasPerSecond;
    const broker = {
      source: measured
        ? 'management API (sum of message_stats over the test queues)'
        : 'ESTIMATE from order timelines',
      ...(managementError ? { managementError } : {}),
      deliveries,
      acks: measured?.ack,
      routedPublishes: measured?.publish,
      redeliveries: measured?.redeliver,
      countersSettled: measured?.settled,
      queues: measured?.queues,
      countedSagas,
      perSaga: perSaga === undefined ? undefined : round(perSaga, 2),
      timelineEstimate: estimate,
      timelineEstimatePerSaga: samples.length > 0 ? round(estimate / samples.length, 2) : undefined,
      deliveriesPerSecond: round(deliveriesPerSecond),
      ratioToRaw: raw ? round(deliveriesPerSecond / raw.messagesPerSecond, 3) : undefined,
    };
    const cpu = cpuBetween(cpuBefore, cpuAfter, completed.length);
    const target = {
      ...TARGET,
      met:
        config.clients === TARGET.clients &&
        notCompleted === 0 &&
        sagasPerSecond >= TARGET.sagasPerSecond &&
        (lat.overall.p99 ?? Number.POSITIVE_INFINITY) <= TARGET.p99Ms,
    };
    const warnings = logs.filter((l) => /"level":(40|50|60)/.test(l) || /\b(warn|error|fatal)\b/i.test(l));

    const results = {
      at: new Date().toISOString(),
      machine: {
        cores: availableParallelism(),
        node: process.version,
        backgroundLoadPctOfOneCore: backgroundLoadPct,
      },
      code,
      config: {
        ...config,
        amqpUrl: AMQP_URL.replace(/\/\/([^:/@]+):([^@]*)@/, '//$1:***@'),
        exchange: system.exchange,
      },
      raw,
      saga: {
        orders: config.orders,
        attempted: samples.length,
        completed: completed.length,
        notCompleted,
        notAttempted: phase.notAttempted,
        outcomes,
        paths: {
          intendedReplenishment: samples.filter((s) => s.intended === 'replenishment').length,
          tookReplenishment: samples.filter((s) => s.path === 'replenishment').length,
          intendedButPlain: samples.filter((s) => s.intended === 'replenishment' && s.path === 'plain')
            .length,
        },
        wallSeconds: round(phase.wallSeconds, 2),
        sagasPerSecond: round(sagasPerSecond),
        latencyMs: lat,
        latencyBySecond: overTime,
        /** Median/p95 ms between consecutive steps of completed orders (timeline `at` = emitting commit). */
        breakdown,
        errors,
        warmup: { orders: config.warmup, notCompleted: warmFailed },
      },
      broker,
      cpu,
      top: topLines,
      ...(profileDir ? { cpuProfiles: { dir: profileDir, services: profiles } } : {}),
      /** Services and bench: peak RSS (VmHWM, maxRSS); the broker: its current RSS (its peak predates this run). */
      rssMiB: {
        ...rss,
        'rabbitmq beam.smp': round(brokerRss),
        'bench (this process)': round(benchPeakRss),
      } as Record<string, number | undefined>,
      serviceLogs: { warningsOrWorse: warnings.length, tail: warnings.slice(-10) },
      target,
      benchSeconds: 0,
    };

    // 4. Print.
    const print = (s = '') => process.stdout.write(`${s}\n`);
    print();
    print(
      `Saga benchmark: ${config.orders} orders, ${config.clients} clients (started over ${config.rampMs} ms, after ${config.warmup} warm-up orders), ${round(config.replenishShare * 100)} % replenishment (GIZMO-3 × ${config.replenishQuantity}), QUEUE_TYPE=${config.queueType}, SUPPLIER_DELAY_MS=${config.supplierDelayMs}, ${results.machine.cores} cores`,
    );
    print(
      `Code: ${code.commit ?? 'unknown commit'}${code.uncommitted.length > 0 ? ` + uncommitted changes in ${code.uncommitted.join(', ')}` : ''}`,
    );
    print();
    if (raw) {
      print('Raw broker ceiling (1 publisher + 1 consumer, durable queue, persistent, confirms, manual ack)');
      print(
        table([
          ['queue type / message', `${raw.queueType}, ${raw.messageBytes} bytes`],
          ['confirm window / prefetch', `${raw.window} / ${raw.prefetch}`],
          ['published / consumed', `${raw.published} / ${raw.consumed}`],
          ['published/s (to last confirm)', Math.round(raw.publishedPerSecond)],
          ['messages/s end to end (to last ack)', Math.round(raw.messagesPerSecond)],
          ['broker CPU (% of one core)', raw.cpu.perProcess['rabbitmq beam.smp']?.pctOfOneCore],
          ['bench CPU (% of one core)', raw.cpu.perProcess['bench (this process)']?.pctOfOneCore],
        ]),
      );
      print();
    }
    print('Sagas (measured phase)');
    print(
      table([
        ['completed / attempted', `${completed.length} / ${samples.length}`],
        ['not completed', `${notCompleted}  ${JSON.stringify(outcomes)}`],
        ['wall time', `${round(phase.wallSeconds, 2)} s`],
        ['completed sagas/s', round(sagasPerSecond)],
        [
          'replenishment path (intended / taken)',
          `${results.saga.paths.intendedReplenishment} / ${results.saga.paths.tookReplenishment}`,
        ],
      ]),
    );
    print();
    print('Latency POST → terminal, ms (completed orders)');
    print(
      table(
        (['overall', 'plain', 'replenishment', 'post'] as const).map((k) => {
          const l = lat[k];
          return [k === 'post' ? 'POST /orders alone' : k, l.n, l.p50, l.p95, l.p99, l.max, l.mean];
        }),
        ['path', 'n', 'p50', 'p95', 'p99', 'max', 'mean'],
      ),
    );
    print(`  mean by second of the phase: ${overTime.map((t) => t.mean ?? '-').join(' ')}`);
    print(`  p99 by second of the phase:  ${overTime.map((t) => t.p99 ?? '-').join(' ')}`);
    print();
    print('Where the time goes: ms between consecutive steps (event time = commit that emitted it)');
    for (const path of ['plain', 'replenishment'] as const) {
      if (breakdown[path].length === 0) continue;
      print(
        table(
          breakdown[path].map((b) => [b.step, b.n, b.p50, b.p95, b.mean]),
          [`${path} path`, 'n', 'p50', 'p95', 'mean'],
        ),
      );
    }
    print();
    print(`Broker deliveries (${broker.source}, over ${broker.countedSagas} sagas)`);
    print(
      table([
        ['deliveries (deliver_get) / acks', `${broker.deliveries} / ${broker.acks ?? '-'}`],
        [
          'routed publishes / redeliveries',
          `${broker.routedPublishes ?? '-'} / ${broker.redeliveries ?? '-'}`,
        ],
        ['deliveries per saga', broker.perSaga],
        ['  of which in order timelines (estimate)', broker.timelineEstimatePerSaga],
        ['saga deliveries/s', broker.deliveriesPerSecond],
        ['ratio saga deliveries/s ÷ raw messages/s', broker.ratioToRaw],
        ...(measured && !measured.settled
          ? [['WARNING', 'broker counters had not settled: figures approximate'] as string[]]
          : []),
        ...(managementError ? [['WARNING', `management API: ${managementError}`]] : []),
      ]),
    );
    print();
    print(
      `CPU over the measured phase (${cpu.seconds} s; 100 % = one core, this machine has ${results.machine.cores})` +
        (cpu.machine
          ? `: machine busy ${cpu.machine.busyPct} % (user ${cpu.machine.userPct}, system ${cpu.machine.systemPct}, iowait ${cpu.machine.iowaitPct}, idle ${cpu.machine.idlePct})`
          : ''),
    );
    print(
      table(
        Object.entries(cpu.perProcess).map(([label, c]) => [
          label,
          c.cpuSeconds,
          c.pctOfOneCore,
          c.msPerSaga,
          results.rssMiB[label],
        ]),
        ['process', 'cpu s', 'cpu %', 'cpu ms/saga', 'RSS MiB (peak; broker: now)'],
      ),
    );
    const others = cpu.perProcess['other processes (not this bench)']?.pctOfOneCore ?? 0;
    print(`  background load before start: ${backgroundLoadPct ?? '?'} % of one core`);
    if (cpu.ceiling) {
      print(
        `  CPU-bound ceilings from CPU ms/saga (estimates): all of it on ${results.machine.cores} cores ≈ ${cpu.ceiling.allCores} sagas/s; ` +
          `busiest process alone (${cpu.ceiling.busiest}, one core) ≈ ${cpu.ceiling.busiestAlone} sagas/s`,
      );
    }
    if (others > 15 || (backgroundLoadPct ?? 0) > 15) {
      print(
        `  WARNING: processes outside this bench used ${others} % of one core during the phase: the machine is shared, figures are pessimistic.`,
      );
    }
    for (const [service, summary] of Object.entries(profiles)) {
      if (!summary) {
        print();
        print(`CPU profile of ${service}: none written`);
        continue;
      }
      print();
      print(
        `CPU profile of ${service} over the measured phase: busy ${summary.busyMs} of ${summary.wallMs} ms`,
      );
      const part = (title: string, rows: { ms: number; pct: number; name: string }[]) =>
        print(
          table(
            rows.map((r) => [r.name.slice(0, 90), r.ms, r.pct]),
            [title, 'ms', '% busy'],
          ),
        );
      part(
        'self time by area',
        summary.areas.slice(0, 10).map((a) => ({ ...a, name: a.area })),
      );
      part(
        'hottest functions (self time)',
        summary.functions.slice(0, 10).map((f) => ({ ...f, name: f.fn })),
      );
      part(
        'project functions (inclusive time)',
        summary.inclusive.slice(0, 12).map((f) => ({ ...f, name: f.fn })),
      );
    }
    if (topLines.length > 0) {
      print();
      print('top snapshot (2 s, during the measured phase)');
      for (const line of topLines) print(`  ${line}`);
    }
    if (errors.length > 0) {
      print();
      print('Errors (first distinct)');
      for (const e of errors) print(`  ${e}`);
    }
    if (warnings.length > 0) {
      print();
      print(`Service log lines at warn or worse: ${warnings.length} (last ${Math.min(10, warnings.length)})`);
      for (const w of warnings.slice(-10)) print(`  ${w.slice(0, 300)}`);
    }
    print();
    print(
      `Target (>= ${TARGET.sagasPerSecond} sagas/s at ${TARGET.clients} clients, p99 <= ${TARGET.p99Ms} ms, all completed): ` +
        `${target.met ? 'MET' : 'NOT MET'} (${round(sagasPerSecond)} sagas/s, p99 ${lat.overall.p99 ?? '-'} ms, ${notCompleted} not completed)`,
    );

    results.benchSeconds = round((performance.now() - benchStarted) / 1000, 1);
    mkdirSync(dirname(out), { recursive: true });
    writeFileSync(out, `${JSON.stringify(results, null, 2)}\n`);
    print(`Results: ${out} (bench took ${results.benchSeconds} s)`);
  } finally {
    log('stopping the services …');
    await destroy();
    agent.destroy();
  }
}

main().then(
  () => process.exit(0),
  (error) => {
    console.error(error);
    process.exit(1);
  },
);

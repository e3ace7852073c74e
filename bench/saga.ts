/**
 * The saga benchmark (`npm run bench -- --orders 3000 --clients 50`), in the phases of
 * bench/README.md:
 *
 * 1. Background load: how busy the machine is before anything starts.
 * 2. Raw ceiling (raw.ts): what this broker does on this machine with one amqplib
 *    publisher/consumer pair on a durable queue of the services' type.
 * 3. Sagas: the four services as real processes (System), warmed up, then at once N orders from
 *    C concurrent clients (load.ts; their starts spread over a ramp). A share of the orders buys
 *    more GIZMO-3 than is in stock and takes the replenishment path.
 * 4. Deliveries: management API counters before the warm-up and after the measured phase.
 * 5. CPU and memory over the measured phase (cpu.ts, probe.ts): CPU per process, a `top`
 *    snapshot in the middle of it, CPU profiles if asked for, peak RSS of each service.
 *
 * Then the figures (figures.ts), printed as tables (report.ts) and written to
 * .tmp/bench-results.json. Flags: options.ts, or `--help`.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';
import { OtlpReceiver } from '../support/otlp.ts';
import { AMQP_URL, System } from '../support/system.ts';
import { cpuBetween, cpuMark, ProcessGroup } from './cpu.ts';
import { openDashboard } from './dashboard.ts';
import { figures, type Observations } from './figures.ts';
import { clients } from './load.ts';
import { type BenchConfig, parseOptions } from './options.ts';
import {
  CLK_TCK,
  countersBetween,
  type InstanceCounters,
  instanceCounters,
  Management,
  machineCpu,
  memoryMiB,
  pidsByName,
  type QueueCounters,
  startTicks,
  topSnapshot,
} from './probe.ts';
import { type ProfileSummary, summarise } from './profile.ts';
import { measureRaw } from './raw.ts';
import { print, printReport } from './report.ts';
import { round } from './stats.ts';

const ROOT = join(import.meta.dirname, '..');
const options = parseOptions();
const { config } = options;

const log = (message: string) => process.stderr.write(`[bench] ${message}\n`);

/** The code measured: HEAD and the files changed since (a benchmark of a dirty tree must say so). */
function codeVersion(): Observations['code'] {
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

/** 1. What else is running: this machine may be shared (other tests, builds). */
async function backgroundLoad(): Promise<number | undefined> {
  const idleMark = machineCpu();
  await new Promise((r) => setTimeout(r, 2000));
  const idleEnd = machineCpu();
  const backgroundLoadPct =
    idleMark && idleEnd ? round(((idleEnd.busy - idleMark.busy) / CLK_TCK / 2) * 100) : undefined;
  log(`background load before start: ${backgroundLoadPct ?? '?'} % of one core`);
  return backgroundLoadPct;
}

/** 2. Raw ceiling, before the services exist (nothing else on the broker). */
async function rawCeiling(brokerPids: Map<string, number>): Promise<Observations['raw']> {
  log(
    `raw ceiling: ${config.queueType} queue, up to ${config.rawMessages} messages or ${config.rawSeconds} s …`,
  );
  const pids = new Map<string, number>([['bench (this process)', process.pid], ...brokerPids]);
  const before = cpuMark(pids);
  const result = await measureRaw({
    url: AMQP_URL,
    queueType: config.queueType,
    maxMessages: config.rawMessages,
    maxSeconds: config.rawSeconds,
    window: config.rawWindow,
    prefetch: config.prefetch,
  });
  const raw = { ...result, cpu: cpuBetween(before, cpuMark(pids)) };
  log(`raw ceiling: ${Math.round(raw.messagesPerSecond)} msg/s end to end`);
  return raw;
}

/** 3. The system, with the bench's settings (and the CPU profiler's hook, when asked for). */
function startSystem(
  benchConfig: BenchConfig,
  logs: string[],
  profileDir?: string,
  receiver?: OtlpReceiver,
): Promise<System> {
  log(
    `starting the services (${benchConfig.store}, ${benchConfig.instances} instance(s) of each, QUEUE_TYPE=${benchConfig.queueType}, SUPPLIER_DELAY_MS=${benchConfig.supplierDelayMs}, tracing ${receiver ? 'on' : 'off'}, METRICS=${benchConfig.metrics}, DASHBOARD=${benchConfig.dashboard}) …`,
  );
  return System.start({
    store: benchConfig.store,
    instances: benchConfig.instances,
    // A shared machine may be busy enough that starting every instance at once takes a while.
    readyTimeoutMs: 300_000,
    env: {
      LOG_LEVEL: 'warn',
      QUEUE_TYPE: benchConfig.queueType,
      SUPPLIER_DELAY_MS: String(benchConfig.supplierDelayMs),
      METRICS: String(benchConfig.metrics),
      DASHBOARD: String(benchConfig.dashboard),
      ...(receiver
        ? {
            OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint,
            OTEL_EXPORTER_OTLP_PROTOCOL: benchConfig.traceProtocol,
            OTEL_TRACES_SAMPLER: 'always_on',
          }
        : {}),
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
}

/** Each instance's own counters (deliveries by outcome, transactions run again), where it has metrics. */
async function countersOf(system: System): Promise<Map<string, InstanceCounters>> {
  const read = await Promise.all(
    system.instances.map(async (i) => [i, await instanceCounters(system.url(i, '/metrics'))] as const),
  );
  return new Map(read.flatMap(([i, c]) => (c ? [[i, c]] : [])));
}

/**
 * PostgreSQL's processes, as two groups: the backends of the bench's database (its title names
 * the database; one per pooled connection, and autovacuum's workers on it), and the server's own
 * writers, which it shares with every other database on the server.
 */
function postgresGroups(databaseUrl: string): ProcessGroup[] {
  const database = new URL(databaseUrl).pathname.slice(1);
  const ofDatabase = new RegExp(`^postgres: .* ${database}( |$)`);
  return [
    new ProcessGroup('postgres backends (this database)', () => pidsByName('postgres', ofDatabase)),
    new ProcessGroup('postgres writers (shared by the server)', () =>
      pidsByName('postgres', /^postgres: .*(checkpointer|background writer|walwriter)/),
    ),
  ];
}

/** Each instance's profile, once its hook has written it (the second SIGUSR2 asks for it). */
async function collectProfiles(
  profileDir: string,
  instances: readonly string[],
  pids: Map<string, number>,
): Promise<Record<string, ProfileSummary | undefined>> {
  const profiles: Record<string, ProfileSummary | undefined> = {};
  for (const instance of instances) {
    const file = join(profileDir, `${pids.get(instance)}.cpuprofile`);
    for (let i = 0; i < 100 && !existsSync(file); i++) await new Promise((r) => setTimeout(r, 100));
    profiles[instance] = summarise(file);
  }
  return profiles;
}

type Counters = QueueCounters & { settled: boolean };

async function main(): Promise<void> {
  const benchStarted = performance.now();
  const code = codeVersion();
  // The broker's node, not a CLI tool's short-lived one (rabbitmqctl runs a beam.smp too): the oldest.
  const brokerPids = new Map(
    pidsByName('beam.smp', /-s rabbit boot/)
      .sort((a, b) => (startTicks(a) ?? 0) - (startTicks(b) ?? 0))
      .slice(0, 1)
      .map((pid) => ['rabbitmq beam.smp', pid]),
  );
  const management = new Management();

  const backgroundLoadPct = await backgroundLoad();
  const raw = options.skipRaw ? undefined : await rawCeiling(brokerPids);

  const logs: string[] = [];
  const profileDir = options.cpuProfile
    ? join(ROOT, '.tmp', 'bench-profiles', String(Date.now()))
    : undefined;
  if (profileDir) mkdirSync(profileDir, { recursive: true });
  const receiver = config.trace ? await OtlpReceiver.start() : undefined;
  const system = await startSystem(config, logs, profileDir, receiver);
  const load = clients(system, config);
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
    // Each instance by its name: `inventory`, then `inventory#2`, … with --instances.
    const pids = new Map<string, number>();
    for (const instance of system.instances) {
      const pid = system.processes.get(instance)?.pid;
      if (pid) pids.set(instance, pid);
    }
    for (const [label, pid] of brokerPids) pids.set(label, pid);
    pids.set('bench (this process)', process.pid);
    const groups = system.databaseUrl ? postgresGroups(system.databaseUrl) : [];

    // Counted from before the warm-up: the measured phase follows it at once, so that the services
    // do not cool down again in an idle pause.
    let managementError: string | undefined;
    let before: Counters | undefined;
    try {
      log('waiting for the broker counters to settle (stats refresh every 5 s) …');
      before = await management.settled(prefix);
    } catch (error) {
      managementError = (error as Error).message;
      log(`management API not reachable (${managementError}): deliveries will be estimated`);
    }

    // Opened before the warm-up, as a page is opened long before: what opening it costs once (the
    // first fetch, the first replay) stays out of the measured phase, what it costs per saga does not.
    const dashboard = options.dashboard ? openDashboard(system.url('order-creation', '/')) : undefined;
    log(`warm-up: ${config.warmup} orders …`);
    const warm = await load.drive(config.warmup);
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
    const countersBefore = await countersOf(system);
    for (const group of groups) group.watch();
    const cpuBefore = cpuMark(pids, groups);
    const phase = await load.drive(config.orders, (done) => {
      if (!top && done >= config.orders * 0.25) top = topSnapshot(labels);
      if (performance.now() - lastProgress > 5000) {
        lastProgress = performance.now();
        log(`  ${done}/${config.orders} orders terminal`);
      }
    });
    const cpuAfter = cpuMark(pids, groups);
    for (const group of groups) group.stop();
    const countersAfter = await countersOf(system);
    const counters: Record<string, InstanceCounters> = {};
    for (const [instance, after] of countersAfter) {
      const before = countersBefore.get(instance);
      if (before) counters[instance] = countersBetween(before, after);
    }
    const dashboardSeen = dashboard?.close();
    if (dashboardSeen)
      log(
        `dashboard open from the warm-up to the end of the phase: ${dashboardSeen.messages} stream messages, ${dashboardSeen.statePolls} state polls`,
      );
    toggleProfilers();
    const topLines = top ? await top : [];
    const profiles = profileDir ? await collectProfiles(profileDir, system.instances, pids) : {};

    let after: Counters | undefined;
    if (before) {
      try {
        log('waiting for the broker counters to settle …');
        after = await management.settled(prefix);
      } catch (error) {
        managementError = (error as Error).message;
      }
    }

    const rss: Record<string, number | undefined> = {};
    for (const instance of system.instances) {
      const pid = pids.get(instance);
      rss[instance] = pid ? round(memoryMiB(pid, 'VmHWM') ?? Number.NaN) : undefined;
    }

    const results = figures({
      config,
      code,
      amqpUrl: AMQP_URL,
      exchange: system.exchange,
      backgroundLoadPct,
      raw,
      warm,
      phase,
      before,
      after,
      managementError,
      cpuBefore,
      cpuAfter,
      counters,
      topLines,
      profileDir,
      profiles,
      rss,
      brokerRss: [...brokerPids.values()].reduce((n, pid) => n + (memoryMiB(pid, 'VmRSS') ?? 0), 0),
      benchPeakRss: process.resourceUsage().maxRSS / 1024,
      logs,
    });
    printReport(results);
    if (receiver) {
      const spans = receiver.spans.length;
      const protobufBytes = receiver.protobuf.reduce((n, body) => n + body.length, 0);
      print(
        `Tracing: every trace sampled, ${config.traceProtocol}: ${receiver.requests} export requests so far, ` +
          (config.traceProtocol === 'http/json'
            ? `${spans} spans (${round(spans / (config.warmup + config.orders))} per order)`
            : `${round(protobufBytes / 1024 / 1024, 1)} MiB of protobuf`),
      );
      Object.assign(results, {
        tracing: { requests: receiver.requests, spansReceived: spans, protobufBytes },
      });
    }

    results.benchSeconds = round((performance.now() - benchStarted) / 1000, 1);
    if (dashboardSeen) Object.assign(results, { dashboard: dashboardSeen });
    mkdirSync(dirname(options.out), { recursive: true });
    writeFileSync(options.out, `${JSON.stringify(results, null, 2)}\n`);
    print(`Results: ${options.out} (bench took ${results.benchSeconds} s)`);
  } finally {
    log('stopping the services …');
    await destroy();
    load.close();
    await receiver?.close();
  }
}

main().then(
  () => process.exit(0),
  (error) => {
    console.error(error);
    process.exit(1);
  },
);

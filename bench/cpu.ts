/** CPU accounting per process over a phase of the bench: marks at its start and end, and what lies between. */
import { availableParallelism } from 'node:os';
import { performance } from 'node:perf_hooks';
import { SERVICES } from '../common/events.ts';
import { CLK_TCK, cpuSeconds, type MachineCpu, machineCpu, machineCpuShare } from './probe.ts';
import { round } from './stats.ts';

/**
 * CPU of processes that come and go, such as a database's backends (a pool opens and closes
 * connections): looked for at each reading and every `watch` interval, each one's last reading
 * kept once it is gone. Its total grows like one process's CPU counter; a process that ends
 * between two looks loses at most one interval of its time.
 */
export class ProcessGroup {
  readonly label: string;
  private readonly find: () => number[];
  private readonly seen = new Map<number, number>();
  private timer?: NodeJS.Timeout;

  constructor(label: string, find: () => number[]) {
    this.label = label;
    this.find = find;
  }

  /** CPU seconds of every process of the group seen so far; reads the living ones now. */
  total(): number {
    for (const pid of this.find()) {
      const seconds = cpuSeconds(pid);
      if (seconds !== undefined) this.seen.set(pid, seconds);
    }
    let sum = 0;
    for (const seconds of this.seen.values()) sum += seconds;
    return sum;
  }

  /** How many processes it has seen. */
  get processes(): number {
    return this.seen.size;
  }

  watch(ms = 500): void {
    this.timer ??= setInterval(() => this.total(), ms);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }
}

export interface CpuMark {
  at: number;
  processes: Map<string, number>;
  machine?: MachineCpu;
}

export function cpuMark(pids: Map<string, number>, groups: readonly ProcessGroup[] = []): CpuMark {
  const processes = new Map<string, number>();
  for (const group of groups) processes.set(group.label, group.total());
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
export function cpuBetween(before: CpuMark, after: CpuMark, sagas?: number) {
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
    perService: sagas ? perService(perProcess) : undefined,
    ceiling,
    machine: before.machine && after.machine ? machineCpuShare(before.machine, after.machine) : undefined,
  };
}

type Row = { cpuSeconds: number; pctOfOneCore: number; msPerSaga?: number };

/** The instances of each service added up (`inventory`, `inventory#2`, … are inventory). */
function perService(perProcess: Record<string, Row>): Record<string, Row & { instances: number }> {
  const services: Record<string, Row & { instances: number }> = {};
  for (const [label, row] of Object.entries(perProcess)) {
    const service = SERVICES.find((s) => label === s || label.startsWith(`${s}#`));
    if (!service) continue;
    const sum = services[service] ?? { cpuSeconds: 0, pctOfOneCore: 0, msPerSaga: 0, instances: 0 };
    services[service] = {
      cpuSeconds: round(sum.cpuSeconds + row.cpuSeconds, 2),
      pctOfOneCore: round(sum.pctOfOneCore + row.pctOfOneCore),
      msPerSaga: round((sum.msPerSaga ?? 0) + (row.msPerSaga ?? 0), 2),
      instances: sum.instances + 1,
    };
  }
  return services;
}

export type CpuBetween = ReturnType<typeof cpuBetween>;

/** Not the load generator nor the machine's other users: what a deployment runs. */
const isSystem = (label: string) => !label.startsWith('bench') && !label.startsWith('other');

/**
 * A model, not a measurement: what N cores would do if every saga kept costing the CPU it cost
 * in this run (the services, the broker, the database; not the bench's clients) and the work
 * spread perfectly over the cores. Each instance is one thread: at that rate each service needs
 * at least `instances` of them, each under one core. Nothing here knows of the locks, the
 * queues or the network that a larger system meets.
 */
export function coresModel(cpu: CpuBetween, cores: readonly number[] = [1, 2, 4, 8, 16]) {
  const rows = Object.entries(cpu.perProcess).filter(([label]) => isSystem(label));
  const msPerSaga = rows.reduce((n, [, r]) => n + (r.msPerSaga ?? 0), 0);
  if (msPerSaga <= 0 || !cpu.perService) return undefined;
  const services = Object.entries(cpu.perService);
  return {
    msPerSaga: round(msPerSaga, 2),
    projection: cores.map((n) => {
      const sagasPerSecond = (n * 1000) / msPerSaga;
      return {
        cores: n,
        sagasPerSecond: Math.round(sagasPerSecond),
        instances: Object.fromEntries(
          services.map(([service, r]) => [
            service,
            Math.max(1, Math.ceil((sagasPerSecond * (r.msPerSaga ?? 0)) / 1000)),
          ]),
        ),
      };
    }),
  };
}

/** CPU accounting per process over a phase of the bench: marks at its start and end, and what lies between. */
import { availableParallelism } from 'node:os';
import { performance } from 'node:perf_hooks';
import { CLK_TCK, cpuSeconds, type MachineCpu, machineCpu, machineCpuShare } from './probe.ts';
import { round } from './stats.ts';

export interface CpuMark {
  at: number;
  processes: Map<string, number>;
  machine?: MachineCpu;
}

export function cpuMark(pids: Map<string, number>): CpuMark {
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
    ceiling,
    machine: before.machine && after.machine ? machineCpuShare(before.machine, after.machine) : undefined,
  };
}

export type CpuBetween = ReturnType<typeof cpuBetween>;

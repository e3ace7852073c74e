/**
 * The figures of a run, from what the phases observed: throughput, latency (overall, per path, by
 * second, step by step), broker deliveries per saga, CPU per saga, memory, and the verdict against
 * the target. The result is both the report's input and the JSON written to `--out`.
 */
import { availableParallelism } from 'node:os';
import { redactUrl } from '../common/config.ts';
import { type CpuBetween, type CpuMark, coresModel, cpuBetween } from './cpu.ts';
import type { Drive, Path } from './load.ts';
import type { BenchConfig } from './options.ts';
import type { InstanceCounters, QueueCounters } from './probe.ts';
import type { ProfileSummary } from './profile.ts';
import type { RawResult } from './raw.ts';
import { latency, round } from './stats.ts';

export const TARGET = { sagasPerSecond: 300, p99Ms: 250, clients: 50 };

/** Everything the phases of a run observed. */
export interface Observations {
  config: BenchConfig;
  /** The code measured: HEAD and the files changed since (a benchmark of a dirty tree must say so). */
  code: { commit?: string; uncommitted: string[] };
  amqpUrl: string;
  exchange: string;
  backgroundLoadPct?: number;
  raw?: RawResult & { cpu: CpuBetween };
  warm: Drive;
  phase: Drive;
  /** Broker counters before the warm-up and after the measured phase (none without the management API). */
  before?: QueueCounters & { settled: boolean };
  after?: QueueCounters & { settled: boolean };
  managementError?: string;
  cpuBefore: CpuMark;
  cpuAfter: CpuMark;
  /** Per instance, over the measured phase: deliveries by outcome, transactions run again by reason. */
  counters: Record<string, InstanceCounters>;
  topLines: string[];
  profileDir?: string;
  profiles: Record<string, ProfileSummary | undefined>;
  /** Peak RSS per service, MiB. */
  rss: Record<string, number | undefined>;
  brokerRss: number;
  benchPeakRss: number;
  /** The services' log lines. */
  logs: string[];
}

export function figures(observed: Observations) {
  const { config, code, raw, warm, phase, before, after, managementError, cpuBefore, cpuAfter } = observed;
  const { topLines, profileDir, profiles, rss, brokerRss, benchPeakRss, logs } = observed;
  const warmFailed = warm.samples.filter((s) => s.status !== 'COMPLETED').length;
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
  const breakdown: Record<Path, { step: string; n: number; p50?: number; p95?: number; mean?: number }[]> = {
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

  return {
    at: new Date().toISOString(),
    machine: {
      cores: availableParallelism(),
      node: process.version,
      backgroundLoadPctOfOneCore: observed.backgroundLoadPct,
    },
    code,
    config: {
      ...config,
      amqpUrl: redactUrl(observed.amqpUrl),
      exchange: observed.exchange,
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
        intendedButPlain: samples.filter((s) => s.intended === 'replenishment' && s.path === 'plain').length,
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
    model: coresModel(cpu),
    instances: observed.counters,
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
}

export type Results = ReturnType<typeof figures>;

/**
 * Cheap observations of the machine while the bench runs: CPU time and peak RSS of processes
 * (/proc), whole-machine CPU split (/proc/stat), a `top` snapshot, and the RabbitMQ management
 * API's per-queue counters.
 */
import { execFile, execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

export const CLK_TCK = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/** CPU seconds (user + system) a process has used so far, or undefined if it is gone. */
export function cpuSeconds(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
  } catch {
    return undefined;
  }
}

/** When a process started, in clock ticks since boot. */
export function startTicks(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]);
  } catch {
    return undefined;
  }
}

/** A field of /proc/<pid>/status in MiB (VmHWM = peak RSS, VmRSS = current RSS). */
export function memoryMiB(pid: number, field: 'VmHWM' | 'VmRSS'): number | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const match = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status);
    return match ? Number(match[1]) / 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** Pids whose command name is `comm` (e.g. `beam.smp`) and whose command line matches `args`. */
export function pidsByName(comm: string, args?: RegExp): number[] {
  const pids: number[] = [];
  try {
    for (const entry of readdirSync('/proc')) {
      if (!/^\d+$/.test(entry)) continue;
      try {
        if (readFileSync(`/proc/${entry}/comm`, 'utf8').trim() !== comm) continue;
        if (args && !args.test(readFileSync(`/proc/${entry}/cmdline`, 'utf8').replaceAll('\0', ' ')))
          continue;
        pids.push(Number(entry));
      } catch {}
    }
  } catch {}
  return pids;
}

export interface MachineCpu {
  busy: number;
  user: number;
  system: number;
  iowait: number;
  idle: number;
  total: number;
}

/** Cumulative whole-machine CPU ticks (all cores) from /proc/stat. */
export function machineCpu(): MachineCpu | undefined {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '';
    const [user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0] = line
      .trim()
      .split(/\s+/)
      .slice(1)
      .map(Number);
    const total = user + nice + system + idle + iowait + irq + softirq + steal;
    return {
      busy: total - idle - iowait,
      user: user + nice,
      system: system + irq + softirq,
      iowait,
      idle,
      total,
    };
  } catch {
    return undefined;
  }
}

/** Percentages of the machine's capacity (all cores = 100 %) between two readings. */
export function machineCpuShare(before: MachineCpu, after: MachineCpu) {
  const total = after.total - before.total || 1;
  const pct = (a: number, b: number) => Math.round(((a - b) / total) * 1000) / 10;
  return {
    busyPct: pct(after.busy, before.busy),
    userPct: pct(after.user, before.user),
    systemPct: pct(after.system, before.system),
    iowaitPct: pct(after.iowait, before.iowait),
    idlePct: pct(after.idle, before.idle),
  };
}

/**
 * `top -b -n 2 -d <delay>`: the second frame (the first one's %CPU is not over a known interval),
 * keeping its summary lines and the rows of the given pids, labelled.
 */
export function topSnapshot(labels: Map<number, string>, delaySeconds = 2): Promise<string[]> {
  return new Promise((resolve) => {
    execFile(
      'top',
      ['-b', '-n', '2', '-d', String(delaySeconds), '-w', '200'],
      { timeout: 15_000 },
      (error, stdout) => {
        if (error && !stdout) return resolve([`top failed: ${error.message}`]);
        const frames = stdout.split(/^top - /m);
        const frame = (frames[frames.length - 1] ?? '').split('\n');
        const lines: string[] = [];
        let header: string | undefined;
        for (const [i, line] of frame.entries()) {
          if (i === 0) lines.push(`top - ${line}`);
          else if (/^(%?Cpu|MiB Mem|Tasks)/.test(line)) lines.push(line);
          else if (/^\s*PID\s/.test(line)) header = line;
          else {
            const pid = Number(line.trim().split(/\s+/)[0]);
            const label = labels.get(pid);
            if (label) lines.push(`${line.trimEnd()}   <- ${label}`);
          }
        }
        if (header) lines.splice(Math.min(lines.length, 4), 0, header);
        resolve(lines);
      },
    );
  });
}

export interface QueueCounters {
  queues: number;
  /** Sum of message_stats.deliver_get (deliveries to consumers, incl. basic.get). */
  deliverGet: number;
  ack: number;
  /** Sum of message_stats.publish: copies routed into these queues. */
  publish: number;
  redeliver: number;
  /** Messages ready + unacknowledged right now. */
  backlog: number;
}

export class Management {
  private readonly base: string;
  private readonly auth: string;

  constructor(
    base = process.env.RABBITMQ_MANAGEMENT_URL ?? 'http://127.0.0.1:15672',
    auth = `Basic ${Buffer.from(process.env.RABBITMQ_MANAGEMENT_USER ?? 'guest:guest').toString('base64')}`,
  ) {
    this.base = base;
    this.auth = auth;
  }

  /** The counters of every queue whose name starts with `prefix`; throws if the API does not answer. */
  async counters(prefix: string): Promise<QueueCounters> {
    const response = await fetch(`${this.base}/api/queues/%2F`, {
      headers: { authorization: this.auth },
      signal: AbortSignal.timeout(5000),
    });
    if (!response.ok) throw new Error(`management API answered ${response.status}`);
    const queues = (await response.json()) as {
      name: string;
      messages?: number;
      message_stats?: Record<string, number | undefined>;
    }[];
    const counters: QueueCounters = {
      queues: 0,
      deliverGet: 0,
      ack: 0,
      publish: 0,
      redeliver: 0,
      backlog: 0,
    };
    for (const queue of queues) {
      if (!queue.name.startsWith(prefix)) continue;
      const stats = queue.message_stats ?? {};
      counters.queues += 1;
      counters.deliverGet += stats.deliver_get ?? 0;
      counters.ack += stats.ack ?? 0;
      counters.publish += stats.publish ?? 0;
      counters.redeliver += stats.redeliver ?? 0;
      counters.backlog += queue.messages ?? 0;
    }
    return counters;
  }

  /**
   * The counters once they have settled: the broker refreshes them every stats interval (5 s by
   * default), so wait until the queues are empty and nothing changed for longer than that.
   */
  async settled(
    prefix: string,
    quietMs = 6000,
    maxMs = 40_000,
  ): Promise<QueueCounters & { settled: boolean }> {
    const started = Date.now();
    let last = await this.counters(prefix);
    let since = Date.now();
    while (Date.now() - started < maxMs) {
      await new Promise((r) => setTimeout(r, 500));
      const now = await this.counters(prefix);
      const same = now.deliverGet === last.deliverGet && now.ack === last.ack && now.publish === last.publish;
      if (!same || now.backlog > 0) {
        last = now;
        since = Date.now();
      } else if (Date.now() - since >= quietMs) {
        return { ...now, settled: true };
      }
    }
    return { ...last, settled: false };
  }
}

/** What one instance counted (its `/metrics`): deliveries by outcome, its transactions run again by reason. */
export interface InstanceCounters {
  outcomes: Record<string, number>;
  reruns: Record<string, number>;
}

/** An instance's counters, summed over their other labels; undefined without metrics (METRICS=false). */
export async function instanceCounters(metricsUrl: string): Promise<InstanceCounters | undefined> {
  try {
    const response = await fetch(metricsUrl, { signal: AbortSignal.timeout(5000) });
    if (!response.ok) return undefined;
    const counters: InstanceCounters = { outcomes: {}, reruns: {} };
    for (const line of (await response.text()).split('\n')) {
      const match = /^(saga_messages_total|saga_transaction_reruns_total)\{(.*)\} (\S+)$/.exec(line);
      if (!match) continue;
      const [, family, labels = '', value] = match;
      const key = /(?:outcome|reason)="([^"]*)"/.exec(labels)?.[1] ?? '?';
      const into = family === 'saga_messages_total' ? counters.outcomes : counters.reruns;
      into[key] = (into[key] ?? 0) + Number(value);
    }
    return counters;
  } catch {
    return undefined;
  }
}

/** What each counter of `after` grew by since `before`. */
export function countersBetween(before: InstanceCounters, after: InstanceCounters): InstanceCounters {
  const grown = (a: Record<string, number>, b: Record<string, number>) =>
    Object.fromEntries(Object.entries(b).map(([key, n]) => [key, n - (a[key] ?? 0)]));
  return { outcomes: grown(before.outcomes, after.outcomes), reruns: grown(before.reruns, after.reruns) };
}

/**
 * The four services as real processes, isolated from anything else on the broker: their own
 * exchange (so their own queues), data directory and free ports. Shared by the integration, e2e,
 * browser and chaos tests and by the benchmark.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import amqp from 'amqplib';
import { deadLetterExchangeOf, queueNames } from '../common/broker/topology.ts';
import { CONFIG_KEYS, PORT_KEYS } from '../common/config.ts';
import { SERVICES, type ServiceName } from '../common/events.ts';

export const AMQP_URL = process.env.AMQP_URL ?? CONFIG_KEYS.AMQP_URL.default;
const ROOT = join(import.meta.dirname, '..');

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

export interface HttpResult<T = unknown> {
  status: number;
  headers: Headers;
  body: T;
}

export interface Exit {
  service: ServiceName;
  code: number | null;
  signal: NodeJS.Signals | null;
  ms: number;
}

export interface SystemOptions {
  /** Extra environment for every service (e.g. SAGA_DEADLINE_MS). */
  env?: Record<string, string>;
  /** Keep the logs of the processes here instead of discarding them. */
  logs?: string[];
}

export class System {
  readonly processes = new Map<ServiceName, ChildProcess>();
  readonly logs: string[];
  readonly exchange: string;
  readonly dataDir: string;
  readonly ports: Record<ServiceName, number>;
  readonly env: Record<string, string>;

  private constructor(
    exchange: string,
    dataDir: string,
    ports: Record<ServiceName, number>,
    env: Record<string, string>,
    options: SystemOptions,
  ) {
    this.exchange = exchange;
    this.dataDir = dataDir;
    this.ports = ports;
    this.env = env;
    this.logs = options.logs ?? [];
  }

  static async start(options: SystemOptions = {}): Promise<System> {
    const exchange = `test-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
    const dataDir = mkdtempSync(join(tmpdir(), 'saga-'));
    const ports = {} as Record<ServiceName, number>;
    for (const service of SERVICES) ports[service] = await freePort();
    const env: Record<string, string> = {
      AMQP_URL,
      SAGA_EXCHANGE: exchange,
      DATA_DIR: dataDir,
      LOG_LEVEL: 'warn',
      SUPPLIER_DELAY_MS: '100',
      BROKER_CONNECT_TIMEOUT_MS: '10000',
      ...Object.fromEntries(SERVICES.map((s) => [PORT_KEYS[s], String(ports[s])])),
      ...options.env,
    };
    const system = new System(exchange, dataDir, ports, env, options);
    const started = await Promise.allSettled(SERVICES.map((s) => system.startService(s)));
    const failed = started.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (failed) {
      // Nobody holds this system to destroy it: its started services would run on, unseen.
      await system.destroy().catch(() => {});
      throw failed.reason;
    }
    return system;
  }

  /** Starts (or restarts) one service and waits until it is ready. */
  async startService(service: ServiceName): Promise<void> {
    const child = spawn(process.execPath, [join(ROOT, 'services', service, 'main.ts')], {
      cwd: ROOT,
      env: { ...process.env, ...this.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.processes.set(service, child);
    const keep = (chunk: Buffer) => {
      for (const line of chunk.toString().split('\n')) if (line) this.logs.push(`[${service}] ${line}`);
    };
    child.stdout?.on('data', keep);
    child.stderr?.on('data', keep);
    const started = Date.now();
    while (Date.now() - started < 30_000) {
      if (child.exitCode !== null) {
        throw new Error(
          `${service} exited with ${child.exitCode} at start:\n${this.logs.slice(-20).join('\n')}`,
        );
      }
      try {
        const response = await fetch(this.url(service, '/health/ready'));
        if (response.ok) return;
      } catch {}
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`${service} was not ready within 30 s:\n${this.logs.slice(-20).join('\n')}`);
  }

  url(service: ServiceName, path: string): string {
    return `http://127.0.0.1:${this.ports[service]}${path}`;
  }

  async request<T = unknown>(
    service: ServiceName,
    method: string,
    path: string,
    body?: unknown,
    headers: Record<string, string> = {},
  ): Promise<HttpResult<T>> {
    const response = await fetch(this.url(service, path), {
      method,
      headers: body === undefined ? headers : { 'content-type': 'application/json', ...headers },
      body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    });
    const text = await response.text();
    let parsed: unknown = text;
    try {
      parsed = JSON.parse(text);
    } catch {}
    return { status: response.status, headers: response.headers, body: parsed as T };
  }

  get<T = unknown>(service: ServiceName, path: string) {
    return this.request<T>(service, 'GET', path);
  }

  /** Sends a signal to one service and resolves when it has exited. */
  /** Freezes a service (SIGSTOP) or thaws it (SIGCONT): its messages wait in its queue meanwhile. */
  pause(service: ServiceName, paused = true): void {
    this.processes.get(service)?.kill(paused ? 'SIGSTOP' : 'SIGCONT');
  }

  async signal(service: ServiceName, signal: NodeJS.Signals = 'SIGTERM'): Promise<Exit> {
    const child = this.processes.get(service);
    if (!child || child.exitCode !== null || child.signalCode !== null) {
      return { service, code: child?.exitCode ?? null, signal: child?.signalCode ?? null, ms: 0 };
    }
    const started = Date.now();
    const exited = new Promise<Exit>((resolve) =>
      child.once('exit', (code, sig) => resolve({ service, code, signal: sig, ms: Date.now() - started })),
    );
    child.kill(signal);
    return exited;
  }

  /** Stops every service with the signal; resolves with how each exited. */
  stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<Exit[]> {
    return Promise.all(SERVICES.map((s) => this.signal(s, signal)));
  }

  /** Stops everything still running and removes the data directory and the broker topology. */
  async destroy(): Promise<void> {
    await this.stop('SIGKILL');
    await deleteTopology(this.exchange);
    rmSync(this.dataDir, { recursive: true, force: true });
  }
}

/** Deletes the queues and exchanges a test's services declared under `exchange`. */
export async function deleteTopology(exchange: string, url = AMQP_URL): Promise<void> {
  const connection = await amqp.connect(url);
  try {
    const channel = await connection.createChannel();
    for (const service of SERVICES) {
      const names = queueNames(exchange, service);
      for (const queue of [
        names.queue,
        names.deadLetterQueue,
        ...Array.from({ length: 20 }, (_, i) => names.retryQueue(i)),
      ]) {
        await channel.deleteQueue(queue);
      }
    }
    await channel.deleteExchange(exchange);
    await channel.deleteExchange(deadLetterExchangeOf(exchange));
    await channel.close();
  } finally {
    await connection.close();
  }
}

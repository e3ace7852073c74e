/**
 * The four services as real processes, isolated from anything else on the broker: their own
 * exchange (so their own queues), data directory or PostgreSQL database, and free ports; one
 * instance of each, or several on PostgreSQL. Shared by the integration, e2e, browser and chaos
 * tests and by the benchmark.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import amqp from 'amqplib';
import pg from 'pg';
import { deadLetterExchangeOf, queueNames } from '../common/broker/topology.ts';
import { CONFIG_KEYS, PORT_KEYS } from '../common/config.ts';
import { SERVICES, type ServiceName } from '../common/events.ts';

export const AMQP_URL = process.env.AMQP_URL ?? CONFIG_KEYS.AMQP_URL.default;
/** The PostgreSQL server where tests make their databases (one each, dropped after). */
export const POSTGRES_URL = process.env.TEST_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
/** The store of a System when its options do not say: `SAGA_TEST_STORE=postgres` runs a suite on PostgreSQL. */
export const TEST_STORE: Store = process.env.SAGA_TEST_STORE === 'postgres' ? 'postgres' : 'sqlite';

export type Store = 'sqlite' | 'postgres';
/** One instance of a service: `inventory` is its first, `inventory#2` its second, and so on. */
export type Instance = ServiceName | `${ServiceName}#${number}`;

export const serviceOf = (instance: Instance): ServiceName => instance.split('#')[0] as ServiceName;
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
  /** SQLite (one instance of each service) or PostgreSQL; TEST_STORE unless given. */
  store?: Store;
  /** Instances of each service (PostgreSQL only); 1 unless given. */
  instances?: number;
  /** The PostgreSQL server to make the database on (a test's own server); POSTGRES_URL unless given. */
  postgresServer?: string;
  /** Keep the logs of the processes here instead of discarding them. */
  logs?: string[];
  /** How long an instance may take to be ready at start (30 s unless given). */
  readyTimeoutMs?: number;
}

export class System {
  readonly processes = new Map<Instance, ChildProcess>();
  readonly logs: string[];
  readonly exchange: string;
  readonly dataDir: string;
  /** The HTTP port of each service's first instance. */
  readonly ports: Record<ServiceName, number>;
  readonly env: Record<string, string>;
  readonly store: Store;
  /** Every instance, each service's first ones first. */
  readonly instances: Instance[];
  /** The database of the services, on PostgreSQL. */
  readonly databaseUrl?: string;
  private readonly instancePorts: Map<Instance, number>;
  private readonly readyTimeoutMs: number;

  private constructor(
    exchange: string,
    dataDir: string,
    instancePorts: Map<Instance, number>,
    env: Record<string, string>,
    options: SystemOptions & { store: Store; databaseUrl?: string },
  ) {
    this.exchange = exchange;
    this.dataDir = dataDir;
    this.instancePorts = instancePorts;
    this.instances = [...instancePorts.keys()];
    this.ports = Object.fromEntries(SERVICES.map((s) => [s, instancePorts.get(s)])) as Record<
      ServiceName,
      number
    >;
    this.env = env;
    this.store = options.store;
    this.databaseUrl = options.databaseUrl;
    this.logs = options.logs ?? [];
    // Each instance spends about 2 s of CPU starting, all start at once, and eight of them on two
    // cores shared with other work have taken over a minute and a half.
    this.readyTimeoutMs = options.readyTimeoutMs ?? 120_000;
  }

  static async start(options: SystemOptions = {}): Promise<System> {
    const exchange = `test-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
    const dataDir = mkdtempSync(join(tmpdir(), 'saga-'));
    const store = options.store ?? TEST_STORE;
    const count = options.instances ?? 1;
    if (count > 1 && store !== 'postgres') throw new Error('several instances of a service need PostgreSQL');
    const instancePorts = new Map<Instance, number>();
    for (let n = 1; n <= count; n++) {
      for (const service of SERVICES)
        instancePorts.set(n === 1 ? service : `${service}#${n}`, await freePort());
    }
    const databaseUrl =
      store === 'postgres'
        ? await createDatabase(options.postgresServer ?? POSTGRES_URL, exchange.replaceAll('-', '_'))
        : undefined;
    const env: Record<string, string> = {
      AMQP_URL,
      SAGA_EXCHANGE: exchange,
      DATA_DIR: dataDir,
      ...(databaseUrl ? { DATABASE_URL: databaseUrl } : {}),
      LOG_LEVEL: 'warn',
      SUPPLIER_DELAY_MS: '100',
      BROKER_CONNECT_TIMEOUT_MS: '10000',
      ...Object.fromEntries(SERVICES.map((s) => [PORT_KEYS[s], String(instancePorts.get(s))])),
      ...options.env,
    };
    const system = new System(exchange, dataDir, instancePorts, env, { ...options, store, databaseUrl });
    const starts = await Promise.allSettled(system.instances.map((i) => system.startService(i)));
    const failed = starts.find((start): start is PromiseRejectedResult => start.status === 'rejected');
    if (failed) {
      // The caller never gets the system to stop: the services that did start must not outlive it.
      await system.destroy();
      throw failed.reason;
    }
    return system;
  }

  /** The instances of one service. */
  instancesOf(service: ServiceName): Instance[] {
    return this.instances.filter((i) => serviceOf(i) === service);
  }

  /** Starts (or restarts) one instance and waits until it is ready. */
  async startService(instance: Instance): Promise<void> {
    const service = serviceOf(instance);
    const child = spawn(process.execPath, [join(ROOT, 'services', service, 'main.ts')], {
      cwd: ROOT,
      env: {
        ...process.env,
        ...this.env,
        [PORT_KEYS[service]]: String(this.portOf(instance)),
        ...(this.instances.length > SERVICES.length ? { INSTANCE_NAME: instance } : {}),
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.processes.set(instance, child);
    const keep = (chunk: Buffer) => {
      for (const line of chunk.toString().split('\n')) if (line) this.logs.push(`[${instance}] ${line}`);
    };
    child.stdout?.on('data', keep);
    child.stderr?.on('data', keep);
    const started = Date.now();
    while (Date.now() - started < this.readyTimeoutMs) {
      if (child.exitCode !== null) {
        throw new Error(
          `${instance} exited with ${child.exitCode} at start:\n${this.logs.slice(-20).join('\n')}`,
        );
      }
      try {
        const response = await fetch(this.url(instance, '/health/ready'));
        if (response.ok) return;
      } catch {}
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(
      `${instance} was not ready within ${this.readyTimeoutMs / 1000} s:\n${this.logs.slice(-20).join('\n')}`,
    );
  }

  portOf(instance: Instance): number {
    const port = this.instancePorts.get(instance);
    if (port === undefined) throw new Error(`no instance ${instance} in this system`);
    return port;
  }

  url(instance: Instance, path: string): string {
    return `http://127.0.0.1:${this.portOf(instance)}${path}`;
  }

  async request<T = unknown>(
    service: Instance,
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

  get<T = unknown>(service: Instance, path: string) {
    return this.request<T>(service, 'GET', path);
  }

  /** Freezes an instance (SIGSTOP) or thaws it (SIGCONT): its messages wait in its queue meanwhile. */
  pause(instance: Instance, paused = true): void {
    this.processes.get(instance)?.kill(paused ? 'SIGSTOP' : 'SIGCONT');
  }

  /** Sends a signal to one instance and resolves when it has exited. */
  async signal(instance: Instance, signal: NodeJS.Signals = 'SIGTERM'): Promise<Exit> {
    const service = serviceOf(instance);
    const child = this.processes.get(instance);
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

  /** Stops every instance with the signal; resolves with how each exited. */
  stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<Exit[]> {
    return Promise.all(this.instances.map((i) => this.signal(i, signal)));
  }

  /** Stops everything still running and removes the data directory or database, and the broker topology. */
  async destroy(): Promise<void> {
    await this.stop('SIGKILL');
    await deleteTopology(this.exchange);
    rmSync(this.dataDir, { recursive: true, force: true });
    if (this.databaseUrl) await dropDatabase(this.databaseUrl).catch(() => {});
  }
}

/** Makes a database of the test's own on the server; returns its URL. */
export async function createDatabase(server: string, name: string): Promise<string> {
  const client = new pg.Client({ connectionString: server });
  await client.connect();
  try {
    await client.query(`create database ${name}`);
  } finally {
    await client.end();
  }
  const url = new URL(server);
  url.pathname = `/${name}`;
  return url.toString();
}

/** Drops the database, closing whatever connections it still has. */
export async function dropDatabase(databaseUrl: string): Promise<void> {
  const url = new URL(databaseUrl);
  const name = url.pathname.slice(1);
  url.pathname = '/postgres';
  const client = new pg.Client({ connectionString: url.toString() });
  await client.connect();
  try {
    await client.query(`drop database if exists ${name} with (force)`);
  } finally {
    await client.end();
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

/**
 * RabbitMQ nodes of our own (own ports, own data directory): a single node that the chaos tests
 * stop and restart, or a cluster of three (`npm run cluster`, and the cluster chaos test). They
 * never touch the broker a developer already runs: their node names, ports and files are theirs.
 */
import { execFile, execFileSync } from 'node:child_process';
import { chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort } from './system.ts';

const run = promisify(execFile);

export function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/** Where one node lives: enough to find it again from another process (`npm run cluster -- stop`). */
export interface NodeSpec {
  name: string;
  port: number;
  distPort: number;
  dir: string;
}

export class BrokerNode {
  readonly name: string;
  readonly port: number;
  private readonly distPort: number;
  readonly dir: string;

  constructor({ name, port, distPort, dir }: NodeSpec) {
    this.name = name;
    this.port = port;
    this.distPort = distPort;
    this.dir = dir;
  }

  get url(): string {
    return `amqp://guest:guest@127.0.0.1:${this.port}`;
  }

  get spec(): NodeSpec {
    return { name: this.name, port: this.port, distPort: this.distPort, dir: this.dir };
  }

  /** A node on free ports in a temporary directory, started. */
  static async start(prefix = 'chaos'): Promise<BrokerNode> {
    const node = new BrokerNode({
      name: `${prefix}${process.pid}x${Date.now() % 100000}@localhost`,
      port: await freePort(),
      distPort: await freePort(),
      dir: mkdtempSync(join(tmpdir(), 'broker-')),
    });
    node.prepare();
    await node.boot();
    return node;
  }

  /** Writes the node's configuration and directories (the rabbitmq user must own them). */
  prepare(): void {
    mkdirSync(join(this.dir, 'mnesia'), { recursive: true });
    mkdirSync(join(this.dir, 'log'), { recursive: true });
    writeFileSync(join(this.dir, 'enabled_plugins'), '[].\n');
    writeFileSync(
      join(this.dir, 'rabbitmq.conf'),
      `listeners.tcp.local = 127.0.0.1:${this.port}\nloopback_users = none\n`,
    );
    // Debian's rabbitmq-server drops to the rabbitmq user: it must own the node's directory.
    try {
      const uid = Number(execFileSync('id', ['-u', 'rabbitmq']).toString());
      const gid = Number(execFileSync('id', ['-g', 'rabbitmq']).toString());
      for (const path of ['', 'mnesia', 'log', 'enabled_plugins', 'rabbitmq.conf'])
        chownSync(join(this.dir, path), uid, gid);
    } catch {}
  }

  private env(): NodeJS.ProcessEnv {
    return {
      ...process.env,
      RABBITMQ_NODENAME: this.name,
      RABBITMQ_NODE_PORT: String(this.port),
      RABBITMQ_DIST_PORT: String(this.distPort),
      RABBITMQ_MNESIA_BASE: join(this.dir, 'mnesia'),
      RABBITMQ_LOG_BASE: join(this.dir, 'log'),
      RABBITMQ_ENABLED_PLUGINS_FILE: join(this.dir, 'enabled_plugins'),
      RABBITMQ_CONFIG_FILE: join(this.dir, 'rabbitmq.conf'),
      RABBITMQ_PID_FILE: join(this.dir, 'pid'),
    };
  }

  /** Runs rabbitmqctl against this node. */
  async ctl(...args: string[]): Promise<string> {
    const { stdout } = await run('rabbitmqctl', ['-n', this.name, ...args], { env: this.env() });
    return stdout;
  }

  /** Starts the node and resolves once it accepts AMQP connections. */
  async boot(): Promise<void> {
    await run('rabbitmq-server', ['-detached'], { env: this.env(), cwd: this.dir });
    const started = Date.now();
    while (Date.now() - started < 60_000) {
      if (await portOpen(this.port)) {
        await this.ctl('await_startup', '--timeout', '60');
        return;
      }
      await new Promise((r) => setTimeout(r, 200));
    }
    throw new Error(`RabbitMQ node ${this.name} did not start on port ${this.port}`);
  }

  /** Makes this (fresh) node a member of `seed`'s cluster. */
  async join(seed: BrokerNode): Promise<void> {
    await this.ctl('stop_app');
    await this.ctl('join_cluster', seed.name);
    await this.ctl('start_app');
    await this.ctl('await_startup', '--timeout', '60');
  }

  /** Stops the node (its data stays): clients see their connections drop. */
  async halt(): Promise<void> {
    await this.ctl('stop').catch(() => {});
    const started = Date.now();
    while ((await portOpen(this.port)) && Date.now() - started < 30_000)
      await new Promise((r) => setTimeout(r, 100));
  }

  /** Freezes the node (SIGSTOP): connections stay open, nothing is answered, as with a hung broker. */
  freeze(): void {
    process.kill(this.pid(), 'SIGSTOP');
  }

  thaw(): void {
    process.kill(this.pid(), 'SIGCONT');
  }

  /** kill -9: the node dies at once, as on a crash, without telling its cluster or its clients. */
  crash(): void {
    process.kill(this.pid(), 'SIGKILL');
  }

  private pid(): number {
    return Number(readFileSync(join(this.dir, 'pid'), 'utf8').trim());
  }

  async restart(): Promise<void> {
    await this.halt();
    await this.boot();
  }

  async destroy(): Promise<void> {
    await this.halt();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Three nodes (or `size`) joined into one cluster. */
export class Cluster {
  readonly nodes: BrokerNode[];

  constructor(nodes: BrokerNode[]) {
    this.nodes = nodes;
  }

  /** The AMQP_URL that names every node of the cluster. */
  get url(): string {
    return this.nodes.map((n) => n.url).join(',');
  }

  /**
   * Starts the nodes (from `specs`, or on free ports in temporary directories) and joins them to
   * the first. The nodes boot one after another: on two cores, booting three at once takes longer.
   */
  static async start(specs?: NodeSpec[], size = 3): Promise<Cluster> {
    const tag = `${process.pid}x${Date.now() % 100000}`;
    const nodes: BrokerNode[] = [];
    for (let i = 0; i < (specs?.length ?? size); i++) {
      const spec = specs?.[i] ?? {
        name: `cluster${tag}n${i + 1}@localhost`,
        port: await freePort(),
        distPort: await freePort(),
        dir: mkdtempSync(join(tmpdir(), 'cluster-')),
      };
      if (await portOpen(spec.port))
        throw new Error(`port ${spec.port} is taken: the cluster needs its own ports`);
      nodes.push(new BrokerNode(spec));
    }
    const cluster = new Cluster(nodes);
    try {
      for (const [i, node] of nodes.entries()) {
        node.prepare();
        await node.boot();
        const seed = nodes[0];
        if (i > 0 && seed) await node.join(seed);
      }
    } catch (error) {
      await cluster.destroy();
      throw error;
    }
    return cluster;
  }

  /** Whether every node's files are where the specs say (for `npm run cluster -- stop`). */
  static exists(specs: NodeSpec[]): boolean {
    return specs.every((s) => existsSync(s.dir));
  }

  async destroy(): Promise<void> {
    for (const node of [...this.nodes].reverse()) await node.destroy();
  }
}

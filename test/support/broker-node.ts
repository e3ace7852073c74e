/**
 * A RabbitMQ node of a test's own (own ports, own data directory), so that chaos tests can stop
 * and restart a broker without touching the shared one.
 */
import { execFile, execFileSync } from 'node:child_process';
import { chownSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort } from '../../support/system.ts';

const run = promisify(execFile);

function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

export class BrokerNode {
  readonly name: string;
  readonly port: number;
  private readonly distPort: number;
  private readonly dir: string;

  private constructor(name: string, port: number, distPort: number, dir: string) {
    this.name = name;
    this.port = port;
    this.distPort = distPort;
    this.dir = dir;
  }

  get url(): string {
    return `amqp://guest:guest@127.0.0.1:${this.port}`;
  }

  static async start(): Promise<BrokerNode> {
    const dir = mkdtempSync(join(tmpdir(), 'broker-'));
    const node = new BrokerNode(
      `chaos${process.pid}x${Date.now() % 100000}@localhost`,
      await freePort(),
      await freePort(),
      dir,
    );
    writeFileSync(join(dir, 'enabled_plugins'), '[].\n');
    writeFileSync(
      join(dir, 'rabbitmq.conf'),
      `listeners.tcp.local = 127.0.0.1:${node.port}\nloopback_users = none\n`,
    );
    mkdirSync(join(dir, 'mnesia'));
    mkdirSync(join(dir, 'log'));
    // Debian's rabbitmq-server drops to the rabbitmq user: it must own the node's directory.
    try {
      const uid = Number(execFileSync('id', ['-u', 'rabbitmq']).toString());
      const gid = Number(execFileSync('id', ['-g', 'rabbitmq']).toString());
      for (const path of [
        dir,
        join(dir, 'mnesia'),
        join(dir, 'log'),
        join(dir, 'enabled_plugins'),
        join(dir, 'rabbitmq.conf'),
      ]) {
        chownSync(path, uid, gid);
      }
    } catch {}
    await node.boot();
    return node;
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

  /** Starts the node and resolves once it accepts AMQP connections. */
  async boot(): Promise<void> {
    await run('rabbitmq-server', ['-detached'], { env: this.env(), cwd: this.dir });
    const started = Date.now();
    while (Date.now() - started < 60_000) {
      if (await portOpen(this.port)) {
        await run('rabbitmqctl', ['-n', this.name, 'await_startup', '--timeout', '60'], { env: this.env() });
        return;
      }
      await new Promise((r) => setTimeout(r, 200));
    }
    throw new Error(`RabbitMQ node ${this.name} did not start on port ${this.port}`);
  }

  /** Stops the node (its data stays): clients see their connections drop. */
  async halt(): Promise<void> {
    await run('rabbitmqctl', ['-n', this.name, 'stop'], { env: this.env() }).catch(() => {});
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

/**
 * A PostgreSQL server of a test's own (initdb into a temporary directory, a free port, trust
 * auth), for the chaos tests that stop and restart it. It never touches a server a developer
 * already runs: its data directory, port and socket directory are its own.
 */
import { execFile, execFileSync } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort } from './system.ts';

const run = promisify(execFile);

/**
 * Where initdb and pg_ctl are: pg_config's bindir, else the newest /usr/lib/postgresql/<version>/bin
 * (Debian and Ubuntu keep them off the PATH), else the PATH.
 */
function binDir(): string | undefined {
  const candidates: string[] = [];
  try {
    candidates.push(execFileSync('pg_config', ['--bindir']).toString().trim());
  } catch {}
  const debian = '/usr/lib/postgresql';
  if (existsSync(debian)) {
    const versions = readdirSync(debian).sort((a, b) => Number.parseFloat(b) - Number.parseFloat(a));
    candidates.push(...versions.map((v) => join(debian, v, 'bin')));
  }
  return candidates.find((dir) => existsSync(join(dir, 'initdb')) && existsSync(join(dir, 'pg_ctl')));
}

/** initdb refuses to run as root: then the server runs as the `postgres` user, which owns its files. */
function serverUser(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  try {
    return {
      uid: Number(execFileSync('id', ['-u', 'postgres']).toString()),
      gid: Number(execFileSync('id', ['-g', 'postgres']).toString()),
    };
  } catch {
    throw new Error('running as root, PostgreSQL needs a `postgres` user to run as (initdb refuses root)');
  }
}

export class PostgresServer {
  readonly port: number;
  /** The temporary directory: `data` (the cluster) and `server.log`. */
  readonly dir: string;
  private readonly bin: string | undefined;
  private readonly user: { uid: number; gid: number } | undefined;

  private constructor(port: number, dir: string) {
    this.port = port;
    this.dir = dir;
    this.bin = binDir();
    this.user = serverUser();
  }

  /** The server's maintenance database, as the postgres superuser (trust: no password). */
  get url(): string {
    return `postgres://postgres@127.0.0.1:${this.port}/postgres`;
  }

  private get dataDir(): string {
    return join(this.dir, 'data');
  }

  /** A new cluster on a free port in a temporary directory, started. */
  static async start(): Promise<PostgresServer> {
    const server = new PostgresServer(await freePort(), mkdtempSync(join(tmpdir(), 'postgres-')));
    try {
      if (server.user) chownSync(server.dir, server.user.uid, server.user.gid);
      await server.tool(
        'initdb',
        '-D',
        server.dataDir,
        '-U',
        'postgres',
        '-A',
        'trust',
        '-E',
        'UTF8',
        '--no-sync',
      );
      // Appended to the generated file, so each restart keeps them. Without fsync a crash of the
      // server loses nothing (the kernel still has what it wrote); only the machine's would.
      writeFileSync(
        join(server.dataDir, 'postgresql.conf'),
        [
          '',
          `port = ${server.port}`,
          "listen_addresses = '127.0.0.1'",
          `unix_socket_directories = '${server.dir}'`,
          'max_connections = 200',
          'fsync = off',
          '',
        ].join('\n'),
        { flag: 'a' },
      );
      await server.boot();
    } catch (error) {
      rmSync(server.dir, { recursive: true, force: true });
      throw error;
    }
    return server;
  }

  /** Runs one of PostgreSQL's programs, as the server's user. */
  private async tool(name: string, ...args: string[]): Promise<string> {
    const program = this.bin ? join(this.bin, name) : name;
    const [file, argv] = this.user
      ? ['runuser', ['-u', 'postgres', '--', program, ...args]]
      : [program, args];
    try {
      return (await run(file, argv, { cwd: this.dir })).stdout;
    } catch (error) {
      const { stderr, stdout } = error as { stderr?: string; stdout?: string };
      throw new Error(`${name} ${args.join(' ')} failed: ${stderr || stdout || (error as Error).message}`);
    }
  }

  /** Starts the server and resolves once it accepts connections. */
  async boot(): Promise<void> {
    await this.tool(
      'pg_ctl',
      '-D',
      this.dataDir,
      '-l',
      join(this.dir, 'server.log'),
      '-w',
      '-t',
      '60',
      'start',
    );
  }

  /**
   * Stops the server: `fast` rolls back every transaction and closes every connection (a clean
   * restart); `immediate` kills it as a crash would, and the next start recovers from the WAL.
   */
  async halt(mode: 'fast' | 'immediate' = 'fast'): Promise<void> {
    await this.tool('pg_ctl', '-D', this.dataDir, '-m', mode, '-w', '-t', '60', 'stop');
  }

  async restart(mode: 'fast' | 'immediate' = 'fast'): Promise<void> {
    await this.halt(mode);
    await this.boot();
  }

  async destroy(): Promise<void> {
    await this.halt('immediate').catch(() => {});
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * `npm run cluster -- start|stop|status [--port 5701]`: a local three-node RabbitMQ cluster for
 * trying the services on a cluster, on ports and in data directories of its own (.tmp/cluster),
 * never the broker already running on 5672. `start` prints the AMQP_URL to use.
 */
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { BrokerNode, Cluster, type NodeSpec, portOpen } from '../support/broker-node.ts';

const USAGE = `Usage: npm run cluster -- start|stop|status [--port N]

  start    starts three RabbitMQ nodes on ports N, N+1, N+2 (default 5701; their Erlang
           distribution ports are N+20000…), joins them into one cluster and prints the AMQP_URL
  stop     stops the three nodes and deletes their data
  status   says whether each node answers

Their data lives under .tmp/cluster/. The broker on 5672 is never touched.`;

const DIR = resolve('.tmp/cluster');
const STATE = join(DIR, 'cluster.json');

function specs(base: number): NodeSpec[] {
  return [1, 2, 3].map((n) => ({
    name: `saga-cluster-n${n}@localhost`,
    port: base + n - 1,
    distPort: base + n - 1 + 20000,
    dir: join(DIR, `n${n}`),
  }));
}

function saved(): NodeSpec[] | undefined {
  try {
    return JSON.parse(readFileSync(STATE, 'utf8')) as NodeSpec[];
  } catch {
    return undefined;
  }
}

async function main(): Promise<number> {
  const { positionals, values } = parseArgs({
    allowPositionals: true,
    options: { port: { type: 'string', default: '5701' }, help: { type: 'boolean', short: 'h' } },
  });
  const [command] = positionals;
  const base = Number(values.port);
  if (values.help || !command || !['start', 'stop', 'status'].includes(command)) {
    console.log(USAGE);
    return values.help ? 0 : 2;
  }
  if (!Number.isInteger(base) || base < 1024 || base > 45000) {
    console.error(`--port ${values.port}: give a port from 1024 to 45000 (three in a row are used)`);
    return 2;
  }

  if (command === 'start') {
    const running = saved();
    if (running) {
      console.error(
        `A cluster is already set up in ${DIR} (ports ${running.map((s) => s.port).join(', ')}): npm run cluster -- stop first.`,
      );
      return 1;
    }
    mkdirSync(DIR, { recursive: true });
    console.log('Starting three RabbitMQ nodes (about 30 s) …');
    let cluster: Cluster;
    try {
      cluster = await Cluster.start(specs(base));
    } catch (error) {
      console.error(`The cluster did not start: ${(error as Error).message}`);
      rmSync(DIR, { recursive: true, force: true });
      return 1;
    }
    writeFileSync(
      STATE,
      JSON.stringify(
        cluster.nodes.map((n) => n.spec),
        null,
        2,
      ),
    );
    console.log(`\nA three-node cluster is running (${cluster.nodes.map((n) => n.name).join(', ')}).`);
    console.log('Use it with:\n');
    console.log(`  AMQP_URL=${cluster.url} npm start\n`);
    console.log('Stop it with: npm run cluster -- stop');
    return 0;
  }

  const nodes = saved()?.map((spec) => new BrokerNode(spec));
  if (!nodes) {
    console.log(`No cluster is set up in ${DIR}.`);
    return command === 'status' ? 1 : 0;
  }
  if (command === 'status') {
    let up = 0;
    for (const node of nodes) {
      const open = await portOpen(node.port);
      if (open) up++;
      console.log(`  ${node.name}  amqp://127.0.0.1:${node.port}  ${open ? 'up' : 'DOWN'}`);
    }
    console.log(`AMQP_URL=${nodes.map((n) => n.url).join(',')}`);
    return up === nodes.length ? 0 : 1;
  }
  for (const node of [...nodes].reverse()) await node.halt();
  rmSync(DIR, { recursive: true, force: true });
  console.log('The cluster is stopped and its data deleted.');
  return 0;
}

process.exit(await main());

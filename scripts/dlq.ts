/**
 * `npm run dlq`: the operator's tool for the dead-letter queues (`<exchange>.<service>.dead-letter`).
 *
 *   npm run dlq -- list   [--service NAME] [--limit N]   what is parked, and why (nothing is consumed)
 *   npm run dlq -- replay [--service NAME] [--limit N]   send parked messages back to their queue
 *   npm run dlq -- purge  [--service NAME] [--yes]       delete parked messages, after confirmation
 *
 * `list` reads the messages unacknowledged on one channel and closes it, so they return to their
 * queue in order. `replay` sends each message back to the queue that parked it (not through the
 * exchange, which would deliver it to every other consumer too) with its body and properties,
 * minus the dead-letter headers, and acks the parked copy only once the broker has
 * confirmed the republish; replaying a message a service already handled is a no-op (inbox).
 * Exit codes: 0 done, 1 refused or partly failed, 2 bad usage, configuration or broker unreachable.
 */
import { createInterface } from 'node:readline/promises';
import { parseArgs } from 'node:util';
import {
  brokerDeath,
  DeadLetters,
  headerText,
  originalRoutingKey,
  type ParkedMessage,
} from '../common/broker/dead-letters.ts';
import { queueNames } from '../common/broker/topology.ts';
import { ConfigError, loadConfig, redactUrl } from '../common/config.ts';
import { SERVICES, type ServiceName } from '../common/events.ts';
import { DEAD_HEADER } from '../common/headers.ts';

const USAGE = `usage: npm run dlq -- <command> [--service NAME] [--limit N] [--yes]

commands:
  list     show, per service, how many messages are parked and, for the first N, their id,
           original routing key, reason, attempts, when parked and the error (nothing is consumed)
  replay   send parked messages back to the queue that parked them, as they were first published
  purge    delete parked messages (asks to type "yes" unless --yes is given)

options:
  --service NAME  only this service: ${SERVICES.join(', ')}
  --limit N       list: how many messages to show per service (default 20);
                  replay: at most N messages per service (default all)
  --yes           purge without asking (required when there is no terminal)
  -h, --help      this text

The broker and exchange come from AMQP_URL and SAGA_EXCHANGE.`;

const COMMANDS = ['list', 'replay', 'purge'] as const;
type Command = (typeof COMMANDS)[number];

interface Arguments {
  command: Command;
  services: readonly ServiceName[];
  limit?: number;
  yes: boolean;
}

class UsageError extends Error {}

const ERROR_WIDTH = 160;

function readArguments(argv: string[]): Arguments | 'help' {
  let parsed: ReturnType<typeof parse>;
  try {
    parsed = parse(argv);
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  const { values, positionals } = parsed;
  if (values.help) return 'help';
  if (positionals.length !== 1) {
    throw new UsageError(
      positionals.length === 0 ? 'which command?' : `one command only, got: ${positionals.join(' ')}`,
    );
  }
  const command = positionals[0] as Command;
  if (!COMMANDS.includes(command)) throw new UsageError(`unknown command "${positionals[0]}"`);
  let services: readonly ServiceName[] = SERVICES;
  if (values.service !== undefined) {
    if (!(SERVICES as readonly string[]).includes(values.service))
      throw new UsageError(`unknown service "${values.service}"`);
    services = [values.service as ServiceName];
  }
  let limit: number | undefined;
  if (values.limit !== undefined) {
    if (command === 'purge') throw new UsageError('--limit does not apply to purge: it empties the queue');
    if (!/^\d+$/.test(values.limit))
      throw new UsageError(`--limit must be a whole number, not "${values.limit}"`);
    limit = Number(values.limit);
  }
  return { command, services, limit, yes: values.yes ?? false };
}

function parse(argv: string[]) {
  return parseArgs({
    args: argv,
    allowPositionals: true,
    strict: true,
    options: {
      service: { type: 'string' },
      limit: { type: 'string' },
      yes: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
}

function describeMessage(message: ParkedMessage, index: number): string {
  const { headers } = message;
  const death = brokerDeath(message);
  const reason =
    headerText(headers[DEAD_HEADER.reason]) ?? (death ? `broker: ${headerText(death.reason)}` : 'unknown');
  const attempts = headerText(headers[DEAD_HEADER.attempts]) ?? headerText(death?.count) ?? '?';
  const at = headerText(headers[DEAD_HEADER.at]) ?? headerText(death?.time) ?? '?';
  const error = (headerText(headers[DEAD_HEADER.error]) ?? '').replace(/\s+/g, ' ').trim();
  const shown = error.length > ERROR_WIDTH ? `${error.slice(0, ERROR_WIDTH - 1)}…` : error;
  return [
    `  ${index + 1}. ${message.messageId ?? '(no message id)'}`,
    `     routing key: ${originalRoutingKey(message) ?? '?'}   reason: ${reason}   attempts: ${attempts}   parked: ${at}`,
    ...(shown ? [`     error: ${shown}`] : []),
  ].join('\n');
}

/** Each asked service's dead-letter queue and how many it holds; a missing queue is said and skipped. */
async function parkedPerService(dlq: DeadLetters, args: Arguments, exchange: string) {
  const found: { service: ServiceName; queue: string; workQueue: string; count: number }[] = [];
  for (const service of args.services) {
    const { deadLetterQueue: queue, queue: workQueue } = queueNames(exchange, service);
    const count = await dlq.count(queue);
    if (count === undefined)
      console.log(`${service}: no queue ${queue} (has ${service} run with SAGA_EXCHANGE=${exchange}?)`);
    else found.push({ service, queue, workQueue, count });
  }
  return found;
}

async function list(dlq: DeadLetters, args: Arguments, exchange: string): Promise<number> {
  const limit = args.limit ?? 20;
  for (const { service, queue, count } of await parkedPerService(dlq, args, exchange)) {
    console.log(`${service}: ${count} parked in ${queue}`);
    if (count === 0 || limit === 0) continue;
    const seen = await dlq.peek(queue, limit);
    for (const [i, message] of seen.entries()) console.log(describeMessage(message, i));
    if (count > seen.length)
      console.log(`  … and ${count - seen.length} more (--limit ${count} to see them)`);
  }
  return 0;
}

async function replay(dlq: DeadLetters, args: Arguments, exchange: string): Promise<number> {
  let failures = 0;
  for (const { service, queue, workQueue, count } of await parkedPerService(dlq, args, exchange)) {
    // Only what is parked now: a replayed message that fails again is parked behind these, not replayed twice.
    const { replayed, problems } = await dlq.replay(queue, workQueue, Math.min(count, args.limit ?? count));
    console.log(
      `${service}: replayed ${replayed} of ${count} parked message${count === 1 ? '' : 's'} to ${workQueue}`,
    );
    for (const problem of problems) console.log(`  ${problem}`);
    failures += problems.length;
  }
  return failures > 0 ? 1 : 0;
}

async function confirmed(total: number): Promise<boolean> {
  const rl = createInterface({ input: process.stdin, output: process.stdout });
  try {
    const answer = await rl.question(
      `Delete these ${total} message${total === 1 ? '' : 's'} for good? Type yes to go on: `,
    );
    return answer.trim() === 'yes';
  } finally {
    rl.close();
  }
}

async function purge(dlq: DeadLetters, args: Arguments, exchange: string): Promise<number> {
  const queues = await parkedPerService(dlq, args, exchange);
  for (const { service, queue, count } of queues) console.log(`${service}: ${count} parked in ${queue}`);
  const total = queues.reduce((n, q) => n + q.count, 0);
  if (total === 0) {
    console.log('Nothing to purge.');
    return 0;
  }
  if (!args.yes) {
    if (!process.stdin.isTTY) {
      console.error('Refusing to purge without confirmation: there is no terminal to ask. Pass --yes.');
      return 1;
    }
    if (!(await confirmed(total))) {
      console.log('Nothing purged.');
      return 1;
    }
  }
  for (const { service, queue } of queues) console.log(`${service}: purged ${await dlq.purge(queue)}`);
  return 0;
}

async function main(): Promise<number> {
  let args: Arguments | 'help';
  try {
    args = readArguments(process.argv.slice(2));
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    console.error(`${error.message}\n\n${USAGE}`);
    return 2;
  }
  if (args === 'help') {
    console.log(USAGE);
    return 0;
  }
  let config: ReturnType<typeof loadConfig>;
  try {
    config = loadConfig('order-creation');
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    console.error(error.message);
    return 2;
  }
  let dlq: DeadLetters;
  try {
    dlq = await DeadLetters.connect(config.amqpUrls, `dlq ${args.command}`);
  } catch (error) {
    console.error(
      `Cannot reach RabbitMQ at ${redactUrl(config.amqpUrls.join(','))}: ${redactUrl((error as Error).message || String(error))}. ` +
        'Start it or set AMQP_URL.',
    );
    return 2;
  }
  try {
    const run = { list, replay, purge }[args.command];
    return await run(dlq, args, config.exchange);
  } finally {
    await dlq.close();
  }
}

process.exitCode = await main().catch((error: unknown) => {
  console.error(error instanceof Error ? error.message : error);
  return 1;
});

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
import amqp, {
  type Channel,
  type ChannelModel,
  type GetMessage,
  type Message,
  type Options,
  type XDeath,
} from 'amqplib';
import { queueNames } from '../common/broker/topology.ts';
import { ConfigError, loadConfig, redactUrl } from '../common/config.ts';
import { SERVICES, type ServiceName } from '../common/events.ts';
import { ATTEMPT_HEADER, DEAD_HEADER } from '../common/headers.ts';

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

/** Headers the dead-lettering added (ours and the broker's): a replayed message starts afresh without them. */
const DEAD_LETTER_HEADERS = new Set<string>([
  ...Object.values(DEAD_HEADER),
  ATTEMPT_HEADER,
  'x-death',
  'x-first-death-exchange',
  'x-first-death-queue',
  'x-first-death-reason',
  'x-last-death-exchange',
  'x-last-death-queue',
  'x-last-death-reason',
]);

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

/** A header value as text: strings as they are, AMQP timestamps as ISO dates, the rest as JSON. */
function text(value: unknown): string | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value === 'string') return value;
  if (Buffer.isBuffer(value)) return value.toString('utf8');
  if (typeof value === 'object' && (value as { '!'?: unknown })['!'] === 'timestamp') {
    return new Date(Number((value as { value: unknown }).value) * 1000).toISOString();
  }
  return typeof value === 'object' ? JSON.stringify(value) : String(value);
}

/** The first x-death entry: what the broker itself records when it dead-letters a message. */
function brokerDeath(message: Message): Partial<XDeath> | undefined {
  const deaths: unknown = message.properties.headers?.['x-death'];
  return Array.isArray(deaths) ? (deaths[0] as Partial<XDeath>) : undefined;
}

/**
 * The routing key the message was first published with: our header when the runner parked it,
 * else the broker's x-death record, else the AMQP type (which the saga sets to the routing key).
 */
function originalRoutingKey(message: Message): string | undefined {
  const headers = message.properties.headers ?? {};
  const kept = text(headers[DEAD_HEADER.routingKey]);
  if (kept) return kept;
  const keys: unknown = brokerDeath(message)?.['routing-keys'];
  if (Array.isArray(keys) && keys.length > 0) return text(keys[0]);
  return text(message.properties.type);
}

function describeMessage(message: Message, index: number): string {
  const headers = message.properties.headers ?? {};
  const death = brokerDeath(message);
  const reason = text(headers[DEAD_HEADER.reason]) ?? (death ? `broker: ${text(death.reason)}` : 'unknown');
  const attempts = text(headers[DEAD_HEADER.attempts]) ?? text(death?.count) ?? '?';
  const at = text(headers[DEAD_HEADER.at]) ?? text(death?.time) ?? '?';
  const error = (text(headers[DEAD_HEADER.error]) ?? '').replace(/\s+/g, ' ').trim();
  const shown = error.length > ERROR_WIDTH ? `${error.slice(0, ERROR_WIDTH - 1)}…` : error;
  return [
    `  ${index + 1}. ${message.properties.messageId ?? '(no message id)'}`,
    `     routing key: ${originalRoutingKey(message) ?? '?'}   reason: ${reason}   attempts: ${attempts}   parked: ${at}`,
    ...(shown ? [`     error: ${shown}`] : []),
  ].join('\n');
}

/** Ready messages in the queue, or undefined when it does not exist (a 404 closes the channel). */
async function countParked(connection: ChannelModel, queue: string): Promise<number | undefined> {
  const channel = await connection.createChannel();
  channel.on('error', () => {});
  try {
    return (await channel.checkQueue(queue)).messageCount;
  } catch (error) {
    if ((error as { code?: number }).code === 404) return undefined;
    throw error;
  } finally {
    await channel.close().catch(() => {});
  }
}

/** Each asked service's dead-letter queue and how many it holds; a missing queue is said and skipped. */
async function parkedPerService(connection: ChannelModel, args: Arguments, exchange: string) {
  const found: { service: ServiceName; queue: string; workQueue: string; count: number }[] = [];
  for (const service of args.services) {
    const { deadLetterQueue: queue, queue: workQueue } = queueNames(exchange, service);
    const count = await countParked(connection, queue);
    if (count === undefined)
      console.log(`${service}: no queue ${queue} (has ${service} run with SAGA_EXCHANGE=${exchange}?)`);
    else found.push({ service, queue, workQueue, count });
  }
  return found;
}

async function list(connection: ChannelModel, args: Arguments, exchange: string): Promise<number> {
  const limit = args.limit ?? 20;
  for (const { service, queue, count } of await parkedPerService(connection, args, exchange)) {
    console.log(`${service}: ${count} parked in ${queue}`);
    if (count === 0 || limit === 0) continue;
    // Held unacknowledged on one channel; closing it returns them all to the queue, in order.
    const channel = await connection.createChannel();
    const seen: GetMessage[] = [];
    try {
      while (seen.length < limit) {
        const message = await channel.get(queue, { noAck: false });
        if (!message) break;
        seen.push(message);
      }
      for (const [i, message] of seen.entries()) console.log(describeMessage(message, i));
    } finally {
      await channel.close();
    }
    if (count > seen.length)
      console.log(`  … and ${count - seen.length} more (--limit ${count} to see them)`);
  }
  return 0;
}

/**
 * The parked message's properties for its republication: unchanged but for the dead-letter
 * headers; the original routing key stays, since the message goes straight to its queue.
 */
function republishOptions(message: Message, routingKey: string): Options.Publish {
  const p = message.properties;
  const headers = {
    ...Object.fromEntries(
      Object.entries(p.headers ?? {}).filter(([name]) => !DEAD_LETTER_HEADERS.has(name.toLowerCase())),
    ),
    [DEAD_HEADER.routingKey]: routingKey,
  };
  const options: Options.Publish = {
    mandatory: true,
    persistent: p.deliveryMode === 2,
    headers,
    contentType: p.contentType,
    contentEncoding: p.contentEncoding,
    correlationId: p.correlationId,
    messageId: p.messageId,
    type: p.type,
    timestamp: p.timestamp,
    appId: p.appId,
    priority: p.priority,
    replyTo: p.replyTo,
  };
  return Object.fromEntries(
    Object.entries(options).filter(([, value]) => value !== undefined),
  ) as Options.Publish;
}

async function replay(connection: ChannelModel, args: Arguments, exchange: string): Promise<number> {
  let failures = 0;
  for (const { service, queue, workQueue, count } of await parkedPerService(connection, args, exchange)) {
    // Only what is parked now: a replayed message that fails again is parked behind these, not replayed twice.
    const max = Math.min(count, args.limit ?? count);
    const channel = await connection.createConfirmChannel();
    let returned = false;
    channel.on('return', () => {
      returned = true;
    });
    let closedBy: Error | undefined;
    channel.on('error', (error: Error) => {
      closedBy = error;
    });
    let replayed = 0;
    const problems: string[] = [];
    try {
      for (let i = 0; i < max; i++) {
        const message = await channel.get(queue, { noAck: false });
        if (!message) break;
        const id = message.properties.messageId ?? '(no message id)';
        const routingKey = originalRoutingKey(message);
        if (!routingKey) {
          problems.push(`${id}: no original routing key; left parked`);
          continue; // stays unacked until the channel closes, so it is not fetched again
        }
        returned = false;
        // Back to the queue that parked it only: through the exchange, every other consumer of the
        // routing key would get it a second time.
        await confirmPublish(channel, '', workQueue, message.content, republishOptions(message, routingKey));
        // The broker returns an unroutable message before it confirms it.
        if (returned) {
          problems.push(`${id}: the queue ${workQueue} does not exist; left parked`);
          continue;
        }
        channel.ack(message);
        replayed++;
      }
    } catch (error) {
      problems.push(`stopped: ${(closedBy ?? (error as Error)).message}`);
    } finally {
      await channel.close().catch(() => {});
    }
    console.log(
      `${service}: replayed ${replayed} of ${count} parked message${count === 1 ? '' : 's'} to ${workQueue}`,
    );
    for (const problem of problems) console.log(`  ${problem}`);
    failures += problems.length;
  }
  return failures > 0 ? 1 : 0;
}

function confirmPublish(
  channel: amqp.ConfirmChannel,
  exchange: string,
  routingKey: string,
  content: Buffer,
  options: Options.Publish,
): Promise<void> {
  return new Promise((resolve, reject) => {
    channel.publish(exchange, routingKey, content, options, (error) =>
      error
        ? reject(error instanceof Error ? error : new Error(`the broker nacked ${routingKey}`))
        : resolve(),
    );
  });
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

async function purge(connection: ChannelModel, args: Arguments, exchange: string): Promise<number> {
  const queues = await parkedPerService(connection, args, exchange);
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
  const channel: Channel = await connection.createChannel();
  try {
    for (const { service, queue } of queues) {
      const { messageCount } = await channel.purgeQueue(queue);
      console.log(`${service}: purged ${messageCount}`);
    }
  } finally {
    await channel.close().catch(() => {});
  }
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
  const url = redactUrl(config.amqpUrl);
  let connection: ChannelModel;
  try {
    connection = await amqp.connect(config.amqpUrl, {
      timeout: 10_000,
      clientProperties: { connection_name: `dlq ${args.command}` },
    });
  } catch (error) {
    console.error(
      `Cannot reach RabbitMQ at ${url}: ${((error as Error).message || String(error)).split(config.amqpUrl).join(url)}. ` +
        'Start it or set AMQP_URL.',
    );
    return 2;
  }
  connection.on('error', () => {});
  try {
    const run = { list, replay, purge }[args.command];
    return await run(connection, args, config.exchange);
  } finally {
    await connection.close().catch(() => {});
  }
}

process.exitCode = await main().catch((error: unknown) => {
  console.error(error instanceof Error ? error.message : error);
  return 1;
});

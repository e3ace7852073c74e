/**
 * The live dashboard (`GET /dashboard`): a static page (dashboard/, no build step) fed by the
 * stream of saga events (`GET /dashboard/stream`, this instance's LiveFeed) and by the state of
 * the queues, read here from RabbitMQ's management API (`GET /dashboard/state`). Its actions
 * (place an order, traffic, replay parked messages) are POSTs that DASHBOARD_ACTIONS allows and
 * that refuse any cross-origin request. Outside the OpenAPI document: a page for people, not part
 * of the order API.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  brokerDeath,
  DeadLetters,
  headerText,
  originalRoutingKey,
} from '../../common/broker/dead-letters.ts';
import { queueNames } from '../../common/broker/topology.ts';
import type { Config } from '../../common/config.ts';
import { contracts } from '../../common/contracts.ts';
import { AppError, NotFoundError, ValidationError } from '../../common/errors.ts';
import { FAIL_AT_VALUES, type FailAt, SERVICES, type ServiceName } from '../../common/events.ts';
import type { components } from '../../common/generated/api.ts';
import { DEAD_HEADER } from '../../common/headers.ts';
import { type HttpServer, readJsonBody, type ValidRequest } from '../../common/http.ts';
import type { LiveFeed } from '../../common/live-feed.ts';
import type { Logger } from '../../common/logger.ts';
import { planProblems, runTraffic, type TrafficPlan } from '../../common/traffic.ts';

type CreateOrder = components['schemas']['CreateOrderRequest'];
type Order = components['schemas']['Order'];

const ASSETS_DIR = join(import.meta.dirname, 'dashboard');
const ASSETS: Record<string, string> = {
  'dashboard.js': 'text/javascript; charset=utf-8',
  'dashboard.css': 'text/css; charset=utf-8',
};

export interface DashboardParts {
  config: Config;
  log: Logger;
  feed: LiveFeed;
  place: (order: CreateOrder, failAt?: FailAt) => Promise<Order>;
}

/** One queue of the saga as the page shows it. */
export interface QueueView {
  name: string;
  ready: number;
  unacked: number;
  consumers: number;
  /** Messages per second, as the management API last sampled them. */
  publishRate: number;
  deliverRate: number;
  ackRate: number;
}

/** A parked message as the page shows it. */
export interface ParkedView {
  messageId?: string;
  routingKey?: string;
  reason?: string;
  error?: string;
  parkedAt?: string;
}

/**
 * Refuses an action that does not come from this page: a browser tells where a request comes
 * from (Sec-Fetch-Site, Origin), and a body must be JSON, which a plain cross-site form cannot
 * send without a preflight this server never grants.
 */
function sameOrigin(headers: ValidRequest['headers']): void {
  const site = headers['sec-fetch-site'];
  const origin = headers.origin;
  let crossOrigin = site !== undefined && site !== 'same-origin' && site !== 'none';
  if (origin !== undefined) {
    try {
      crossOrigin ||= new URL(origin).host !== headers.host;
    } catch {
      crossOrigin = true;
    }
  }
  if (crossOrigin)
    throw new AppError(
      403,
      'Forbidden',
      'Dashboard actions are only taken from the dashboard itself (same origin).',
    );
}

/** The vhost of the AMQP URL, as the management API names it in paths. */
function vhostOf(amqpUrl: string): string {
  const first = amqpUrl.split(',')[0] ?? amqpUrl;
  const path = new URL(first).pathname.slice(1);
  return encodeURIComponent(path ? decodeURIComponent(path) : '/');
}

/** What the management API says about the saga's queues (those named after the exchange). */
async function readQueues(config: Config): Promise<QueueView[]> {
  const { url, user, password } = config.management;
  // Filtered by the broker: a vhost may hold many other queues, each one work for it to report.
  const query = new URLSearchParams({
    columns: 'name,messages_ready,messages_unacknowledged,consumers,message_stats',
    name: `^${config.exchange.replaceAll('.', '\\.')}\\.`,
    use_regex: 'true',
    page: '1',
    page_size: '500',
  });
  const response = await fetch(`${url}/api/queues/${vhostOf(config.amqpUrls[0] ?? '')}?${query}`, {
    headers: { authorization: `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}` },
    signal: AbortSignal.timeout(3000),
  });
  if (!response.ok) throw new Error(`the management API at ${url} answered ${response.status}`);
  const { items: queues } = (await response.json()) as {
    items: {
      name: string;
      messages_ready?: number;
      messages_unacknowledged?: number;
      consumers?: number;
      message_stats?: Record<string, { rate?: number } | number | undefined>;
    }[];
  };
  const rate = (stats: (typeof queues)[number]['message_stats'], key: string) => {
    const details = stats?.[`${key}_details`];
    return typeof details === 'object' ? Math.round((details.rate ?? 0) * 10) / 10 : 0;
  };
  return queues
    .filter((q) => q.name.startsWith(`${config.exchange}.`))
    .map((q) => ({
      name: q.name,
      ready: q.messages_ready ?? 0,
      unacked: q.messages_unacknowledged ?? 0,
      consumers: q.consumers ?? 0,
      publishRate: rate(q.message_stats, 'publish'),
      deliverRate: rate(q.message_stats, 'deliver_get'),
      ackRate: rate(q.message_stats, 'ack'),
    }))
    .sort((a, b) => a.name.localeCompare(b.name));
}

/** A traffic run started from the page: one at a time per instance. */
class Traffic {
  private run?: {
    plan: TrafficPlan;
    abort: AbortController;
    placed: number;
    failed: number;
    startedAt: string;
  };
  private readonly place: DashboardParts['place'];
  private readonly injection: boolean;
  private readonly log: Logger;

  constructor(place: DashboardParts['place'], injection: boolean, log: Logger) {
    this.place = place;
    this.injection = injection;
    this.log = log;
  }

  start(plan: TrafficPlan): void {
    this.stop();
    const run = {
      plan,
      abort: new AbortController(),
      placed: 0,
      failed: 0,
      startedAt: new Date().toISOString(),
    };
    this.run = run;
    void runTraffic(
      plan,
      (order) => this.place(order.body, order.failAt),
      run.abort.signal,
      (_, outcome, error) => {
        if (outcome === 'ok') run.placed++;
        else {
          run.failed++;
          if (run.failed === 1) this.log.warn({ err: error }, 'dashboard traffic: an order was refused');
        }
      },
      this.injection,
    ).finally(() => {
      if (this.run === run) this.run = undefined;
    });
  }

  stop(): void {
    this.run?.abort.abort();
    this.run = undefined;
  }

  get state() {
    const run = this.run;
    return run
      ? { running: true, ...run.plan, placed: run.placed, refused: run.failed, startedAt: run.startedAt }
      : { running: false };
  }
}

export function addDashboard(
  http: HttpServer,
  { config, log, feed, place }: DashboardParts,
): () => Promise<void> {
  // Not in the order API, and not for other sites to read: what is parked says a lot.
  const undocumented = { documented: false, crossOrigin: false };
  const page = readFileSync(join(ASSETS_DIR, 'index.html'), 'utf8')
    .replace('{{actions}}', String(config.dashboardActions))
    .replace('{{faultInjection}}', String(config.faultInjection));
  const traffic = new Traffic(place, config.faultInjection, log);
  let deadLetters: Promise<DeadLetters> | undefined;
  const dlq = () => {
    deadLetters ??= DeadLetters.connect(config.amqpUrls, `${config.service} dashboard`).catch((error) => {
      deadLetters = undefined;
      throw error;
    });
    return deadLetters;
  };
  // Several open pages read the broker once a second between them, not once each.
  let state: { at: number; value: Promise<unknown> } | undefined;

  http.route(
    'get',
    '/dashboard',
    () => ({ status: 200, body: page, headers: { 'content-type': 'text/html; charset=utf-8' } }),
    undocumented,
  );
  http.route(
    'get',
    '/dashboard/assets/{asset}',
    ({ params }) => {
      const asset = String(params.asset);
      const type = ASSETS[asset];
      if (!type) throw new NotFoundError(`No dashboard asset ${asset}.`);
      return {
        status: 200,
        body: readFileSync(join(ASSETS_DIR, asset)),
        headers: { 'content-type': type, 'cache-control': 'no-cache' },
      };
    },
    undocumented,
  );
  http.route(
    'get',
    '/dashboard/stream',
    ({ query }) =>
      feed.reply({ cursor: typeof query.lastEventId === 'string' ? query.lastEventId : undefined }),
    undocumented,
  );

  const readState = async () => {
    const queues = await readQueues(config).then(
      (value) => ({ value }),
      (error: Error) => ({ error: `queues unavailable: ${error.message}` }),
    );
    const parked: Partial<Record<ServiceName, { count: number; messages: ParkedView[] }>> = {};
    if ('value' in queues) {
      for (const service of SERVICES) {
        const names = queueNames(config.exchange, service);
        const count = queues.value.find((q) => q.name === names.deadLetterQueue)?.ready ?? 0;
        if (count === 0) {
          parked[service] = { count, messages: [] };
          continue;
        }
        // Read without taking them: they go back to the queue, in order, when the channel closes.
        // Their reasons are a bonus: a broker that will not show them still leaves the count.
        const messages = await dlq()
          .then((broker) => broker.peek(names.deadLetterQueue, 5))
          .catch(() => []);
        parked[service] = {
          count,
          messages: messages.map((m) => ({
            messageId: m.messageId,
            routingKey: originalRoutingKey(m),
            reason: headerText(m.headers[DEAD_HEADER.reason]) ?? headerText(brokerDeath(m)?.reason),
            error: headerText(m.headers[DEAD_HEADER.error])?.slice(0, 300),
            parkedAt: headerText(m.headers[DEAD_HEADER.at]) ?? headerText(brokerDeath(m)?.time),
          })),
        };
      }
    }
    return {
      exchange: config.exchange,
      ...('value' in queues ? { queues: queues.value } : { queues: [], error: queues.error }),
      parked,
      traffic: traffic.state,
      actions: config.dashboardActions,
      history: feed.size,
    };
  };
  http.route(
    'get',
    '/dashboard/state',
    async () => {
      if (!state || Date.now() - state.at > 1000) state = { at: Date.now(), value: readState() };
      return { status: 200, body: await state.value, headers: { 'cache-control': 'no-store' } };
    },
    undocumented,
  );

  /** An action route: allowed by configuration, same origin, a JSON body. */
  const action = (
    path: string,
    handler: (body: Record<string, unknown>) => Promise<{ status: number; body: unknown }>,
  ) =>
    http.route(
      'post',
      path,
      async ({ headers, raw }) => {
        if (!config.dashboardActions)
          throw new AppError(
            403,
            'Forbidden',
            'Dashboard actions are disabled by configuration (DASHBOARD_ACTIONS=false).',
          );
        sameOrigin(headers);
        const body = await readJsonBody(raw, config.bodyLimitBytes);
        if (typeof body !== 'object' || body === null || Array.isArray(body))
          throw new ValidationError([{ pointer: '/body', detail: 'must be a JSON object' }]);
        state = undefined;
        return handler(body as Record<string, unknown>);
      },
      undocumented,
    );

  action('/dashboard/orders', async (body) => {
    const { order, failAt } = body as { order?: CreateOrder; failAt?: string };
    if (failAt !== undefined && !FAIL_AT_VALUES.includes(failAt as FailAt))
      throw new ValidationError([
        { pointer: '/body/failAt', detail: `must be one of ${FAIL_AT_VALUES.join(', ')}` },
      ]);
    if (!order || typeof order !== 'object')
      throw new ValidationError([
        { pointer: '/body/order', detail: 'is required: the order, as POST /orders takes it' },
      ]);
    const problems = contracts().validator('#/components/schemas/CreateOrderRequest', '/body/order')(order);
    if (problems.length > 0) throw new ValidationError(problems);
    return { status: 201, body: await place(order, failAt as FailAt | undefined) };
  });

  action('/dashboard/traffic', async (body) => {
    if (body.action === 'stop') {
      traffic.stop();
      return { status: 200, body: traffic.state };
    }
    const plan = {
      rate: Number(body.rate ?? 5),
      durationS: Number(body.duration ?? 60),
      failures: Number(body.failures ?? 0.2),
    };
    const problems = planProblems(plan);
    if (body.action !== 'start') problems.unshift('action must be start or stop');
    if (problems.length > 0)
      throw new ValidationError(problems.map((detail) => ({ pointer: '/body', detail })));
    traffic.start(plan);
    return { status: 202, body: traffic.state };
  });

  action('/dashboard/replay', async (body) => {
    const service = body.service as ServiceName;
    if (!SERVICES.includes(service))
      throw new ValidationError([
        { pointer: '/body/service', detail: `must be one of ${SERVICES.join(', ')}` },
      ]);
    const names = queueNames(config.exchange, service);
    const broker = await dlq();
    const count = (await broker.count(names.deadLetterQueue)) ?? 0;
    const replayed =
      count > 0
        ? await broker.replay(names.deadLetterQueue, names.queue, count)
        : { replayed: 0, problems: [] };
    log.info({ service, ...replayed }, 'dashboard: parked messages replayed');
    return { status: 200, body: { service, ...replayed } };
  });

  return async () => {
    traffic.stop();
    const broker = await deadLetters?.catch(() => undefined);
    await broker?.close().catch(() => {});
  };
}

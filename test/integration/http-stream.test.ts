/**
 * The HTTP server factory with a real server and a real client (node:http): a route that answers
 * with a Server-Sent Events stream, and a route left out of the OpenAPI document on purpose.
 */
import { once } from 'node:events';
import { type IncomingMessage, request } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../../common/config.ts';
import { NotFoundError } from '../../common/errors.ts';
import { HttpServer, PROBLEM_JSON, type RouteHandler } from '../../common/http.ts';
import { createLogger } from '../../common/logger.ts';
import type { SseStream } from '../../common/sse.ts';

const servers: HttpServer[] = [];
afterEach(async () => {
  for (const server of servers.splice(0)) await server.close(Date.now() + 1000);
});

/** A server on a free port that answers `GET /probe` (undocumented) with `handler`. */
async function aServer(handler: RouteHandler): Promise<HttpServer> {
  const config = loadConfig('inventory', { INVENTORY_PORT: '0', LOG_LEVEL: 'silent' });
  const http = new HttpServer({ config, log: createLogger('inventory', 'silent'), checks: () => ({}) });
  http.route('get', '/probe', handler, { documented: false });
  await http.listen();
  servers.push(http);
  return http;
}

interface Received {
  at: number;
  /** The block's lines, up to the blank line that ended it. */
  lines: string[];
}

/** An open event stream as the client sees it: the head, then each block as it arrives. */
async function subscribe(http: HttpServer, headers: Record<string, string> = {}) {
  const req = request({ host: '127.0.0.1', port: http.port, path: '/probe', headers });
  req.end();
  const [res] = (await once(req, 'response')) as [IncomingMessage];
  const blocks: Received[] = [];
  let partial = '';
  res.setEncoding('utf8');
  res.on('data', (chunk: string) => {
    partial += chunk;
    for (let end = partial.indexOf('\n\n'); end >= 0; end = partial.indexOf('\n\n')) {
      blocks.push({ at: Date.now(), lines: partial.slice(0, end).split('\n') });
      partial = partial.slice(end + 2);
    }
  });
  // When the response is over, cleanly (res.complete) or not.
  const ended = new Promise<number>((resolve) => res.once('close', () => resolve(Date.now())));
  return {
    res,
    blocks,
    ended,
    messages: () => blocks.filter((b) => !b.lines[0]?.startsWith(':')),
    heartbeats: () => blocks.filter((b) => b.lines[0]?.startsWith(':')),
    disconnect: () => req.destroy(),
  };
}

async function until(condition: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await sleep(10);
  }
}

describe('an event stream (text/event-stream)', () => {
  it('answers with the event-stream head: no cache, no length', async () => {
    const http = await aServer(() => ({ status: 200, stream: (sse: SseStream) => sse.closed }));

    const { res } = await subscribe(http);

    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toBe('text/event-stream');
    expect(res.headers['cache-control']).toBe('no-cache');
    expect(res.headers['content-length']).toBeUndefined();
  });

  it('delivers the messages in order, and the handler resumes after the Last-Event-ID it was sent', async () => {
    let seen: string | undefined;
    const http = await aServer(() => ({
      status: 200,
      stream: async (sse: SseStream) => {
        seen = sse.lastEventId;
        const after = Number(sse.lastEventId ?? 0);
        for (let n = after + 1; n <= after + 3; n++) sse.send({ id: String(n), event: 'tick', data: { n } });
        sse.send({ data: 'two\nlines' });
        await sse.closed;
      },
    }));

    const client = await subscribe(http, { 'last-event-id': '41' });
    await until(() => client.messages().length === 4);

    expect(seen).toBe('41');
    expect(client.messages().map((m) => m.lines)).toEqual([
      ['id: 42', 'event: tick', 'data: {"n":42}'],
      ['id: 43', 'event: tick', 'data: {"n":43}'],
      ['id: 44', 'event: tick', 'data: {"n":44}'],
      ['data: two', 'data: lines'],
    ]);
  });

  it('flushes each message when it is sent, not when the stream ends', async () => {
    let secondSentAt = Number.POSITIVE_INFINITY;
    const http = await aServer(() => ({
      status: 200,
      stream: async (sse: SseStream) => {
        sse.send({ id: '1', data: 'first' });
        await sleep(400);
        secondSentAt = Date.now();
        sse.send({ id: '2', data: 'second' });
        await sse.closed;
      },
    }));

    const client = await subscribe(http);
    await until(() => client.messages().length === 2);

    const [first, second] = client.messages();
    expect(first?.at).toBeLessThan(secondSentAt);
    expect(second?.lines).toEqual(['id: 2', 'data: second']);
  });

  it('sends a heartbeat comment on the interval the reply gives', async () => {
    const http = await aServer(() => ({
      status: 200,
      heartbeatMs: 100,
      stream: (sse: SseStream) => sse.closed,
    }));
    const client = await subscribe(http);

    await until(() => client.heartbeats().length >= 2, 2000);

    expect(client.messages()).toEqual([]);
  });

  it('ends when the producer returns', async () => {
    const http = await aServer(() => ({
      status: 200,
      stream: (sse: SseStream) => {
        sse.send({ data: 'all there is' });
      },
    }));
    const client = await subscribe(http);

    await client.ended;

    expect(client.res.complete).toBe(true);
    expect(client.messages().map((m) => m.lines)).toEqual([['data: all there is']]);
  });

  it('tells the producer when the client goes away', async () => {
    let closedByClient = false;
    const http = await aServer(() => ({
      status: 200,
      stream: async (sse: SseStream) => {
        await sse.closed;
        closedByClient = sse.signal.aborted;
      },
    }));
    const client = await subscribe(http);
    client.res.on('error', () => {});

    client.disconnect();

    await until(() => closedByClient);
  });

  it('is ended promptly by the server closing, long before the deadline', async () => {
    let aborted = false;
    const http = await aServer(() => ({
      status: 200,
      stream: async (sse: SseStream) => {
        sse.send({ id: '1', data: 'open' });
        await sse.closed;
        aborted = sse.signal.aborted;
      },
    }));
    const client = await subscribe(http);
    await until(() => client.messages().length === 1);

    const start = Date.now();
    await http.close(Date.now() + 20_000);
    const endedAt = await client.ended;

    expect(Date.now() - start).toBeLessThan(2000);
    expect(endedAt - start).toBeLessThan(2000);
    expect(client.res.complete, 'the stream ended cleanly, not by a reset').toBe(true);
    expect(aborted).toBe(true);
  });
});

describe('a route outside the OpenAPI document (documented: false)', () => {
  it('answers, and its errors are problem+json like any route', async () => {
    const http = await aServer(() => {
      throw new NotFoundError('Nothing to see.');
    });

    const req = request({ host: '127.0.0.1', port: http.port, path: '/probe' });
    req.end();
    const [res] = (await once(req, 'response')) as [IncomingMessage];
    let body = '';
    for await (const chunk of res) body += chunk;

    expect(res.statusCode).toBe(404);
    expect(res.headers['content-type']).toBe(PROBLEM_JSON);
    expect(JSON.parse(body)).toMatchObject({ status: 404, detail: 'Nothing to see.', instance: '/probe' });
    expect(http.routes).toContain('GET /probe');
  });
});

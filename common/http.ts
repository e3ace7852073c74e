/**
 * The HTTP server factory every service uses: restify, routes validated against the OpenAPI
 * document (params, headers, body; unknown body fields rejected), errors as RFC 9457
 * problem+json, health routes, Swagger UI and the document itself. A route can answer with a
 * Server-Sent Events stream, and can be left out of the document on purpose.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import restify, { type Request, type Response } from 'restify';
import type { Config } from './config.ts';
import { contracts, type FieldError, type Validator } from './contracts.ts';
import { AppError, ValidationError } from './errors.ts';
import type { ServiceName } from './events.ts';
import type { Logger } from './logger.ts';
import { openEventStream, SSE_HEARTBEAT_MS, type SseStream } from './sse.ts';
import type { RequestScope } from './telemetry.ts';

export type Method = 'get' | 'post';

/** A request after validation: params and query coerced to the document's types. */
export interface ValidRequest {
  params: Record<string, unknown>;
  query: Record<string, unknown>;
  headers: Record<string, string | undefined>;
  body: unknown;
  raw: Request;
}

/** A reply with its whole body: JSON unless `headers` give another content type. */
export interface BodyReply {
  status: number;
  body: unknown;
  headers?: Record<string, string>;
}

/**
 * A Server-Sent Events reply (`text/event-stream`). The stream stays open until the promise
 * `stream` returns settles, or the client or the server's shutdown closes it first: return
 * `sse.closed` to keep it open as long as the client stays.
 */
export interface StreamReply {
  status: 200;
  headers?: Record<string, string>;
  stream: (sse: SseStream) => Promise<unknown> | unknown;
  /** Milliseconds between heartbeat comments; SSE_HEARTBEAT_MS unless given. */
  heartbeatMs?: number;
}

export type Reply = BodyReply | StreamReply;

export type RouteHandler = (request: ValidRequest) => Promise<Reply> | Reply;

export interface RouteOptions {
  /**
   * false for a route deliberately outside the OpenAPI document (a dashboard, /metrics): nothing
   * is validated against the document, the body is not read, and `undocumentedRoutes` names it
   * for the contract test. Its errors are problem+json all the same. True unless given.
   */
  documented?: boolean;
  /**
   * false for a route other sites must not read (a dashboard's state): its answers go without the
   * `Access-Control-Allow-Origin: *` every other route sends. True unless given.
   */
  crossOrigin?: boolean;
}

interface Operation {
  operationId?: string;
  parameters?: { name: string; in: 'path' | 'query' | 'header'; required?: boolean; schema: object }[];
  requestBody?: { required?: boolean; content: Record<string, { schema: object }> };
}

export const PROBLEM_JSON = 'application/problem+json';

function problemBody(error: AppError, instance?: string): string {
  return JSON.stringify(error.toProblem(instance));
}

/** The most of a refused body read (and dropped) before answering; past it, the connection just closes. */
const DRAIN_AT_MOST = 8 * 1024 * 1024;

/**
 * Reads the rest of a refused body, up to DRAIN_AT_MOST, and drops it: a client still sending
 * when the connection closes gets a reset instead of the 413 or 415 it was answered.
 */
function drain(req: Request): Promise<void> {
  return new Promise((resolve) => {
    let seen = 0;
    const done = () => {
      req.off('data', onData);
      req.off('end', done);
      req.off('error', done);
      req.off('close', done);
      resolve();
    };
    const onData = (chunk: Buffer) => {
      seen += chunk.length;
      if (seen > DRAIN_AT_MOST) done();
    };
    req.on('data', onData);
    req.once('end', done);
    req.once('error', done);
    req.once('close', done);
  });
}

/**
 * Reads the body as JSON, enforcing the size limit, the content type (415 unless JSON) and valid
 * UTF-8: what a documented route gets validated, for an undocumented one to call itself.
 */
export async function readJsonBody(req: Request, limit: number): Promise<unknown> {
  const type = (req.headers['content-type'] ?? '').split(';')[0]?.trim().toLowerCase();
  if (type !== 'application/json' && !type?.endsWith('+json')) {
    await drain(req);
    throw new AppError(
      415,
      'Unsupported media type',
      `Send the body as application/json (got ${type || 'no content type'}).`,
    );
  }
  const tooLarge = () => new AppError(413, 'Payload too large', `The body is larger than ${limit} bytes.`);
  if (Number(req.headers['content-length'] ?? 0) > limit) {
    await drain(req);
    throw tooLarge();
  }
  const chunks: Buffer[] = [];
  let size = 0;
  // Leaving the loop early must not destroy the request: its rest is drained, then answered.
  for await (const chunk of req.iterator({ destroyOnReturn: false }) as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) break;
    chunks.push(chunk);
  }
  if (size > limit) {
    await drain(req);
    throw tooLarge();
  }
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(Buffer.concat(chunks));
  } catch {
    throw new ValidationError(
      [{ pointer: '/body', detail: 'is not valid UTF-8' }],
      'The body is not valid UTF-8.',
    );
  }
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new ValidationError(
      [{ pointer: '/body', detail: `is not valid JSON: ${(error as Error).message}` }],
      'The body is not valid JSON.',
    );
  }
}

/** Validators for one operation of the document, built once per route. */
function operationValidators(operation: Operation) {
  const c = contracts();
  const groups = { path: [], query: [], header: [] } as Record<
    'path' | 'query' | 'header',
    NonNullable<Operation['parameters']>
  >;
  for (const p of operation.parameters ?? []) groups[p.in].push(p);
  const objectOf = (params: NonNullable<Operation['parameters']>, lowerCase = false) => ({
    type: 'object',
    properties: Object.fromEntries(params.map((p) => [lowerCase ? p.name.toLowerCase() : p.name, p.schema])),
    required: params.filter((p) => p.required).map((p) => (lowerCase ? p.name.toLowerCase() : p.name)),
  });
  const body = operation.requestBody?.content['application/json']?.schema;
  return {
    path: c.inline(objectOf(groups.path), '/path', true),
    query: c.inline(objectOf(groups.query), '/query', true),
    headers: c.inline(objectOf(groups.header, true), '/headers'),
    body: body ? c.inline(body, '/body') : undefined,
  } satisfies Record<string, Validator | undefined>;
}

export interface HttpServerOptions {
  config: Config;
  log: Logger;
  /** Readiness checks: every one true → 200, else 503 naming the false ones. */
  checks: () => Record<string, boolean>;
  /**
   * When a request reaches a route (`route` is its template, `/orders/{id}`): the scope it is
   * handled in (a server span), ended with the status once the response is finished.
   */
  observe?: (method: string, route: string, headers: Readonly<Record<string, unknown>>) => RequestScope;
}

export class HttpServer {
  readonly server: restify.Server;
  /** Every route this server answers, as `METHOD /path/{param}` (the document's notation). */
  readonly routes: string[] = [];
  /** The routes among them that are outside the document on purpose (`documented: false`). */
  readonly undocumentedRoutes: string[] = [];
  private readonly streams = new Set<SseStream>();
  private readonly document = contracts().document as unknown as {
    paths: Record<string, Record<string, Operation>>;
  };
  private closing = false;

  private readonly options: HttpServerOptions;

  constructor(options: HttpServerOptions) {
    this.options = options;
    const { config, log } = options;
    this.server = restify.createServer({
      name: config.service,
      handleUncaughtExceptions: false,
      ignoreTrailingSlash: true,
      // restify's own errors (unknown route, wrong method) are rendered through this formatter.
      formatters: { [PROBLEM_JSON]: (_req, _res, body) => JSON.stringify(body) },
    });
    this.server.pre((_req, res, next) => {
      // The read APIs are called from Swagger UI on the order API's port.
      res.setHeader('Access-Control-Allow-Origin', '*');
      if (this.closing) res.setHeader('Connection', 'close');
      return next();
    });
    this.server.use(restify.plugins.queryParser({ mapParams: false }));
    const notFound = (
      req: Request,
      res: Response,
      error: Error & { statusCode?: number },
      cb: () => void,
    ) => {
      const status = error.statusCode ?? 404;
      const title = status === 405 ? 'Method not allowed' : 'Not found';
      const problem = new AppError(
        status,
        title,
        `${req.method} ${req.url} is not a route of ${config.service}.`,
      );
      (error as unknown as { toJSON: () => unknown }).toJSON = () => problem.toProblem(req.url);
      res.setHeader('content-type', PROBLEM_JSON);
      cb();
    };
    this.server.on('NotFound', notFound);
    this.server.on('MethodNotAllowed', notFound);
    this.server.on(
      'restifyError',
      (req: Request, res: Response, error: Error & { statusCode?: number }, cb: () => void) => {
        if (!(error as { toJSON?: unknown }).toJSON || !res.getHeader('content-type')) {
          const status = error.statusCode ?? 500;
          const problem = new AppError(
            status,
            status >= 500 ? 'Internal error' : 'Bad request',
            error.message,
          );
          (error as unknown as { toJSON: () => unknown }).toJSON = () => problem.toProblem(req.url);
        }
        res.setHeader('content-type', PROBLEM_JSON);
        log.debug({ err: error.message, url: req.url }, 'restify error');
        cb();
      },
    );
    // Requests Node refuses before routing (a head over 16 KiB, a broken request line) get a problem too.
    this.server.server.on('clientError', (error: NodeJS.ErrnoException, socket) => {
      if (!socket.writable || error.code === 'ECONNRESET') {
        socket.destroy();
        return;
      }
      const status = error.code === 'HPE_HEADER_OVERFLOW' ? 431 : 400;
      const title = status === 431 ? 'Request header fields too large' : 'Bad request';
      const body = problemBody(
        new AppError(status, title, `The request could not be parsed (${error.code ?? 'invalid'}).`),
      );
      socket.end(
        `HTTP/1.1 ${status} ${title}\r\ncontent-type: ${PROBLEM_JSON}\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
      );
    });
    this.route('get', '/health/live', () => ({
      status: 200,
      body: { status: 'ok', service: config.service },
    }));
    this.route('get', '/health/ready', () => {
      const checks = this.closing ? { ...options.checks(), accepting: false } : options.checks();
      const ok = Object.values(checks).every(Boolean);
      return {
        status: ok ? 200 : 503,
        body: { status: ok ? 'ok' : 'unavailable', service: config.service, checks },
      };
    });
  }

  /**
   * Adds a route described by the document at `path` (OpenAPI notation, `/orders/{id}`): its
   * parameters, headers and body are validated before `handler` runs. A route the document does
   * not describe is refused unless declared `documented: false`.
   */
  route(
    method: Method,
    path: string,
    handler: RouteHandler,
    { documented = true, crossOrigin = true }: RouteOptions = {},
  ): void {
    const route = `${method.toUpperCase()} ${path}`;
    const operation = this.document.paths[path]?.[method];
    if (documented && !operation)
      throw new Error(`${route} is not in openapi/openapi.json: document it first`);
    if (!documented && operation)
      throw new Error(`${route} is in openapi/openapi.json: it cannot be undocumented`);
    const validate = operation ? operationValidators(operation) : undefined;
    const limit = this.options.config.bodyLimitBytes;
    this.routes.push(route);
    if (!documented) this.undocumentedRoutes.push(route);
    const restifyPath = path.replace(/\{(\w+)\}/g, ':$1');
    const verb = method.toUpperCase();
    const { observe } = this.options;
    const handle = async (req: Request, res: Response) => {
      if (!crossOrigin) res.removeHeader('Access-Control-Allow-Origin');
      try {
        const params = { ...(req.params ?? {}) };
        const query = { ...((req.query as Record<string, unknown>) ?? {}) };
        // Node lower-cases header names already; only set-cookie can be a list, and no route takes it.
        const headers = req.headers as Record<string, string | undefined>;
        const errors: FieldError[] = validate
          ? [...validate.path(params), ...validate.query(query), ...validate.headers(headers)]
          : [];
        let body: unknown;
        if (validate?.body) {
          body = await readJsonBody(req, limit);
          errors.push(...validate.body(body));
        }
        if (errors.length > 0) throw new ValidationError(errors);
        const reply = await handler({ params, query, headers, body, raw: req });
        if ('stream' in reply) this.openStream(req, res, reply);
        else send(res, reply.status, reply.body, reply.headers);
      } catch (error) {
        this.sendError(req, res, error);
      }
    };
    this.server[method](
      restifyPath,
      observe
        ? async (req: Request, res: Response) => {
            const scope = observe(verb, path, req.headers);
            res.once('close', () => scope.end(res.statusCode));
            await scope.run(() => handle(req, res));
          }
        : handle,
    );
  }

  /** Answers with an event stream, registered so that shutdown can end it. */
  private openStream(req: Request, res: Response, reply: StreamReply): void {
    res.writeHead(reply.status, {
      ...reply.headers,
      'content-type': 'text/event-stream',
      'cache-control': 'no-cache',
      // A buffering proxy (nginx) would hold messages back until its buffer fills.
      'x-accel-buffering': 'no',
    });
    // The head goes out now, not with the first message: the client knows the stream is open.
    res.flushHeaders();
    const sse = openEventStream(res, {
      lastEventId: req.headers['last-event-id'] as string | undefined,
      heartbeatMs: reply.heartbeatMs ?? SSE_HEARTBEAT_MS,
    });
    this.streams.add(sse);
    void sse.closed.then(() => this.streams.delete(sse));
    // Opened on a kept-alive connection after shutdown began: the client reconnects elsewhere.
    if (this.closing) sse.close();
    Promise.resolve()
      .then(() => reply.stream(sse))
      .catch((error) => this.options.log.error({ err: error, url: req.url }, 'event stream failed'))
      .finally(() => sse.close());
  }

  private sendError(req: Request, res: Response, error: unknown): void {
    if (error instanceof AppError) {
      // The rest of a refused body was never read: the connection cannot carry another request.
      if (error.status === 413 || error.status === 415) res.setHeader('connection', 'close');
      sendRaw(res, error.status, PROBLEM_JSON, problemBody(error, req.url));
      return;
    }
    this.options.log.error({ err: error, url: req.url, method: req.method }, 'request failed');
    sendRaw(
      res,
      500,
      PROBLEM_JSON,
      problemBody(new AppError(500, 'Internal error', 'The request failed; the error is logged.'), req.url),
    );
  }

  /** Serves the bundled document (servers pointed at this host's configured ports) and Swagger UI. */
  serveDocs(): void {
    // The package's folder, found without loading its entry point: that would parse both of
    // Swagger UI's browser bundles (2 MB) in every service at start, to serve them as files.
    const assets = dirname(createRequire(import.meta.url).resolve('swagger-ui-dist/package.json'));
    this.route('get', '/openapi.json', ({ raw }) => ({ status: 200, body: this.documentFor(raw) }));
    this.route('get', '/docs', () => ({
      status: 200,
      body: DOCS_HTML,
      headers: { 'content-type': 'text/html; charset=utf-8' },
    }));
    const files: Record<string, string> = {
      'swagger-ui.css': 'text/css',
      'swagger-ui-bundle.js': 'application/javascript',
      'swagger-ui-standalone-preset.js': 'application/javascript',
      'favicon-32x32.png': 'image/png',
    };
    this.route('get', '/docs/{asset}', ({ params }) => {
      const asset = String(params.asset);
      const type = files[asset];
      if (!type) throw new AppError(404, 'Not found', `No Swagger UI asset ${asset}.`);
      return {
        status: 200,
        body: readFileSync(join(assets, asset)),
        headers: { 'content-type': type, 'cache-control': 'max-age=3600' },
      };
    });
  }

  private documentFor(req: Request): object {
    const { ports } = this.options.config;
    const host = (req.headers.host ?? 'localhost').replace(/:\d+$/, '');
    const doc = structuredClone(contracts().document) as {
      servers: { url: string }[];
      paths: Record<string, Record<string, unknown>>;
    };
    doc.servers = [{ url: '/', description: 'order-creation' } as { url: string }];
    for (const item of Object.values(doc.paths)) {
      const service = item['x-service'];
      if (typeof service === 'string' && service !== 'order-creation') {
        item.servers = [{ url: `http://${host}:${ports[service as ServiceName]}`, description: service }];
      }
    }
    return doc;
  }

  listen(): Promise<void> {
    const { httpHost, port } = this.options.config;
    return new Promise((resolve, reject) => {
      // restify re-emits its server's errors on itself: unheard there, a taken port would crash
      // the process with a stack trace instead of the clear message of runService.
      this.server.once('error', reject);
      this.server.listen(port, httpHost, () => {
        this.server.removeListener('error', reject);
        resolve();
      });
    });
  }

  get port(): number {
    return (this.server.address() as { port: number }).port;
  }

  /**
   * Stops accepting connections; idle keep-alive ones close now, busy ones after their response.
   * Event streams, which have no end of their own, are ended now too.
   */
  async close(deadline: number): Promise<void> {
    this.closing = true;
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.server.closeIdleConnections();
    const timer = setTimeout(
      () => this.server.server.closeAllConnections(),
      Math.max(0, deadline - Date.now()),
    );
    const streams = [...this.streams];
    for (const stream of streams) stream.close();
    await Promise.all(streams.map((stream) => stream.closed));
    // Their connections are idle now: close them rather than wait for the client to.
    this.server.server.closeIdleConnections();
    await closed;
    clearTimeout(timer);
  }
}

function send(res: Response, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const type = headers['content-type'] ?? 'application/json';
  const payload = Buffer.isBuffer(body) || typeof body === 'string' ? body : JSON.stringify(body);
  for (const [name, value] of Object.entries(headers)) res.setHeader(name, value);
  sendRaw(res, status, type, payload);
}

function sendRaw(res: Response, status: number, type: string, payload: string | Buffer): void {
  res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(payload) });
  res.end(payload);
}

const DOCS_HTML = `<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Order saga API</title>
  <link rel="stylesheet" href="/docs/swagger-ui.css">
  <link rel="icon" type="image/png" href="/docs/favicon-32x32.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/swagger-ui-bundle.js"></script>
  <script src="/docs/swagger-ui-standalone-preset.js"></script>
  <script>
    window.ui = SwaggerUIBundle({
      url: '/openapi.json',
      dom_id: '#swagger-ui',
      deepLinking: true,
      tryItOutEnabled: false,
      presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
      layout: 'StandaloneLayout',
    });
  </script>
</body>
</html>
`;

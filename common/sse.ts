/**
 * Server-Sent Events over one HTTP response (WHATWG HTML, "Server-sent events"): the wire format
 * of a message, and the open stream a route's producer writes to. common/http.ts opens one for a
 * StreamReply and closes every open one at shutdown.
 */
import type { ServerResponse } from 'node:http';

/** Milliseconds between heartbeats when a reply names none: under the idle timeout of common proxies. */
export const SSE_HEARTBEAT_MS = 15_000;

/** A client this far behind in reading is dropped rather than buffered for without bound. */
const MAX_BUFFERED_BYTES = 1024 * 1024;

/** One message of an event stream. */
export interface SseMessage {
  /** The cursor a reconnecting client sends back as `Last-Event-ID`. */
  id?: string;
  /** The event's name (a listener per name on EventSource); without one it is a `message`. */
  event?: string;
  /** A string goes out as is, one `data:` line per line; anything else as JSON. */
  data: unknown;
}

/** The open stream a StreamReply's producer writes to. */
export interface SseStream {
  /** The `Last-Event-ID` the client sent (an EventSource reconnecting after the last id it saw). */
  readonly lastEventId: string | undefined;
  /** Aborted once the stream is closed: by the client, by the producer, or at shutdown. */
  readonly signal: AbortSignal;
  /** Resolves once the stream is closed and its response is over. */
  readonly closed: Promise<void>;
  /** Writes one message, flushed at once; false, writing nothing, once the stream is closed. */
  send(message: SseMessage): boolean;
  /**
   * Writes messages already in the wire format (formatMessage), in one write: one formatting for
   * many streams, many messages per system call.
   */
  sendFormatted(text: string): boolean;
  /** Resolves once what was written has gone to the socket, or the stream closed: paces a long replay. */
  drained(): Promise<void>;
  /** Writes a comment, which clients ignore: what heartbeats are made of. */
  comment(text?: string): boolean;
  /** Ends the stream from the server's side. */
  close(): void;
}

/** `name: value` on one line; a comment is the field without a name. */
function field(name: string, value: string): string {
  // A line break would end the field early and start another, forged one.
  if (/[\r\n]/.test(value))
    throw new Error(`an event stream's ${name || 'comment'} cannot hold a line break`);
  return `${name}: ${value}\n`;
}

/** A message in the wire format: its fields, then the blank line that dispatches it. */
export function formatMessage({ id, event, data }: SseMessage): string {
  const text = typeof data === 'string' ? data : JSON.stringify(data);
  let out = id === undefined ? '' : field('id', id);
  if (event !== undefined) out += field('event', event);
  for (const line of text.split(/\r\n|\r|\n/)) out += `data: ${line}\n`;
  return `${out}\n`;
}

/**
 * Starts the event stream on a response whose head is written: a heartbeat comment every
 * `heartbeatMs`, and the stream closed when the client goes away.
 */
export function openEventStream(
  res: ServerResponse,
  options: { lastEventId: string | undefined; heartbeatMs: number },
): SseStream {
  const aborted = new AbortController();
  const closed = new Promise<void>((resolve) => res.once('close', resolve));
  const heartbeat = setInterval(() => stream.comment(), options.heartbeatMs);
  // The server holds the process; a heartbeat never should.
  heartbeat.unref();
  const close = () => {
    if (aborted.signal.aborted) return;
    clearInterval(heartbeat);
    aborted.abort();
    res.end();
  };
  res.once('close', close);
  const write = (chunk: string): boolean => {
    if (aborted.signal.aborted) return false;
    if (res.writableLength > MAX_BUFFERED_BYTES) {
      close();
      return false;
    }
    res.write(chunk);
    return true;
  };
  const stream: SseStream = {
    lastEventId: options.lastEventId,
    signal: aborted.signal,
    closed,
    send: (message) => write(formatMessage(message)),
    sendFormatted: write,
    drained: () =>
      aborted.signal.aborted || !res.writableNeedDrain
        ? Promise.resolve()
        : Promise.race([new Promise<void>((resolve) => res.once('drain', resolve)), closed]),
    comment: (text = '') => write(`${field('', text)}\n`),
    close,
  };
  return stream;
}

/**
 * The live feed of saga events: every event the broker's watcher sees (`Broker.watchAll`), kept
 * in a bounded ring and served as Server-Sent Events, each event one message
 * `{ eventId, orderId, type, source, at, data }` with the event's id as its SSE `id`.
 *
 * The cursor is the event id on purpose. Every instance of the service watches the exchange with
 * a queue of its own, so each holds the same events under the same ids: a client that reconnects
 * to another instance (behind a load balancer) resumes there too. Arrival order can differ from
 * one instance to another, so an id an instance does not hold (it started later, or the id left
 * its ring) is placed by the time at the head of the UUIDv7, less a margin for the clocks of the
 * publishers: the client may see an event twice then (it drops what it has by eventId), never
 * miss one the instance holds.
 */
import type { Broker, WatchedMessage } from './broker/connection.ts';
import { EMITTED_BY, isRoutingKey, ROUTING_KEYS, type RoutingKey, type SagaEvent } from './events.ts';
import type { StreamReply } from './http.ts';
import type { Logger } from './logger.ts';
import type { SseStream } from './sse.ts';

/** One saga event as the feed sends it. */
export interface FeedEvent {
  eventId: string;
  orderId?: string;
  type: string;
  source: string;
  at: string;
  data: unknown;
}

/** What the watcher hands over for each message; or an event the service handled or emitted, as JSON. */
export type FeedMessage = Omit<WatchedMessage, 'content'> & { content: Buffer | string };

interface Entry {
  id: string;
  /** When this instance received it (what the age bound counts from). */
  receivedAt: number;
  /** Its body: bytes start to end of slab number `slab` (see Slabs). */
  slab: number;
  start: number;
  end: number;
  /** Its SSE message, formatted the first time a client needs it (none open: no cost). */
  text?: string;
}

/** Bytes of one slab: a few hundred message bodies. */
const SLAB_BYTES = 256 * 1024;

/**
 * The bodies of the ring's entries, copied end to end into large buffers. The broker's client
 * hands over each body as a view into the socket's read buffer: kept as it is, every view pins
 * its whole read buffer (tens of kilobytes, deliveries to other consumers included), and every
 * one is an object for the garbage collector to move. A copy here is a few hundred bytes.
 */
class Slabs {
  private slabs: Buffer[] = [];
  /** Number of slabs[0]. */
  private first = 0;
  private used = SLAB_BYTES;

  /** Copies `content` in (a string as UTF-8), and says where in `entry`. */
  add(content: Buffer | string, entry: Entry): void {
    const length = typeof content === 'string' ? Buffer.byteLength(content) : content.length;
    if (this.used + length > (this.slabs.at(-1)?.length ?? 0)) {
      this.slabs.push(Buffer.allocUnsafeSlow(Math.max(SLAB_BYTES, length)));
      this.used = 0;
    }
    const slab = this.slabs.at(-1) as Buffer;
    // TypedArray set: a memcpy, where Buffer#copy validates its arguments first.
    if (typeof content === 'string') slab.write(content, this.used);
    else slab.set(content, this.used);
    entry.slab = this.first + this.slabs.length - 1;
    entry.start = this.used;
    this.used += length;
    entry.end = this.used;
  }

  get(entry: Entry): Buffer {
    return (this.slabs[entry.slab - this.first] as Buffer).subarray(entry.start, entry.end);
  }

  /** Frees the slabs before number `slab`: no entry left is in them. */
  dropBefore(slab: number): void {
    const drop = Math.min(slab - this.first, this.slabs.length - 1);
    if (drop <= 0) return;
    this.slabs = this.slabs.slice(drop);
    this.first += drop;
  }
}

export interface LiveFeedOptions {
  /** Most events kept. */
  maxEvents: number;
  /** Oldest event kept, in ms. */
  maxAgeMs: number;
  /** What a client connecting without a cursor is sent first: the most recent events. */
  initialEvents?: number;
  /** Messages to open clients are written at most this often, many in one write. */
  flushMs?: number;
}

/** How far the publishers' clocks (in UUIDv7 ids) may disagree with arrival order. */
const CLOCK_MARGIN_MS = 2000;
/** A replay is written in chunks this size, each after the previous one left. */
const REPLAY_CHUNK = 500;
/** What an SSE id can carry as it is: no line break, nothing a header would refuse. */
const SAFE_ID = /^[\w.:-]{1,200}$/;

/** The time at the head of a UUIDv7, or NaN. */
export function uuidTime(id: string): number {
  const hex = id.replaceAll('-', '').slice(0, 12);
  return /^[0-9a-f]{12}$/i.test(hex) && id[14] === '7' ? Number.parseInt(hex, 16) : Number.NaN;
}

/** Turns a message body into the feed's shape; undefined if it is not a saga event. */
function toFeedEvent(content: Buffer): FeedEvent | undefined {
  // A viewer, not a consumer: the runner validates what it handles; here a bad body is skipped.
  try {
    const e = JSON.parse(content.toString('utf8')) as {
      id?: unknown;
      type?: unknown;
      occurredAt?: unknown;
      orderId?: unknown;
      data?: unknown;
    };
    if (typeof e.id !== 'string' || !isRoutingKey(e.type)) return undefined;
    return {
      eventId: e.id,
      ...(typeof e.orderId === 'string' ? { orderId: e.orderId } : {}),
      type: e.type,
      source: EMITTED_BY[e.type],
      at: typeof e.occurredAt === 'string' ? e.occurredAt : new Date().toISOString(),
      data: e.data ?? {},
    };
  } catch {
    return undefined;
  }
}

export class LiveFeed {
  /** The ring: entries[0] has sequence number `first`. */
  private entries: Entry[] = [];
  private first = 0;
  private readonly bodies = new Slabs();
  private readonly seqOf = new Map<string, number>();
  /** Each open client and the sequence number of the next entry it is to get. */
  private readonly clients = new Map<SseStream, { next: number }>();
  private flushTimer?: NodeJS.Timeout;
  private lastAgeCheck = 0;
  private readonly options: Required<LiveFeedOptions>;

  constructor(options: LiveFeedOptions) {
    this.options = { initialEvents: 1000, flushMs: 100, ...options };
  }

  /** One past the newest entry's sequence number. */
  private get end(): number {
    return this.first + this.entries.length;
  }

  /** Adds an event the service handled or emitted (see feedEverything). */
  pushEvent(event: SagaEvent, now = Date.now()): void {
    this.push({ routingKey: event.type, messageId: event.id, content: JSON.stringify(event) }, now);
  }

  /** Adds a watched message; one seen before (the outbox publishes at least once) is dropped. */
  push(message: FeedMessage, now = Date.now()): void {
    const id = message.messageId;
    // An id is a cursor, sent back in a header: one that could not be (a line break) is not kept.
    if (!id || !SAFE_ID.test(id) || this.seqOf.has(id)) return;
    this.seqOf.set(id, this.end);
    const entry: Entry = { id, receivedAt: now, slab: 0, start: 0, end: 0 };
    this.bodies.add(message.content, entry);
    this.entries.push(entry);
    this.evict(now);
    if (this.clients.size > 0 && !this.flushTimer) {
      this.flushTimer = setTimeout(() => this.flush(), this.options.flushMs);
      this.flushTimer.unref();
    }
  }

  /**
   * Keeps the last maxEvents (the ring may run an eighth over before it is cut: cutting one at a
   * time would copy it per event) and drops what is older than maxAgeMs (looked at once a second).
   */
  private evict(now: number): void {
    const { maxEvents, maxAgeMs } = this.options;
    const slack = Math.max(64, maxEvents >> 3);
    let drop = this.entries.length >= maxEvents + slack ? this.entries.length - maxEvents : 0;
    if (now - this.lastAgeCheck >= 1000) {
      this.lastAgeCheck = now;
      while (drop < this.entries.length && (this.entries[drop]?.receivedAt ?? now) < now - maxAgeMs) drop++;
    }
    if (drop === 0) return;
    for (const entry of this.entries.slice(0, drop)) this.seqOf.delete(entry.id);
    this.entries = this.entries.slice(drop);
    this.first += drop;
    this.bodies.dropBefore(this.entries[0]?.slab ?? Number.POSITIVE_INFINITY);
  }

  /** How many events it holds (for tests and the summary). */
  get size(): number {
    return this.entries.length;
  }

  /** The events after `cursor` (a Last-Event-ID), or the most recent ones without one. */
  since(cursor: string | undefined): FeedEvent[] {
    return this.range(this.startFor(cursor), this.end).flatMap((e) => {
      const event = toFeedEvent(this.bodies.get(e));
      return event ? [event] : [];
    });
  }

  /** Where a client with this cursor starts. */
  private startFor(cursor: string | undefined, now = Date.now()): number {
    const known = cursor === undefined ? undefined : this.seqOf.get(cursor);
    if (known !== undefined) return known + 1;
    const { maxAgeMs, initialEvents } = this.options;
    const time = cursor === undefined ? Number.NaN : uuidTime(cursor);
    if (Number.isNaN(time) || time < now - maxAgeMs - CLOCK_MARGIN_MS)
      return Math.max(this.first, this.end - initialEvents);
    const index = this.entries.findIndex((e) => uuidTime(e.id) >= time - CLOCK_MARGIN_MS);
    return index === -1 ? this.end : this.first + index;
  }

  private range(from: number, to: number): Entry[] {
    return this.entries.slice(Math.max(0, from - this.first), Math.max(0, to - this.first));
  }

  private textOf(entry: Entry): string {
    if (entry.text === undefined) {
      const event = toFeedEvent(this.bodies.get(entry));
      // formatMessage's shape, without its line splitting: JSON.stringify never writes a line break.
      entry.text = event ? `id: ${entry.id}\ndata: ${JSON.stringify(event)}\n\n` : '';
    }
    return entry.text;
  }

  /** Writes to each open client what it has not had yet, in one write. */
  private flush(): void {
    this.flushTimer = undefined;
    for (const [sse, client] of this.clients) {
      const entries = this.range(client.next, this.end);
      client.next = this.end;
      if (entries.length > 0) sse.sendFormatted(entries.map((e) => this.textOf(e)).join(''));
    }
  }

  /**
   * Serves one client: the events after `cursor` (its Last-Event-ID unless given; without one,
   * the most recent events), written in paced chunks, then every new one as it comes, until the
   * client or the server closes.
   */
  async serve(sse: SseStream, cursor = sse.lastEventId): Promise<void> {
    let next = this.startFor(cursor);
    // Caught up when nothing arrived during the last chunk's write; only then does flush take over.
    while (next < this.end && !sse.signal.aborted) {
      next = Math.max(next, this.first);
      const chunk = this.range(next, Math.min(this.end, next + REPLAY_CHUNK));
      next += chunk.length;
      const text = chunk.map((e) => this.textOf(e)).join('');
      if (text) sse.sendFormatted(text);
      await sse.drained();
    }
    if (sse.signal.aborted) return;
    this.clients.set(sse, { next });
    await sse.closed;
    this.clients.delete(sse);
  }

  /** The StreamReply of a route that serves this feed. */
  reply(options: { heartbeatMs?: number; cursor?: string } = {}): StreamReply {
    const { heartbeatMs, cursor } = options;
    return {
      status: 200,
      ...(heartbeatMs === undefined ? {} : { heartbeatMs }),
      // A cursor in the URL is for a client that opens a new stream itself (EventSource sends
      // Last-Event-ID only on its own reconnections); the header wins when both are there.
      stream: (sse) => this.serve(sse, sse.lastEventId ?? cursor),
    };
  }

  /** Ends the flush timer (the streams themselves are closed by the HTTP server). */
  close(): void {
    clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
  }
}

/** How often an instance asks the broker whether other instances share its queue. */
const PEERS_POLL_MS = 2000;
/**
 * How long an instance keeps watching everything after its last peer went: a peer that stops
 * still publishes what its outbox holds (for up to SHUTDOWN_TIMEOUT_MS, 8 s by default).
 */
const PEERS_LINGER_MS = 10_000;

/** What feedEverything needs of the service (common/service.ts's App, and its definition). */
export interface FeedSources {
  broker: Pick<Broker, 'watch' | 'rewatch' | 'otherConsumers'>;
  onCommit(hook: (emitted: SagaEvent[], handled: SagaEvent[]) => void): void;
  every(ms: number, task: () => Promise<unknown>): unknown;
  /** The routing keys the service's runner handles or emits. */
  own: readonly RoutingKey[];
  log: Logger;
}

/**
 * Feeds `feed` with every event on the exchange, each event crossing the broker once more only
 * when it must. What this instance's runner handles and emits enters at each commit, decoded
 * already. While the instance is the only consumer of its queue, the light subscriber sees the
 * rest only (for order-creation: stock.low). Once other instances share the queue, each handling
 * a share of it, the subscriber sees everything (`#`): every instance's feed holds the same
 * events. The broker is asked every PEERS_POLL_MS, so for that long after another instance
 * starts, this one's feed lacks what the other handles.
 */
export function feedEverything(feed: LiveFeed, sources: FeedSources): void {
  const { broker, own, log } = sources;
  const rest = ROUTING_KEYS.filter((key) => !own.includes(key));
  // Watching everything until the broker says it is alone: it may not be.
  let sharedAt = Number.NEGATIVE_INFINITY;
  sources.onCommit((emitted, handled) => {
    // Causes before effects, as the broker would show them.
    for (const event of handled) feed.pushEvent(event);
    for (const event of emitted) feed.pushEvent(event);
  });
  broker
    .watch((message) => feed.push(message), ['#'])
    .catch((error) => log.error({ err: error }, 'watching the exchange failed'));
  sources.every(PEERS_POLL_MS, async () => {
    const others = await broker.otherConsumers();
    if (others === undefined) return;
    if (others > 0) sharedAt = Date.now();
    await broker.rewatch(Date.now() - sharedAt < PEERS_LINGER_MS ? ['#'] : rest);
  });
}

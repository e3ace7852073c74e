import { describe, expect, it } from 'vitest';
import { newId } from '../../common/ids.ts';
import { LiveFeed, uuidTime } from '../../common/live-feed.ts';

/** A watched message as the broker hands it over: an envelope with messageId = its id. */
function aMessage(type = 'inventory.reserved', id = newId()) {
  const orderId = newId();
  const body = { id, type, version: 1, occurredAt: new Date().toISOString(), orderId, data: { orderId } };
  return { routingKey: type, messageId: id, content: Buffer.from(JSON.stringify(body)) };
}

describe('the live feed: a bounded ring of saga events', () => {
  it('keeps at most maxEvents (cut an eighth over, not one by one), the newest ones', () => {
    const feed = new LiveFeed({ maxEvents: 1000, maxAgeMs: 600_000, initialEvents: 10_000 });
    const ids = Array.from({ length: 3000 }, () => {
      const message = aMessage();
      feed.push(message);
      return message.messageId;
    });

    expect(feed.size).toBeGreaterThanOrEqual(1000);
    expect(feed.size).toBeLessThanOrEqual(1000 + 125);
    expect(feed.since(undefined).map((e) => e.eventId)).toEqual(ids.slice(-feed.size));
  });

  it('drops what is older than maxAgeMs', () => {
    const feed = new LiveFeed({ maxEvents: 1000, maxAgeMs: 60_000 });
    const start = Date.now();
    for (let i = 0; i < 10; i++) feed.push(aMessage(), start);

    const late = aMessage();
    feed.push(late, start + 61_000);

    expect(feed.since(undefined).map((e) => e.eventId)).toEqual([late.messageId]);
  });

  it('keeps each body as it came, one larger than its storage blocks too', () => {
    const feed = new LiveFeed({ maxEvents: 100, maxAgeMs: 60_000 });
    const small = aMessage();
    const id = newId();
    const large = {
      routingKey: 'stock.low',
      messageId: id,
      content: Buffer.from(
        JSON.stringify({
          id,
          type: 'stock.low',
          version: 1,
          occurredAt: new Date().toISOString(),
          data: { note: 'é'.repeat(200_000) },
        }),
      ),
    };

    feed.push(small);
    feed.push(large);
    feed.push(aMessage());

    const [first, second] = feed.since(undefined);
    expect(first?.eventId).toBe(small.messageId);
    expect(second?.data).toEqual({ note: 'é'.repeat(200_000) });
  });

  it('a message seen twice (the outbox publishes at least once) is kept once', () => {
    const feed = new LiveFeed({ maxEvents: 100, maxAgeMs: 60_000 });
    const message = aMessage();

    feed.push(message);
    feed.push(message);

    expect(feed.size).toBe(1);
  });

  it('after a known cursor: exactly what came after it', () => {
    const feed = new LiveFeed({ maxEvents: 100, maxAgeMs: 60_000 });
    const messages = Array.from({ length: 5 }, () => aMessage());
    for (const m of messages) feed.push(m);

    expect(feed.since(messages[1]?.messageId).map((e) => e.eventId)).toEqual(
      messages.slice(2).map((m) => m.messageId),
    );
  });

  it('shapes each event as { eventId, orderId, type, source, at, data }, and skips what is not a saga event', () => {
    const feed = new LiveFeed({ maxEvents: 100, maxAgeMs: 60_000 });
    const message = aMessage('replenishment.cancelled');
    feed.push(message);
    feed.push({ routingKey: 'x', messageId: newId(), content: Buffer.from('not json') });
    feed.push({ routingKey: 'x', messageId: 'bad\nid', content: message.content });

    const [event, ...rest] = feed.since(undefined);

    expect(rest).toEqual([]);
    expect(event).toEqual({
      eventId: message.messageId,
      orderId: expect.any(String),
      type: 'replenishment.cancelled',
      source: 'replenishment',
      at: expect.any(String),
      data: { orderId: event?.orderId },
    });
  });

  it('reads the time at the head of a UUIDv7, and nothing from another kind of id', () => {
    const before = Date.now();
    const time = uuidTime(newId());

    expect(time).toBeGreaterThanOrEqual(before);
    expect(time).toBeLessThanOrEqual(Date.now());
    expect(uuidTime('1b4e28ba-2fa1-41d2-883f-0016d3cca427')).toBeNaN();
  });
});

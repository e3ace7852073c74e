import { describe, expect, it } from 'vitest';
import { childTraceparent, newId } from '../../common/ids.ts';

const UUID_V7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

describe('ids', () => {
  it('are UUIDv7 that start with the time they were made', () => {
    const before = Date.now();
    const id = newId();
    const after = Date.now();

    expect(id).toMatch(UUID_V7);
    const ms = Number.parseInt(id.replaceAll('-', '').slice(0, 12), 16);
    expect(ms).toBeGreaterThanOrEqual(before);
    expect(ms).toBeLessThanOrEqual(after);
  });

  it('made in a later millisecond sort after, and never repeat', async () => {
    const first = Array.from({ length: 1000 }, newId);
    await new Promise((r) => setTimeout(r, 2));
    const later = Array.from({ length: 1000 }, newId);

    expect(new Set([...first, ...later]).size).toBe(2000);
    for (const id of later) expect(id > (first.at(-1) ?? '')).toBe(true);
  });
});

describe('traceparent', () => {
  const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-01$/;

  it('starts a trace, or continues the trace of its parent with a span of its own', () => {
    const root = childTraceparent();
    const child = childTraceparent(root);

    const [, rootTrace, rootSpan] = TRACEPARENT.exec(root) ?? [];
    const [, childTrace, childSpan] = TRACEPARENT.exec(child) ?? [];
    expect(rootTrace).toBeDefined();
    expect(childTrace).toBe(rootTrace);
    expect(childSpan).not.toBe(rootSpan);
    expect(childTraceparent(root).slice(0, 36)).toBe(root.slice(0, 36));
  });

  it('starts a new trace when the parent is not a traceparent', () => {
    expect(childTraceparent('garbage')).toMatch(TRACEPARENT);
    expect(childTraceparent('garbage').slice(3, 35)).not.toBe(childTraceparent('garbage').slice(3, 35));
  });
});

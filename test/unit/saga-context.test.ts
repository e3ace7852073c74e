/** The one stored form of a saga context: what goes into a `context` column and what comes back. */
import { describe, expect, it } from 'vitest';
import { readContext, storeContext } from '../../common/saga-context.ts';

describe('a stored saga context', () => {
  it('reads back as the context that was stored', () => {
    const context = {
      orderId: '0198c2a0-0000-7000-8000-000000000001',
      traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
      causationId: '0198c2a0-0000-7000-8000-000000000002',
      failAt: 'replenishment' as const,
    };

    expect(readContext(storeContext(context))).toEqual(context);
  });

  it('leaves the fields a context lacks out of its JSON', () => {
    expect(JSON.parse(storeContext({ orderId: 'o-1', traceparent: undefined }))).toEqual({ orderId: 'o-1' });
  });

  it('a column with no context kept reads as the empty context', () => {
    expect(readContext(null)).toEqual({});
  });

  it('keeps nothing but the saga context, whatever else the object carries', () => {
    const handled = { orderId: 'o-1', log: 'not a saga field' } as unknown as Parameters<
      typeof storeContext
    >[0];

    expect(readContext(storeContext(handled))).toEqual({ orderId: 'o-1' });
  });
});

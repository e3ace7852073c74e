/** The wire format of a Server-Sent Events message. */
import { describe, expect, it } from 'vitest';
import { formatMessage } from '../../common/sse.ts';

describe('an event stream message', () => {
  it('is its id, its name and its data as JSON, then the blank line that dispatches it', () => {
    expect(formatMessage({ id: '7', event: 'saga', data: { orderId: 'o-1' } })).toBe(
      'id: 7\nevent: saga\ndata: {"orderId":"o-1"}\n\n',
    );
  });

  it('sends text as it is, one data line per line', () => {
    expect(formatMessage({ data: 'one\r\ntwo\nthree' })).toBe('data: one\ndata: two\ndata: three\n\n');
  });

  it('refuses an id or a name with a line break, which would forge a field of its own', () => {
    expect(() => formatMessage({ id: '7\ndata: forged', data: 1 })).toThrow('line break');
    expect(() => formatMessage({ event: 'a\rb', data: 1 })).toThrow('line break');
  });
});

/**
 * `--dashboard`: one dashboard open from the warm-up on, as a browser holds it: the event
 * stream (`GET /dashboard/stream`) read to the end of every message, and `GET /dashboard/state`
 * polled every 2 s (the queues, from the management API). What it costs the services shows in
 * their CPU ms per saga and in sagas/s, against a run without it.
 */
import { request } from 'node:http';

export interface OpenDashboard {
  /** Closes it; resolves with what it received. */
  close(): { messages: number; bytes: number; statePolls: number };
}

export function openDashboard(baseUrl: string): OpenDashboard {
  const url = new URL('/dashboard/stream', baseUrl);
  let messages = 0;
  let bytes = 0;
  let statePolls = 0;
  let tail = '';
  const req = request(url, (res) => {
    res.setEncoding('utf8');
    res.on('data', (chunk: string) => {
      bytes += chunk.length;
      // A message ends with a blank line; a comment (heartbeat) starts with ':'.
      const text = tail + chunk;
      const blocks = text.split('\n\n');
      tail = blocks.pop() ?? '';
      for (const block of blocks) if (block.startsWith('id: ')) messages++;
    });
  });
  req.on('error', () => {});
  req.end();
  const poll = setInterval(() => {
    statePolls++;
    fetch(new URL('/dashboard/state', baseUrl))
      .then((r) => r.arrayBuffer())
      .catch(() => {});
  }, 2000);
  return {
    close() {
      clearInterval(poll);
      req.destroy();
      return { messages, bytes, statePolls };
    },
  };
}

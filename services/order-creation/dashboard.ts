/**
 * The live dashboard (`GET /dashboard`) and what it reads: the stream of saga events
 * (`GET /dashboard/stream`, from this instance's LiveFeed). Outside the OpenAPI document: a page
 * for people, not part of the order API.
 */
import type { HttpServer } from '../../common/http.ts';
import type { LiveFeed } from '../../common/live-feed.ts';

export interface DashboardParts {
  feed: LiveFeed;
}

export function addDashboard(http: HttpServer, { feed }: DashboardParts): void {
  const undocumented = { documented: false };
  http.route('get', '/dashboard/stream', () => feed.reply(), undocumented);
}

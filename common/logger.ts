import { type Logger, pino } from 'pino';
import { logFields } from './telemetry.ts';

export type { Logger };

/**
 * JSON lines on stdout; `npm start` prefixes and prettifies them per service. A line written while
 * a message or a request is handled carries its `trace_id`, `span_id`, `orderId` and `messageId`.
 */
export function createLogger(service: string, level: string): Logger {
  return pino({
    name: service,
    level,
    base: { service },
    timestamp: pino.stdTimeFunctions.isoTime,
    mixin: logFields,
  });
}

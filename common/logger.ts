import { type Logger, pino } from 'pino';

export type { Logger };

/** JSON lines on stdout; `npm start` prefixes and prettifies them per service. */
export function createLogger(service: string, level: string): Logger {
  return pino({ name: service, level, base: { service }, timestamp: pino.stdTimeFunctions.isoTime });
}

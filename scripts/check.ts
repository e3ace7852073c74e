/**
 * `npm run check`: checks the saga's invariants against a running system through its read APIs
 * and prints each violation. Exit code 0 when clean, 1 on any violation, 2 when it cannot check.
 *
 *   npm run check -- [--orders URL] [--inventory URL] [--shipment URL] [--wait MS] [--grace MS]
 *
 * URLs default to 127.0.0.1 on the configured ports. `--wait` first polls until every order is
 * terminal and gives lagging compensations the rest of that time (handy right after a load); `--grace` is how late a cancellation may be (default 5000).
 */
import { parseArgs } from 'node:util';
import { loadConfig } from '../common/config.ts';
import { checkUntilClean, waitUntilSettled } from './consistency.ts';

const USAGE =
  'usage: npm run check -- [--orders URL] [--inventory URL] [--shipment URL] [--wait MS] [--grace MS]';

function exitUnchecked(message: string): never {
  console.error(message);
  process.exit(2);
}

function milliseconds(flag: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (!/^\d+$/.test(value)) throw new Error(`--${flag} must be a number of milliseconds, not "${value}"`);
  return Number(value);
}

/** The URLs and timings asked for on the command line; throws on a bad flag or configuration. */
function readArguments() {
  const { values } = parseArgs({
    options: {
      orders: { type: 'string' },
      inventory: { type: 'string' },
      shipment: { type: 'string' },
      wait: { type: 'string' },
      grace: { type: 'string' },
    },
  });
  const { ports } = loadConfig('order-creation');
  return {
    urls: {
      orders: values.orders ?? `http://127.0.0.1:${ports['order-creation']}`,
      inventory: values.inventory ?? `http://127.0.0.1:${ports.inventory}`,
      shipment: values.shipment ?? `http://127.0.0.1:${ports.shipment}`,
    },
    waitMs: milliseconds('wait', values.wait, 0),
    deadlineGraceMs: milliseconds('grace', values.grace, 5000),
  };
}

let cli: ReturnType<typeof readArguments>;
try {
  cli = readArguments();
} catch (error) {
  exitUnchecked(`${(error as Error).message}\n${USAGE}`);
}
const { urls, waitMs, deadlineGraceMs } = cli;

try {
  const started = Date.now();
  if (waitMs > 0 && !(await waitUntilSettled(urls.orders, waitMs))) {
    console.log(`Some orders are still open after ${waitMs} ms; checking anyway.`);
  }
  // With --wait, a violation must also outlast the rest of the wait (compensations landing).
  const report = await checkUntilClean(urls, Math.max(0, waitMs - (Date.now() - started)), {
    deadlineGraceMs,
  });
  console.log(
    `${report.orders} orders (${report.terminal} terminal), ${report.skus} SKUs, ${report.shipments} shipments`,
  );
  for (const v of report.violations) console.log(`VIOLATION ${v.kind} ${v.subject}: ${v.detail}`);
  console.log(
    report.violations.length === 0
      ? 'OK: every invariant holds.'
      : `${report.violations.length} violation(s).`,
  );
  process.exitCode = report.violations.length === 0 ? 0 : 1;
} catch (error) {
  exitUnchecked(`Cannot check: ${(error as Error).message}`);
}

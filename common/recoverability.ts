/**
 * Recoverability: what becomes of a message whose handling failed. A pure policy of the error and
 * the attempt; the transport carries out its answer (a copy to a delay queue, or to the dead-letter
 * queue).
 */
import type { Config } from './config.ts';
import { PermanentError } from './errors.ts';

/** How often a failing message is tried, and how long it waits before each retry. */
export interface RetryPolicy {
  /** Attempts in all, the first delivery included. */
  attempts: number;
  /** The delay of each retry tier, in ms: tier i waits about delaysMs[i]. */
  delaysMs: readonly number[];
}

/** Why a message is parked: what is wrong with it, or that every retry failed too. */
export type ParkReason = PermanentError['reason'] | 'retries-exhausted';

/** Try the message again from the tier's delay queue, or park it in the dead-letter queue. */
export type Recovery =
  | { action: 'retry'; tier: number; delayMs: number }
  | { action: 'park'; reason: ParkReason };

/** The delay of each retry tier: base, 2×base, 4×base, … one tier per retry. */
export function retryDelays(config: Pick<Config, 'retryAttempts' | 'retryBaseDelayMs'>): number[] {
  return Array.from({ length: config.retryAttempts - 1 }, (_, i) => config.retryBaseDelayMs * 2 ** i);
}

/** The retry policy the configuration asks for. */
export function retryPolicy(config: Pick<Config, 'retryAttempts' | 'retryBaseDelayMs'>): RetryPolicy {
  return { attempts: config.retryAttempts, delaysMs: retryDelays(config) };
}

/**
 * What to do after `attempt` (1 for the first delivery) failed with `error`. A PermanentError is
 * parked at once with its reason: no retry can fix it. Anything else is retried, each time from
 * the next tier, until the last attempt fails. `delayMs` is the tier's nominal delay: the transport
 * spreads the copies around it (jitter), bounded by the tier queue's own TTL.
 */
export function recoveryFor(error: unknown, attempt: number, policy: RetryPolicy): Recovery {
  if (error instanceof PermanentError) return { action: 'park', reason: error.reason };
  if (attempt >= policy.attempts) return { action: 'park', reason: 'retries-exhausted' };
  // A policy with fewer tiers than retries waits in its last tier for the rest.
  const tier = Math.min(attempt - 1, policy.delaysMs.length - 1);
  return { action: 'retry', tier, delayMs: policy.delaysMs[tier] ?? 0 };
}

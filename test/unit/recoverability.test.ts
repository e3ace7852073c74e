import { describe, expect, it } from 'vitest';
import { PermanentError } from '../../common/errors.ts';
import { recoveryFor, retryDelays, retryPolicy } from '../../common/recoverability.ts';

const fourAttempts = retryPolicy({ retryAttempts: 4, retryBaseDelayMs: 100 });

describe('the retry policy', () => {
  it('doubles the delay from one tier to the next, one tier per retry', () => {
    expect(retryDelays({ retryAttempts: 5, retryBaseDelayMs: 250 })).toEqual([250, 500, 1000, 2000]);
    expect(retryDelays({ retryAttempts: 1, retryBaseDelayMs: 250 })).toEqual([]);
  });

  it('retries a failed first attempt from the first tier', () => {
    expect(recoveryFor(new Error('database is locked'), 1, fourAttempts)).toEqual({
      action: 'retry',
      tier: 0,
      delayMs: 100,
    });
  });

  it('retries each later attempt from the next tier, with twice the delay', () => {
    expect(recoveryFor(new Error('again'), 2, fourAttempts)).toEqual({
      action: 'retry',
      tier: 1,
      delayMs: 200,
    });
    expect(recoveryFor(new Error('again'), 3, fourAttempts)).toEqual({
      action: 'retry',
      tier: 2,
      delayMs: 400,
    });
  });

  it('parks the message once its last attempt has failed', () => {
    expect(recoveryFor(new Error('still failing'), 4, fourAttempts)).toEqual({
      action: 'park',
      reason: 'retries-exhausted',
    });
    // Counted under a policy that allowed more attempts than this one does.
    expect(recoveryFor(new Error('still failing'), 9, fourAttempts)).toEqual({
      action: 'park',
      reason: 'retries-exhausted',
    });
  });

  it('never retries a message that only one attempt is allowed', () => {
    const once = retryPolicy({ retryAttempts: 1, retryBaseDelayMs: 100 });

    expect(recoveryFor(new Error('failed'), 1, once)).toEqual({
      action: 'park',
      reason: 'retries-exhausted',
    });
  });

  it.each(['malformed-json', 'unknown-routing-key', 'schema-invalid', 'rejected'] as const)(
    'parks a %s message at once, with that reason, whatever its attempt',
    (reason) => {
      const error = new PermanentError(reason, 'no retry can fix this');

      expect(recoveryFor(error, 1, fourAttempts)).toEqual({ action: 'park', reason });
      expect(recoveryFor(error, 4, fourAttempts)).toEqual({ action: 'park', reason });
    },
  );

  it('retries whatever a handler throws that is not an Error', () => {
    expect(recoveryFor('a string', 1, fourAttempts)).toMatchObject({ action: 'retry', tier: 0 });
    expect(recoveryFor(undefined, 1, fourAttempts)).toMatchObject({ action: 'retry', tier: 0 });
  });

  it('waits in the last tier when a policy has fewer tiers than retries', () => {
    const short = { attempts: 5, delaysMs: [100, 200] };

    expect(recoveryFor(new Error('again'), 4, short)).toEqual({ action: 'retry', tier: 1, delayMs: 200 });
  });
});

/** The configuration accepts what its messages say it accepts, and nothing else. */
import { describe, expect, it } from 'vitest';
import { CONFIG_KEYS, ConfigError, type ConfigKey, loadConfig } from '../../common/config.ts';

const BOOLEAN_KEYS = (Object.keys(CONFIG_KEYS) as ConfigKey[]).filter(
  (key) => CONFIG_KEYS[key].kind === 'bool',
);

/** The problems loadConfig reports for `env`, or [] when it accepts it. */
function problemsWith(env: NodeJS.ProcessEnv): string[] {
  try {
    loadConfig('order-creation', env);
    return [];
  } catch (error) {
    if (error instanceof ConfigError) return error.problems;
    throw error;
  }
}

describe('a boolean setting', () => {
  it('exists (FAULT_INJECTION at least)', () => {
    expect(BOOLEAN_KEYS).toContain('FAULT_INJECTION');
  });

  describe.each(BOOLEAN_KEYS)('%s', (key) => {
    it.each(['true', 'false'])('accepts %s', (value) => {
      expect(problemsWith({ [key]: value })).toEqual([]);
    });

    it.each(['no', 'yes', '0', '1', 'TRUE', 'False', 'on', ''])(
      'refuses "%s", with the message that says what it accepts',
      (value) => {
        expect(problemsWith({ [key]: value })).toEqual([`${key}="${value}" must be true or false`]);
      },
    );
  });

  it('FAULT_INJECTION=false turns fault injection off, and true on', () => {
    expect(loadConfig('order-creation', { FAULT_INJECTION: 'false' }).faultInjection).toBe(false);
    expect(loadConfig('order-creation', { FAULT_INJECTION: 'true' }).faultInjection).toBe(true);
  });

  it('FAULT_INJECTION defaults to true, and to false when NODE_ENV=production', () => {
    expect(loadConfig('order-creation', {}).faultInjection).toBe(true);
    expect(loadConfig('order-creation', { NODE_ENV: 'production' }).faultInjection).toBe(false);
  });
});

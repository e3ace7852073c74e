/** The configuration accepts what its messages say it accepts, and nothing else. */
import { describe, expect, it } from 'vitest';
import { CONFIG_KEYS, ConfigError, type ConfigKey, loadConfig, redactUrl } from '../../common/config.ts';
import { DatabaseUnreachableError } from '../../common/db.ts';

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

describe('AMQP_URL', () => {
  it('takes the nodes of a cluster, comma-separated, in order', () => {
    const config = loadConfig('order-creation', {
      AMQP_URL: 'amqp://a:pa@node1:5672, amqp://b:pb@node2:5673/vhost,amqps://c:pc@node3',
    });
    expect(config.amqpUrls).toEqual([
      'amqp://a:pa@node1:5672',
      'amqp://b:pb@node2:5673/vhost',
      'amqps://c:pc@node3',
    ]);
  });

  it.each([
    ['amqp://guest:guest@127.0.0.1:5672,amqp//guest:s3cret@node2:5672', 'amqp//guest:***@node2:5672'],
    ['amqp://guest:guest@127.0.0.1:5672,http://guest:s3cret@node2', 'http://guest:***@node2'],
    ['amqp://guest:guest@127.0.0.1:5672,', ''],
    ['amqp://guest:s3cret@:5672', 'amqp://guest:***@:5672'],
  ])('refuses %s at start, naming the malformed URL without its password', (value, named) => {
    const problems = problemsWith({ AMQP_URL: value });
    expect(problems).toHaveLength(1);
    expect(problems[0]).toContain(`AMQP_URL has "${named}"`);
    expect(problems[0]).not.toContain('s3cret');
  });
});

describe('DATABASE_URL', () => {
  const NOT_A_URL = 'is not a URL (postgres://user:password@host:5432/database)';
  it.each([
    ['postgres://saga:s3cret@db:99999/saga', 'postgres://saga:***@db:99999/saga', NOT_A_URL],
    ['postgres://saga:s3cret@/saga', 'postgres://saga:***@/saga', NOT_A_URL],
    ['mysql://saga:s3cret@db/saga', 'mysql://saga:***@db/saga', 'must be a postgres:// or postgresql:// URL'],
    ['saga:s3cret@db/saga', 'saga:***@db/saga', 'must be a postgres:// or postgresql:// URL'],
    // A password of any characters, even those that end a URL of a list.
    ['postgres://saga:s3 cret@db:99999/saga', 'postgres://saga:***@db:99999/saga', NOT_A_URL],
    ['postgres://saga:s3,cret@db:99999/saga', 'postgres://saga:***@db:99999/saga', NOT_A_URL],
    ['postgres://saga:s3@cret@db:99999/saga', 'postgres://saga:***@db:99999/saga', NOT_A_URL],
  ])('refuses %s at start, naming it without its password', (value, named, problem) => {
    expect(problemsWith({ DATABASE_URL: value })).toEqual([`DATABASE_URL="${named}" ${problem}`]);
  });

  it('accepts a postgres:// or postgresql:// URL; empty means SQLite', () => {
    expect(loadConfig('inventory', { DATABASE_URL: 'postgresql://saga:s3cret@db/saga' }).databaseUrl).toBe(
      'postgresql://saga:s3cret@db/saga',
    );
    expect(loadConfig('inventory', { DATABASE_URL: '' }).databaseUrl).toBeUndefined();
  });

  it.each(['s3cret', 's3 cret', 's3,cret', 's3@cret'])(
    'is named without its password (%s) when the database cannot be reached',
    (password) => {
      const url = `postgres://saga:${password}@db:5432/saga`;
      const { message } = new DatabaseUnreachableError(url, new Error('connect ECONNREFUSED'), 1000);
      expect(message).toBe(
        'cannot reach PostgreSQL at postgres://saga:***@db:5432/saga (tried for 1000 ms): connect ECONNREFUSED',
      );
    },
  );
});

describe('redactUrl', () => {
  it('hides the password of every URL of a list, and of URLs inside a message', () => {
    const text = redactUrl(
      'amqp://guest:guest@node1:5672,amqp://admin:s3cret@node2:5673 (failed: amqp://x:y@node3)',
    );
    expect(text).toBe('amqp://guest:***@node1:5672,amqp://admin:***@node2:5673 (failed: amqp://x:***@node3)');
  });
});

describe('INSTANCE_NAME', () => {
  it('names the instance; by default its host and process id', () => {
    expect(loadConfig('inventory', { INSTANCE_NAME: 'inventory-b' }).instance).toBe('inventory-b');
    expect(loadConfig('inventory', {}).instance).toMatch(new RegExp(`:${process.pid}$`));
  });
});

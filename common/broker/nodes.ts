/**
 * The nodes of one RabbitMQ cluster (or the one broker), as AMQP_URL lists them. A service is
 * connected to one at a time; when it loses that one, or cannot reach it, it tries the next.
 */
import { redactUrl } from '../config.ts';

/** The fields amqplib reads from an address given as an object instead of a URL string. */
interface Address {
  protocol: string;
  hostname: string;
  port: number | undefined;
  username: string;
  password: string;
  vhost: string;
  heartbeat: number | undefined;
  frameMax: number | undefined;
  channelMax: number | undefined;
  locale: string | undefined;
}

function addressOf(url: string): Address {
  const parts = new URL(url);
  const query = parts.searchParams;
  const number = (name: string) => (query.has(name) ? Number(query.get(name)) : undefined);
  return {
    protocol: parts.protocol.replace(/:$/, ''),
    hostname: parts.hostname.replace(/^\[|\]$/g, ''),
    port: parts.port ? Number(parts.port) : undefined,
    // Both given as in the URL, so that amqplib's guest/guest default applies only where the URL has none.
    username: decodeURIComponent(parts.username) || (parts.password ? '' : 'guest'),
    password: decodeURIComponent(parts.password) || (parts.username ? '' : 'guest'),
    vhost: parts.pathname.length > 1 ? decodeURIComponent(parts.pathname.slice(1)) : '/',
    heartbeat: number('heartbeat'),
    frameMax: number('frameMax'),
    channelMax: number('channelMax'),
    locale: query.get('locale') ?? undefined,
  };
}

export class BrokerNodes {
  private readonly urls: readonly string[];
  private readonly addresses: readonly Address[];
  private index = 0;

  constructor(urls: readonly string[]) {
    this.urls = urls;
    this.addresses = urls.map(addressOf);
  }

  /**
   * What to give amqplib's recovering connection as its address. Its recovery dials the same
   * address at every attempt; this object answers with the current node's fields each time it is
   * read, so after `next()` the following attempt dials the next node.
   */
  get address(): Address {
    const field = <K extends keyof Address>(key: K) => ({
      enumerable: true,
      get: () => this.addresses[this.index]?.[key],
    });
    return Object.defineProperties({} as Address, {
      protocol: field('protocol'),
      hostname: field('hostname'),
      port: field('port'),
      username: field('username'),
      password: field('password'),
      vhost: field('vhost'),
      heartbeat: field('heartbeat'),
      frameMax: field('frameMax'),
      channelMax: field('channelMax'),
      locale: field('locale'),
    });
  }

  /** The node dialled now, its password hidden. */
  get current(): string {
    return redactUrl(this.urls[this.index] ?? '');
  }

  /** Every node, passwords hidden. */
  get all(): string {
    return redactUrl(this.urls.join(','));
  }

  get count(): number {
    return this.urls.length;
  }

  /** Moves on to the next node (round the list): the one to dial after this one failed or was lost. */
  next(): void {
    this.index = (this.index + 1) % this.urls.length;
  }
}

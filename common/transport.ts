/**
 * What the runner needs of a message transport, whatever the broker: deliveries in, and a way to
 * settle each one. The transport settles; the runner never acknowledges a message itself. RabbitMQ
 * is one implementation (`broker/`).
 */

/** A message as delivered to this service. */
export interface Delivery {
  /** The body, as published. */
  readonly content: Buffer;
  /** Its headers, the saga context among them (see `headers.ts`). */
  readonly headers: Readonly<Record<string, unknown>>;
  readonly messageId: string | undefined;
  /** The type its publisher declared (in the saga, the routing key), if it declared one. */
  readonly type: string | undefined;
  /** The routing key it was first published with: a retried copy keeps it. */
  readonly routingKey: string;
  /** Delivered before and never settled (a crash, a lost connection): it may have been handled. */
  readonly redelivered: boolean;
  /** Which attempt at handling it this is: 1 for the first delivery, 2 for the first retry, … */
  readonly attempt: number;
}

/** How the transport settles the deliveries it handed out. Each is settled once. */
export interface Settlement {
  /** Their outcome is committed: the broker may forget them. */
  handled(deliveries: readonly Delivery[]): void;
  /**
   * Schedules another attempt in about `delayMs`, from the retry tier `tier`; resolves once the
   * delivery is settled. If the retry cannot be scheduled, the delivery goes back to its queue.
   */
  retry(delivery: Delivery, tier: number, delayMs: number): Promise<void>;
  /**
   * Parks the message, unchanged, in the dead-letter queue with why (`reason`, and `error` in
   * words); resolves once the delivery is settled.
   */
  park(delivery: Delivery, reason: string, error: string): Promise<void>;
}

/** A source of deliveries for one service's queue, and their settlement. */
export interface Transport {
  /** The queue it consumes: the inbox records handled messages under its name. */
  readonly queue: string;
  readonly settlement: Settlement;
  /** Hands every delivery to `listener`, from now on and again after each reconnect. */
  consume(listener: (delivery: Delivery) => void): Promise<void>;
  /** No more deliveries; those handed out can still be settled. */
  stopConsuming(): Promise<void>;
}

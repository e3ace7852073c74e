/**
 * Group commit: the instance's one writer. Work waiting to be written (deliveries, HTTP requests,
 * timers alike) runs a burst at a time in one transaction: one commit instead of one per unit,
 * the main cost under load. A unit's failure never touches another unit's outcome: if anything in
 * a burst fails, the burst rolls back and each of its units runs again alone.
 *
 * On PostgreSQL other instances write at the same time. Each burst is SERIALIZABLE: the handlers,
 * written as if they were alone, stay right (no oversold stock, no lost update), and the database
 * aborts whichever transaction would break that. Such an abort, or a deadlock, is not the work's
 * fault: the burst runs again at once. A database that cannot be reached (a restart) is waited
 * for, the deliveries held unacknowledged, rather than spending their retries.
 *
 * The instances' bursts also take turns (see `takeTurn`): two bursts at once on one service's
 * tables abort each other far more often than not, on the rows every order touches (a SKU's
 * stock) and on SERIALIZABLE's page-wide read locks, and a burst run again costs more than a
 * burst that waited. The instances still share the rest: decoding, handlers, HTTP, publishing.
 */
import { sql } from 'kysely';
import { type Db, isPostgres, retryable, type Tx } from './db.ts';
import type { SagaEvent } from './events.ts';

/** One unit of work for the writer, applied in the transaction of the burst it falls in. */
export interface Unit<T> {
  /** Applies the unit in the burst's transaction: the events it wrote, or undefined if it had nothing to do. */
  apply: (trx: Tx<T>) => Promise<SagaEvent[] | undefined>;
  /** After the transaction that applied it committed, and `onCommit` heard of it. */
  committed: () => void;
  /** When it failed alone, in a transaction of its own (rolled back); the writer waits for it. */
  failed: (error: unknown) => Promise<void>;
}

/** Most units in one transaction (the prefetch bounds how many deliveries are waiting). */
const BURST = 64;
/** Runs of a burst that PostgreSQL aborted (serialization failure, deadlock) before it is split. */
const CONFLICT_RUNS = 3;
/** Runs of a lone unit so aborted before it counts as failed (then retried from the queues). */
const LONE_CONFLICT_RUNS = 20;
/** How long a burst waits for a database that cannot be reached before it counts as failed. */
const UNAVAILABLE_WAIT_MS = 60_000;

/**
 * Why a transaction runs again: PostgreSQL aborted it (`conflict`), it could not reach the
 * database (`unavailable`), or a burst failed and its units run alone (`split`).
 */
export type Rerun = 'conflict' | 'unavailable' | 'split';

/** Runs units a burst at a time, one transaction each burst, one burst at a time. */
export class GroupCommit<T, U extends Unit<T> = Unit<T>> {
  private readonly pending: U[] = [];
  private working?: Promise<void>;
  private readonly db: Db<T>;

  private readonly onCommit: (burst: readonly U[], events: SagaEvent[]) => void;
  private readonly serializable: boolean;

  private readonly onRerun?: (reason: Rerun, units: number) => void;

  /**
   * `onCommit` hears of each committed burst, with every event its units wrote, before its units
   * do; `onRerun` of each transaction run again (how many units it held, and why).
   */
  constructor(
    db: Db<T>,
    onCommit: (burst: readonly U[], events: SagaEvent[]) => void,
    onRerun?: (reason: Rerun, units: number) => void,
  ) {
    this.db = db;
    this.onCommit = onCommit;
    this.onRerun = onRerun;
    this.serializable = isPostgres(db);
  }

  /** Runs the unit in the next burst: at once if the writer is idle, else right after the current burst. */
  enqueue(unit: U): void {
    this.pending.push(unit);
    this.kick();
  }

  private kick(): void {
    if (this.working) return;
    this.working = this.work().finally(() => {
      this.working = undefined;
      // Enqueued after the loop's last look, before this callback: nobody else would start it.
      if (this.pending.length > 0) this.kick();
    });
  }

  private async work(): Promise<void> {
    while (this.pending.length > 0) {
      await this.runBurst(this.pending.splice(0, BURST));
    }
  }

  private async runBurst(burst: U[]): Promise<void> {
    let outcomes: (SagaEvent[] | undefined)[];
    const started = Date.now();
    for (let run = 1; ; run++) {
      try {
        outcomes = await this.transaction(burst);
        break;
      } catch (error) {
        const retry = retryable(error);
        if (retry === 'conflict' && run < (burst.length > 1 ? CONFLICT_RUNS : LONE_CONFLICT_RUNS)) {
          this.onRerun?.('conflict', burst.length);
          continue;
        }
        if (retry === 'unavailable' && Date.now() - started < UNAVAILABLE_WAIT_MS) {
          this.onRerun?.('unavailable', burst.length);
          await new Promise((r) => setTimeout(r, Math.min(2000, 100 * 2 ** run)));
          continue;
        }
        if (burst.length > 1) {
          this.onRerun?.('split', burst.length);
          for (const unit of burst) await this.runBurst([unit]);
          return;
        }
        await burst[0]?.failed(error);
        return;
      }
    }
    this.onCommit(
      burst,
      outcomes.flatMap((events) => events ?? []),
    );
    for (const unit of burst) unit.committed();
  }

  private transaction(burst: U[]): Promise<(SagaEvent[] | undefined)[]> {
    const begin = this.db.transaction();
    return (this.serializable ? begin.setIsolationLevel('serializable') : begin).execute(async (trx) => {
      if (this.serializable) await takeTurn(trx);
      const out: (SagaEvent[] | undefined)[] = [];
      for (const unit of burst) out.push(await unit.apply(trx));
      return out;
    });
  }
}

/**
 * Waits until no other instance's burst is writing, and holds the turn until this one commits or
 * rolls back. A lock on the inbox, which every instance of the service writes and nothing else
 * locks this way (plain reads and writes elsewhere go on). LOCK TABLE is the one lock that does
 * not take the transaction's snapshot: taken first, the burst then reads what the burst before
 * it committed, where an advisory lock (a SELECT) would read from before the wait and be aborted.
 */
async function takeTurn<T>(trx: Tx<T>): Promise<void> {
  await sql`lock table inbox in share row exclusive mode`.execute(trx);
}

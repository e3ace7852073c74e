/** Timers every service shares: periodic work that can be woken, and deadlines for shutdown. */

export interface Repeating {
  /** Runs the task again at once (right after the current run, if one is under way). */
  wake(): void;
  /** Settles when no run is under way. */
  idle(): Promise<void>;
  /** No more runs after the current one. */
  stop(): void;
}

/**
 * Runs `task` soon, then every `ms`, never two at once. A task that resolves to a number says
 * when its next work falls due (epoch ms): it runs again then, if that is sooner. A failure goes
 * to `onError` and the task runs again a period later. The timer does not keep the process alive.
 */
export function repeat(
  ms: number,
  task: () => Promise<unknown>,
  onError: (error: unknown) => void,
): Repeating {
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> | undefined;
  let again = false;
  let stopped = false;
  const arm = (at: number) => {
    clearTimeout(timer);
    timer = setTimeout(run, Math.max(0, at - Date.now()));
    timer.unref();
  };
  const run = (): void => {
    if (stopped) return;
    if (running) {
      again = true;
      return;
    }
    clearTimeout(timer);
    running = (async () => {
      let next = Date.now() + ms;
      try {
        const due = await task();
        if (typeof due === 'number') next = Math.min(next, due);
      } catch (error) {
        onError(error);
      }
      running = undefined;
      if (again) {
        again = false;
        next = Date.now();
      }
      if (!stopped) arm(next);
    })();
  };
  // Soon, not now: whoever started it finishes wiring first.
  arm(Date.now());
  return {
    wake: run,
    idle: async () => {
      while (running) await running;
    },
    stop: () => {
      stopped = true;
      clearTimeout(timer);
    },
  };
}

/** Waits for `work` until `deadline` (epoch ms) at most: true if it settled in time. */
export async function within(work: Promise<unknown>, deadline: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), Math.max(0, deadline - Date.now()));
  });
  const settled = work.then(
    () => true,
    () => true,
  );
  try {
    return await Promise.race([settled, timedOut]);
  } finally {
    clearTimeout(timer);
  }
}

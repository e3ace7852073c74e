/** Polls `probe` until `accept` holds or `ms` pass; returns the last value either way, for the assertions. */
export async function eventually<T>(
  probe: () => Promise<T> | T,
  accept: (value: T) => boolean,
  ms = 20_000,
  pollMs = 50,
): Promise<T> {
  const started = Date.now();
  for (;;) {
    const value = await probe();
    if (accept(value) || Date.now() - started > ms) return value;
    await new Promise((r) => setTimeout(r, pollMs));
  }
}

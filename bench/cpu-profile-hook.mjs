/**
 * Preloaded into the services by `npm run bench -- --cpu-profile` (NODE_OPTIONS=--import …;
 * `--cpu-prof` itself is not allowed in NODE_OPTIONS). The first SIGUSR2 starts V8's sampling
 * profiler, the second stops it and writes `<BENCH_CPU_PROFILE_DIR>/<pid>.cpuprofile`: the bench
 * brackets exactly its measured phase. Plain JavaScript, so it needs no type stripping.
 */
import { renameSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';
import { join } from 'node:path';

const dir = process.env.BENCH_CPU_PROFILE_DIR;
if (dir) {
  const session = new Session();
  session.connect();
  let running = false;
  process.on('SIGUSR2', () => {
    if (!running) {
      running = true;
      session.post('Profiler.enable', () =>
        session.post('Profiler.setSamplingInterval', { interval: 500 }, () => session.post('Profiler.start')),
      );
      return;
    }
    running = false;
    session.post('Profiler.stop', (error, result) => {
      if (error) {
        process.stderr.write(`cpu profile failed: ${error.message}\n`);
        return;
      }
      const file = join(dir, `${process.pid}.cpuprofile`);
      writeFileSync(`${file}.partial`, JSON.stringify(result.profile));
      // Renamed only once complete: the bench waits for this name.
      renameSync(`${file}.partial`, file);
    });
  });
}

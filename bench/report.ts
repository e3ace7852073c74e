/** The report of a run, printed from its results (the same object as the JSON written to `--out`). */
import type { Results } from './figures.ts';
import { round } from './stats.ts';

/** Rows as aligned columns: the first left-aligned, the others right-aligned; `undefined` prints as '-'. */
function table(rows: (string | number | undefined)[][], header?: string[]): string {
  const all = header ? [header, ...rows] : rows;
  const cells = all.map((r) => r.map((c) => (c === undefined ? '-' : String(c))));
  const widths = cells[0]?.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length))) ?? [];
  const line = (r: string[]) =>
    r.map((c, i) => (i === 0 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0))).join('  ');
  const lines = cells.map(line);
  if (header) lines.splice(1, 0, widths.map((w) => '-'.repeat(w)).join('  '));
  return lines.map((l) => `  ${l}`).join('\n');
}

export const print = (s = '') => process.stdout.write(`${s}\n`);

export function printReport(results: Results): void {
  const { config, code, raw, saga, broker, cpu, model, target } = results;
  const lat = saga.latencyMs;
  const overTime = saga.latencyBySecond;
  const breakdown = saga.breakdown;
  const profiles = results.cpuProfiles?.services ?? {};
  const topLines = results.top;
  const errors = saga.errors;
  const warnings = results.serviceLogs;
  const backgroundLoadPct = results.machine.backgroundLoadPctOfOneCore;
  print();
  print(
    `Saga benchmark: ${config.store}, ${config.instances} instance(s) of each service, ${config.orders} orders, ${config.clients} clients (started over ${config.rampMs} ms, after ${config.warmup} warm-up orders), ${round(config.replenishShare * 100)} % replenishment (GIZMO-3 × ${config.replenishQuantity}), QUEUE_TYPE=${config.queueType}, SUPPLIER_DELAY_MS=${config.supplierDelayMs}, tracing ${config.trace ? `on (every trace sampled, ${config.traceProtocol})` : 'off'}, METRICS=${config.metrics}, DASHBOARD=${config.dashboard}, ${results.machine.cores} cores`,
  );
  print(
    `Code: ${code.commit ?? 'unknown commit'}${code.uncommitted.length > 0 ? ` + uncommitted changes in ${code.uncommitted.join(', ')}` : ''}`,
  );
  print();
  if (raw) {
    print('Raw broker ceiling (1 publisher + 1 consumer, durable queue, persistent, confirms, manual ack)');
    print(
      table([
        ['queue type / message', `${raw.queueType}, ${raw.messageBytes} bytes`],
        ['confirm window / prefetch', `${raw.window} / ${raw.prefetch}`],
        ['published / consumed', `${raw.published} / ${raw.consumed}`],
        ['published/s (to last confirm)', Math.round(raw.publishedPerSecond)],
        ['messages/s end to end (to last ack)', Math.round(raw.messagesPerSecond)],
        ['broker CPU (% of one core)', raw.cpu.perProcess['rabbitmq beam.smp']?.pctOfOneCore],
        ['bench CPU (% of one core)', raw.cpu.perProcess['bench (this process)']?.pctOfOneCore],
      ]),
    );
    print();
  }
  print('Sagas (measured phase)');
  print(
    table([
      ['completed / attempted', `${saga.completed} / ${saga.attempted}`],
      ['not completed', `${saga.notCompleted}  ${JSON.stringify(saga.outcomes)}`],
      ['wall time', `${saga.wallSeconds} s`],
      ['completed sagas/s', saga.sagasPerSecond],
      [
        'replenishment path (intended / taken)',
        `${saga.paths.intendedReplenishment} / ${saga.paths.tookReplenishment}`,
      ],
    ]),
  );
  print();
  print('Latency POST → terminal, ms (completed orders)');
  print(
    table(
      (['overall', 'plain', 'replenishment', 'post'] as const).map((k) => {
        const l = lat[k];
        return [k === 'post' ? 'POST /orders alone' : k, l.n, l.p50, l.p95, l.p99, l.max, l.mean];
      }),
      ['path', 'n', 'p50', 'p95', 'p99', 'max', 'mean'],
    ),
  );
  print(`  mean by second of the phase: ${overTime.map((t) => t.mean ?? '-').join(' ')}`);
  print(`  p99 by second of the phase:  ${overTime.map((t) => t.p99 ?? '-').join(' ')}`);
  print();
  print('Where the time goes: ms between consecutive steps (event time = commit that emitted it)');
  for (const path of ['plain', 'replenishment'] as const) {
    if (breakdown[path].length === 0) continue;
    print(
      table(
        breakdown[path].map((b) => [b.step, b.n, b.p50, b.p95, b.mean]),
        [`${path} path`, 'n', 'p50', 'p95', 'mean'],
      ),
    );
  }
  print();
  print(`Broker deliveries (${broker.source}, over ${broker.countedSagas} sagas)`);
  print(
    table([
      ['deliveries (deliver_get) / acks', `${broker.deliveries} / ${broker.acks ?? '-'}`],
      ['routed publishes / redeliveries', `${broker.routedPublishes ?? '-'} / ${broker.redeliveries ?? '-'}`],
      ['deliveries per saga', broker.perSaga],
      ['  of which in order timelines (estimate)', broker.timelineEstimatePerSaga],
      ['saga deliveries/s', broker.deliveriesPerSecond],
      ['ratio saga deliveries/s ÷ raw messages/s', broker.ratioToRaw],
      ...(broker.countersSettled === false
        ? [['WARNING', 'broker counters had not settled: figures approximate'] as string[]]
        : []),
      ...(broker.managementError ? [['WARNING', `management API: ${broker.managementError}`]] : []),
    ]),
  );
  print();
  print(
    `CPU over the measured phase (${cpu.seconds} s; 100 % = one core, this machine has ${results.machine.cores})` +
      (cpu.machine
        ? `: machine busy ${cpu.machine.busyPct} % (user ${cpu.machine.userPct}, system ${cpu.machine.systemPct}, iowait ${cpu.machine.iowaitPct}, idle ${cpu.machine.idlePct})`
        : ''),
  );
  print(
    table(
      Object.entries(cpu.perProcess).map(([label, c]) => [
        label,
        c.cpuSeconds,
        c.pctOfOneCore,
        c.msPerSaga,
        results.rssMiB[label],
      ]),
      ['process', 'cpu s', 'cpu %', 'cpu ms/saga', 'RSS MiB (peak; broker: now)'],
    ),
  );
  if (config.instances > 1 && cpu.perService) {
    print(
      table(
        Object.entries(cpu.perService).map(([service, c]) => [
          `${service} (${c.instances} instances)`,
          c.cpuSeconds,
          c.pctOfOneCore,
          c.msPerSaga,
        ]),
        ['service, all instances', 'cpu s', 'cpu %', 'cpu ms/saga'],
      ),
    );
  }
  const counted = Object.entries(results.instances);
  if (counted.length > 0) {
    const outcomes = [...new Set(counted.flatMap(([, c]) => Object.keys(c.outcomes)))].sort();
    const reruns = [...new Set(counted.flatMap(([, c]) => Object.keys(c.reruns)))].sort();
    print(
      table(
        counted.map(([instance, c]) => [
          instance,
          ...outcomes.map((o) => c.outcomes[o] ?? 0),
          ...reruns.map((r) => c.reruns[r] ?? 0),
        ]),
        ['deliveries by outcome, reruns', ...outcomes, ...reruns.map((r) => `rerun: ${r}`)],
      ),
    );
  }
  const others = cpu.perProcess['other processes (not this bench)']?.pctOfOneCore ?? 0;
  print(`  background load before start: ${backgroundLoadPct ?? '?'} % of one core`);
  if (cpu.ceiling) {
    print(
      `  CPU-bound ceilings from CPU ms/saga (estimates): all of it on ${results.machine.cores} cores ≈ ${cpu.ceiling.allCores} sagas/s; ` +
        `busiest process alone (${cpu.ceiling.busiest}, one core) ≈ ${cpu.ceiling.busiestAlone} sagas/s`,
    );
  }
  if (others > 15 || (backgroundLoadPct ?? 0) > 15) {
    print(
      `  WARNING: processes outside this bench used ${others} % of one core during the phase: the machine is shared, figures are pessimistic.`,
    );
  }
  if (model) {
    print();
    print(
      `MODEL, not a measurement: N cores at this run's ${model.msPerSaga} CPU ms per saga (services, broker, database; not the bench), spread perfectly`,
    );
    print(
      table(
        model.projection.map((p) => [
          p.cores,
          p.sagasPerSecond,
          Object.entries(p.instances)
            .map(([service, n]) => `${service} ${n}`)
            .join(', '),
        ]),
        ['cores', 'sagas/s', 'instances each service needs at that rate (one core each at most)'],
      ),
    );
    print(
      '  Leaves out: lock waits and serialization retries, the one queue per service (one Erlang process each), network hops, the database on its own machine.',
    );
  }
  for (const [service, summary] of Object.entries(profiles)) {
    if (!summary) {
      print();
      print(`CPU profile of ${service}: none written`);
      continue;
    }
    print();
    print(
      `CPU profile of ${service} over the measured phase: busy ${summary.busyMs} of ${summary.wallMs} ms`,
    );
    const part = (title: string, rows: { ms: number; pct: number; name: string }[]) =>
      print(
        table(
          rows.map((r) => [r.name.slice(0, 90), r.ms, r.pct]),
          [title, 'ms', '% busy'],
        ),
      );
    part(
      'self time by area',
      summary.areas.slice(0, 10).map((a) => ({ ...a, name: a.area })),
    );
    part(
      'hottest functions (self time)',
      summary.functions.slice(0, 10).map((f) => ({ ...f, name: f.fn })),
    );
    part(
      'project functions (inclusive time)',
      summary.inclusive.slice(0, 12).map((f) => ({ ...f, name: f.fn })),
    );
  }
  if (topLines.length > 0) {
    print();
    print('top snapshot (2 s, during the measured phase)');
    for (const line of topLines) print(`  ${line}`);
  }
  if (errors.length > 0) {
    print();
    print('Errors (first distinct)');
    for (const e of errors) print(`  ${e}`);
  }
  if (warnings.warningsOrWorse > 0) {
    print();
    print(`Service log lines at warn or worse: ${warnings.warningsOrWorse} (last ${warnings.tail.length})`);
    for (const w of warnings.tail) print(`  ${w.slice(0, 300)}`);
  }
  print();
  print(
    `Target (>= ${target.sagasPerSecond} sagas/s at ${target.clients} clients, p99 <= ${target.p99Ms} ms, all completed): ` +
      `${target.met ? 'MET' : 'NOT MET'} (${saga.sagasPerSecond} sagas/s, p99 ${lat.overall.p99 ?? '-'} ms, ${saga.notCompleted} not completed)`,
  );
}

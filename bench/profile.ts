/**
 * Summarises a V8 .cpuprofile: self time per "area" (an npm package, a project file, node's
 * internals, GC, idle) and the hottest functions, so the bench can say where a service's time goes.
 */
import { existsSync, readFileSync } from 'node:fs';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface ProfileSummary {
  /** Sampled wall time, ms. */
  wallMs: number;
  /** Time not idle, ms. */
  busyMs: number;
  /** Self time per area, ms, largest first. */
  areas: { area: string; ms: number; pct: number }[];
  /** Hottest functions by self time. */
  functions: { fn: string; ms: number; pct: number }[];
  /** Inclusive time of the project's own functions (services/, common/, compensation/): what work costs. */
  inclusive: { fn: string; ms: number; pct: number }[];
}

const ROOT_URL = new URL('..', import.meta.url).href;
const PROJECT = /^(services|common|compensation)\//;

function areaOf(frame: ProfileNode['callFrame']): string {
  const { url, functionName } = frame;
  if (!url) return functionName.startsWith('(') ? functionName : `native ${functionName || '(anonymous)'}`;
  const modules = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (modules) return modules[1] ?? url;
  if (url.startsWith('node:')) return 'node: internals';
  if (url.startsWith(ROOT_URL)) return url.slice(ROOT_URL.length);
  return url;
}

function label(frame: ProfileNode['callFrame']): string {
  // Node's type stripping turns types into white space: lines and columns are the source's own.
  const where = frame.url
    ? areaOf(frame) + (frame.lineNumber > 0 ? `:${frame.lineNumber + 1}` : '')
    : '(native)';
  if (!frame.url && frame.functionName.startsWith('(')) return frame.functionName;
  return `${frame.functionName || '(anonymous)'}${where ? ` ${where}` : ''}`;
}

export function summarise(file: string, top = 12): ProfileSummary | undefined {
  if (!existsSync(file)) return undefined;
  const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id);

  const selfUs = new Map<number, number>();
  for (const [i, id] of profile.samples.entries()) {
    // The first delta runs from the profiler's start time to the first sample, inside the call that
    // started it (cpu-profile-hook.mjs): not the service's work.
    if (i === 0) continue;
    selfUs.set(id, (selfUs.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0));
  }
  const wallUs = [...selfUs.values()].reduce((a, b) => a + b, 0) || 1;
  let idleUs = 0;
  const areas = new Map<string, number>();
  const functions = new Map<string, number>();
  const inclusive = new Map<string, number>();
  for (const [id, us] of selfUs) {
    const node = byId.get(id);
    if (!node) continue;
    const area = areaOf(node.callFrame);
    if (area === '(idle)') idleUs += us;
    areas.set(area, (areas.get(area) ?? 0) + us);
    const fn = label(node.callFrame);
    functions.set(fn, (functions.get(fn) ?? 0) + us);
    // Inclusive per project function: each sample counts once for every distinct one on its stack.
    const seen = new Set<string>();
    for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
      const frame = byId.get(at)?.callFrame;
      if (!frame) break;
      if (!PROJECT.test(areaOf(frame))) continue;
      const name = label(frame);
      if (seen.has(name)) continue;
      seen.add(name);
      inclusive.set(name, (inclusive.get(name) ?? 0) + us);
    }
  }
  const busyUs = wallUs - idleUs || 1;
  const rows = <K extends string>(map: Map<string, number>, key: K, n: number) =>
    [...map]
      .filter(([name]) => name !== '(idle)')
      .sort((a, b) => b[1] - a[1])
      .slice(0, n)
      .map(
        ([name, us]) =>
          ({ [key]: name, ms: Math.round(us / 100) / 10, pct: Math.round((us / busyUs) * 1000) / 10 }) as {
            [P in K]: string;
          } & { ms: number; pct: number },
      );
  return {
    wallMs: Math.round(wallUs / 1000),
    busyMs: Math.round(busyUs / 1000),
    areas: rows(areas, 'area', top),
    functions: rows(functions, 'fn', top),
    inclusive: rows(inclusive, 'fn', top),
  };
}

/**
 * The README cannot go stale: its configuration table lists exactly the keys of CONFIG_KEYS with
 * their defaults, it names the commands to run everything and to test, and every script of
 * package.json. It opens with a short quick start, its contents list every section, its links
 * lead somewhere, its example ids are the project's UUIDv7 and the data directories it suggests
 * are git-ignored.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CONFIG_KEYS } from '../../common/config.ts';

const ROOT = join(import.meta.dirname, '..', '..');
const README = readFileSync(join(ROOT, 'README.md'), 'utf8');
const HEADER = '| Variable | Default | Meaning |';

interface ConfigRow {
  variable: string;
  default: string;
  meaning: string;
}

/** Splits a markdown table row into trimmed cells; `\|` inside a cell is not a separator. */
function cells(line: string): string[] {
  const inner = line.trim().replace(/^\|/, '').replace(/\|$/, '');
  return inner.split(/(?<!\\)\|/).map((cell) => cell.trim().replace(/\\\|/g, '|'));
}

/** A cell that is exactly one code span: its content; anything else: undefined. */
function codeSpan(cell: string): string | undefined {
  // An empty default reads "(empty)": an empty code span does not render.
  if (cell === '(empty)') return '';
  return /^`([^`]*)`$/.exec(cell)?.[1];
}

/** The rows of the table under `## Configuration` whose header is HEADER. */
function configurationTable(markdown: string): ConfigRow[] {
  const lines = markdown.split(/\r?\n/);
  const section = lines.findIndex((line) => /^##\s+Configuration\s*$/.test(line));
  if (section < 0) throw new Error('README has no "## Configuration" section');
  const header = lines.findIndex((line, i) => i > section && line.trim() === HEADER);
  if (header < 0) throw new Error(`README's Configuration section has no table with header ${HEADER}`);
  const rows: ConfigRow[] = [];
  // header, then the |---| delimiter row, then the rows until the first line that is not a row
  for (const line of lines.slice(header + 2)) {
    if (!line.trim().startsWith('|')) break;
    const [variable = '', defaultCell = '', meaning = ''] = cells(line);
    const name = codeSpan(variable);
    const value = codeSpan(defaultCell);
    if (name === undefined || value === undefined) {
      throw new Error(`configuration row without a variable and a default in backticks: ${line}`);
    }
    rows.push({ variable: name, default: value, meaning });
  }
  return rows;
}

/** The `##` sections of a markdown document: title and lines, fenced code skipped for headings. */
function sections(markdown: string): { title: string; lines: string[] }[] {
  const found: { title: string; lines: string[] }[] = [];
  let fenced = false;
  for (const line of markdown.split(/\r?\n/)) {
    if (line.startsWith('```')) fenced = !fenced;
    const heading = !fenced && /^## (.+)$/.exec(line);
    if (heading) found.push({ title: heading[1] ?? '', lines: [] });
    else found.at(-1)?.lines.push(line);
  }
  return found;
}

/** The anchors GitHub gives a document's headings (lower case, punctuation dropped, spaces to '-'). */
function anchors(markdown: string): Set<string> {
  const seen = new Map<string, number>();
  const result = new Set<string>();
  let fenced = false;
  for (const line of markdown.split(/\r?\n/)) {
    if (line.startsWith('```')) fenced = !fenced;
    const heading = !fenced && /^#{1,6} (.+)$/.exec(line);
    if (!heading) continue;
    const slug = (heading[1] ?? '')
      .toLowerCase()
      .replace(/[^\p{L}\p{M}\p{N}\p{Pc}\- ]/gu, '')
      .replace(/ /g, '-');
    const count = seen.get(slug) ?? 0;
    seen.set(slug, count + 1);
    result.add(count === 0 ? slug : `${slug}-${count}`);
  }
  return result;
}

describe('README', () => {
  const rows = configurationTable(README);

  it('lists every configuration key of CONFIG_KEYS, and no other', () => {
    const listed = rows.map((row) => row.variable);
    expect(new Set(listed).size, 'a key is listed twice').toBe(listed.length);
    expect([...listed].sort()).toEqual(Object.keys(CONFIG_KEYS).sort());
  });

  it('gives each key the default that CONFIG_KEYS gives it', () => {
    const documented = Object.fromEntries(rows.map((row) => [row.variable, row.default]));
    const actual = Object.fromEntries(Object.entries(CONFIG_KEYS).map(([key, spec]) => [key, spec.default]));
    expect(documented).toEqual(actual);
  });

  it('says what each key means', () => {
    const unexplained = rows.filter((row) => row.meaning.length === 0).map((row) => row.variable);
    expect(unexplained).toEqual([]);
  });

  it('names the one command that runs everything and the one that runs the tests', () => {
    expect(README).toContain('npm start');
    expect(README).toContain('npm test');
  });

  it('names every script of package.json', () => {
    const { scripts } = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as {
      scripts: Record<string, string>;
    };
    const command = (name: string) => (['start', 'test'].includes(name) ? `npm ${name}` : `npm run ${name}`);
    const missing = Object.keys(scripts).filter(
      (name) => !new RegExp(`\`${command(name).replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}[\`\\s]`).test(README),
    );
    expect(missing).toEqual([]);
  });

  it('opens with a quick start of at most 15 lines: npm ci, npm start, then where to click', () => {
    const [first] = sections(README);
    expect(first?.title).toBe('Quick start');
    const lines = (first?.lines ?? []).join('\n').trim().split('\n');
    expect(lines.length + 1, 'the heading and its lines').toBeLessThanOrEqual(15);
    const text = lines.join('\n');
    expect(text).toMatch(/^npm ci\b/m);
    expect(text).toMatch(/^npm start\b/m);
    expect(text).toContain('http://localhost:3000/docs');
  });

  it('lists every section in its contents', () => {
    const all = sections(README);
    const contents = all.find((section) => section.title === 'Contents')?.lines.join('\n') ?? '';
    const listed = [...contents.matchAll(/\]\(#([^)]+)\)/g)].map((m) => m[1]);
    const titles = all
      .map((section) => section.title)
      .filter((t) => !['Quick start', 'Contents'].includes(t));
    const expected = [...anchors(titles.map((title) => `## ${title}`).join('\n'))];
    expect(listed).toEqual(expect.arrayContaining(expected));
  });

  it('links only to headings and files that exist', () => {
    const broken: string[] = [];
    for (const [, target = ''] of README.matchAll(/\]\((?!https?:)([^)\s]+)\)/g)) {
      const [path = '', anchor] = target.split('#');
      const file = path ? join(ROOT, path) : join(ROOT, 'README.md');
      if (!existsSync(file)) {
        broken.push(target);
        continue;
      }
      if (anchor && !anchors(readFileSync(file, 'utf8')).has(anchor)) broken.push(target);
    }
    expect(broken).toEqual([]);
  });

  it('shows ids as the project makes them, UUIDv7', () => {
    const ids = [...README.matchAll(/\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b/g)].map(
      (m) => m[0],
    );
    expect(ids.length).toBeGreaterThan(0);
    expect(ids.filter((id) => id[14] !== '7')).toEqual([]);
  });

  it('suggests only data directories that git ignores', () => {
    const ignored = readFileSync(join(ROOT, '.gitignore'), 'utf8').split(/\r?\n/);
    const suggested = [
      CONFIG_KEYS.DATA_DIR.default,
      ...[...README.matchAll(/DATA_DIR=(\S+)/g)].map((m) => m[1] ?? ''),
    ].map((dir) => `${dir.replace(/^\.\//, '').replace(/\/$/, '')}/`);
    expect(suggested.filter((dir) => !ignored.includes(dir))).toEqual([]);
  });
});

/**
 * The README cannot go stale: its configuration table lists exactly the keys of CONFIG_KEYS with
 * their defaults, it names the commands to run everything and to test, and every script of
 * package.json.
 */
import { readFileSync } from 'node:fs';
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
});

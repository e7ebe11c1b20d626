import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';

/**
 * The README's layout is the tree: every directory it names exists, and every
 * top-level directory the repository tracks and every directory under src/ is
 * named, so a directory added, moved or removed without the README fails here.
 */

const ROOT = resolve(__dirname, '../..');

/** The layout's entries: a line naming a directory, with the indented lines that go on describing it. */
function layoutEntries(): string[] {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const section = readme.split(/^## Layout$/m)[1];
  if (!section) throw new Error('README.md has no "## Layout" section');
  const block = /```\n([\s\S]*?)```/.exec(section)?.[1];
  if (!block) throw new Error('the Layout section has no code block');
  const entries: string[] = [];
  for (const line of block.split('\n')) {
    if (/^\s/.test(line) && entries.length > 0) entries[entries.length - 1] += ` ${line.trim()}`;
    else if (line.trim()) entries.push(line);
  }
  return entries;
}

/** The directory paths an entry names (`src/services/`, `bench/support/`, `streams/`), without their trailing slash. */
const pathsIn = (line: string) => [...line.matchAll(/(?:^|[\s;(])((?:[a-z][\w.-]*\/)+)(?=[\s,;)]|$)/g)].map((m) => m[1]!.replace(/\/$/, ''));

/** Directories holding tracked files: the repository's tree, not what a run left behind. */
function trackedDirectories(): Set<string> {
  const dirs = new Set<string>();
  for (const file of execFileSync('git', ['ls-files'], { cwd: ROOT, encoding: 'utf8' }).split('\n')) {
    for (let d = dirname(file); d !== '.' && d !== ''; d = dirname(d)) dirs.add(d);
  }
  return dirs;
}

describe("the README's layout", () => {
  const entries = layoutEntries();
  const named = entries.flatMap(pathsIn);

  test('every directory it names exists (a bare name such as streams/ inside a directory its entry names)', () => {
    const missing = entries.flatMap((entry) => {
      const paths = pathsIn(entry);
      return paths.filter((p) => !existsSync(join(ROOT, p)) && !paths.some((parent) => parent !== p && existsSync(join(ROOT, parent, p))));
    });
    expect(missing).toEqual([]);
    expect(named.length).toBeGreaterThan(10);
  });

  test('it names every top-level directory the repository tracks and every directory under src/', () => {
    const tracked = [...trackedDirectories()].filter((d) => !d.startsWith('.') && (!d.includes('/') || /^src\/[^/]+$/.test(d)));
    const unnamed = tracked.filter((d) => !named.some((n) => n === d || n.startsWith(`${d}/`)));
    expect(unnamed).toEqual([]);
  });
});

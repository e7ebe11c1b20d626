import { bar, progress } from '../../src/cli/progress';

/** The CLI's progress line: redrawn in place on a terminal, plain lines anywhere else. */
const sink = (isTTY: boolean) => {
  const written: string[] = [];
  return { written, out: { isTTY, write: (s: string) => written.push(s) } as unknown as NodeJS.WriteStream };
};

test('the bar fills in proportion, clamped to 0..100%', () => {
  expect(bar(0, 4)).toBe(`[${'-'.repeat(24)}]   0%`);
  expect(bar(3, 4)).toBe(`[${'#'.repeat(18)}${'-'.repeat(6)}]  75%`);
  expect(bar(9, 4)).toBe(`[${'#'.repeat(24)}] 100%`);
  expect(bar(1, 0)).toBe(`[${'-'.repeat(24)}]   0%`);
});

test('on a terminal the line is redrawn in place, unchanged lines are not written, notes go above it', () => {
  const { written, out } = sink(true);
  const p = progress(out);
  p.update('one', 1, 4);
  p.update('one', 1, 4);
  p.note('a note');
  p.update('two');
  p.finish('done');
  expect(written).toEqual([`\r\x1b[2K${bar(1, 4)} one`, `\r\x1b[2Ka note\n${bar(1, 4)} one`, '\r\x1b[2Ktwo', '\n', 'done\n']);
});

test('elsewhere every change is a plain line, with no carriage returns or escapes', () => {
  const { written, out } = sink(false);
  const p = progress(out);
  p.update('one', 1, 2);
  p.update('one', 1, 2);
  p.update('two', 2, 2);
  p.note('a note');
  p.finish('done');
  expect(written).toEqual([`${bar(1, 2)} one\n`, `${bar(2, 2)} two\n`, 'a note\n', 'done\n']);
  expect(written.join('')).not.toMatch(/[\r\x1b]/);
});

import { ago, at, plural } from '../../src/cli/format';

/** The CLI's words for counts and times (src/cli/format.ts). */
test('plurals: one is singular, anything else plural; irregular plurals given', () => {
  expect(plural(1, 'stream')).toBe('1 stream');
  expect(plural(2, 'stream')).toBe('2 streams');
  expect(plural(0, 'stream')).toBe('0 streams');
  expect(plural(1, 'party', 'parties')).toBe('1 party');
  expect(plural(3, 'party', 'parties')).toBe('3 parties');
});

test('relative times: the largest unit that fits, rounded down, past and future', () => {
  const now = Date.parse('2025-06-01T12:00:00.000Z');
  const t = (ms: number) => new Date(now + ms).toISOString();
  expect(ago(t(-3_400), now)).toBe('3 s ago');
  expect(ago(t(-59_999), now)).toBe('59 s ago');
  expect(ago(t(-60_000), now)).toBe('1 min ago');
  expect(ago(t(-5 * 60_000 - 59_000), now)).toBe('5 min ago');
  expect(ago(t(2 * 60_000 + 10_000), now)).toBe('in 2 min');
  expect(ago(t(3 * 3_600_000), now)).toBe('in 3 h');
  expect(ago(t(-2 * 86_400_000), now)).toBe('2 d ago');
  // under a second: no "0 s"
  expect(ago(t(-400), now)).toBe('just now');
  expect(ago(t(0), now)).toBe('just now');
  expect(ago(t(400), now)).toBe('in < 1 s');
  // not a time: shown as it came
  expect(ago('soon', now)).toBe('soon');
});

test('a moment for a field line: relative, then the exact time', () => {
  const now = Date.parse('2025-06-01T12:00:00.000Z');
  expect(at('2025-06-01T11:55:00.000Z', now)).toBe('5 min ago (2025-06-01T11:55:00.000Z)');
});

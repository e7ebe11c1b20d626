/**
 * How the CLI words counts and times for people: "1 stream", "2 streams";
 * "3 s ago", "in 2 min". The --json output keeps the API's raw values; these are
 * for the human summaries only.
 */

/** `n word`, the word in the plural unless n is 1 (irregular plurals passed as `many`). */
export const plural = (n: number, word: string, many = `${word}s`) => `${n} ${n === 1 ? word : many}`;

// the largest unit that fits, so a time reads at a glance ("2 h", never "7200 s")
const UNITS: [ms: number, name: string][] = [
  [86_400_000, 'd'],
  [3_600_000, 'h'],
  [60_000, 'min'],
  [1_000, 's'],
];

/**
 * A moment relative to `now`: "3 s ago", "in 2 min"; under a second "just now" or
 * "in < 1 s" (where "0 s" would only look like a bug). Whole units, rounded down:
 * "1 min ago" until two minutes have passed.
 */
export function ago(iso: string, now = Date.now()): string {
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return iso;
  const diff = now - t;
  const abs = Math.abs(diff);
  const [ms, name] = UNITS.find(([ms]) => abs >= ms) ?? [0, ''];
  if (!ms) return diff >= 0 ? 'just now' : 'in < 1 s';
  const span = `${Math.floor(abs / ms)} ${name}`;
  return diff >= 0 ? `${span} ago` : `in ${span}`;
}

/** A moment for a `key: value` line: relative first (what a person wants), then the exact ISO time. */
export const at = (iso: string, now = Date.now()) => `${ago(iso, now)} (${iso})`;

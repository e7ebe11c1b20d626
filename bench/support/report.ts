/**
 * How a bench prints its results on stdout: one JSON object with --json; else its rows,
 * as `name: value` lines or as a table whose values line up, and the figures a
 * comparison reads after it as `name: value` lines.
 */

export type Row = [name: string, value: string];

/** The report as one JSON object (a non-finite number prints as null). */
export const printJson = (report: unknown) => console.log(JSON.stringify(report, null, 2));

/** Each row as `name: value`. */
export function printLines(rows: readonly Row[]): void {
  for (const [name, value] of rows) console.log(`${name}: ${value}`);
}

/** The rows as a table: names padded to the longest, two spaces, the value. */
export function printTable(rows: readonly Row[]): void {
  const width = Math.max(...rows.map(([name]) => name.length));
  for (const [name, value] of rows) console.log(`${name.padEnd(width)}  ${value}`);
}

/** `n` with `digits` decimals, or `n/a` for a figure that could not be measured. */
export const fixed = (n: number | null | undefined, digits: number) => (n === null || n === undefined || !Number.isFinite(n) ? 'n/a' : n.toFixed(digits));

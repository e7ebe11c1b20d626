/**
 * How many rows a ledger list reads: the caller's `limit` (or `byDefault`) within
 * 1..max. The API already refuses a larger limit (400, src/api/limits.ts); the ledger
 * clamps as well, so no caller of these functions can read an unbounded page.
 */
export const pageRows = (limit: number | undefined, max: number, byDefault = max) => Math.min(Math.max(limit ?? byDefault, 1), max);

/**
 * A page size the caller must already have checked (the API's schema does): outside
 * 1..max it is a bug, not a request to clamp.
 */
export function assertPageRows(limit: number, max: number, what: string): number {
  if (!(Number.isInteger(limit) && limit >= 1 && limit <= max)) throw new Error(`${what} page limit ${limit} outside 1..${max}`);
  return limit;
}

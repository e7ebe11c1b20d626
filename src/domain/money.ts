/**
 * Money is an integer count of minor units. These guards sit at the edge of every
 * money function: a failure here is a bug in the caller, not a user error (user
 * input is validated by the API schemas before it gets this far).
 */
export function assertUnits(value: unknown, name: string): asserts value is number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value <= 0) {
    throw new TypeError(`${name} must be a positive safe integer of minor units, got ${String(value)}`);
  }
}

export function assertNonNegativeUnits(value: unknown, name: string): asserts value is number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    throw new TypeError(`${name} must be a non-negative safe integer of minor units, got ${String(value)}`);
  }
}

/** PostgreSQL bigint arrives as a string; refuse anything JavaScript cannot hold exactly. */
export function parseUnits(text: string): number {
  const value = Number(text);
  if (!Number.isSafeInteger(value)) throw new RangeError(`bigint ${text} exceeds the safe integer range`);
  return value;
}

/** The largest amount the API accepts in one request (10^15 units; leaves headroom for sums). */
export const AMOUNT_UNITS_MAX = 1_000_000_000_000_000;

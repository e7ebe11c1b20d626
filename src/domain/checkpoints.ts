/**
 * The debt ledger's clock (pure: the checkpoint workflow and the tests share it). A
 * daily round is taken at each UTC midnight.
 */
export const DAY_MS = 86_400_000;

/** The first UTC midnight strictly after `ms`. */
export const nextUtcMidnight = (ms: number) => (Math.floor(ms / DAY_MS) + 1) * DAY_MS;

/** Points one GET /v1/entities/:id/ledger returns at most. */
export const LEDGER_POINTS_MAX = 1000;

/**
 * The debt ledger's clock (pure: the checkpoint workflow and the tests share it). A
 * daily round is taken at each UTC midnight.
 */
export const DAY_MS = 86_400_000;

/** The first UTC midnight strictly after `ms`. */
export const nextUtcMidnight = (ms: number) => (Math.floor(ms / DAY_MS) + 1) * DAY_MS;

/** Points one GET /v1/entities/:id/ledger returns at most. */
export const LEDGER_POINTS_MAX = 1000;

/** One point of an entity's (or a subaccount's) debt ledger: the figures summed over the latest round at or before `at`. */
export interface LedgerPoint {
  /** The end of the step: the figures as they stood then. */
  at: string;
  /** The round they come from (the latest at or before `at`); left out before the first round. */
  checkpointAt?: string;
  subaccounts: number;
  balance: number;
  held: number;
  paid: number;
  received: number;
}

import type { Client } from '@temporalio/client';
import type { Pool } from '../db/pool';
import type { TierBudgets } from '../ledger/grants';
import type { Limits } from '../ledger/entities';
import { API_WAIT_MS_DEFAULT } from '../domain/settings';
import type { TierStreamQuotas } from '../domain/streamQuotas';

/** What the services run on: the database, Temporal, and the settings they share with the worker. */
export interface ServiceDeps {
  pool: Pool;
  temporal: Client;
  taskQueue: string;
  /** How long a call waits on a workflow before it answers "still running" with a status URL (SLUICE_API_WAIT_MS). */
  waitMs?: number;
  /** The billing clock's shard count (SLUICE_BILLING_SHARDS; the worker's): a new stream wakes its shard's clock. */
  billingShards?: number;
  /** Daily pool budgets per tier, for estimates (the worker decides with the same config). */
  budgets?: TierBudgets;
  /** Default wait for a job's payment. */
  jobPaymentTimeoutMs?: number;
  /** Minor units one unit of work costs (SLUICE_PRICE_PER_UNIT); default 1. */
  pricePerUnit?: number;
  /** The worker's default subaccount limits (SLUICE_SUBACCOUNT_CAP, _CREATIONS_PER_HOUR), for the entity view and Retry-After. */
  subaccountLimits?: Limits;
  /** Open streams and the shortest tick per payer tier (SLUICE_TIER_STREAM_QUOTAS; the worker's too): an opening over them is refused before a workflow starts. */
  streamQuotas?: TierStreamQuotas;
}

export const waitMsOf = (deps: ServiceDeps) => deps.waitMs ?? API_WAIT_MS_DEFAULT;

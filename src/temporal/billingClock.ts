import type { Client } from '@temporalio/client';
import { billingClockWorkflowId } from '../domain/billing';
import { billingClockWorkflow } from '../../workflows/billingClock';
import { billingClockVisibility } from '../../workflows/searchAttributes';
import { WORKFLOW_TASK_TIMEOUT } from './timeouts';

export interface BillingClockSettings {
  /** Shards (billing workflows); a stream goes to shard shardKeyOf(payer account) % shards. */
  shards: number;
  /** Ticks one billing transaction writes at most. */
  rowsMax: number;
}

/**
 * Starts the billing clock's workflows on a task queue, one per shard; a shard's
 * clock already running is left as it is. The worker calls it at start and now and
 * then after, so a clock terminated from the UI comes back.
 */
export async function ensureBillingClocks(client: Client, taskQueue: string, settings: BillingClockSettings): Promise<void> {
  await Promise.all(
    Array.from({ length: settings.shards }, (_, shard) =>
      client.workflow.start(billingClockWorkflow, {
        workflowId: billingClockWorkflowId(taskQueue, shard, settings.shards),
        taskQueue,
        args: [{ shard, shards: settings.shards, rowsMax: settings.rowsMax }],
        workflowIdConflictPolicy: 'USE_EXISTING',
        workflowTaskTimeout: WORKFLOW_TASK_TIMEOUT,
        ...billingClockVisibility({ taskQueue, shard, shards: settings.shards, rowsMax: settings.rowsMax }),
      }),
    ),
  );
}

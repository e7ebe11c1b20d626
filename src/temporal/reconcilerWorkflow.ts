import type { Client } from '@temporalio/client';
import { reconcilerWorkflow } from '../../workflows/reconciler';
import { checkpointWorkflow } from '../../workflows/checkpoints';
import { checkpointsVisibility, reconcilerVisibility } from '../../workflows/searchAttributes';
import { WORKFLOW_TASK_TIMEOUT } from './timeouts';

/** Between two rounds of the reconciler, by default (src/domain/settings.ts). */
export { RECONCILE_INTERVAL_MS_DEFAULT } from '../domain/settings';

export const reconcilerWorkflowId = (taskQueue: string) => `reconciler-${taskQueue}`;

/** Starts the task queue's reconciler, or leaves the one running as it is. */
export async function ensureReconciler(client: Client, taskQueue: string, intervalMs: number): Promise<void> {
  await client.workflow.start(reconcilerWorkflow, {
    workflowId: reconcilerWorkflowId(taskQueue),
    taskQueue,
    args: [{ intervalMs }],
    workflowIdConflictPolicy: 'USE_EXISTING',
    workflowTaskTimeout: WORKFLOW_TASK_TIMEOUT,
    ...reconcilerVisibility({ taskQueue, intervalMs }),
  });
}

export const checkpointWorkflowId = (taskQueue: string) => `checkpoints-${taskQueue}`;

/** Starts the task queue's daily debt-ledger round, or leaves the one running as it is. */
export async function ensureCheckpoints(client: Client, taskQueue: string): Promise<void> {
  await client.workflow.start(checkpointWorkflow, {
    workflowId: checkpointWorkflowId(taskQueue),
    taskQueue,
    args: [],
    workflowIdConflictPolicy: 'USE_EXISTING',
    workflowTaskTimeout: WORKFLOW_TASK_TIMEOUT,
    ...checkpointsVisibility({ taskQueue }),
  });
}

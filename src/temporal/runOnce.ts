import { WorkflowExecutionAlreadyStartedError, type Client } from '@temporalio/client';
import type { Workflow, WorkflowResultType } from '@temporalio/common';
import type { Visibility } from '../../workflows/searchAttributes';
import { WORKFLOW_TASK_TIMEOUT } from './timeouts';

/**
 * Runs a workflow at most once per id and waits for its result: a request that
 * arrives while the run is in flight attaches to it (USE_EXISTING), one that
 * arrives after it completed reads its result, and only a run that failed may be
 * started again (ALLOW_DUPLICATE_FAILED_ONLY) — so a payment refused for funds can
 * be retried under the same ref, and a settled one is never paid twice.
 */
export async function runWorkflowOnce<W extends Workflow>(
  client: Client,
  workflow: W,
  opts: { workflowId: string; taskQueue: string; args: Parameters<W>; visibility: Visibility },
): Promise<WorkflowResultType<W>> {
  try {
    const handle = await client.workflow.start(workflow, {
      workflowId: opts.workflowId,
      taskQueue: opts.taskQueue,
      args: opts.args,
      workflowIdConflictPolicy: 'USE_EXISTING',
      workflowTaskTimeout: WORKFLOW_TASK_TIMEOUT,
      workflowIdReusePolicy: 'ALLOW_DUPLICATE_FAILED_ONLY',
      ...opts.visibility,
    } as never);
    return (await handle.result()) as WorkflowResultType<W>;
  } catch (error) {
    if (error instanceof WorkflowExecutionAlreadyStartedError) {
      return (await client.workflow.getHandle(opts.workflowId).result()) as WorkflowResultType<W>;
    }
    throw error;
  }
}

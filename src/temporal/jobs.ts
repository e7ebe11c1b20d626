import { WithStartWorkflowOperation, type Client } from '@temporalio/client';
import { jobWorkflowId, type GrantView, type JobRequest } from '../domain/grants';
import { jobVisibility } from '../../workflows/searchAttributes';
import { jobDecidedUpdate } from '../../workflows/definitions';
import { grantJobWorkflow } from '../../workflows/job';
import { WORKFLOW_TASK_TIMEOUT } from './timeouts';

/**
 * Starts a grant job the one way Sluice does it: update-with-start on `job-<id>`,
 * the update completing once the job is decided (and a free job reserved), with the
 * search attributes that list a payer's jobs. Attaches to a run already going, which
 * may be another request's job under the same id: the caller compares the terms.
 */
export async function startJobWorkflow(client: Client, taskQueue: string, request: JobRequest) {
  const startWorkflowOperation = new WithStartWorkflowOperation(grantJobWorkflow, {
    workflowId: jobWorkflowId(request.jobId),
    taskQueue,
    args: [request],
    workflowIdConflictPolicy: 'USE_EXISTING',
    workflowTaskTimeout: WORKFLOW_TASK_TIMEOUT,
    // a job id runs once: a finished job is answered from its grant, never started again
    workflowIdReusePolicy: 'REJECT_DUPLICATE',
    ...jobVisibility(request),
  });
  const decided: GrantView = await client.workflow.executeUpdateWithStart(jobDecidedUpdate, { startWorkflowOperation });
  return { decided, handle: await startWorkflowOperation.workflowHandle() };
}

import { WithStartWorkflowOperation, WorkflowExecutionAlreadyStartedError, type Client } from '@temporalio/client';
import type { Workflow, WorkflowResultType } from '@temporalio/common';
import { jobWorkflowId, type GrantView, type JobRequest } from '../domain/grants';
import { sessionWorkflowId, type SessionOpening, type SessionView } from '../domain/sessions';
import { streamWorkflowId, type StreamReceipt, type StreamRequest } from '../domain/streams';
import { sluiceErrorFromTemporal } from '../temporal/failures';
import { WORKFLOW_TASK_TIMEOUT } from '../temporal/timeouts';
import { jobDecidedUpdate, sessionOpenedUpdate, streamOpenedUpdate } from '../../workflows/definitions';
import { grantJobWorkflow } from '../../workflows/job';
import { jobVisibility, sessionVisibility, streamVisibility, type Visibility } from '../../workflows/searchAttributes';
import { sessionWorkflow } from '../../workflows/session';
import { streamWorkflow, type StreamWorkflowOptions } from '../../workflows/stream';

/*
 * How Sluice starts each kind of workflow, once per id: the services call these (and
 * the benches and the history recorder, which start workflows the way the API does).
 */

/**
 * Opens a stream the one way Sluice does it: update-with-start on `stream-<ref>`,
 * the update completing once tick 1 has settled (or opening failed), with the
 * search attributes and memo that make it findable. Attaches to a run already going.
 */
export async function startStreamWorkflow(client: Client, taskQueue: string, request: StreamRequest, options: StreamWorkflowOptions = {}) {
  const startWorkflowOperation = new WithStartWorkflowOperation(streamWorkflow, {
    workflowId: streamWorkflowId(request.ref),
    taskQueue,
    args: [request, options],
    workflowIdConflictPolicy: 'USE_EXISTING',
    workflowTaskTimeout: WORKFLOW_TASK_TIMEOUT,
    ...streamVisibility(request),
  });
  let opened: StreamReceipt;
  try {
    opened = await client.workflow.executeUpdateWithStart(streamOpenedUpdate, { startWorkflowOperation });
  } catch (error) {
    // A refused opening (a database guard: a subaccount that is not live) fails the
    // workflow itself, so the update only says it completed first: the run's own
    // failure carries the caller's error.
    await rethrowRunFailure(startWorkflowOperation);
    throw error;
  }
  return { opened, handle: await startWorkflowOperation.workflowHandle() };
}

async function rethrowRunFailure(operation: WithStartWorkflowOperation<typeof streamWorkflow>): Promise<void> {
  const handle = await operation.workflowHandle().catch(() => undefined);
  if (!handle) return;
  // a describe that fails too (the server as busy as it was for the update) leaves the update's own error to answer
  const described = await handle.describe().catch(() => undefined);
  if (described?.status.name !== 'FAILED') return;
  await handle.result().catch((failed: unknown) => {
    if (sluiceErrorFromTemporal(failed)) throw failed;
  });
}

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

/**
 * Opens a session the one way Sluice does it: update-with-start on `session-<id>`,
 * the update completing once the balance is funded (or failing as the ledger refused
 * it), with the search attributes and summary that list a payer's sessions. Attaches to a run already going. A run that failed (its funding refused) may
 * be started again under the same id; one that completed (closed) may not.
 */
export async function startSessionWorkflow(client: Client, taskQueue: string, opening: SessionOpening): Promise<SessionView> {
  const startWorkflowOperation = new WithStartWorkflowOperation(sessionWorkflow, {
    workflowId: sessionWorkflowId(opening.sessionId),
    taskQueue,
    args: [opening],
    workflowIdConflictPolicy: 'USE_EXISTING',
    workflowTaskTimeout: WORKFLOW_TASK_TIMEOUT,
    workflowIdReusePolicy: 'ALLOW_DUPLICATE_FAILED_ONLY',
    ...sessionVisibility(opening),
  });
  return client.workflow.executeUpdateWithStart(sessionOpenedUpdate, { startWorkflowOperation });
}

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

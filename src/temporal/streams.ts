import { WithStartWorkflowOperation, type Client } from '@temporalio/client';
import { streamVisibility } from '../../workflows/searchAttributes';
import { streamWorkflowId, type StreamReceipt, type StreamRequest } from '../domain/streams';
import { streamOpenedUpdate } from '../../workflows/definitions';
import { sluiceErrorFromTemporal } from './failures';
import { streamWorkflow, type StreamWorkflowOptions } from '../../workflows/stream';
import { WORKFLOW_TASK_TIMEOUT } from './timeouts';

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
  const { status } = await handle.describe();
  if (status.name !== 'FAILED') return;
  await handle.result().catch((failed: unknown) => {
    if (sluiceErrorFromTemporal(failed)) throw failed;
  });
}

import { WithStartWorkflowOperation, type Client } from '@temporalio/client';
import { SA_KIND, SA_PAYEE, SA_PAYER, SA_STATUS } from '../domain/searchAttributes';
import { streamWorkflowId, type StreamReceipt, type StreamRequest } from '../domain/streams';
import { streamOpenedUpdate } from '../../workflows/definitions';
import { streamWorkflow, type StreamWorkflowOptions } from '../../workflows/stream';

/**
 * Opens a stream the one way Sluice does it: update-with-start on `stream-<ref>`,
 * the update completing once tick 1 has settled (or opening failed), with the
 * search attributes that make it findable. Attaches to a run already going.
 */
export async function startStreamWorkflow(client: Client, taskQueue: string, request: StreamRequest, options: StreamWorkflowOptions = {}) {
  const startWorkflowOperation = new WithStartWorkflowOperation(streamWorkflow, {
    workflowId: streamWorkflowId(request.ref),
    taskQueue,
    args: [request, options],
    workflowIdConflictPolicy: 'USE_EXISTING',
    typedSearchAttributes: [
      { key: SA_KIND, value: 'stream' },
      { key: SA_PAYER, value: request.payer },
      { key: SA_PAYEE, value: request.payee },
      { key: SA_STATUS, value: 'STREAMING' },
    ],
  });
  const opened: StreamReceipt = await client.workflow.executeUpdateWithStart(streamOpenedUpdate, { startWorkflowOperation });
  return { opened, handle: await startWorkflowOperation.workflowHandle() };
}

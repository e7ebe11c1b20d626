import { WithStartWorkflowOperation, type Client } from '@temporalio/client';
import { sessionWorkflowId, type SessionOpening, type SessionView } from '../domain/sessions';
import { sessionOpenedUpdate } from '../../workflows/definitions';
import { sessionWorkflow } from '../../workflows/session';
import { WORKFLOW_TASK_TIMEOUT } from './timeouts';

/**
 * Opens a session the one way Sluice does it: update-with-start on `session-<id>`,
 * the update completing once the balance is funded (or failing as the ledger refused
 * it). Attaches to a run already going. A run that failed (its funding refused) may
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
  });
  return client.workflow.executeUpdateWithStart(sessionOpenedUpdate, { startWorkflowOperation });
}

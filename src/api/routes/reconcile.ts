import { z } from 'zod';
import { reconcileService } from '../../services/reconcile';
import type { Api } from '../app';
import * as S from '../schemas';

const errors = { 400: S.ErrorBody, 401: S.ErrorBody, 403: S.ErrorBody, 404: S.ErrorBody, 409: S.ErrorBody };

const Reconciled = z.object({
  kind: z.enum(['stream', 'job', 'creation', 'elimination', 'session']),
  id: z.string(),
  workflowId: z.string(),
  workflowStatus: z.string().optional().describe("Temporal's status of the workflow (TERMINATED, TIMED_OUT, FAILED, ...); absent: Temporal does not know it"),
  outcome: z.enum(['settled', 'resumed', 'concluded', 'failed']).describe('concluded: its own workflow had settled it by the time the reconciler held it'),
  reason: z.string().optional(),
  error: z.string().optional(),
});

/**
 * The reconciler on demand (admin): what the worker's reconciler does every
 * SLUICE_RECONCILE_INTERVAL_MS, now, for everything or for one stream, job or subaccount.
 */
export function reconcileRoutes(app: Api) {
  const checks = reconcileService(app.deps);

  app.post('/v1/reconcile', {
    config: { auth: 'admin' },
    schema: {
      tags: ['audit'],
      summary: 'Settle what the ledger holds open for a workflow no longer running (admin): everything, or one stream, job or subaccount',
      description:
        'A stream closes (`closedBy: operator`, reason `workflow_<status>`), a job is refunded, released and cancelled, a subaccount being created is compensated and fails, an elimination is resumed. ' +
        'Naming one whose workflow is still running is a 409: cancel it instead.',
      body: z
        .object({ stream: S.Ref.optional(), job: S.Ref.optional(), subaccount: z.string().min(1).max(200).optional() })
        .default({}),
      response: { 200: z.object({ heldOpen: z.number().int(), stranded: z.array(Reconciled) }), ...errors },
    },
    handler: async (req) => checks.reconcile(req.body ?? {}),
  });
}

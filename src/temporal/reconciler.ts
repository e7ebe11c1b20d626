import { WorkflowNotFoundError, type Client } from '@temporalio/client';
import type { Pool, Queryable } from '../db/pool';
import { goneReason, OPERATOR, type CloseReason } from '../domain/streams';
import { heldOpen, type HeldOpen, type HeldOpenFilter } from '../ledger/heldOpen';
import { closeStream } from '../ledger/streams';
import { cancelGrantInLedger } from '../ledger/grants';
import { closeSessionInLedger } from '../ledger/sessions';
import { failStrandedCreation } from '../ledger/entities';
import { subaccountEliminationWorkflow } from '../../workflows/entities';
import { subaccountEliminationVisibility } from '../../workflows/searchAttributes';

export interface ReconcileDeps {
  pool: Pool;
  temporal: Client;
  taskQueue: string;
}

/** One item held open whose workflow is not running, and what the reconciler did. */
export interface Reconciled extends HeldOpen {
  /** The workflow's status as Temporal reports it (TERMINATED, TIMED_OUT, FAILED, ...); absent when Temporal does not know it. */
  workflowStatus?: string;
  /** `concluded`: its own workflow had settled it by the time the reconciler held it (a creation activated after it was listed). */
  outcome: 'settled' | 'resumed' | 'concluded' | 'failed';
  /** The close reason it was settled with (workflow_<status>), or the error that stopped it. */
  reason?: string;
  error?: string;
}

export interface ReconcileReport {
  /** Items held open in the ledger. */
  heldOpen: number;
  /** Of them, those whose workflow was not running. */
  stranded: Reconciled[];
}

/** A workflow's status now (RUNNING, COMPLETED, TERMINATED, ...), or undefined if Temporal does not know the id. */
export async function workflowStatus(client: Client, workflowId: string): Promise<string | undefined> {
  try {
    return (await client.workflow.getHandle(workflowId).describe()).status.name;
  } catch (error) {
    if (error instanceof WorkflowNotFoundError) return undefined;
    throw error;
  }
}

/**
 * The items held open (all, or `only`) whose workflow is not running. Visibility
 * (one list query) rules out the running ones in bulk; each candidate left is then
 * described one by one, since visibility may lag a workflow that just started.
 */
export async function strandedItems(deps: { pool: Queryable; temporal: Client; taskQueue: string }, only?: HeldOpenFilter): Promise<{ heldOpen: number; stranded: Array<HeldOpen & { workflowStatus?: string }> }> {
  const items = await heldOpen(deps.pool, only);
  if (items.length === 0) return { heldOpen: 0, stranded: [] };
  const running = new Set<string>();
  if (items.length > 8) {
    for await (const w of deps.temporal.workflow.list({ query: `TaskQueue = '${deps.taskQueue}' AND ExecutionStatus = 'Running'` })) running.add(w.workflowId);
  }
  const stranded: Array<HeldOpen & { workflowStatus?: string }> = [];
  for (const item of items) {
    if (running.has(item.workflowId)) continue;
    const status = await workflowStatus(deps.temporal, item.workflowId);
    if (status !== 'RUNNING') stranded.push({ ...item, ...(status && { workflowStatus: status }) });
  }
  return { heldOpen: items.length, stranded };
}

/**
 * The reconciler (DESIGN §3 "Nothing stranded"): settles what the ledger holds open
 * for a workflow that is no longer running, exactly as that workflow's cancel would.
 * A stream closes (its due ticks billed, its escrow released), `closedBy: operator`,
 * reason `workflow_<status>`; a job's payment is refunded and its reservation
 * released, and it ends `cancelled`; an open session's running requests are cancelled
 * so and it closes, what remains refunded; a subaccount being created is compensated (its
 * funding returned, its collateral released) and ends `failed`; an elimination is
 * started again and finishes. Every step is an idempotent ledger transaction that
 * re-checks the row under its lock, so running it twice, or racing a workflow that
 * settles the same item, settles it once.
 */
export async function reconcile(deps: ReconcileDeps, only?: HeldOpenFilter): Promise<ReconcileReport> {
  const { heldOpen: count, stranded } = await strandedItems(deps, only);
  const out: Reconciled[] = [];
  for (const item of stranded) {
    const reason = goneReason(item.workflowStatus);
    try {
      const outcome = await settleStranded(deps, item, reason);
      out.push({ ...item, outcome, reason });
    } catch (error) {
      // left for the next round (a lock timeout, a database restart); the others go on
      out.push({ ...item, outcome: 'failed', reason, error: error instanceof Error ? error.message : String(error) });
    }
  }
  return { heldOpen: count, stranded: out };
}

/** Settles one item the reconciler found held open with its workflow gone (exported for the test of a stale listing). */
export async function settleStranded({ pool, temporal, taskQueue }: ReconcileDeps, item: HeldOpen, reason: CloseReason): Promise<Reconciled['outcome']> {
  switch (item.kind) {
    case 'stream':
      await closeStream(pool, { ref: item.id, reason, closedBy: OPERATOR });
      return 'settled';
    case 'job':
      await cancelGrantInLedger(pool, { jobId: item.id, failure: `its workflow ${item.workflowId} is not running (${reason})`, closedBy: OPERATOR, reason });
      return 'settled';
    case 'session':
      // its running requests compensated (cancelled), then closed with what remains refunded
      await closeSessionInLedger(pool, { sessionId: item.id, failure: `its workflow ${item.workflowId} is not running (${reason})`, closedBy: OPERATOR, reason });
      return 'settled';
    case 'creation': {
      // only while still pending, in one transaction: listed pending, it may have been activated since
      const failed = await failStrandedCreation(pool, { id: item.id, failure: `its creation workflow ${item.workflowId} is not running (${reason})` });
      return failed ? 'settled' : 'concluded';
    }
    case 'elimination': {
      // an elimination only moves forward: a new run finishes what the lost one began
      const elimination = { id: item.id, reason: `resumed by the reconciler (${reason})`, by: OPERATOR };
      await temporal.workflow.start(subaccountEliminationWorkflow, {
        workflowId: item.workflowId,
        taskQueue,
        args: [elimination],
        workflowIdConflictPolicy: 'USE_EXISTING',
        workflowIdReusePolicy: 'ALLOW_DUPLICATE',
        ...subaccountEliminationVisibility(elimination),
      } as never);
      return 'resumed';
    }
  }
}


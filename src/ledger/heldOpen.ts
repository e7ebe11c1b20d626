import type { Queryable } from '../db/pool';
import { creationWorkflowId, eliminationWorkflowId } from '../domain/entities';
import { jobWorkflowId } from '../domain/grants';
import { streamWorkflowId } from '../domain/streams';
import { sessionWorkflowId } from '../domain/sessions';

/**
 * What the ledger holds open on behalf of a workflow: money a running workflow is
 * expected to settle. An open stream (its escrow, its billing), a job that has not
 * settled (its pool reservation, its payment), a subaccount still being created (its
 * collateral hold, its funding) or being eliminated (its balance, its collateral), an
 * open session (its balance, its running requests).
 * Every one of these rows is written by its own workflow's first step, so while the
 * row is open the workflow should be running; one that is not was terminated, timed
 * out, failed or lost, and its money waits for the reconciler.
 */
export type HeldOpenKind = 'stream' | 'job' | 'creation' | 'elimination' | 'session';

export interface HeldOpen {
  kind: HeldOpenKind;
  /** The stream ref, the job id, or the subaccount id. */
  id: string;
  workflowId: string;
}

const KINDS: Record<HeldOpenKind, { sql: string; workflowId: (row: { id: string; entity_id?: string; request_id?: string }) => string }> = {
  stream: { sql: `select ref as id from streams where status = 'open'`, workflowId: (r) => streamWorkflowId(r.id) },
  job: { sql: `select job_id as id from grants where status in ('awaiting_payment', 'reserved') and session_id is null`, workflowId: (r) => jobWorkflowId(r.id) },
  creation: { sql: `select id, entity_id, request_id from subaccounts where status = 'pending'`, workflowId: (r) => creationWorkflowId(r.entity_id!, r.request_id!) },
  elimination: { sql: `select id from subaccounts where status = 'eliminating'`, workflowId: (r) => eliminationWorkflowId(r.id) },
  // an open session (its balance, its requests' reservations and payments) is its session workflow's
  session: { sql: `select session_id as id from sessions where status = 'open'`, workflowId: (r) => sessionWorkflowId(r.id) },
};

/** Which items to look at: some kinds, and one id among them. */
export interface HeldOpenFilter {
  kinds?: HeldOpenKind[];
  id?: string;
}

/** Everything held open now (or what `only` names). */
export async function heldOpen(db: Queryable, only?: HeldOpenFilter): Promise<HeldOpen[]> {
  const out: HeldOpen[] = [];
  for (const kind of Object.keys(KINDS) as HeldOpenKind[]) {
    if (only?.kinds && !only.kinds.includes(kind)) continue;
    const { sql, workflowId } = KINDS[kind];
    const { rows } = await db.query<{ id: string; entity_id?: string; request_id?: string }>(
      only?.id === undefined ? sql : `select * from (${sql}) v where v.id = $1`,
      only?.id === undefined ? [] : [only.id],
    );
    for (const row of rows) out.push({ kind, id: row.id, workflowId: workflowId(row) });
  }
  return out;
}

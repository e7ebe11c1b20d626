import { runAudit } from '../audit';
import { SluiceError } from '../domain/errors';
import type { HeldOpenFilter } from '../ledger/heldOpen';
import { reconcile as reconcileStranded } from '../temporal/reconciler';
import type { ServiceDeps } from './deps';

/** What POST /v1/reconcile may name: at most one stream, job or subaccount (none: everything). */
export interface ReconcileTarget {
  stream?: string;
  job?: string;
  subaccount?: string;
}

/**
 * The admin's checks on the whole ledger: the auditor's invariants, and the
 * reconciler on demand (what the worker's reconciler does every
 * SLUICE_RECONCILE_INTERVAL_MS, now, for everything or for one stream, job or subaccount).
 */
export function reconcileService(deps: ServiceDeps) {
  const { pool, temporal, taskQueue } = deps;

  /** Every invariant over the whole ledger, each violation with the rows involved. */
  const audit = () => runAudit(pool, { client: temporal, taskQueue });

  /** Settles what the ledger holds open for a workflow no longer running; one named whose workflow runs is refused (cancel it instead). */
  const reconcile = async (target: ReconcileTarget) => {
    const named = Object.entries(target).filter(([, v]) => v !== undefined);
    if (named.length > 1) throw new SluiceError('invalid_request', 'name at most one of stream, job, subaccount');
    const [what, id] = named[0] ?? [];
    const only: HeldOpenFilter | undefined =
      what === 'stream' ? { kinds: ['stream'], id } : what === 'job' ? { kinds: ['job'], id } : what === 'subaccount' ? { kinds: ['creation', 'elimination'], id } : undefined;
    const report = await reconcileStranded({ pool, temporal, taskQueue }, only);
    if (only && report.heldOpen > 0 && report.stranded.length === 0) {
      throw new SluiceError('invalid_state', `${what} ${id}'s workflow is running: it settles itself (cancel it instead)`, { [what!]: id });
    }
    return report;
  };

  return { audit, reconcile };
}

export type ReconcileService = ReturnType<typeof reconcileService>;

import { forbidden, SluiceError } from '../domain/errors';
import { streamWorkflowId } from '../domain/streams';
import { getAccount } from '../ledger/accounts';
import { acceptRate, changeRate, depositToStream, joinDistribution, leaveDistribution } from '../ledger/streamControls';
import { findStreamWithHistory, receiptOf } from '../ledger/streams';
import { asSluiceError } from '../temporal/failures';
import { workflowStatus } from '../temporal/reconciler';
import { pauseStreamUpdate, resumeStreamUpdate } from '../../workflows/definitions';
import { actorName, ownAccount, scopedKey, type Actor } from './actors';
import { StillRunning, withinDeadline } from './deadline';
import { waitMsOf, type ServiceDeps } from './deps';
import { sendUpdate } from './updates';
import { membersOf, streamActor, visibleStream } from './streamAccess';

/**
 * The controls of an open stream: top-up, pause/resume, rate change, and a
 * distribution's membership. Who may call each is decided in streamAccess.ts;
 * a control on a closed stream, pausing a paused one or resuming a running one
 * is `invalid_state`.
 */
export function streamControlService(deps: ServiceDeps) {
  const { pool, temporal } = deps;
  const waitMs = waitMsOf(deps);

  /** A top-up (anyone, from its own account; idempotent by key): what it did, not the stream's history. */
  const deposit = async (actor: Actor, ref: string, input: { fromAccountId: string; amount: number; idempotencyKey: string }) => {
    const from = await ownAccount(pool, actor, input.fromAccountId);
    const receipt = await depositToStream(pool, { ref, key: scopedKey(actor, input.idempotencyKey), fromAccountId: from.id, amount: input.amount, by: actorName(actor) });
    return { ref: receipt.ref, status: receipt.status, amount: input.amount, fromAccountId: from.id, maxTotal: receipt.maxTotal, deposited: receipt.deposited ?? 0 };
  };

  /** Pauses or resumes a stream through its workflow (the clock is the workflow's): the receipt after. */
  const pauseOrResume = async (actor: Actor, ref: string, action: 'pause' | 'resume') => {
    const row = await visibleStream(pool, actor, ref);
    const by = await streamActor(pool, actor, row, 'pause');
    if (row.status !== 'open') throw new SluiceError('invalid_state', `stream ${row.ref} is closed`, { ref: row.ref });
    const workflowId = streamWorkflowId(row.ref);
    const update = action === 'pause' ? pauseStreamUpdate : resumeStreamUpdate;
    const handle = temporal.workflow.getHandle(workflowId);
    const updated = sendUpdate(() => handle.executeUpdate(update, { args: [by] }), waitMs, { ref: row.ref }).catch(async (error: unknown) => {
      if (asSluiceError(error)) throw error;
      // the run ended between the read above and the update: the stream closed meanwhile
      if ((await findStreamWithHistory(pool, row.ref))?.status !== 'open') throw new SluiceError('invalid_state', `stream ${row.ref} is closed`, { ref: row.ref });
      // open, with no workflow to pause it: the reconciler settles it (a cancel does now)
      if ((await workflowStatus(temporal, workflowId)) !== 'RUNNING') {
        throw new SluiceError('invalid_state', `stream ${row.ref} has no running workflow to ${action} it: cancel it (it settles through the ledger) or let the reconciler close it`, { ref: row.ref, workflowId });
      }
      throw error;
    });
    await withinDeadline(updated, waitMs, () => new StillRunning(`/v1/streams/${row.ref}`, { ref: row.ref, workflowId }));
    return receiptOf(pool, row.ref);
  };

  /** A rate change by the payer; with rateConsent 'payee' it is a proposal (`proposedRatePerTick` set). */
  const changeRateOf = async (actor: Actor, ref: string, ratePerTick: number) => {
    const row = await visibleStream(pool, actor, ref);
    return changeRate(pool, { ref: row.ref, ratePerTick, ...(await streamActor(pool, actor, row, 'payer')) });
  };

  /** The payee agrees to the payer's proposed rate, naming it. */
  const acceptRateOf = async (actor: Actor, ref: string, ratePerTick: number) => {
    const row = await visibleStream(pool, actor, ref);
    if (actor.kind === 'party' && actor.party !== row.payee) throw forbidden(`only the payee of stream ${row.ref} accepts a rate`);
    return acceptRate(pool, { ref: row.ref, ratePerTick, by: actorName(actor) });
  };

  /** Members join a distribution (or change weight), from the next tick on (the payer). */
  const join = async (actor: Actor, ref: string, input: { accountId: string; weight: number }[]) => {
    const row = await visibleStream(pool, actor, ref);
    const by = await streamActor(pool, actor, row, 'payer');
    const members = await membersOf(pool, input, await getAccount(pool, row.payer_account_id));
    return joinDistribution(pool, { ref: row.ref, members, ...by });
  };

  /** A member leaves a distribution, from the next tick on (the payer, or the member itself). */
  const leave = async (actor: Actor, ref: string, accountId: string) => {
    const row = await visibleStream(pool, actor, ref);
    const member = row.members?.find((m) => m.accountId === accountId);
    const by = actorName(actor);
    if (actor.kind === 'party' && by !== row.payer && by !== member?.party) throw forbidden(`only the payer or the member itself takes ${accountId} out`);
    return leaveDistribution(pool, { ref: row.ref, accountId, by });
  };

  return { deposit, pauseOrResume, changeRate: changeRateOf, acceptRate: acceptRateOf, join, leave };
}

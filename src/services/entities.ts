import { randomBytes } from 'node:crypto';
import { DAY_MS } from '../domain/checkpoints';
import { creationWorkflowId, CREATIONS_PER_HOUR_DEFAULT, eliminationWorkflowId, SUBACCOUNT_CAP_DEFAULT, type Subaccount } from '../domain/entities';
import { notFound, SluiceError } from '../domain/errors';
import { entityLedger, takeCheckpoints } from '../ledger/checkpoints';
import {
  capReached,
  creationLimits,
  creationsRateLimited,
  entityDashboard,
  getEntity,
  getSubaccount,
  listDeliveries,
  listSubaccounts,
  registerEntity,
  retireWebhookSecret,
  rotateWebhookSecret,
  type EntityInput,
} from '../ledger/entities';
import { deliveryIdOf } from '../webhooks/signature';
import { listEntities } from '../ledger/entityList';
import { sluiceErrorFromTemporal } from '../temporal/failures';
import { runWorkflowOnce } from './starts';
import { subaccountCreationWorkflow, subaccountEliminationWorkflow } from '../../workflows/entities';
import { subaccountCreationVisibility, subaccountEliminationVisibility } from '../../workflows/searchAttributes';
import { actorName, idOfKey, type Actor } from './actors';
import { StillRunning, withinDeadline } from './deadline';
import { waitMsOf, type ServiceDeps } from './deps';

/** Entities and their fleets of subaccounts: registration, creation and elimination (workflows), and the reads. */
export function entityService(deps: ServiceDeps) {
  const { pool, temporal, taskQueue } = deps;
  const waitMs = waitMsOf(deps);
  const limits = deps.subaccountLimits ?? { cap: SUBACCOUNT_CAP_DEFAULT, perHour: CREATIONS_PER_HOUR_DEFAULT };

  /** An entity acts on its own subaccounts only; the admin on all. Another entity is not found, as a missing one. */
  const ownEntity = (actor: Actor, entityId: string) => {
    if (actor.kind === 'party' && actor.party !== entityId) throw notFound('entity', entityId);
  };
  /** An entity the actor may act on, which must exist (an unknown one is a 404, not an empty answer). */
  const knownEntity = async (actor: Actor, entityId: string) => {
    ownEntity(actor, entityId);
    return getEntity(pool, entityId);
  };
  const ownSubaccount = async (actor: Actor, id: string): Promise<Subaccount> => {
    const sub = await getSubaccount(pool, id);
    if (actor.kind === 'party' && actor.party !== sub.entityId) throw notFound('subaccount', id);
    return sub;
  };

  const register = (input: EntityInput) => registerEntity(pool, input);

  const list = async (page: { limit: number }) => {
    const entities = await listEntities(pool, page);
    return { entities, ...(entities.length === page.limit && { next: entities.at(-1)!.id }) };
  };

  /** An entity's settings and where it stands against its limits (cap, creations this hour, when the next may be created). */
  const get = async (actor: Actor, entityId: string) => {
    const e = await knownEntity(actor, entityId);
    const l = await creationLimits(pool, e, limits);
    return {
      id: e.id,
      mainAccountId: e.main_account_id,
      collateral: e.collateral,
      funding: e.funding,
      webhookUrls: e.webhook_urls,
      ...(e.webhook_secret_overlap_until && { webhookSecretOverlapUntil: e.webhook_secret_overlap_until.toISOString() }),
      challengeMs: e.challenge_ms,
      challengeMinBps: e.challenge_min_bps,
      ...(e.max_drawdown_bps !== null && { maxDrawdownBps: e.max_drawdown_bps }),
      ...(e.inactivity_ms !== null && { inactivityMs: e.inactivity_ms }),
      assessEveryMs: e.assess_every_ms,
      nextSeq: e.next_seq,
      subaccountCap: l.cap,
      creationsPerHour: l.perHour,
      liveSubaccounts: l.live,
      rollingBack: l.rollingBack,
      creationsLastHour: l.lastHour,
      ...(l.slotFreesAt && { nextCreationAt: l.slotFreesAt.toISOString() }),
    };
  };

  /**
   * Creates a subaccount through its saga, once per request: a re-send (same request
   * id, or Idempotency-Key) attaches to the run in flight or reads the outcome of the
   * finished one (no second saga, no second webhook); only a refused allocation (the
   * run failed, nothing allocated) may run again.
   */
  const createSubaccount = async (actor: Actor, entityId: string, input: { requestId?: string; idempotencyKey?: string }) => {
    await knownEntity(actor, entityId);
    const key = input.idempotencyKey;
    const requestId = input.requestId ?? (key !== undefined ? idOfKey(actor, key) : randomBytes(8).toString('hex'));
    const workflowId = creationWorkflowId(entityId, requestId);
    const creation = runWorkflowOnce(temporal, subaccountCreationWorkflow, {
      workflowId,
      taskQueue,
      args: [{ entityId, requestId }],
      visibility: subaccountCreationVisibility({ entityId, requestId }),
    });
    const result = await withinDeadline(creation, waitMs, () => new StillRunning(`/v1/entities/${entityId}/subaccounts`, { entityId, requestId, workflowId })).catch(
      async (error: unknown) => {
        // a refused allocation, said with where the entity stands now: when the next hourly
        // slot frees, or how many slots at the cap are rolling back (also Retry-After)
        const refused = sluiceErrorFromTemporal(error);
        if (refused?.code !== 'rate_limited' && refused?.code !== 'limit_exceeded') throw error;
        const l = await creationLimits(pool, await getEntity(pool, entityId), limits);
        const worded = refused.code === 'rate_limited' ? creationsRateLimited(entityId, l.lastHour, l.perHour, Math.max(1, l.slotFreesInS)) : capReached(entityId, l);
        throw new SluiceError(refused.code, worded.message, { ...refused.details, ...worded.details });
      },
    );
    if (result.error) {
      throw new SluiceError('creation_failed', result.error.message, { failedStep: result.failedStep, compensated: result.compensated, subaccount: result.subaccount ?? null });
    }
    return { subaccount: result.subaccount!, compensated: result.compensated };
  };

  const subaccounts = async (actor: Actor, entityId: string, page: { after: number; limit: number }) => {
    await knownEntity(actor, entityId);
    return { subaccounts: await listSubaccounts(pool, entityId, page) };
  };

  /** Eliminates a live subaccount through its workflow (sweep, release collateral, close its streams); again is a no-op. */
  const eliminate = async (actor: Actor, id: string, reason?: string) => {
    const sub = await ownSubaccount(actor, id);
    if (sub.status === 'eliminated') return { subaccount: sub, swept: 0, collateralReleased: false, streams: [] };
    if (sub.status !== 'active' && sub.status !== 'challenge' && sub.status !== 'eliminating') {
      throw new SluiceError('invalid_request', `subaccount ${sub.id} is ${sub.status}; only a live subaccount can be eliminated`, { status: sub.status });
    }
    const elimination = { id: sub.id, reason: reason ?? 'eliminated on request', by: actorName(actor) };
    const workflowId = eliminationWorkflowId(sub.id);
    const eliminated = temporal.workflow.execute(subaccountEliminationWorkflow, {
      workflowId,
      taskQueue,
      args: [elimination],
      workflowIdConflictPolicy: 'USE_EXISTING',
      ...subaccountEliminationVisibility(elimination),
    });
    return withinDeadline(eliminated, waitMs, () => new StillRunning(`/v1/subaccounts/${sub.id}`, { subaccount: sub.id, workflowId }));
  };

  /** The debt ledger over time: checkpoints from `from` (default 30 days before `to`) to `to` (default now). */
  const ledger = async (actor: Actor, entityId: string, q: { from?: string; to?: string; step: number; subaccount?: string }) => {
    ownEntity(actor, entityId);
    const to = q.to ? new Date(q.to) : new Date();
    const from = q.from ? new Date(q.from) : new Date(to.getTime() - 30 * DAY_MS);
    const points = await entityLedger(pool, entityId, { from, to, stepS: q.step, subaccount: q.subaccount });
    return { entity: entityId, ...(q.subaccount && { subaccount: q.subaccount }), step: q.step, points };
  };

  /** A checkpoint of every subaccount now, on demand. */
  const checkpoint = async (actor: Actor, entityId: string) => {
    await knownEntity(actor, entityId);
    return { entity: entityId, ...(await takeCheckpoints(pool, { entityId, at: new Date() })) };
  };

  const dashboard = async (actor: Actor, entityId: string, page: { after: number; limit: number }) => {
    ownEntity(actor, entityId);
    return entityDashboard(pool, entityId, page);
  };

  const deliveries = async (actor: Actor, entityId: string, page: { after: number; limit: number }) => {
    await knownEntity(actor, entityId);
    const deliveries = await listDeliveries(pool, entityId, page);
    return { deliveries: deliveries.map((d) => ({ ...d, deliveryId: deliveryIdOf(d.eventKey, d.url) })) };
  };

  const rotateSecret = (actor: Actor, entityId: string, input: { overlapS: number }) => {
    ownEntity(actor, entityId);
    return rotateWebhookSecret(pool, entityId, input);
  };
  const retireSecret = (actor: Actor, entityId: string) => {
    ownEntity(actor, entityId);
    return retireWebhookSecret(pool, entityId);
  };

  return { register, list, get, createSubaccount, subaccounts, subaccount: ownSubaccount, eliminate, ledger, checkpoint, dashboard, deliveries, rotateSecret, retireSecret };
}

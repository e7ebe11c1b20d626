import { defineSearchAttributeKey, SearchAttributeType, type SearchAttributePair } from '@temporalio/common';
import { parseSubaccountId } from '../src/domain/entities';

/**
 * Search attributes that make Sluice workflows findable in the Temporal UI
 * (e.g. `SluicePayer = "alice" AND SluiceStatus = "STREAMING"`, or
 * `SluiceKind = "subaccount" AND SluiceEntity = "acme" AND SluiceStatus = "FAILED"`).
 * Registered on the namespace by the launcher, the test setup and
 * deploy/temporal/register-search-attributes.sh; set at start (by the API, or by the
 * parent for a child workflow) and kept current by the workflows.
 */
export const SA_KIND = defineSearchAttributeKey('SluiceKind', SearchAttributeType.KEYWORD);
export const SA_PAYER = defineSearchAttributeKey('SluicePayer', SearchAttributeType.KEYWORD);
export const SA_PAYEE = defineSearchAttributeKey('SluicePayee', SearchAttributeType.KEYWORD);
export const SA_STATUS = defineSearchAttributeKey('SluiceStatus', SearchAttributeType.KEYWORD);
/** The entity a subaccount workflow (creation, challenge, elimination, webhook delivery) works for. */
export const SA_ENTITY = defineSearchAttributeKey('SluiceEntity', SearchAttributeType.KEYWORD);

export const SEARCH_ATTRIBUTES = [SA_KIND, SA_PAYER, SA_PAYEE, SA_STATUS, SA_ENTITY] as const;

/**
 * What a workflow is started with so the Temporal UI lists it meaningfully: its
 * search attributes; a static summary (one line the UI shows in the list and on the
 * workflow's page, e.g. "stream gpu-1: alice → bob, 25/tick") and static details (the
 * terms, one per line); and a memo with the same facts for programs. One builder per
 * workflow kind, used by every place that starts one (the API, src/temporal/*, the
 * parents of child workflows), so a kind's attributes cannot differ between its
 * starters. Start options only: they add no workflow command.
 */
export interface Visibility {
  typedSearchAttributes: SearchAttributePair[];
  memo: { summary: string } & Record<string, unknown>;
  staticSummary: string;
  staticDetails: string;
}

/** The one shape of every kind's visibility: the summary line and its facts, shown three ways. */
function visibility(attributes: SearchAttributePair[], summary: string, facts: Record<string, unknown>): Visibility {
  const details = Object.entries(facts)
    .filter(([, v]) => v !== null && v !== undefined)
    .map(([k, v]) => `**${k}**: ${String(v)}`)
    .join('\n');
  return { typedSearchAttributes: attributes, memo: { summary, ...facts }, staticSummary: summary, staticDetails: details };
}

/** The entity of a subaccount id (`<entity>/<n>`). */
const subaccountEntity = (id: string) => parseSubaccountId(id)?.entityId ?? id;

const pairs = (kind: string, more: Array<[typeof SA_PAYER, string | undefined]>): SearchAttributePair[] => [
  { key: SA_KIND, value: kind },
  ...more.filter((p): p is [typeof SA_PAYER, string] => p[1] !== undefined).map(([key, value]) => ({ key, value })),
];

export function streamVisibility(s: { ref: string; payer: string; payee?: string; members?: unknown[]; ratePerTick: number; maxTotal?: number; tickIntervalMs: number; mode: string }): Visibility {
  const to = s.payee ?? `${s.members?.length ?? 0} members`;
  const cap = s.maxTotal === undefined ? 'open-ended' : `max ${s.maxTotal}`;
  // a distribution stream has members, no single payee
  return visibility(
    pairs('stream', [[SA_PAYER, s.payer], [SA_PAYEE, s.payee], [SA_STATUS, 'STREAMING']]),
    `stream ${s.ref}: ${s.payer} → ${to}, ${s.ratePerTick}/tick every ${s.tickIntervalMs} ms, ${cap} (${s.mode})`,
    { payer: s.payer, payee: s.payee ?? null, ratePerTick: s.ratePerTick, maxTotal: s.maxTotal ?? null, tickIntervalMs: s.tickIntervalMs, mode: s.mode },
  );
}

export function paymentVisibility(p: { ref: string; payer: string; payee: string; amount: number }): Visibility {
  return visibility(pairs('payment', [[SA_PAYER, p.payer], [SA_PAYEE, p.payee], [SA_STATUS, 'PENDING']]), `payment ${p.ref}: ${p.payer} → ${p.payee}, ${p.amount}`, { payer: p.payer, payee: p.payee, amount: p.amount });
}

/** A refund pays the payment's payee back to its payer: those are its payer and payee. */
export function refundVisibility(r: { ref: string; payer: string; payee: string; amount?: number }): Visibility {
  const amount = r.amount === undefined ? 'the rest' : String(r.amount);
  return visibility(pairs('refund', [[SA_PAYER, r.payer], [SA_PAYEE, r.payee]]), `refund of payment ${r.ref}: ${r.payer} → ${r.payee}, ${amount}`, { payment: r.ref, payer: r.payer, payee: r.payee, amount: r.amount ?? null });
}

export function jobVisibility(j: { jobId: string; payer: string; estimatedCost: number }): Visibility {
  return visibility(pairs('job', [[SA_PAYER, j.payer], [SA_STATUS, 'DECIDING']]), `grant job ${j.jobId} for ${j.payer}, estimate ${j.estimatedCost}`, { payer: j.payer, estimatedCost: j.estimatedCost });
}

/** The creation saga: its status is CREATING until it ends (workflows/entities.ts sets the outcome). */
export function subaccountCreationVisibility(c: { entityId: string; requestId: string }): Visibility {
  return visibility(pairs('subaccount', [[SA_ENTITY, c.entityId], [SA_STATUS, 'CREATING']]), `subaccount creation for ${c.entityId} (request ${c.requestId})`, { entity: c.entityId, requestId: c.requestId });
}

export function subaccountChallengeVisibility(id: string): Visibility {
  return visibility(pairs('subaccount_challenge', [[SA_ENTITY, subaccountEntity(id)]]), `challenge period of subaccount ${id}`, { entity: subaccountEntity(id), subaccount: id });
}

export function subaccountEliminationVisibility(e: { id: string; reason: string; by: string }): Visibility {
  return visibility(pairs('subaccount_elimination', [[SA_ENTITY, subaccountEntity(e.id)]]), `elimination of subaccount ${e.id} by ${e.by}: ${e.reason}`, { entity: subaccountEntity(e.id), subaccount: e.id, reason: e.reason, by: e.by });
}

export function webhookVisibility(e: { key: string; type: string; entityId: string; subaccount: { id: string } }): Visibility {
  return visibility(pairs('webhook', [[SA_ENTITY, e.entityId]]), `webhook ${e.type} for ${e.subaccount.id} to ${e.entityId}'s URLs`, { entity: e.entityId, subaccount: e.subaccount.id, event: e.key });
}

/** A prepaid session: its payer pays `amountUnits` into the session's balance at the opening. */
export function sessionVisibility(s: { sessionId: string; payer: string; payerAccountId: string; amountUnits: number }): Visibility {
  return visibility(pairs('session', [[SA_PAYER, s.payer]]), `session ${s.sessionId} for ${s.payer}, funded ${s.amountUnits} from ${s.payerAccountId}`, {
    payer: s.payer,
    payerAccountId: s.payerAccountId,
    amount: s.amountUnits,
  });
}

/*
 * The worker's standing workflows, one per task queue (per shard for the clock). Their
 * continued runs keep the memo and search attributes (Temporal carries them over) but
 * not the static summary, which the SDK's continueAsNew cannot set: the UI shows it on
 * the first run.
 */

export function billingClockVisibility(c: { taskQueue: string; shard: number; shards: number; rowsMax: number }): Visibility {
  return visibility(pairs('billing_clock', []), `billing clock on ${c.taskQueue}, shard ${c.shard} of ${c.shards}: bills the shard's due stream ticks`, {
    taskQueue: c.taskQueue,
    shard: c.shard,
    shards: c.shards,
    rowsMax: c.rowsMax,
  });
}

export function reconcilerVisibility(r: { taskQueue: string; intervalMs: number }): Visibility {
  return visibility(pairs('reconciler', []), `reconciler on ${r.taskQueue}, every ${r.intervalMs} ms: restarts the workflows the database holds open`, {
    taskQueue: r.taskQueue,
    intervalMs: r.intervalMs,
  });
}

export function checkpointsVisibility(c: { taskQueue: string }): Visibility {
  return visibility(pairs('checkpoints', []), `daily debt-ledger checkpoints on ${c.taskQueue}`, { taskQueue: c.taskQueue });
}

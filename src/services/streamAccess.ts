import type { Pool } from '../db/pool';
import { forbidden, notFound, SluiceError } from '../domain/errors';
import type { DistributionMember } from '../domain/streams';
import type { Account } from '../ledger/accounts';
import { getAccount } from '../ledger/accounts';
import { assertGrantAllows, assertOperator, findGrant, type OperatorScope } from '../ledger/operators';
import { getStreamWithHistory, type StreamRow } from '../ledger/streams';
import type { Actor } from './actors';

/**
 * Who may do what to a stream, in one place:
 * - see it: its payer, its payee, a distribution's members, an operator of its payer, the admin;
 * - cancel it: its payer or payee, an operator of the payer granted `cancel`, the admin;
 * - pause or resume it: its payer, an operator granted `pause`, the admin;
 * - change its rate: its payer or the admin (the payee agrees to a proposal);
 * - top it up: anyone, from an account of its own.
 * An operator's action records the operator as who did it and the payer as for whom.
 * A stream the caller may not see is not found, exactly as a missing one; one it sees
 * but may not change is refused (403).
 */
export interface StreamActor {
  by: string;
  onBehalfOf?: string;
}

const byOf = (actor: Actor) => (actor.kind === 'admin' ? 'admin' : actor.party);

export async function visibleStream(pool: Pool, actor: Actor, ref: string): Promise<StreamRow> {
  const row = await getStreamWithHistory(pool, ref);
  if (actor.kind === 'admin') return row;
  const p = actor.party;
  if (p === row.payer || p === row.payee || row.members?.some((m) => m.party === p)) return row;
  const grant = await findGrant(pool, row.payer, p);
  if (grant && !grant.revokedAt) return row;
  throw notFound('stream', ref);
}

/**
 * The payer's own action, or an operator's with `scope` (the payee may also cancel).
 * Scope `payer`: the payer's alone (a rate change, a distribution's membership).
 */
export async function streamActor(pool: Pool, actor: Actor, row: StreamRow, scope: OperatorScope | 'payer'): Promise<StreamActor> {
  if (actor.kind === 'admin' || actor.party === row.payer) return { by: byOf(actor) };
  if (scope === 'cancel' && actor.party === row.payee) return { by: actor.party };
  if (scope === 'payer') throw forbidden(`only the payer of stream ${row.ref} may do that`);
  await assertOperator(pool, actor.party, row.payer, scope);
  return { by: actor.party, onBehalfOf: row.payer };
}

/**
 * The account a stream is paid from: the actor's own, or (an operator granted
 * `open`) its payer's, the operator recorded as openedBy.
 */
export async function payerAccountFor(pool: Pool, actor: Actor, accountId: string): Promise<{ account: Account; openedBy?: string }> {
  const account = await getAccount(pool, accountId);
  if (actor.kind === 'admin' || account.ownerId === actor.party) return { account };
  const grant = await findGrant(pool, account.ownerId, actor.party);
  if (!grant) throw notFound('account', accountId);
  assertGrantAllows(grant, actor.party, account.ownerId, 'open');
  return { account, openedBy: actor.party };
}

/**
 * An account a stream may pay (a payee, a distribution's member): another account,
 * in the payer's currency, not the world or the pool. Checked before a stream or a
 * member is taken on, so no tick meets an account it cannot credit.
 */
export async function payableAccount(pool: Pool, payer: Account, accountId: string): Promise<Account> {
  const account = await getAccount(pool, accountId);
  if (account.id === payer.id) throw new SluiceError('invalid_request', 'a stream needs two different accounts: the payer does not pay itself');
  if (account.currency !== payer.currency) {
    throw new SluiceError('currency_mismatch', `account ${account.id} holds ${account.currency}, the payer pays ${payer.currency}`, { account: account.id });
  }
  if (account.kind === 'world' || account.kind === 'pool') throw new SluiceError('invalid_request', `a stream cannot pay the ${account.kind} account`, { account: account.id });
  return account;
}

/** A distribution's members as the ledger takes them: distinct payable accounts, each with its owner. */
export async function membersOf(pool: Pool, input: { accountId: string; weight: number }[], payer: Account): Promise<DistributionMember[]> {
  if (new Set(input.map((m) => m.accountId)).size !== input.length) throw new SluiceError('invalid_request', 'each member account appears once');
  return Promise.all(input.map(async (m) => ({ accountId: m.accountId, weight: m.weight, party: (await payableAccount(pool, payer, m.accountId)).ownerId })));
}

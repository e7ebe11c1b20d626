import { SUBACCOUNT_SEPARATOR } from '../domain/entities';
import { forbidden, notFound, SluiceError } from '../domain/errors';
import { createAccount, DEFAULT_CURRENCY, getAccount, listAccounts, type Account } from '../ledger/accounts';
import { listEvents } from '../ledger/events';
import * as holds from '../ledger/holds';
import { createParty } from '../ledger/parties';
import { listParties } from '../ledger/partyList';
import * as transfers from '../ledger/transfers';
import { mayUseAccount, ownAccount, partyParam, scopedKey, type Actor } from './actors';
import type { ServiceDeps } from './deps';

/** Money in or out of the outside world (a deposit, a withdrawal). */
export interface WorldMoveInput {
  accountId: string;
  amount: number;
  memo?: string;
}

/**
 * Parties, accounts, money in and out of the world, transfers, holds and the event
 * tail. Every write takes the caller's idempotency key, scoped to the caller
 * (scopedKey), so two parties never collide on a key.
 */
export function accountService(deps: ServiceDeps) {
  const { pool } = deps;

  /** Registers a party and issues its API key (the admin's call). */
  const registerParty = (input: { id: string; name: string }) => createParty(pool, input);

  /** Every party by id, a page at a time (the admin's read). */
  const parties = async (page: { after?: string; limit: number }) => {
    const rows = await listParties(pool, page);
    return { parties: rows, ...(rows.length === page.limit && { next: rows.at(-1)!.id }) };
  };

  /**
   * Opens an account: a party opens user accounts for itself only; the admin names the
   * owner and may name the kind. An id
   * that already names the same account (owner, kind, currency) answers that account,
   * `created` false: a retry of a creation whose answer was lost finds what it made.
   * The id taken on other terms is a 409.
   */
  const openAccount = async (actor: Actor, input: { id?: string; currency?: string; ownerId?: string; kind?: 'user' | 'entity' | 'pool' | 'escrow' }): Promise<{ created: boolean; account: Account }> => {
    if (actor.kind === 'party' && ((input.ownerId && input.ownerId !== actor.party) || (input.kind && input.kind !== 'user'))) {
      throw forbidden('a party opens user accounts for itself only');
    }
    const ownerId = actor.kind === 'party' ? actor.party : input.ownerId;
    if (!ownerId) throw new SluiceError('invalid_request', 'the admin must name the ownerId');
    // `<entity>/<n>` names subaccounts: nobody may take such an id ahead of the saga
    if (input.id?.includes(SUBACCOUNT_SEPARATOR)) {
      throw new SluiceError('invalid_request', `account ids may not contain '${SUBACCOUNT_SEPARATOR}': it is reserved for subaccounts`, { id: input.id });
    }
    const terms = { id: input.id, ownerId, kind: input.kind ?? 'user', currency: input.currency ?? DEFAULT_CURRENCY } as const;
    try {
      return { created: true, account: await createAccount(pool, terms) };
    } catch (error) {
      if (!(error instanceof SluiceError && error.code === 'already_exists' && terms.id !== undefined)) throw error;
      const existing = await getAccount(pool, terms.id);
      if (existing.ownerId !== terms.ownerId || existing.kind !== terms.kind || existing.currency !== terms.currency) throw error;
      return { created: false, account: existing };
    }
  };

  /** The caller's accounts by id, a page at a time (the admin names the owner; a party naming another is refused). */
  const accounts = async (actor: Actor, q: { ownerId?: string; after?: string; limit: number }) => {
    const owner = partyParam(actor, { name: 'ownerId', in: 'query' }, q.ownerId);
    if (!owner) throw new SluiceError('invalid_request', 'the admin must name the ownerId', { param: 'ownerId' });
    const rows = await listAccounts(pool, owner, q);
    return { accounts: rows, ...(rows.length === q.limit && { next: rows.at(-1)!.id }) };
  };

  /** An account the caller may read: its own (the admin any). */
  const account = (actor: Actor, accountId: string) => ownAccount(pool, actor, accountId);

  /** Money in (a deposit) or out (a withdrawal) of the outside world, for an account that exists (the admin's calls). */
  const throughWorld = (move: typeof transfers.deposit) => async (actor: Actor, idempotencyKey: string, input: WorldMoveInput) => {
    await getAccount(pool, input.accountId);
    return move(pool, { key: scopedKey(actor, idempotencyKey), ...input });
  };
  const deposit = throughWorld(transfers.deposit);
  const withdraw = throughWorld(transfers.withdraw);

  /** Moves money from one of the caller's accounts to any account. */
  const transfer = async (actor: Actor, idempotencyKey: string, input: { fromAccountId: string; toAccountId: string; amount: number; memo?: string }) => {
    await ownAccount(pool, actor, input.fromAccountId);
    return transfers.transfer(pool, {
      key: scopedKey(actor, idempotencyKey),
      kind: 'transfer',
      debitAccountId: input.fromAccountId,
      creditAccountId: input.toAccountId,
      amount: input.amount,
      memo: input.memo,
    });
  };

  /** A hold, read by the owner of the held account (the admin any); to another party it is not found, as a missing one. */
  const hold = async (actor: Actor, holdId: number) => {
    const found = await holds.getHold(pool, holdId);
    if (!mayUseAccount(actor, await getAccount(pool, found.accountId))) throw notFound('hold', String(holdId));
    return found;
  };

  /** A hold its reader may also resolve: only if no workflow owns it (a stream's escrow, a job's reservation, collateral). */
  const resolvableHold = async (actor: Actor, holdId: number) => holds.assertNotManaged(await hold(actor, holdId));

  /** Holds funds on one of the caller's accounts. */
  const placeHold = async (actor: Actor, idempotencyKey: string, input: { accountId: string; amount: number; expiresAt?: string }) => {
    await ownAccount(pool, actor, input.accountId);
    return holds.placeHold(pool, { key: scopedKey(actor, idempotencyKey), ...input });
  };

  /** Posts part or all of what remains on one of the caller's holds to another account. */
  const captureHold = async (actor: Actor, idempotencyKey: string, holdId: number, input: { amount: number; toAccountId: string; memo?: string }) => {
    await resolvableHold(actor, holdId);
    return holds.captureHold(pool, { key: scopedKey(actor, idempotencyKey), holdId, ...input });
  };

  /** Voids what remains on one of the caller's holds. */
  const releaseHold = async (actor: Actor, idempotencyKey: string, holdId: number) => {
    await resolvableHold(actor, holdId);
    return holds.releaseHold(pool, { key: scopedKey(actor, idempotencyKey), holdId });
  };

  /** The event log after a cursor, in commit order: a party's own events, all of them for the admin. */
  const events = async (actor: Actor, q: { after: number; limit: number; subject?: string; type?: string }) => {
    const rows = await listEvents(pool, { ...q, party: actor.kind === 'party' ? actor.party : undefined });
    return { events: rows, next: rows.at(-1)?.id ?? q.after };
  };

  return { registerParty, parties, openAccount, accounts, account, deposit, withdraw, transfer, hold, placeHold, captureHold, releaseHold, events };
}

export type AccountService = ReturnType<typeof accountService>;

import { createHash } from 'node:crypto';
import type { Pool } from '../db/pool';
import { notFound, SluiceError } from '../domain/errors';
import { getAccount, type Account } from '../ledger/accounts';

/** Who is calling: the admin, or one party acting on its own accounts (with the id of the key it called with). */
export type Actor = { kind: 'admin' } | { kind: 'party'; party: string; keyId?: number };

export const isAdmin = (actor: Actor) => actor.kind === 'admin';

/** The party a request acts for; the admin may name any. */
export const actorName = (actor: Actor) => (actor.kind === 'admin' ? 'admin' : actor.party);

/** Whether the actor may see and act on an account: its own; the admin any. */
export const mayUseAccount = (actor: Actor, account: Account) => actor.kind === 'admin' || account.ownerId === actor.party;

/**
 * Loads an account the actor may act on (its own; the admin may act on any). Another
 * party's account answers exactly as a missing one (the same 404), here and for every
 * resource addressed by id, so no caller can learn which ids exist.
 */
export async function ownAccount(pool: Pool, actor: Actor, accountId: string): Promise<Account> {
  const account = await getAccount(pool, accountId);
  if (!mayUseAccount(actor, account)) throw notFound('account', accountId);
  return account;
}

/**
 * The party a query parameter or body field names, as this caller may use it: the admin
 * names any (or none: undefined); a party may name only itself, and leaving it out means
 * itself. Another party is refused (403), never ignored: an ignored filter would answer
 * the caller's own rows as if they were the other party's.
 */
export function partyParam(actor: Actor, param: { name: string; in: 'query' | 'body' }, value: string | undefined): string | undefined {
  if (actor.kind === 'admin') return value;
  if (value !== undefined && value !== actor.party) {
    const what = param.in === 'query' ? `query parameter ${param.name}` : `field ${param.name}`;
    throw new SluiceError('forbidden', `${what} names ${value}, but a party may name only itself (${actor.party}) here: leave ${param.name} out`, { param: param.name });
  }
  return actor.party;
}

/**
 * Idempotency keys are scoped to the caller, so two parties never collide on a key.
 * The scope is `admin:` or `party:<id>:`, so no party id (not even `admin`, `payment`
 * or `refund`) can reach the admin's keys or the workflows' `payment:` and `refund:` keys.
 */
export const scopedKey = (actor: Actor, key: string) => (actor.kind === 'admin' ? `admin:${key}` : `party:${actor.party}:${key}`);

/**
 * The id (a stream's ref, a job's id) a start sent with only an Idempotency-Key gets:
 * the same key from the same caller is the same stream or job, whoever else uses that key.
 */
export const idOfKey = (actor: Actor, key: string) => `k-${createHash('sha256').update(scopedKey(actor, key)).digest('hex').slice(0, 32)}`;

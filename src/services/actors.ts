import { createHash } from 'node:crypto';
import type { Pool } from '../db/pool';
import { forbidden } from '../domain/errors';
import { getAccount, type Account } from '../ledger/accounts';

/** Who is calling: the admin, or one party acting on its own accounts. */
export type Actor = { kind: 'admin' } | { kind: 'party'; party: string };

export const isAdmin = (actor: Actor) => actor.kind === 'admin';

/** The party a request acts for; the admin may name any. */
export const actorName = (actor: Actor) => (actor.kind === 'admin' ? 'admin' : actor.party);

/** Loads an account the actor may act on (its own; the admin may act on any). */
export async function ownAccount(pool: Pool, actor: Actor, accountId: string): Promise<Account> {
  const account = await getAccount(pool, accountId);
  if (actor.kind === 'party' && account.ownerId !== actor.party) {
    throw forbidden(`account ${accountId} belongs to another party`);
  }
  return account;
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

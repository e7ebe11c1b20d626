import { timingSafeEqual, createHash } from 'node:crypto';
import type { FastifyRequest } from 'fastify';
import type { Pool } from '../db/pool';
import { forbidden, SluiceError } from '../domain/errors';
import { getAccount, type Account } from '../ledger/accounts';
import { partyForKey } from '../ledger/parties';

/** Who is calling: the admin, or one party acting on its own accounts. */
export type Actor = { kind: 'admin' } | { kind: 'party'; party: string };

declare module 'fastify' {
  interface FastifyRequest {
    actor: Actor;
  }
  interface FastifyContextConfig {
    /** 'public': no key; 'party': a party key or the admin key; 'admin': the admin key only. */
    auth?: 'public' | 'party' | 'admin';
  }
}

const digest = (s: string) => createHash('sha256').update(s).digest();
const sameSecret = (a: string, b: string) => timingSafeEqual(digest(a), digest(b));

/**
 * The key of an `Authorization: Bearer <key>` header. The scheme is matched without
 * regard to case (RFC 9110 §11.1), and spaces or tabs may separate it from the key;
 * anything else (another scheme, no key, a key with spaces in it) is no key.
 */
export function bearerKey(header: string | undefined): string | undefined {
  return header === undefined ? undefined : /^bearer[ \t]+([^\s]+)[ \t]*$/i.exec(header)?.[1];
}

export function createAuthenticator(pool: Pool, adminKey: string) {
  return async function authenticate(request: FastifyRequest): Promise<void> {
    const required = request.routeOptions.config.auth ?? 'party';
    if (required === 'public') return;
    const key = bearerKey(request.headers.authorization);
    if (!key) throw new SluiceError('unauthorized', 'missing API key: send Authorization: Bearer <key>');
    if (sameSecret(key, adminKey)) {
      request.actor = { kind: 'admin' };
      return;
    }
    const party = key.length <= 200 ? await partyForKey(pool, key) : undefined;
    if (!party) throw new SluiceError('unauthorized', 'unknown API key');
    if (required === 'admin') throw forbidden('this route needs the admin key');
    request.actor = { kind: 'party', party };
  };
}

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

import { SluiceError } from '../domain/errors';
import { assertParty, createApiKey, listApiKeys, revokeApiKey } from '../ledger/apiKeys';
import { actorName, partyParam, type Actor } from './actors';
import type { ServiceDeps } from './deps';

/**
 * A party's API keys: create, list, revoke. A party manages its own keys (up to two
 * active at once, so it rotates one without downtime: create, switch, revoke); the admin
 * any party's, which is also how a party whose only key was lost gets a new one. Another
 * party's key is not found, exactly as a missing one.
 */
export function keyService(deps: ServiceDeps) {
  const { pool } = deps;

  /** Issues a key: for the calling party, or for the party the admin names. */
  const create = async (actor: Actor, party?: string) => {
    const owner = partyParam(actor, { name: 'party', in: 'body' }, party);
    if (owner === undefined) throw new SluiceError('invalid_request', 'the admin names the party whose key this is: {"party": "<id>"} (or POST /v1/parties/<id>/keys)', { param: 'party' });
    return createApiKey(pool, { party: owner, by: actorName(actor) });
  };

  /** Keys by id, revoked ones included: the caller's own, or (the admin) every party's or the one it names. */
  const list = async (actor: Actor, q: { party?: string; after: number; limit: number }) => {
    const party = partyParam(actor, { name: 'party', in: 'query' }, q.party);
    // the admin naming a party that does not exist is told so, not answered an empty list
    if (party !== undefined && actor.kind === 'admin') await assertParty(pool, party);
    const keys = await listApiKeys(pool, { party, after: q.after, limit: q.limit });
    return { keys, ...(keys.length === q.limit && { next: keys.at(-1)!.id }) };
  };

  /**
   * Revokes a key (again: the key, unchanged). A party revokes its own; the key it calls
   * with only while it holds another active one. The admin revokes any (under a party's
   * path, a key of that party).
   */
  const revoke = async (actor: Actor, keyId: number, party?: string) =>
    revokeApiKey(pool, {
      keyId,
      party: actor.kind === 'party' ? actor.party : party,
      by: actorName(actor),
      callerKeyId: actor.kind === 'party' ? actor.keyId : undefined,
    });

  return { create, list, revoke };
}

export type KeyService = ReturnType<typeof keyService>;

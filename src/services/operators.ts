import { notFound } from '../domain/errors';
import { commitOperatorGrant, commitOperatorRevocation, listGrants, type OperatorScope } from '../ledger/operators';
import type { Actor } from './actors';
import type { ServiceDeps } from './deps';

/**
 * Operators: a payer lets another party open, pause or cancel streams for it, with
 * a daily limit on what the streams it opens commit. A party manages its own
 * operators (the admin anyone's).
 */
export function operatorService(deps: ServiceDeps) {
  const { pool } = deps;

  /** A party's operators are its own to see and manage: to another party, that party is not found (as a missing one). */
  const assertSelf = (actor: Actor, party: string) => {
    if (actor.kind === 'party' && actor.party !== party) throw notFound('party', party);
  };

  /** Grants (or re-grants) `operator` its scopes for `payer`; a scope named twice counts once. */
  const grant = async (actor: Actor, payer: string, input: { operator: string; scopes: OperatorScope[]; dailyLimit: number }) => {
    assertSelf(actor, payer);
    return commitOperatorGrant(pool, { payer, operator: input.operator, scopes: [...new Set(input.scopes)], dailyLimit: input.dailyLimit });
  };

  /** Revokes an operator's rights from now on; revoking again answers the same grant. */
  const revoke = async (actor: Actor, payer: string, operator: string) => {
    assertSelf(actor, payer);
    return commitOperatorRevocation(pool, { payer, operator });
  };

  /** A party's operators (as payer) or the payers it operates for (as operator), a page at a time. */
  const list = async (actor: Actor, party: string, q: { as: 'payer' | 'operator'; after?: string; limit: number }) => {
    assertSelf(actor, party);
    const asOperator = q.as === 'operator';
    const grants = await listGrants(pool, party, { asOperator, after: q.after, limit: q.limit });
    const last = grants.at(-1);
    return { grants, ...(last && grants.length === q.limit && { next: asOperator ? last.payer : last.operator }) };
  };

  return { grant, revoke, list };
}

export type OperatorService = ReturnType<typeof operatorService>;

import { withTransaction, type Pool, type PoolClient, type Queryable } from '../db/pool';
import { forbidden, SluiceError } from '../domain/errors';
import { appendEvent } from './events';
import { pageRows } from './paging';

/**
 * Operators: a payer lets another party open, pause or cancel streams for it. What
 * the streams an operator opens commit (their maxTotal) counts against a limit per
 * UTC day, kept by a CHECK on operator_spend, not by this code alone.
 */
export const OPERATOR_SCOPES = ['open', 'pause', 'cancel'] as const;
export type OperatorScope = (typeof OPERATOR_SCOPES)[number];

export interface OperatorGrant {
  payer: string;
  operator: string;
  scopes: OperatorScope[];
  dailyLimit: number;
  grantedAt: string;
  revokedAt?: string;
  /** Committed today (UTC) by streams the operator opened. */
  spentToday: number;
}

interface GrantRow {
  payer: string;
  operator: string;
  scopes: OperatorScope[];
  daily_limit: number;
  granted_at: Date;
  revoked_at: Date | null;
  spent_today: number;
}

const toGrant = (r: GrantRow): OperatorGrant => ({
  payer: r.payer,
  operator: r.operator,
  scopes: r.scopes,
  dailyLimit: r.daily_limit,
  grantedAt: r.granted_at.toISOString(),
  ...(r.revoked_at && { revokedAt: r.revoked_at.toISOString() }),
  spentToday: r.spent_today,
});

const SELECT_GRANTS = `select g.*, coalesce(d.spent, 0) as spent_today
                         from operator_grants g
                         left join operator_spend d on d.payer = g.payer and d.operator = g.operator and d.day = (now() at time zone 'UTC')::date`;

/** Grants (or re-grants: new scopes and limit, revocation lifted) the operator's rights. */
export async function grantOperator(client: PoolClient, input: { payer: string; operator: string; scopes: OperatorScope[]; dailyLimit: number }): Promise<OperatorGrant> {
  if (input.payer === input.operator) throw new SluiceError('invalid_request', 'a party is not its own operator');
  await client.query(
    `insert into operator_grants (payer, operator, scopes, daily_limit) values ($1, $2, $3, $4)
     on conflict (payer, operator) do update set scopes = excluded.scopes, daily_limit = excluded.daily_limit, granted_at = now(), revoked_at = null`,
    [input.payer, input.operator, input.scopes, input.dailyLimit],
  ).catch((e: { code?: string }) => {
    if (e.code === '23503') throw new SluiceError('not_found', `party ${input.operator} not found`, { party: input.operator });
    throw e;
  });
  await appendEvent(client, { type: 'operator.granted', subject: `${input.payer}/${input.operator}`, payload: { ...input }, parties: [input.payer, input.operator] });
  return (await findGrant(client, input.payer, input.operator))!;
}

/** Revokes the operator's rights from now on; streams it opened run on. Revoking twice answers the same grant. */
export async function revokeOperator(client: PoolClient, input: { payer: string; operator: string }): Promise<OperatorGrant> {
  const { rowCount } = await client.query(`update operator_grants set revoked_at = now() where payer = $1 and operator = $2 and revoked_at is null`, [input.payer, input.operator]);
  const grant = await findGrant(client, input.payer, input.operator);
  if (!grant) throw new SluiceError('not_found', `${input.operator} is not an operator of ${input.payer}`, { ...input });
  if (rowCount) await appendEvent(client, { type: 'operator.revoked', subject: `${input.payer}/${input.operator}`, payload: { ...input }, parties: [input.payer, input.operator] });
  return grant;
}

/** grantOperator in a transaction of its own: the grant and its event commit together. */
export const commitOperatorGrant = (pool: Pool, input: { payer: string; operator: string; scopes: OperatorScope[]; dailyLimit: number }) =>
  withTransaction(pool, (client) => grantOperator(client, input));

/** revokeOperator in a transaction of its own: the revocation and its event commit together. */
export const commitOperatorRevocation = (pool: Pool, input: { payer: string; operator: string }) => withTransaction(pool, (client) => revokeOperator(client, input));

export async function findGrant(db: Queryable, payer: string, operator: string): Promise<OperatorGrant | undefined> {
  const { rows } = await db.query<GrantRow>(`${SELECT_GRANTS} where g.payer = $1 and g.operator = $2`, [payer, operator]);
  return rows[0] && toGrant(rows[0]);
}

/** Grants in one page of a party's list at most. */
export const GRANTS_PAGE_MAX = 1000;

/**
 * The grants a payer gave, or (asOperator) the grants a party holds, by the other
 * party's id, after the id `after` (a cursor), at most `limit`.
 */
export async function listGrants(db: Queryable, party: string, opts: { asOperator?: boolean; after?: string; limit?: number } = {}): Promise<OperatorGrant[]> {
  const [self, other] = opts.asOperator ? ['g.operator', 'g.payer'] : ['g.payer', 'g.operator'];
  const { rows } = await db.query<GrantRow>(`${SELECT_GRANTS} where ${self} = $1 and ${other} > $2 order by ${other} limit $3`, [
    party,
    opts.after ?? '',
    pageRows(opts.limit, GRANTS_PAGE_MAX),
  ]);
  return rows.map(toGrant);
}

/** Whether `actor` may act for `payer` with `scope` now: a live grant that includes it. Refuses otherwise. */
export async function assertOperator(db: Queryable, actor: string, payer: string, scope: OperatorScope): Promise<void> {
  assertGrantAllows(await findGrant(db, payer, actor), actor, payer, scope);
}

/** The same check on a grant already read (or its absence). */
export function assertGrantAllows(grant: OperatorGrant | undefined, actor: string, payer: string, scope: OperatorScope): void {
  if (!grant || grant.revokedAt || !grant.scopes.includes(scope)) {
    throw forbidden(`${actor} may not ${scope} streams for ${payer}${grant?.revokedAt ? ' (its operator grant was revoked)' : ''}`);
  }
}

/**
 * Counts `amount` against the operator's allowance for today, inside the opening
 * transaction (the grant row is locked, so a revocation or a concurrent open waits).
 * Past the limit the CHECK operator_daily_limit refuses it: limit_exceeded.
 */
export async function spendOperatorAllowance(client: PoolClient, input: { payer: string; operator: string; amount: number }): Promise<void> {
  const { rows } = await client.query<{ daily_limit: number }>(
    `select daily_limit from operator_grants where payer = $1 and operator = $2 and revoked_at is null and 'open' = any(scopes) for no key update`,
    [input.payer, input.operator],
  );
  const grant = rows[0];
  if (!grant) throw forbidden(`${input.operator} may not open streams for ${input.payer}`);
  await client.query(
    `insert into operator_spend (payer, operator, day, spent, daily_limit) values ($1, $2, (now() at time zone 'UTC')::date, $3, $4)
     on conflict (payer, operator, day) do update set spent = operator_spend.spent + excluded.spent, daily_limit = excluded.daily_limit`,
    [input.payer, input.operator, input.amount, grant.daily_limit],
  ).catch((e: { code?: string; constraint?: string }) => {
    if (e.code === '23514' && e.constraint === 'operator_daily_limit') {
      throw new SluiceError('limit_exceeded', `opening this stream (maxTotal ${input.amount}) would take ${input.operator} past its daily limit of ${grant.daily_limit} for ${input.payer}`, {
        operator: input.operator,
        payer: input.payer,
        dailyLimit: grant.daily_limit,
      });
    }
    throw e;
  });
}

import type { PoolClient, Queryable } from '../../db/pool';
import { notFound } from '../../domain/errors';
import { unseenMs } from '../../domain/streams';
import type { StreamRow } from './rows';

/**
 * Heartbeats: how a stream tells a partition from a quiet peer. A party reports it is
 * alive; a liveness-checked tick is judged at its due time from the history
 * (party_heartbeat_log), however late it is billed (streams/ticks.ts one tick at a
 * time, tickBatch.ts in batches).
 */

/** A resume restarts the liveness clock: both parties count as seen at the opening or the latest resume. */
export const livenessSince = (s: Pick<StreamRow, 'opened_at' | 'resumed_at'>): Date => (s.resumed_at && s.resumed_at > s.opened_at ? s.resumed_at : s.opened_at);

/** How long heartbeats are kept: a tick billed later than this after it came due (a longer outage) counts its parties as unseen. */
export const HEARTBEAT_HISTORY_MS = 3_600_000;

/**
 * The advisory lock class of a party's heartbeat (the two-key form: its keys never
 * meet the one-key locks elsewhere); the second key is hashtext(party).
 */
const HEARTBEAT_LOCK_CLASS = 7_201;

/**
 * A party says it is alive; streams use it to tell a partition from a quiet peer.
 * The history (party_heartbeat_log) lets a tick billed late be judged at its due
 * time; each heartbeat trims the party's own history past HEARTBEAT_HISTORY_MS.
 *
 * A heartbeat is stamped (clock_timestamp) only once it holds the party's heartbeat
 * lock, and holds it until it commits. A tick that would be skipped takes that lock
 * shared before deciding (awaitHeartbeatsInFlight): a heartbeat stamped before the
 * due time but not yet committed is waited for, so the skip never goes against a
 * heartbeat the history will show.
 */
export async function recordHeartbeat(db: Queryable, party: string): Promise<string> {
  const { rows } = await db
    .query<{ last_seen_at: Date }>({
      name: 'record-heartbeat',
      text: `with locked as (select pg_advisory_xact_lock($3, hashtext($1)) as held),
                  stamp as (select clock_timestamp() as at from locked),
                  logged as (insert into party_heartbeat_log (party_id, seen_at) select $1, at from stamp on conflict do nothing),
                  trimmed as (delete from party_heartbeat_log where party_id = $1 and seen_at < now() - make_interval(secs => $2 / 1000.0))
             insert into party_heartbeats (party_id, last_seen_at) select $1, at from stamp
             on conflict (party_id) do update set last_seen_at = excluded.last_seen_at returning last_seen_at`,
      values: [party, HEARTBEAT_HISTORY_MS, HEARTBEAT_LOCK_CLASS],
    })
    .catch((error: unknown) => {
      // the heartbeat rows reference the party: an unknown one is the caller's 404
      if ((error as { code?: string }).code === '23503') throw notFound('party', party);
      throw error;
    });
  return rows[0]!.last_seen_at.toISOString();
}

/**
 * The parties of a liveness-checked stream silent for its timeout at a due time, from
 * when each was last seen: one is listed exactly when silenceMs (the skip's rule)
 * reaches the timeout.
 */
export function silentParties(s: Pick<StreamRow, 'payer' | 'payee' | 'liveness_timeout_ms'>, dueAtMs: number, payerSeenMs: number, payeeSeenMs: number): string[] {
  const timeoutMs = s.liveness_timeout_ms;
  if (timeoutMs === null) return [];
  const silent = (seenMs: number) => unseenMs(dueAtMs, seenMs) >= timeoutMs;
  return [...(silent(payerSeenMs) ? [s.payer] : []), ...(silent(payeeSeenMs) && s.payee ? [s.payee] : [])];
}

/**
 * Waits, inside the caller's transaction, for the heartbeats of `parties` still
 * committing (recordHeartbeat's lock, taken shared): any heartbeat stamped before
 * now is then visible to the caller's next statement. Only a tick about to be
 * skipped needs this; a later heartbeat can only make a party more seen.
 */
export async function awaitHeartbeatsInFlight(client: PoolClient, parties: string[]): Promise<void> {
  if (parties.length === 0) return;
  await client.query({
    name: 'await-heartbeats-in-flight',
    text: 'select count(pg_advisory_xact_lock_shared($1, hashtext(p))) from unnest($2::text[]) p',
    values: [HEARTBEAT_LOCK_CLASS, [...new Set(parties)].sort()],
  });
}

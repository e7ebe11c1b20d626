/**
 * What every phase of bench:streams runs against (the client, the worker's and the
 * bare worker's task queues, the worker's pool and its recorder, a monitor connection
 * of its own, the options) and the parties it opens streams between.
 */
import { randomBytes } from 'node:crypto';
import type { Client } from '@temporalio/client';
import type pg from 'pg';
import type { Pool } from '../../src/db/pool';
import type { StreamRequest } from '../../src/domain/streams';
import { createAccount } from '../../src/ledger/accounts';
import { deposit } from '../../src/ledger/transfers';
import { mapConcurrently } from '../support/measure';
import type { Options } from './options';
import type { PoolRecorder } from './sql';

// A tick bills 1 unit; the escrow (maxTotal) is far above what a run bills, so no
// stream completes on its own. Each payer is funded for all its escrows.
const RATE_PER_TICK = 1;
const MAX_TOTAL = 1_000_000;

export interface Stack {
  client: Client;
  taskQueue: string;
  bareQueue: string;
  pool: Pool;
  /** Where the worker's pool spends its time, and the deadlocks it saw. */
  sql: PoolRecorder;
  /** A connection of its own for clocks, sampling and reading: never queued behind the activities. */
  monitor: pg.Client;
  database: string;
  serverPid?: number;
  o: Options;
  signal: AbortSignal;
  runId: string;
}

export interface Pair {
  payer: string;
  payee: string;
}

/** `groups` payers and payees, an account each (the party's id), each payer funded for its escrows. */
export async function setUpPairs(pool: Pool, prefix: string, streams: number, perPair: number): Promise<Pair[]> {
  const groups = Math.ceil(streams / perPair);
  // random ids, as real ones are: a payer's id sorts before its payee's about half the time
  const id = () => `${prefix}-${randomBytes(6).toString('hex')}`;
  const pairs = Array.from({ length: groups }, () => ({ payer: id(), payee: id() }));
  // parties are not on the measured path: plain SQL, no API keys to mint
  await pool.query('insert into parties (id, name) select id, id from unnest($1::text[]) as id', [pairs.flatMap((p) => [p.payer, p.payee])]);
  await mapConcurrently(pairs, 8, async ({ payer, payee }) => {
    await createAccount(pool, { id: payer, ownerId: payer, kind: 'user' });
    await createAccount(pool, { id: payee, ownerId: payee, kind: 'user' });
  });
  // one after another: every deposit locks the world account
  for (const { payer } of pairs) await deposit(pool, { key: `fund-${payer}`, accountId: payer, amount: (perPair + 1) * MAX_TOTAL });
  return pairs;
}

export const streamRequest = (pair: Pair, ref: string, intervalMs: number): StreamRequest => ({
  ref,
  payer: pair.payer,
  payee: pair.payee,
  payerAccountId: pair.payer,
  payeeAccountId: pair.payee,
  ratePerTick: RATE_PER_TICK,
  maxTotal: MAX_TOTAL,
  tickIntervalMs: intervalMs,
  mode: 'escrow',
});

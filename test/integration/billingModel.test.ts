import fc from 'fast-check';
import { withTransaction } from '../../src/db/pool';
import { SluiceError } from '../../src/domain/errors';
import { moneyLeft, type StreamMode } from '../../src/domain/streams';
import { createAccount } from '../../src/ledger/accounts';
import { createParty } from '../../src/ledger/parties';
import { changeRate, depositToStream, pauseStream, resumeStream } from '../../src/ledger/streamControls';
import { openStream } from '../../src/ledger/streams';
import { billDueIn, type LockedStream } from '../../src/ledger/tickBatch';
import { deposit } from '../../src/ledger/transfers';
import { createTestDatabase, type TestDatabase } from '../support/db';
import { streamTickLedger } from '../support/streamLedger';

/**
 * The model test of the batch biller (DESIGN.md §3): billDueIn must bill exactly the
 * ticks, amounts, skips, halts, low-balance warnings and balances that billing each
 * tick alone, in due order, produces. The oracle below is written from the per-tick
 * rules, independently of src/domain/billing.ts: it walks the due ticks one at a time
 * and moves money between accounts and holds as one tick's transaction would.
 *
 * Time is controlled, not waited for: streams are opened (tick 1 billed by the
 * ledger), then their opening is moved into the past with SQL so that a chosen
 * number of ticks is due at an explicit `asOfMs`, heartbeats are written into
 * party_heartbeat_log at chosen times, and the due rows are locked and billed with
 * billDueIn(client, rows, asOfMs, rowsMax), in one batch or in bounded batches.
 *
 * FUZZ_SEED=<n> replays a run.
 */

const SEED = process.env.FUZZ_SEED !== undefined ? Number(process.env.FUZZ_SEED) : undefined;
const NUM_RUNS = Number(process.env.FUZZ_RUNS ?? 40);
const BIG_BATCH = 100_000;

let db: TestDatabase;
let runs = 0;

beforeAll(async () => {
  db = await createTestDatabase({ durableCommits: false });
});
afterAll(() => db?.drop());

// ------------------------------------------------------------------ scenarios

/** A stream of a scenario; times are relative to the batch's asOfMs (A). */
interface PlanStream {
  name: string;
  payer: string;
  payee: string;
  mode: StreamMode;
  rate: number;
  maxTotal: number | null;
  intervalMs: number;
  /** opened_at = A - openedAgoMs (plus openedFracUs microseconds). */
  openedAgoMs: number;
  openedFracUs: number;
  livenessTimeoutMs: number | null;
  graceMs: number | null;
  lowBalanceTicks: number;
  /** Changed (pauseStream/resumeStream, then paused_ms and resumed_at set) after the opening. */
  pause: null | { stillPaused: true } | { stillPaused: false; pausedMs: number; resumedAgoMs: number };
  rateChange: number | null;
  topUp: number | null;
}

interface PlanScenario {
  payers: { name: string; deposit: number }[];
  payees: string[];
  streams: PlanStream[];
  /** Heartbeats: seen_at = A*1000 - agoUs microseconds. */
  heartbeats: { party: string; agoUs: number }[];
}

interface Built {
  prefix: string;
  asOfMs: number;
  refs: string[];
  accounts: string[];
  parties: string[];
}

const acct = (party: string) => `${party}.w`;

/** Creates the scenario's parties, accounts, deposits and streams, then moves time as planned. */
async function build(plan: PlanScenario, prefix: string): Promise<Built> {
  const p = (name: string) => `${prefix}${name}`;
  const parties = [...plan.payers.map((x) => x.name), ...plan.payees];
  for (const name of parties) {
    await createParty(db.pool, { id: p(name), name: p(name) });
    await createAccount(db.pool, { id: acct(p(name)), ownerId: p(name), kind: 'user' });
  }
  for (const payer of plan.payers) {
    if (payer.deposit > 0) await deposit(db.pool, { key: `${p(payer.name)}:fund`, accountId: acct(p(payer.name)), amount: payer.deposit });
  }
  const ignoreRefusal = (e: unknown) => {
    if (!(e instanceof SluiceError)) throw e;
  };
  for (const s of plan.streams) {
    const ref = p(s.name);
    const receipt = await openStream(db.pool, {
      ref,
      payer: p(s.payer),
      payee: p(s.payee),
      payerAccountId: acct(p(s.payer)),
      payeeAccountId: acct(p(s.payee)),
      ratePerTick: s.rate,
      ...(s.maxTotal !== null && { maxTotal: s.maxTotal }),
      tickIntervalMs: s.intervalMs,
      mode: s.mode,
      lowBalanceTicks: s.lowBalanceTicks,
      ...(s.livenessTimeoutMs !== null && { livenessTimeoutMs: s.livenessTimeoutMs }),
      ...(s.graceMs !== null && { graceMs: s.graceMs }),
    });
    if (receipt.status !== 'STREAMING') continue; // the payer could not pay tick 1 (or the escrow): a failed stream
    const by = { by: p(s.payer) };
    if (s.topUp !== null && s.maxTotal !== null) {
      await depositToStream(db.pool, { ref, key: 'top-up', fromAccountId: acct(p(s.payer)), amount: s.topUp, ...by }).catch(ignoreRefusal);
    }
    if (s.rateChange !== null) await changeRate(db.pool, { ref, ratePerTick: s.rateChange, ...by }).catch(ignoreRefusal);
    if (s.pause) {
      await pauseStream(db.pool, { ref, seq: 1, ...by });
      if (!s.pause.stillPaused) await resumeStream(db.pool, { ref, seq: 1, ...by });
    }
  }
  const asOfMs: number = (await db.pool.query(`select epoch_ms(now()) as a`)).rows[0].a;
  const us = (x: number) => String(x); // microseconds since the epoch, as text (exact)
  for (const s of plan.streams) {
    const openedUs = (asOfMs - s.openedAgoMs) * 1000 + s.openedFracUs;
    const resumed = s.pause && !s.pause.stillPaused ? s.pause : null;
    await db.pool.query(
      `update streams set opened_at = timestamptz 'epoch' + $2::bigint * interval '1 microsecond',
              paused_ms = case when $3::bigint is null then paused_ms else $3::bigint end,
              resumed_at = case when $4::bigint is null then resumed_at else timestamptz 'epoch' + $4::bigint * interval '1 microsecond' end
        where ref = $1`,
      [p(s.name), us(openedUs), resumed ? resumed.pausedMs : null, resumed ? us((asOfMs - resumed.resumedAgoMs) * 1000) : null],
    );
  }
  const seen = new Set<string>();
  for (const h of plan.heartbeats) {
    const at = asOfMs * 1000 - h.agoUs;
    if (seen.has(`${h.party}@${at}`)) continue;
    seen.add(`${h.party}@${at}`);
    await db.pool.query(`insert into party_heartbeat_log (party_id, seen_at) values ($1, timestamptz 'epoch' + $2::bigint * interval '1 microsecond')`, [p(h.party), us(at)]);
  }
  return { prefix, asOfMs, refs: plan.streams.map((s) => p(s.name)), accounts: parties.map((x) => acct(p(x))), parties: parties.map(p) };
}

// ------------------------------------------------------------------ the state the oracle starts from

interface SnapStream {
  ref: string;
  mode: StreamMode;
  payer: string;
  payee: string;
  payerAccount: string;
  payeeAccount: string;
  open: boolean;
  paused: boolean;
  halted: string | null;
  rate: number;
  maxTotal: number | null;
  paid: number;
  ticksBilled: number;
  lastTick: number;
  openedMs: number;
  openedUs: number;
  resumedUs: number | null;
  intervalMs: number;
  pausedMs: number;
  livenessTimeoutMs: number | null;
  graceMs: number | null;
  lowBalanceTicks: number;
  warned: boolean;
  holdId: number | null;
}

interface Snapshot {
  streams: SnapStream[];
  accounts: Map<string, { balance: number; held: number }>;
  holds: Map<number, { amount: number; captured: number; released: number }>;
  /** Heartbeat times of each party, in microseconds since the epoch. */
  heartbeats: Map<string, number[]>;
  eventsBefore: number;
}

async function snapshot(b: Built): Promise<Snapshot> {
  const { rows } = await db.pool.query(
    `select s.*, epoch_ms(s.opened_at) as opened_ms_n,
            (extract(epoch from s.opened_at) * 1000000)::bigint as opened_us,
            (extract(epoch from s.resumed_at) * 1000000)::bigint as resumed_us
       from streams s where s.ref = any($1) order by s.ref`,
    [b.refs],
  );
  const streams: SnapStream[] = rows.map((r) => ({
    ref: r.ref,
    mode: r.mode,
    payer: r.payer,
    payee: r.payee,
    payerAccount: r.payer_account_id,
    payeeAccount: r.payee_account_id,
    open: r.status === 'open',
    paused: r.paused_at !== null,
    halted: r.halted_reason,
    rate: r.rate_per_tick,
    maxTotal: r.max_total,
    paid: r.paid,
    ticksBilled: r.ticks_billed,
    lastTick: r.last_tick,
    openedMs: r.opened_ms_n,
    openedUs: r.opened_us,
    resumedUs: r.resumed_us,
    intervalMs: r.tick_interval_ms,
    pausedMs: r.paused_ms,
    livenessTimeoutMs: r.liveness_timeout_ms,
    graceMs: r.grace_ms,
    lowBalanceTicks: r.low_balance_ticks,
    warned: r.low_balance_at !== null,
    holdId: r.hold_id,
  }));
  const accounts = new Map<string, { balance: number; held: number }>();
  for (const a of (await db.pool.query(`select id, balance, held from accounts where id = any($1)`, [b.accounts])).rows) accounts.set(a.id, { balance: a.balance, held: a.held });
  const holdIds = streams.map((s) => s.holdId).filter((h): h is number => h !== null);
  const holds = new Map<number, { amount: number; captured: number; released: number }>();
  for (const h of (await db.pool.query(`select id, amount, captured, released from holds where id = any($1)`, [holdIds])).rows) holds.set(h.id, { amount: h.amount, captured: h.captured, released: h.released });
  const heartbeats = new Map<string, number[]>();
  for (const h of (await db.pool.query(`select party_id, (extract(epoch from seen_at) * 1000000)::bigint as us from party_heartbeat_log where party_id = any($1)`, [b.parties])).rows) {
    heartbeats.set(h.party_id, [...(heartbeats.get(h.party_id) ?? []), h.us]);
  }
  const eventsBefore: number = (await db.pool.query(`select coalesce(max(id), 0) as n from events`)).rows[0].n;
  return { streams, accounts, holds, heartbeats, eventsBefore };
}

// ------------------------------------------------------------------ the oracle: each tick alone, in due order

interface StreamResult {
  /** New ticks: [tick, amount, dueMs, payerSeenMs, payeeSeenMs]. */
  ticks: [number, number, number, number | null, number | null][];
  /** stream.tick events of the batch: [tick, amount, paid]. */
  tickEvents: [number, number, number][];
  /** transfer.posted events of the batch (their count). */
  transfersPosted: number;
  /** New skips: [tick, silentMs]. */
  skips: [number, number][];
  halted: string | null;
  paid: number;
  ticksBilled: number;
  lastTick: number;
  lowBalance: Record<string, number>[];
  holdCaptured: number | null;
}

interface Result {
  streams: Record<string, StreamResult>;
  accounts: Record<string, { balance: number; held: number }>;
}

function oracle(snap: Snapshot, asOfMs: number): Result {
  const accounts = new Map([...snap.accounts].map(([id, a]) => [id, { ...a }]));
  const holds = new Map([...snap.holds].map(([id, h]) => [id, { ...h }]));
  const available = (id: string) => accounts.get(id)!.balance - accounts.get(id)!.held;
  const out: Record<string, StreamResult> = {};
  const state = new Map<string, { s: SnapStream; r: StreamResult; warned: boolean }>();
  for (const s of snap.streams) {
    const r: StreamResult = {
      ticks: [], tickEvents: [], transfersPosted: 0, skips: [], halted: s.halted, paid: s.paid, ticksBilled: s.ticksBilled, lastTick: s.lastTick, lowBalance: [],
      holdCaptured: s.holdId === null ? null : snap.holds.get(s.holdId)!.captured,
    };
    out[s.ref] = r;
    state.set(s.ref, { s, r, warned: s.warned });
  }
  // every tick due by asOfMs of every stream still billing (open, running, not halted)
  const dueAt = (s: SnapStream, n: number) => s.openedMs + (n - 1) * s.intervalMs + s.pausedMs;
  const due: { ref: string; tick: number; dueMs: number }[] = [];
  for (const s of snap.streams) {
    if (!s.open || s.paused || s.halted !== null) continue;
    for (let n = s.lastTick + 1; dueAt(s, n) <= asOfMs; n++) due.push({ ref: s.ref, tick: n, dueMs: dueAt(s, n) });
  }
  due.sort((a, b) => (a.dueMs !== b.dueMs ? a.dueMs - b.dueMs : a.ref !== b.ref ? (a.ref < b.ref ? -1 : 1) : a.tick - b.tick));

  /** When a party was last seen at a due time: its latest heartbeat at or before then, or the opening/resume if later (whole ms). */
  const seenMs = (s: SnapStream, party: string, dueMs: number) => {
    const since = s.resumedUs !== null && s.resumedUs > s.openedUs ? s.resumedUs : s.openedUs;
    const beats = (snap.heartbeats.get(party) ?? []).filter((us) => us <= dueMs * 1000);
    return Math.floor(Math.max(since, ...beats) / 1000);
  };

  for (const d of due) {
    const st = state.get(d.ref)!;
    const { s, r } = st;
    if (r.halted !== null) continue; // the stream stopped at an earlier tick: nothing more is billed
    let payerSeen: number | null = null;
    let payeeSeen: number | null = null;
    if (s.livenessTimeoutMs !== null) {
      payerSeen = seenMs(s, s.payer, d.dueMs);
      payeeSeen = seenMs(s, s.payee, d.dueMs);
      const silent = Math.max(0, d.dueMs - Math.min(payerSeen, payeeSeen));
      if (silent >= s.livenessTimeoutMs) {
        r.skips.push([d.tick, silent]);
        r.lastTick = d.tick;
        const grace = s.graceMs ?? 3 * s.livenessTimeoutMs; // grace defaults to three liveness timeouts
        if (silent > grace) r.halted = 'partition';
        continue;
      }
    }
    const amount = s.maxTotal === null ? s.rate : Math.min(s.rate, s.maxTotal - r.paid);
    if (amount <= 0) {
      r.halted = 'completed';
      continue;
    }
    const payer = accounts.get(s.payerAccount)!;
    if (s.mode === 'payg') {
      if (available(s.payerAccount) < amount) {
        r.halted = 'insufficient_funds';
        continue;
      }
      payer.balance -= amount;
    } else {
      // a capture: the money leaves the stream's hold (and the payer's held amount with it)
      const hold = holds.get(s.holdId!)!;
      if (hold.amount - hold.captured - hold.released < amount) throw new Error(`oracle: hold of ${s.ref} cannot cover ${amount}`);
      hold.captured += amount;
      payer.balance -= amount;
      payer.held -= amount;
      r.holdCaptured = hold.captured;
    }
    accounts.get(s.payeeAccount)!.balance += amount;
    r.paid += amount;
    r.ticksBilled += 1;
    r.lastTick = d.tick;
    r.ticks.push([d.tick, amount, d.dueMs, payerSeen, payeeSeen]);
    r.tickEvents.push([d.tick, amount, r.paid]);
    r.transfersPosted += 1;
    if (!st.warned) {
      const fundsLeft = s.mode === 'payg' ? available(s.payerAccount) : undefined;
      const left = moneyLeft({ mode: s.mode, ratePerTick: s.rate, maxTotal: s.maxTotal, paid: r.paid, available: fundsLeft });
      if (left.ticksLeft <= s.lowBalanceTicks) {
        st.warned = true;
        r.lowBalance.push({
          ticksLeft: left.ticksLeft,
          ratePerTick: s.rate,
          ...(left.capLeft !== null && { capLeft: left.capLeft }),
          ...(fundsLeft !== undefined && { available: fundsLeft }),
        });
      }
    }
    if (s.maxTotal !== null && r.paid >= s.maxTotal) r.halted = 'completed';
  }
  return { streams: out, accounts: Object.fromEntries([...accounts].sort(([a], [b]) => (a < b ? -1 : 1))) };
}

// ------------------------------------------------------------------ the batch biller, and what it wrote

/** Locks the scenario's due streams and bills them with billDueIn, `rowsMax` ticks a transaction, until none is due. */
async function billAll(b: Built, rowsMax: number): Promise<number> {
  for (let round = 0; ; round++) {
    if (round > 10_000) throw new Error('billing did not catch up');
    const done = await withTransaction(db.pool, async (client) => {
      const { rows } = await client.query<LockedStream>(
        `select s.*, epoch_ms(s.opened_at)::text as opened_ms from streams s
          where s.ref = any($1) and s.next_due_ms <= $2 order by s.ref for update of s`,
        [b.refs, b.asOfMs],
      );
      if (rows.length === 0) return true;
      await billDueIn(client, rows, b.asOfMs, rowsMax);
      return false;
    });
    if (done) return round;
  }
}

async function actual(b: Built, snap: Snapshot): Promise<Result> {
  const streams: Record<string, StreamResult> = {};
  for (const s of snap.streams) {
    const row = (await db.pool.query(`select * from streams where ref = $1`, [s.ref])).rows[0];
    const ticks = (
      await db.pool.query(
        `select tick, amount, epoch_ms(due_at) as due_ms, epoch_ms(payer_seen_at) as payer_ms, epoch_ms(payee_seen_at) as payee_ms
           from stream_ticks where stream_ref = $1 and tick > $2 order by tick`,
        [s.ref, s.lastTick],
      )
    ).rows.map((t): [number, number, number, number | null, number | null] => [t.tick, t.amount, t.due_ms, t.payer_ms, t.payee_ms]);
    const skips = (await db.pool.query(`select tick, silent_ms from stream_skips where stream_ref = $1 order by tick`, [s.ref])).rows.map((k): [number, number] => [k.tick, k.silent_ms]);
    const events = (
      await db.pool.query(
        `select type, payload from events
          where id > $2 and ((type in ('stream.tick', 'stream.low_balance') and subject = $1) or (type = 'transfer.posted' and payload->>'streamRef' = $1))
          order by id`,
        [s.ref, snap.eventsBefore],
      )
    ).rows;
    const hold = s.holdId === null ? null : (await db.pool.query(`select captured from holds where id = $1`, [s.holdId])).rows[0].captured;
    streams[s.ref] = {
      ticks,
      tickEvents: events.filter((e) => e.type === 'stream.tick').map((e) => [e.payload.tick, e.payload.amount, e.payload.paid]),
      transfersPosted: events.filter((e) => e.type === 'transfer.posted').length,
      skips,
      halted: row.halted_reason,
      paid: row.paid,
      ticksBilled: row.ticks_billed,
      lastTick: row.last_tick,
      lowBalance: events.filter((e) => e.type === 'stream.low_balance').map((e) => {
        const { ref, ...rest } = e.payload;
        expect(ref).toBe(s.ref);
        return rest;
      }),
      holdCaptured: hold,
    };
  }
  const accounts: Result['accounts'] = {};
  for (const a of (await db.pool.query(`select id, balance, held from accounts where id = any($1) order by id`, [b.accounts])).rows) accounts[a.id] = { balance: a.balance, held: a.held };
  return { streams, accounts };
}

/** Whole-ledger and per-stream invariants after a batch. */
async function checkInvariants(b: Built): Promise<void> {
  const sum = (await db.pool.query(`select coalesce(sum(balance), 0)::bigint as s from accounts`)).rows[0].s;
  expect(sum).toBe(0);
  const { rows } = await db.pool.query(
    `select s.ref, s.paid, coalesce((select sum(amount) from stream_ticks k where k.stream_ref = s.ref), 0)::bigint as ticks_sum,
            s.hold_id, (select captured from holds h where h.id = s.hold_id) as captured
       from streams s where s.ref = any($1)`,
    [b.refs],
  );
  for (const r of rows) {
    expect({ ref: r.ref, paid: r.paid }).toEqual({ ref: r.ref, paid: r.ticks_sum });
    if (r.hold_id !== null) expect({ ref: r.ref, captured: r.captured }).toEqual({ ref: r.ref, captured: r.paid });
  }
  for (const ref of b.refs) expect((await streamTickLedger(db.pool, ref)).problems).toEqual([]);
}

/** Builds the scenario, bills it with billDueIn, and checks the result against the oracle; returns both. */
async function runScenario(plan: PlanScenario, rowsMax: number, prefix = `m${++runs}`): Promise<{ b: Built; expected: Result; got: Result; rounds: number }> {
  const b = await build(plan, prefix);
  const snap = await snapshot(b);
  const expected = oracle(snap, b.asOfMs);
  const rounds = await billAll(b, rowsMax);
  const got = await actual(b, snap);
  expect(got).toEqual(expected);
  await checkInvariants(b);
  return { b, expected, got, rounds };
}

// ------------------------------------------------------------------ generators

const INTERVALS = [100, 150, 200, 250, 500];

/** `arb` one time in `1 + nulls`, null otherwise. */
const sometimes = <T>(arb: fc.Arbitrary<T>, nulls: number) => fc.oneof({ arbitrary: fc.constant(null), weight: nulls }, { arbitrary: arb, weight: 1 });

const streamArb = fc.record({
  payer: fc.nat(3),
  payee: fc.nat(4),
  mode: fc.constantFrom<StreamMode>('escrow', 'payg'),
  rate: fc.integer({ min: 1, max: 50 }),
  capTicks: sometimes(fc.integer({ min: 1, max: 12 }), 1),
  capShort: fc.nat(49),
  intervalMs: fc.constantFrom(...INTERVALS),
  due: fc.nat(8),
  jitter: fc.nat(4),
  openedFracUs: fc.constantFrom(0, 0, 700),
  liveness: sometimes(fc.record({ timeoutMs: fc.constantFrom(100, 250, 600, 1500), graceMs: sometimes(fc.constantFrom(100, 600, 1500, 4000), 1) }), 1),
  lowBalanceTicks: fc.nat(5),
  pause: sometimes(fc.record({ resumed: fc.boolean(), pausedMs: fc.nat(800), resumedAt: fc.nat(100) }), 3),
  rateChange: sometimes(fc.integer({ min: 1, max: 50 }), 3),
  topUp: sometimes(fc.integer({ min: 1, max: 200 }), 3),
});

const scenarioArb = fc
  .record({
    payers: fc.integer({ min: 2, max: 4 }),
    payees: fc.integer({ min: 1, max: 2 }),
    deposits: fc.array(fc.oneof(fc.nat(150), fc.integer({ min: 300, max: 2000 })), { minLength: 4, maxLength: 4 }),
    streams: fc.array(streamArb, { minLength: 1, maxLength: 8 }),
    heartbeats: fc.array(fc.record({ party: fc.nat(5), agoMs: fc.nat(6000), us: fc.constantFrom(0, 0, 0, 500, 999) }), { maxLength: 40 }),
    rowsMax: sometimes(fc.integer({ min: 1, max: 6 }), 1),
  })
  .map(({ payers, payees, deposits, streams, heartbeats, rowsMax }) => {
    const payerNames = Array.from({ length: payers }, (_, i) => `p${i}`);
    const payeeNames = Array.from({ length: payees }, (_, i) => `q${i}`);
    const all = [...payerNames, ...payeeNames];
    const plan: PlanScenario = {
      payers: payerNames.map((name, i) => ({ name, deposit: deposits[i]! })),
      payees: payeeNames,
      streams: streams.map((g, i): PlanStream => {
        const payer = payerNames[g.payer % payers]!;
        const others = all.filter((x) => x !== payer);
        const maxTotal = g.capTicks === null ? (g.mode === 'escrow' ? g.rate * 6 : null) : Math.max(1, g.rate * g.capTicks - (g.capShort % g.rate));
        const pausedMs = g.pause?.resumed ? g.pause.pausedMs : 0;
        const openedAgoMs = g.due * g.intervalMs + pausedMs + Math.min(g.jitter * 50, g.intervalMs - 1);
        return {
          name: `s${i}`,
          payer,
          payee: others[g.payee % others.length]!,
          mode: g.mode,
          rate: g.rate,
          maxTotal,
          intervalMs: g.intervalMs,
          openedAgoMs,
          openedFracUs: g.openedFracUs,
          livenessTimeoutMs: g.liveness?.timeoutMs ?? null,
          graceMs: g.liveness?.graceMs ?? null,
          lowBalanceTicks: g.lowBalanceTicks,
          pause: g.pause === null ? null : g.pause.resumed ? { stillPaused: false, pausedMs, resumedAgoMs: Math.floor((openedAgoMs * g.pause.resumedAt) / 100) } : { stillPaused: true },
          rateChange: g.rateChange,
          topUp: maxTotal === null ? null : g.topUp,
        };
      }),
      heartbeats: heartbeats.map((h) => ({ party: all[h.party % all.length]!, agoUs: h.agoMs * 1000 - h.us })),
    };
    return { plan, rowsMax };
  });

// ------------------------------------------------------------------ the tests

describe('the batch biller equals billing each tick alone in due order', () => {
  test('random payers, streams, pauses, rate changes, top-ups and heartbeats (fast-check)', async () => {
    let billedSomething = 0;
    await fc.assert(
      fc.asyncProperty(scenarioArb, async ({ plan, rowsMax }) => {
        const { expected } = await runScenario(plan, rowsMax ?? BIG_BATCH);
        if (Object.values(expected.streams).some((s) => s.ticks.length > 0 || s.skips.length > 0)) billedSomething++;
      }),
      { numRuns: NUM_RUNS, ...(SEED !== undefined && { seed: SEED }) },
    );
    // the property exercised the biller, not only empty batches
    expect(billedSomething).toBeGreaterThan(NUM_RUNS / 2);
  });

  test('two payg streams of one payer: funds run out mid-batch, the cheaper earlier-due one bills while funds last', async () => {
    const stream = (name: string, rate: number, openedAgoMs: number): PlanStream => ({
      name, payer: 'payer', payee: `to${name.toLowerCase()}`, mode: 'payg', rate, maxTotal: null, intervalMs: 1000, openedAgoMs, openedFracUs: 0,
      livenessTimeoutMs: null, graceMs: null, lowBalanceTicks: 0, pause: null, rateChange: null, topUp: null,
    });
    // tick 1 of each at open (10 + 25), 55 left; then A2 (-4000) 10, B2 (-3500) 25, A3 (-3000) 10,
    // B3 (-2500) 25 > 10 left: B halts; A4 (-2000) 10; A5 (-1000) 0 left: A halts
    const { b, got } = await runScenario(
      { payers: [{ name: 'payer', deposit: 90 }], payees: ['toa', 'tob'], streams: [stream('A', 10, 5000), stream('B', 25, 4500)], heartbeats: [] },
      BIG_BATCH,
      'ex1',
    );
    const A = got.streams[`${b.prefix}A`]!;
    const B = got.streams[`${b.prefix}B`]!;
    expect(A.ticks.map(([t, amount]) => [t, amount])).toEqual([[2, 10], [3, 10], [4, 10]]);
    expect(A).toMatchObject({ halted: 'insufficient_funds', paid: 40, lastTick: 4, ticksBilled: 4 });
    expect(B.ticks.map(([t, amount]) => [t, amount])).toEqual([[2, 25]]);
    expect(B).toMatchObject({ halted: 'insufficient_funds', paid: 50, lastTick: 2, ticksBilled: 2 });
    expect(got.accounts[acct(`${b.prefix}payer`)]).toEqual({ balance: 0, held: 0 });
    expect(got.accounts[acct(`${b.prefix}toa`)]!.balance).toBe(40);
    expect(got.accounts[acct(`${b.prefix}tob`)]!.balance).toBe(50);
  });

  test('a party silent at the due time stays unbillable for that tick, even if it was heard after the due time but before billing', async () => {
    // opened 3000 ms ago, interval 1000: ticks 2, 3, 4 due at A-2000, A-1000, A. The payer is heard
    // throughout; the payee only at A-500, after ticks 2 and 3 came due (silent 1000 and 2000 ms then).
    const { b, got } = await runScenario(
      {
        payers: [{ name: 'payer', deposit: 1000 }],
        payees: ['payee'],
        streams: [
          {
            name: 'S', payer: 'payer', payee: 'payee', mode: 'payg', rate: 5, maxTotal: null, intervalMs: 1000, openedAgoMs: 3000, openedFracUs: 0,
            livenessTimeoutMs: 1000, graceMs: 10_000, lowBalanceTicks: 0, pause: null, rateChange: null, topUp: null,
          },
        ],
        heartbeats: [
          ...[2500, 1500, 500, 0].map((ms) => ({ party: 'payer', agoUs: ms * 1000 })),
          { party: 'payee', agoUs: 500_000 },
        ],
      },
      BIG_BATCH,
      'ex2',
    );
    const S = got.streams[`${b.prefix}S`]!;
    expect(S.skips).toEqual([[2, 1000], [3, 2000]]);
    expect(S.ticks).toEqual([[4, 5, b.asOfMs, b.asOfMs, b.asOfMs - 500]]);
    expect(S).toMatchObject({ halted: null, paid: 10, lastTick: 4, ticksBilled: 2 });
  });

  test('bounded batches (rowsMax smaller than the due ticks) end where one big batch ends', async () => {
    const base = { openedFracUs: 0, graceMs: null, lowBalanceTicks: 2, pause: null, rateChange: null, topUp: null };
    const plan: PlanScenario = {
      payers: [{ name: 'p0', deposit: 200 }, { name: 'p1', deposit: 400 }, { name: 'p2', deposit: 60 }],
      payees: ['q0'],
      streams: [
        { ...base, name: 'a', payer: 'p0', payee: 'q0', mode: 'payg', rate: 12, maxTotal: null, intervalMs: 200, openedAgoMs: 1600, livenessTimeoutMs: null },
        { ...base, name: 'b', payer: 'p0', payee: 'p2', mode: 'payg', rate: 7, maxTotal: 60, intervalMs: 100, openedAgoMs: 1000, livenessTimeoutMs: null },
        { ...base, name: 'c', payer: 'p1', payee: 'q0', mode: 'escrow', rate: 30, maxTotal: 200, intervalMs: 250, openedAgoMs: 2000, livenessTimeoutMs: null },
        { ...base, name: 'd', payer: 'p2', payee: 'p0', mode: 'payg', rate: 9, maxTotal: null, intervalMs: 150, openedAgoMs: 1200, livenessTimeoutMs: null },
        { ...base, name: 'e', payer: 'p1', payee: 'p0', mode: 'payg', rate: 4, maxTotal: 90, intervalMs: 200, openedAgoMs: 1800, livenessTimeoutMs: 300 },
      ],
      heartbeats: [
        ...[1700, 1300, 900, 300, 100].map((ms) => ({ party: 'p1', agoUs: ms * 1000 })),
        ...[1750, 1100, 1000, 200].map((ms) => ({ party: 'p0', agoUs: ms * 1000 })),
      ],
    };
    const big = await runScenario(plan, BIG_BATCH, 'ex3big');
    const small = await runScenario(plan, 2, 'ex3small');
    expect(big.rounds).toBe(1);
    expect(small.rounds).toBeGreaterThan(3);
    // the same ledger, names aside (times are relative to each run's asOfMs)
    const normalize = (r: Result, b: Built) =>
      JSON.parse(
        JSON.stringify({
          streams: Object.fromEntries(
            Object.entries(r.streams).map(([ref, s]) => [
              ref.slice(b.prefix.length),
              { ...s, ticks: s.ticks.map(([t, a, due, ps, es]) => [t, a, due - b.asOfMs, ps === null ? null : ps - b.asOfMs, es === null ? null : es - b.asOfMs]) },
            ]),
          ),
          accounts: Object.fromEntries(Object.entries(r.accounts).map(([id, a]) => [id.slice(b.prefix.length), a])),
        }),
      );
    expect(normalize(small.got, small.b)).toEqual(normalize(big.got, big.b));
    const billed = Object.values(big.got.streams).reduce((n, s) => n + s.ticks.length + s.skips.length, 0);
    expect(billed).toBeGreaterThan(10);
  });

  test('credits received earlier in due order are funds: a payer with nothing left is kept going by its income (ties: by ref)', async () => {
    const base = { mode: 'payg' as const, rate: 10, maxTotal: null, intervalMs: 1000, openedFracUs: 0, livenessTimeoutMs: null, graceMs: null, lowBalanceTicks: 0, pause: null, rateChange: null, topUp: null };
    // x has nothing but y's tick 1 (opened first), which x's own tick 1 spends: its ticks 2-4 can only be paid with what y pays it first
    const scenario = (income: { name: string; openedAgoMs: number }, spending: { name: string }): PlanScenario => ({
      payers: [{ name: 'x', deposit: 0 }, { name: 'y', deposit: 100 }],
      payees: ['z'],
      streams: [
        { ...base, name: income.name, payer: 'y', payee: 'x', openedAgoMs: income.openedAgoMs },
        { ...base, name: spending.name, payer: 'x', payee: 'z', openedAgoMs: 3000 },
      ],
      heartbeats: [],
    });
    // the income is due 500 ms before each spending tick
    const earlier = await runScenario(scenario({ name: 'in', openedAgoMs: 3500 }, { name: 'out' }), BIG_BATCH, 'ex4a');
    expect(earlier.got.streams['ex4aout']).toMatchObject({ halted: null, paid: 40, lastTick: 4 });
    // due at the same time: the income's ref sorts first, so it is billed first
    const tieIncomeFirst = await runScenario(scenario({ name: 'a', openedAgoMs: 3000 }, { name: 'b' }), BIG_BATCH, 'ex4b');
    expect(tieIncomeFirst.got.streams['ex4bb']).toMatchObject({ halted: null, paid: 40, lastTick: 4 });
    // due at the same time, the spending's ref first: its tick 2 comes before any income
    const tieSpendingFirst = await runScenario(scenario({ name: 'b', openedAgoMs: 3000 }, { name: 'a' }), BIG_BATCH, 'ex4c');
    expect(tieSpendingFirst.got.streams['ex4ca']).toMatchObject({ halted: 'insufficient_funds', paid: 10, lastTick: 1 });
    expect(tieSpendingFirst.got.accounts[acct('ex4cx')]).toEqual({ balance: 30, held: 0 });
  });

  test('liveness without an explicit grace: a silence longer than 3 x the timeout halts the stream (partition)', async () => {
    // no heartbeat at all: silent since the opening, 4000 ms before asOf; ticks 2-5 due with
    // silences 1000, 2000, 3000, 4000 ms: all skipped, and 4000 > 3 x 1000 closes the stream
    const { b, got } = await runScenario(
      {
        payers: [{ name: 'payer', deposit: 1000 }],
        payees: ['payee'],
        streams: [
          {
            name: 'S', payer: 'payer', payee: 'payee', mode: 'payg', rate: 5, maxTotal: null, intervalMs: 1000, openedAgoMs: 4000, openedFracUs: 0,
            livenessTimeoutMs: 1000, graceMs: null, lowBalanceTicks: 0, pause: null, rateChange: null, topUp: null,
          },
        ],
        heartbeats: [],
      },
      BIG_BATCH,
      'ex5',
    );
    expect(got.streams[`${b.prefix}S`]).toMatchObject({ skips: [[2, 1000], [3, 2000], [4, 3000], [5, 4000]], halted: 'partition', paid: 5, lastTick: 5 });
  });
});

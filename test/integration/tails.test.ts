import pg from 'pg';
import { setTimeout as sleep } from 'node:timers/promises';
import { recordDelivery } from '../../src/ledger/entities';
import { appendEvent, listEvents } from '../../src/ledger/events';
import { withTransaction } from '../../src/db/pool';
import { postRateEvent } from '../../src/ledger/rates';
import { tickAt } from '../../src/domain/crown';
import { ADMIN_KEY, api, startTestStack, type TestStack } from '../support/stack';
import { SERVER_URL } from '../support/db';
import { prng } from '../../src/domain/simulation';
import { untilHorizonPasses, untilTailsCaughtUp } from '../support/tails';

/**
 * Tails by commit order (issue 17): the event tail, the rate-event tail and an
 * entity's webhook-delivery log, read through the API while writers on their own
 * connections commit out of id order. A reader that passes back the cursor it was
 * given must see every committed row exactly once, and no rolled-back one.
 */
let stack: TestStack;
let admin: ReturnType<typeof api>;
const keys: Record<string, string> = {};

/** Rows per page of every reader: small, so a poll pages. */
const PAGE_ROWS = 7;

const SELLER = 'tail-seller';
const ENTITY = 'tailent';
const TAILER = 'tailer';

beforeAll(async () => {
  stack = await startTestStack();
  admin = api(stack.app, ADMIN_KEY);
  for (const id of [SELLER, TAILER]) keys[id] = (await admin.post('/v1/parties', { id, name: id })).body.apiKey;
  const entity = await admin.post('/v1/entities', { id: ENTITY, name: ENTITY, collateral: 1, funding: 0 });
  expect(entity.status).toBe(201);
  keys[ENTITY] = entity.body.apiKey;
  await postRateEvent(stack.db.pool, { seller: SELLER, rate: 1, tick: futureTick() });
});
afterAll(() => stack.stop());

const futureTick = () => tickAt(Date.now()) + 100_000;

// ---------------------------------------------------------------- the tails under test

/** A row as a reader identifies it: its id and a tag the test chose when writing it. */
interface TailRow {
  id: number;
  tag: string;
}

interface Tail {
  /** Appends one row tagged `tag` on `db`, inside the caller's open transaction. */
  append(db: pg.Client, tag: string, opts?: { parties?: string[] }): Promise<void>;
  /** One page through the API after `after`, and the cursor the API gives for the next one. */
  page(after: number, key?: string): Promise<{ rows: TailRow[]; next: number }>;
  /** Every committed row with one of `tags` (any order): what a fresh snapshot of the table shows. */
  committed(tags: string[]): Promise<TailRow[]>;
}

async function getOk(key: string, url: string) {
  const res = await api(stack.app, key).get(url);
  if (res.status !== 200) throw new Error(`GET ${url}: ${res.status} ${JSON.stringify(res.body)}`);
  return res.body;
}

const eventsTail: Tail = {
  append: (db, tag, opts = {}) => appendEvent(db, { type: 'tail.test', subject: tag, payload: { tag }, parties: opts.parties ?? [] }),
  async page(after, key = ADMIN_KEY) {
    const body = await getOk(key, `/v1/events?after=${after}&limit=${PAGE_ROWS}`);
    return { rows: body.events.map((e: any) => ({ id: e.id, tag: e.subject })), next: body.next };
  },
  committed: async (tags) => (await stack.db.pool.query(`select id, subject as tag from events where type = 'tail.test' and subject = any($1)`, [tags])).rows,
};

/**
 * Rate events are written through postRateEvent, which takes the rate board's lock
 * for its whole transaction, so two of them never commit out of order. The tail
 * must not depend on that: `append` is a writer that does not take the lock.
 */
const rateTail: Tail = {
  append: async (db, tag) => {
    await db.query('insert into rate_events (seller, tick, rate) values ($1, $2, $3)', [SELLER, futureTick(), Number(tag)]);
  },
  async page(after, key = ADMIN_KEY) {
    const events = (await getOk(key, `/v1/rates/events?after=${after}&limit=${PAGE_ROWS}`)).events;
    return { rows: events.map((e: any) => ({ id: e.id, tag: String(e.rate) })), next: events.at(-1)?.id ?? after };
  },
  committed: async (tags) => (await stack.db.pool.query(`select id, rate::text as tag from rate_events where rate = any($1::bigint[])`, [tags])).rows,
};

const deliveriesTail: Tail = {
  append: (db, tag) => recordDelivery(db, { entityId: ENTITY, eventKey: tag, eventType: 'subaccount.active', url: 'http://127.0.0.1:9/hooks', attempt: 1, statusCode: 204, ok: true }),
  async page(after, key = keys[ENTITY]!) {
    const deliveries = (await getOk(key, `/v1/entities/${ENTITY}/deliveries?after=${after}&limit=${PAGE_ROWS}`)).deliveries;
    return { rows: deliveries.map((d: any) => ({ id: d.id, tag: d.eventKey })), next: deliveries.at(-1)?.id ?? after };
  },
  committed: async (tags) => (await stack.db.pool.query(`select id, event_key as tag from webhook_deliveries where event_key = any($1)`, [tags])).rows,
};

/** A tail reader as a client writes one: it keeps only the cursor each page gives it. */
class Reader {
  after = 0;
  readonly rows: TailRow[] = [];
  constructor(
    private readonly tail: Tail,
    private readonly key?: string,
  ) {}

  /** Pages until the tail has nothing more to show. */
  async poll(): Promise<void> {
    for (;;) {
      const { rows, next } = await this.tail.page(this.after, this.key);
      this.rows.push(...rows);
      this.after = next;
      if (rows.length < PAGE_ROWS) return;
    }
  }

  /** The tags seen among `ours`, in the order the reader saw them. */
  seen(ours: Iterable<string>): string[] {
    const set = new Set(ours);
    return this.rows.filter((r) => set.has(r.tag)).map((r) => r.tag);
  }
}

async function connect(): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: stack.db.url });
  await client.connect();
  return client;
}

/** The writing transaction's id (it takes one if it has none yet). */
const xidOf = async (db: pg.Client): Promise<string> => (await db.query<{ xid: string }>('select pg_current_xact_id()::text as xid')).rows[0]!.xid;


// ---------------------------------------------------------------- one transaction overtakes another

/**
 * A takes the lower id and stays open; B takes the next id and commits. While A is
 * open the reader is shown nothing past A (B waits behind it); once A commits, the
 * reader, continuing with its own cursor, gets A and then B, each once.
 */
async function overtaken(tail: Tail, tags: { a: string; b: string }): Promise<void> {
  const reader = new Reader(tail);
  await reader.poll();
  const a = await connect();
  const b = await connect();
  try {
    await a.query('begin');
    await tail.append(a, tags.a);
    const xidA = await xidOf(a);
    const idA = (await a.query('select lastval() as id')).rows[0].id as number;
    await b.query('begin');
    await tail.append(b, tags.b);
    await b.query('commit');
    const [rowB] = await tail.committed([tags.b]);
    expect(rowB!.id).toBeGreaterThan(idA); // B holds the later id and committed first

    await reader.poll();
    await sleep(50);
    await reader.poll();
    const whileOpen = reader.seen([tags.a, tags.b]);

    await a.query('commit');
    await untilHorizonPasses(stack.db.pool, xidA);
    await reader.poll();
    expect(reader.seen([tags.a, tags.b])).toEqual([tags.a, tags.b]);
    expect(reader.rows.find((r) => r.tag === tags.a)!.id).toBe(idA);
    // how: B, committed, waited behind the open A instead of moving the cursor past it
    expect(whileOpen).toEqual([]);
  } finally {
    await a.query('rollback').catch(() => undefined);
    await Promise.all([a.end(), b.end()]);
  }
}

describe('a transaction that commits after a later id', () => {
  test('events: the tail shows nothing past the open transaction, then its event and the later one, each once', () => overtaken(eventsTail, { a: 'ab-a', b: 'ab-b' }));

  test('rate events: a row written outside the board lock is not skipped by the tail', () => overtaken(rateTail, { a: '900001', b: '900002' }));

  test("webhook deliveries: an entity's log shows the earlier attempt and the later one, each once", () => overtaken(deliveriesTail, { a: 'ab-a', b: 'ab-b' }));
});

// ---------------------------------------------------------------- many writers, shuffled commits

interface ShuffledRun {
  committed: Set<string>;
  rolledBack: Set<string>;
  /** Rows that became visible when a row with a greater id was already visible: an id cursor polling then would have skipped them. */
  lateRows: number;
}

/**
 * `writers` connections each run `txns` transactions of 1..3 rows with random pauses
 * before the first row and before the end; half take their xid before their first
 * row (so xid order and id order differ), one in ten rolls back. Meanwhile `readers`
 * poll, and an observer watches what a fresh snapshot shows to count out-of-order commits.
 */
async function shuffledCommits(
  tail: Tail,
  o: { tag: (n: number) => string; seed: number; writers: number; txns: number; readers: Reader[]; parties?: (rng: () => number) => string[] },
): Promise<ShuffledRun> {
  const rng = prng(o.seed);
  const run: ShuffledRun = { committed: new Set(), rolledBack: new Set(), lateRows: 0 };
  let writing = true;
  let tagsOut = 0;
  /** Every tag handed out so far, committed, rolled back or in flight. */
  const tagsSoFar = () => Array.from({ length: tagsOut }, (_, n) => o.tag(n));

  const writer = async (): Promise<void> => {
    const db = await connect();
    try {
      for (let t = 0; t < o.txns; t++) {
        const rows: string[] = [];
        await db.query('begin');
        if (rng() < 0.5) await xidOf(db);
        await sleep(Math.floor(rng() * 6));
        for (let n = 1 + Math.floor(rng() * 3); n > 0; n--) {
          const tag = o.tag(tagsOut++);
          rows.push(tag);
          await tail.append(db, tag, { parties: o.parties?.(rng) });
        }
        await sleep(Math.floor(rng() * 20));
        const commit = rng() >= 0.1;
        await db.query(commit ? 'commit' : 'rollback');
        for (const tag of rows) (commit ? run.committed : run.rolledBack).add(tag);
      }
    } finally {
      await db.end();
    }
  };

  const observe = async (): Promise<void> => {
    const visible = new Map<number, string>();
    let maxId = 0;
    while (writing) {
      const now = await tail.committed(tagsSoFar());
      const fresh = now.filter((r) => !visible.has(r.id));
      run.lateRows += fresh.filter((r) => r.id < maxId).length;
      for (const r of fresh) {
        visible.set(r.id, r.tag);
        maxId = Math.max(maxId, r.id);
      }
      await sleep(1);
    }
  };
  const read = async (): Promise<void> => {
    while (writing) {
      for (const r of o.readers) await r.poll();
      await sleep(2);
    }
  };

  const watchers = [observe(), read()];
  try {
    await Promise.all(Array.from({ length: o.writers }, writer));
  } finally {
    writing = false;
    await Promise.all(watchers);
  }
  await untilTailsCaughtUp(stack.db.pool);
  for (const r of o.readers) await r.poll();
  console.log(`seed ${o.seed}: ${run.committed.size} rows committed, ${run.rolledBack.size} rolled back, ${run.lateRows} became visible after a greater id`);
  return run;
}

/** Every id at most once; of ours, exactly the committed ones. */
function expectExactlyOnce(reader: Reader, expected: Set<string>, run: ShuffledRun, seed: number): void {
  const ids = reader.rows.map((r) => r.id);
  expect({ seed, duplicateIds: ids.length - new Set(ids).size }).toEqual({ seed, duplicateIds: 0 });
  const seen = reader.seen([...run.committed, ...run.rolledBack]);
  expect({ seed, seen: [...seen].sort() }).toEqual({ seed, seen: [...expected].sort() });
}

const seedOf = () => Number(process.env.TAILS_SEED ?? Math.floor(Math.random() * 2 ** 31));

describe('many writers committing in shuffled order while readers poll', () => {
  test('events: the admin and a party each see every committed event of theirs exactly once, no rolled-back one', async () => {
    const seed = seedOf();
    const all = new Reader(eventsTail);
    const party = new Reader(eventsTail, keys[TAILER]);
    const partiesOf = new Map<string, string[]>();
    const run = await shuffledCommits(
      {
        ...eventsTail,
        append: (db, tag, opts) => {
          partiesOf.set(tag, opts?.parties ?? []);
          return eventsTail.append(db, tag, opts);
        },
      },
      { tag: (n) => `shuffled-${n}`, seed, writers: 6, txns: 15, readers: [all, party], parties: (rng) => (rng() < 0.5 ? [TAILER] : ['nobody']) },
    );
    expect({ seed, committed: run.committed.size > 100, outOfOrder: run.lateRows > 0 }).toEqual({ seed, committed: true, outOfOrder: true });
    expectExactlyOnce(all, run.committed, run, seed);
    expectExactlyOnce(party, new Set([...run.committed].filter((t) => partiesOf.get(t)!.includes(TAILER))), run, seed);
  });

  test("webhook deliveries: an entity's log shows every committed attempt exactly once", async () => {
    const seed = seedOf();
    const reader = new Reader(deliveriesTail);
    const run = await shuffledCommits(deliveriesTail, { tag: (n) => `delivery-${n}`, seed, writers: 6, txns: 15, readers: [reader] });
    expect({ seed, outOfOrder: run.lateRows > 0 }).toEqual({ seed, outOfOrder: true });
    expectExactlyOnce(reader, run.committed, run, seed);
  });

  test('rate events: the tail shows every committed rate event exactly once', async () => {
    const seed = seedOf();
    const reader = new Reader(rateTail);
    const run = await shuffledCommits(rateTail, { tag: (n) => String(10_000_000 + n), seed, writers: 6, txns: 15, readers: [reader] });
    expect({ seed, outOfOrder: run.lateRows > 0 }).toEqual({ seed, outOfOrder: true });
    expectExactlyOnce(reader, run.committed, run, seed);
  });
});

// ---------------------------------------------------------------- cursors

describe('the horizon is this database\'s', () => {
  test('a transaction left open in another database does not hold the tail; one left open in this database does', async () => {
    const elsewhere = new pg.Client({ connectionString: SERVER_URL });
    const here = new pg.Client({ connectionString: stack.db.url });
    await Promise.all([elsewhere.connect(), here.connect()]);
    try {
      // another database's writer, older than what follows, left open
      await elsewhere.query('begin');
      const { rows } = await elsewhere.query<{ xid: string }>('select pg_current_xact_id()::text as xid');
      const held = async () => (await stack.db.pool.query<{ held: boolean }>('select pg_snapshot_xmin(pg_current_snapshot()) <= $1::xid8 as held', [rows[0]!.xid])).rows[0]!.held;
      expect(await held()).toBe(true); // the server-wide horizon is held by it
      const reader = new Reader(eventsTail);
      await reader.poll();
      await eventsTail.append(here, 'horizon-1');
      // shown within seconds (this database's own short transactions may hold it a moment), not when the other one ends
      for (let i = 0; i < 100 && !reader.rows.some((r) => r.tag === 'horizon-1'); i++) {
        await reader.poll();
        await sleep(50);
      }
      expect(reader.rows.map((r) => r.tag)).toContain('horizon-1');
      expect(await held()).toBe(true); // still open: the tail did not wait for it

      // a writer of this database left open holds the rows committed after it
      await here.query('begin');
      await eventsTail.append(here, 'horizon-2');
      const later = new pg.Client({ connectionString: stack.db.url });
      await later.connect();
      await eventsTail.append(later, 'horizon-3');
      await later.end();
      await reader.poll();
      expect(reader.rows.map((r) => r.tag)).not.toContain('horizon-3');
      await here.query('commit');
      await untilTailsCaughtUp(stack.db.pool);
      await reader.poll();
      expect(reader.rows.map((r) => r.tag).filter((t) => t.startsWith('horizon-'))).toEqual(['horizon-1', 'horizon-2', 'horizon-3']);
    } finally {
      await elsewhere.query('rollback').catch(() => undefined);
      await Promise.all([elsewhere.end(), here.end()]);
    }
  });

  test("another database's transaction ending while a page is read never hides a row the tail already showed", async () => {
    // Each round: another database's writer takes an xid, then this database commits an
    // event (a greater xid) and the tail shows it; then the other writer commits while
    // a reader keeps reading. A horizon that placed the ended writer as this database's
    // would hide the event from a read whose snapshot still saw it in flight.
    const ROUNDS = 200;
    const elsewhere = new pg.Client({ connectionString: SERVER_URL });
    const here = new pg.Client({ connectionString: stack.db.url });
    await Promise.all([elsewhere.connect(), here.connect()]);
    const before = (await listEvents(stack.db.pool, { after: 0, limit: 1_000 })).at(-1)?.id ?? 0;
    let reads = 0;
    let endedDuringRead = 0;
    const misses: string[] = [];
    try {
      for (let round = 0; round < ROUNDS; round++) {
        await elsewhere.query('begin');
        await elsewhere.query('select pg_current_xact_id()');
        const tag = `ended-elsewhere-${round}`;
        await eventsTail.append(here, tag);
        await untilTailsCaughtUp(stack.db.pool);
        let ended = false;
        let inFlight = 0;
        const reader = (async () => {
          for (let readsAfterEnd = 0; readsAfterEnd < 3; ) {
            inFlight++;
            const page = await listEvents(stack.db.pool, { after: before, limit: 1_000, type: 'tail.test' });
            inFlight--;
            reads++;
            if (!page.some((e) => e.subject === tag)) misses.push(`${tag} (read ${reads})`);
            if (ended) readsAfterEnd++;
          }
        })();
        await sleep(round % 4);
        if (inFlight > 0) endedDuringRead++;
        await elsewhere.query('commit');
        ended = true;
        await reader;
      }
    } finally {
      await elsewhere.query('rollback').catch(() => undefined);
      await Promise.all([elsewhere.end(), here.end()]);
    }
    // the ends landed while reads were on their way (else the test proves nothing)
    expect(endedDuringRead).toBeGreaterThan(ROUNDS / 4);
    expect({ reads: reads >= ROUNDS * 3, misses }).toEqual({ reads: true, misses: [] });
  });
});

describe('cursors', () => {
  test('a cursor that names no row is a 400 on each tail; 0 starts at the first row', async () => {
    const maxId = async (table: string) => Number((await stack.db.pool.query(`select max(id) as id from ${table}`)).rows[0].id);
    const beyond = (await maxId('events')) + 1_000;
    const res = await admin.get(`/v1/events?after=${beyond}`);
    expect(res.status).toBe(400);
    expect(res.body.error.message).toMatch(`after ${beyond} is no event's id`);
    expect((await admin.get(`/v1/rates/events?after=${(await maxId('rate_events')) + 1_000}`)).status).toBe(400);
    expect((await api(stack.app, keys[ENTITY]).get(`/v1/entities/${ENTITY}/deliveries?after=${(await maxId('webhook_deliveries')) + 1_000}`)).status).toBe(400);

    const first = (await admin.get('/v1/events?after=0&limit=1')).body;
    expect(first.events[0].id).toBe(Number((await stack.db.pool.query('select id from events order by xid, id limit 1')).rows[0].id));
    expect(first.next).toBe(first.events[0].id);
  });

  test("subject and type narrow the event tail; a party's filter still sees only its own events; the cursor pages the narrowed tail", async () => {
    const db = stack.db.pool;
    const append = (event: Parameters<typeof appendEvent>[1]) => withTransaction(db, (client) => appendEvent(client, event));
    // interleaved: two subjects, two types, one subject also written for another party only, each its own transaction
    for (let i = 0; i < 5; i++) {
      await append({ type: 'filter.a', subject: 'flt-one', payload: { i }, parties: [TAILER] });
      await append({ type: 'filter.b', subject: 'flt-one', payload: { i }, parties: [TAILER] });
      await append({ type: 'filter.a', subject: 'flt-two', payload: { i }, parties: [TAILER] });
      await append({ type: 'filter.a', subject: 'flt-one', payload: { i, hidden: true }, parties: [SELLER] });
    }
    await untilTailsCaughtUp(db);
    /** Every page of a filtered tail, passing back only the cursor it was given (2 rows a page). */
    const all = async (key: string, query: string) => {
      const seen: any[] = [];
      for (let after = 0; ; ) {
        const body = await getOk(key, `/v1/events?after=${after}&limit=2&${query}`);
        if (body.events.length === 0) return seen;
        seen.push(...body.events);
        after = body.next;
      }
    };
    const admins = await all(ADMIN_KEY, 'subject=flt-one');
    expect(admins).toHaveLength(15);
    expect(new Set(admins.map((e) => e.subject))).toEqual(new Set(['flt-one']));
    expect(new Set(admins.map((e) => e.id)).size).toBe(15);
    const both = await all(ADMIN_KEY, 'subject=flt-one&type=filter.b');
    expect(both.map((e) => [e.type, e.payload.i])).toEqual([0, 1, 2, 3, 4].map((i) => ['filter.b', i]));
    const byType = await all(ADMIN_KEY, 'type=filter.a');
    expect(byType.filter((e) => e.subject === 'flt-two')).toHaveLength(5);
    expect(byType.every((e) => e.type === 'filter.a')).toBe(true);
    // the party sees its own flt-one events, never the seller's
    const tailer = await all(keys[TAILER]!, 'subject=flt-one');
    expect(tailer).toHaveLength(10);
    expect(tailer.some((e) => e.payload.hidden)).toBe(false);
    // a malformed type is refused by name, and changes nothing
    const bad = await admin.get('/v1/events?type=Stream%20Tick');
    expect(bad.status).toBe(400);
    expect(bad.body.error.message).toMatch(/type/);
  });

  test('the read-only role reads the event tail as the API does, and cannot write to it', async () => {
    const u = new URL(stack.db.url);
    u.username = 'sluice_readonly';
    const ro = new pg.Client({ connectionString: u.toString() });
    await ro.connect();
    try {
      await untilTailsCaughtUp(stack.db.pool);
      const viaApi = (await admin.get('/v1/events?after=0&limit=50')).body.events.map((e: any) => e.id);
      expect((await listEvents(ro, { after: 0, limit: 50 })).map((e) => e.id)).toEqual(viaApi);
      await expect(ro.query(`insert into events (type, subject, payload, xid) values ('x.y', 'x', '{}', '0')`)).rejects.toMatchObject({ code: '42501' });
    } finally {
      await ro.end();
    }
  });
});

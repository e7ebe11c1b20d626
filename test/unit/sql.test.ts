import { compile, params, sql, type Param } from '../../src/db/sql';
import { GRANT_SQL } from '../../src/ledger/grants';

describe('sql: statements composed by name', () => {
  test('parameters are numbered in the order they first appear, and their values follow that order', () => {
    const p = params({ ref: 's-1', tick: 7 });
    expect(compile(sql`select * from stream_ticks where tick = ${p.tick} and stream_ref = ${p.ref}`)).toEqual({
      text: 'select * from stream_ticks where tick = $1 and stream_ref = $2',
      values: [7, 's-1'],
    });
  });

  test('a parameter interpolated twice is one number', () => {
    const p = params({ payer: 'alice' });
    expect(compile(sql`select 1 where payer = ${p.payer} or payee = ${p.payer}`)).toEqual({ text: 'select 1 where payer = $1 or payee = $1', values: ['alice'] });
  });

  test('equal values of two parameters stay two numbers (identity, not value)', () => {
    const a = params({ party: null });
    const b = params({ status: null });
    expect(compile(sql`select ${a.party}::text, ${b.status}::text`)).toEqual({ text: 'select $1::text, $2::text', values: [null, null] });
  });

  test('a fragment written apart is renumbered where it is composed, sharing the parameters it is given', () => {
    // two fragments that know nothing of each other's numbers, as two files would write them
    const tier = (payer: Param) => sql`coalesce((select tier from payer_tiers where party_id = ${payer}), 'new')`;
    const usage = (payer: Param, day: Param) => sql`(select sum(reserved) from grants where payer = ${payer} and day = ${day}::date)`;
    const p = params({ jobId: 'job-1', payer: 'alice', day: '2026-01-02' });
    expect(compile(sql`select ${tier(p.payer)} as tier, ${usage(p.payer, p.day)} as used from grants where job_id = ${p.jobId}`)).toEqual({
      text: `select coalesce((select tier from payer_tiers where party_id = $1), 'new') as tier, (select sum(reserved) from grants where payer = $1 and day = $2::date) as used from grants where job_id = $3`,
      values: ['alice', '2026-01-02', 'job-1'],
    });
  });

  test('a fragment with its own values appended to a statement takes the numbers after the statement’s', () => {
    const statement = (along?: ReturnType<typeof sql>) => {
      const v = params({ key: 'k', amount: 5 });
      return sql`with t as (insert into transfers (key, amount) values (${v.key}, ${v.amount}) returning *)${along ? sql`, ${along}` : sql``} select t.* from t`;
    };
    const tick = params({ ref: 's-1', tick: 3, amount: 5 });
    const along = sql`k as (insert into stream_ticks (stream_ref, tick, amount, transfer_id) select ${tick.ref}, ${tick.tick}, ${tick.amount}, t.id from t)`;
    expect(compile(statement(along))).toEqual({
      text: 'with t as (insert into transfers (key, amount) values ($1, $2) returning *), k as (insert into stream_ticks (stream_ref, tick, amount, transfer_id) select $3, $4, $5, t.id from t) select t.* from t',
      values: ['k', 5, 's-1', 3, 5],
    });
    expect(compile(statement())).toEqual({ text: 'with t as (insert into transfers (key, amount) values ($1, $2) returning *) select t.* from t', values: ['k', 5] });
  });

  test('the text depends on the shape only, so it can be a prepared statement: other values, the same text', () => {
    const read = (ref: string, tick: number) => {
      const p = params({ ref, tick });
      return compile(sql`select amount from stream_ticks where stream_ref = ${p.ref} and tick = ${p.tick}`);
    };
    expect(read('a', 1).text).toBe(read('b', 2).text);
    expect(read('b', 2).values).toEqual(['b', 2]);
  });

  test('a value interpolated bare is refused, by the types and at run time, so it cannot land in the text', () => {
    const ref = "s-1'; drop table streams; --";
    // @ts-expect-error a string is neither a fragment nor a parameter
    expect(() => sql`select * from streams where ref = ${ref}`).toThrow(/interpolate a fragment or a parameter/);
  });

  test('a statement with no parameters compiles to its text', () => {
    expect(compile(sql`select 1`)).toEqual({ text: 'select 1', values: [] });
  });
});

describe('statements composed from fragments keep the numbers their replays bind', () => {
  test('GRANT_SQL.readBudget numbers its parameters as bench:pool binds them: $1 the payer, $2 the day, $3 the job', () => {
    const text = GRANT_SQL.readBudget;
    expect(text).toContain('where party_id = $1');
    expect(text).toContain('where payer = $1 and day = $2::date');
    expect(text).toContain('where g.job_id = $3');
    expect(text).not.toMatch(/\$[4-9]/);
  });
});

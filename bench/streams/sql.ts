/**
 * Where the worker's pool spends its time, client side: each SQL statement (sent to
 * answered, by statement name or first word), waiting for a free connection, and
 * transactions (begin → commit, and their time outside SQL: the planning in
 * JavaScript), while `recording` is on; and the deadlocks PostgreSQL reported
 * (withTransaction retries them), always.
 */
import { performance } from 'node:perf_hooks';
import type { Pool } from '../../src/db/pool';

/** A statement's total over a window, and as connection-seconds per second (`busy`). */
export interface SqlTime {
  name: string;
  count: number;
  ms: number;
  busy: number;
}

export class PoolRecorder {
  recording = false;
  /** Statements PostgreSQL ended with deadlock_detected (withTransaction retries them). */
  deadlocks = 0;
  private readonly times = new Map<string, { count: number; ms: number }>();

  private add(name: string, ms: number): void {
    const s = this.times.get(name) ?? { count: 0, ms: 0 };
    s.count++;
    s.ms += ms;
    this.times.set(name, s);
  }

  /** Wraps the pool's connect and its clients' query; call once, before the pool is used. */
  instrument(pool: Pool): void {
    // waiting for a free connection of the pool, as its own line ('pool wait')
    const connect = pool.connect.bind(pool) as (...args: unknown[]) => unknown;
    (pool as unknown as { connect: (...args: unknown[]) => unknown }).connect = (...args: unknown[]) => {
      if (!this.recording) return connect(...args);
      const t = performance.now();
      const done = () => this.add('pool wait', performance.now() - t);
      const cb = args[0];
      if (typeof cb === 'function') {
        return connect((...cbArgs: unknown[]) => {
          done();
          return (cb as (...a: unknown[]) => unknown)(...cbArgs);
        });
      }
      const result = connect() as Promise<unknown>;
      result.then(done, done);
      return result;
    };
    pool.on('connect', (client) => {
      const query = client.query.bind(client) as (...args: unknown[]) => unknown;
      // the transaction this connection is in (begin → commit): its span, and the time in statements
      let txn: { start: number; sqlMs: number } | undefined;
      (client as unknown as { query: (...args: unknown[]) => unknown }).query = (...args: unknown[]) => {
        const first = args[0] as string | { name?: string; text?: string };
        const text = typeof first === 'string' ? first : (first?.text ?? '');
        const name = (typeof first === 'object' && first?.name) || text.trim().split(/\s+/)[0]!.toLowerCase();
        const t = performance.now();
        if (name === 'begin') txn = { start: t, sqlMs: 0 };
        const done = (error?: unknown) => {
          const ms = performance.now() - t;
          const code = (error as { code?: string } | undefined)?.code;
          if (code === '40P01') this.deadlocks++;
          if (!this.recording) return;
          this.add(name, ms);
          if (txn) txn.sqlMs += ms;
          if ((name === 'commit' || name === 'rollback') && txn) {
            const span = performance.now() - txn.start;
            this.add('(transactions, begin → commit)', span);
            this.add('(in transactions, outside SQL)', span - txn.sqlMs);
            txn = undefined;
          }
        };
        const last = args[args.length - 1];
        if (typeof last === 'function') {
          // callback style (pool.query): time until the callback
          args[args.length - 1] = (error: unknown, ...rest: unknown[]) => {
            done(error);
            return (last as (...a: unknown[]) => unknown)(error, ...rest);
          };
          return query(...args);
        }
        const result = query(...args) as Promise<unknown>;
        result.then(() => done(), done);
        return result;
      };
    });
  }

  /** Starts recording afresh. */
  start(): void {
    this.times.clear();
    this.recording = true;
  }

  stop(): void {
    this.recording = false;
  }

  /** The statements' totals since start, busiest first, as connection-seconds per second of `seconds`. */
  take(seconds: number): SqlTime[] {
    const out = [...this.times.entries()].map(([name, s]) => ({ name, count: s.count, ms: s.ms, busy: s.ms / 1000 / seconds }));
    this.times.clear();
    return out.sort((a, b) => b.ms - a.ms);
  }
}

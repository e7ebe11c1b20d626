import { runAudit } from './audit';
import { ensurePartitionsAhead, missingAhead, MONTHS_AHEAD, PARTITIONED_TABLES, type PartitionedTable } from './db/partitions';
import { withTransaction, type Pool, type Queryable } from './db/pool';
import { SluiceError } from './domain/errors';

/*
 * Retention (DESIGN §8, docs/operations.md): transfers, stream_ticks and events are
 * partitioned by UTC month (migration 031). `sluice retention` keeps partitions ready
 * ahead, expires request idempotency keys past their window, and archives the months
 * older than the live horizon: their partitions move to the sluice_archive schema and
 * their money stays as carried-forward totals (archive_month). Run as the owner.
 */

export interface RetentionOptions {
  /** Months kept live, the current one included: an older month is archived. */
  keepMonths: number;
  /** Days a request's idempotency key answers replays; older keys are deleted. */
  idempotencyWindowDays: number;
  /** Archive the months before this one (`YYYY-MM`) instead of those beyond keepMonths. */
  before?: string;
  /** Say what would be done, change nothing. */
  dryRun?: boolean;
}

export interface ArchivedMonth {
  month: string;
  stream_ticks: number;
  transfers: number;
  events: number;
}

export interface RetentionReport {
  dryRun: boolean;
  /** Monthly partitions made ahead (a dry run: missing ahead). */
  partitionsMade: number;
  /** Request idempotency keys deleted (a dry run: that would be). */
  keysExpired: number;
  /** The months archived (a dry run: that would be, their rows counted). */
  archived: ArchivedMonth[];
  /** Rows the default partitions hold: written for a month with no partition of its own (none, while retention runs). */
  stranded: Record<PartitionedTable, number>;
}

const monthPattern = /^\d{4}-(0[1-9]|1[0-2])$/;

/** The request idempotency keys past their window ($1 days): what a run deletes and a dry run counts. */
const EXPIRED_KEYS = 'from idempotency_keys where created_at < now() - make_interval(days => $1)';

/** The live months (first days, `YYYY-MM`) with a partition of any partitioned table before `cutoff`, oldest first. */
async function monthsBefore(db: Queryable, cutoff: string): Promise<string[]> {
  const { rows } = await db.query<{ month: string }>(
    `select distinct to_char(to_date(substring(c.relname from '(\\d{4}m\\d{2})$'), 'YYYY"m"MM'), 'YYYY-MM') as month
       from pg_inherits i join pg_class c on c.oid = i.inhrelid join pg_class p on p.oid = i.inhparent
      where p.relnamespace = 'public'::regnamespace and p.relname = any($1) and c.relname ~ '_\\d{4}m\\d{2}$'
        and to_date(substring(c.relname from '(\\d{4}m\\d{2})$'), 'YYYY"m"MM') < to_date($2, 'YYYY-MM')
      order by 1`,
    [PARTITIONED_TABLES, cutoff],
  );
  return rows.map((r) => r.month);
}

/** The first month kept live: `before`, else the current month's first day less keepMonths − 1 months. */
async function horizon(db: Queryable, options: RetentionOptions): Promise<string> {
  if (options.before !== undefined) {
    if (!monthPattern.test(options.before)) throw new SluiceError('invalid_request', `--before takes a month as YYYY-MM, not ${options.before}`);
    return options.before;
  }
  const { rows } = await db.query<{ month: string }>(
    `select to_char(date_trunc('month', now()) - make_interval(months => $1 - 1), 'YYYY-MM') as month`,
    [options.keepMonths],
  );
  return rows[0]!.month;
}

async function countRows(db: Queryable, table: string): Promise<number> {
  const { rows } = await db.query<{ n: number }>(`select count(*)::int as n from public.${table}`);
  return rows[0]!.n;
}

/**
 * One retention run. The months to archive are proven first: a red audit refuses the
 * run before anything changes (an archived month is read no more, so its books must
 * be right when it leaves). Each month is archived in its own transaction.
 */
export async function runRetention(pool: Pool, options: RetentionOptions): Promise<RetentionReport> {
  const dryRun = options.dryRun ?? false;
  const months = await monthsBefore(pool, await horizon(pool, options));
  if (months.length > 0) {
    const audit = await runAudit(pool);
    if (!audit.ok) {
      const failed = audit.checks.filter((c) => !c.ok).map((c) => c.name);
      throw new SluiceError('invalid_state', `the audit is red (${failed.join(', ')}): no month is archived until the books are right`, { failed });
    }
  }
  const stranded = Object.fromEntries(
    await Promise.all(PARTITIONED_TABLES.map(async (t) => [t, await countRows(pool, `${t}_default`)] as const)),
  ) as RetentionReport['stranded'];
  if (dryRun) {
    const { rows } = await pool.query<{ n: number }>(`select count(*)::int as n ${EXPIRED_KEYS}`, [options.idempotencyWindowDays]);
    const archived: ArchivedMonth[] = [];
    for (const month of months) {
      const counts = { month } as ArchivedMonth;
      for (const t of PARTITIONED_TABLES) {
        const { rows: exists } = await pool.query<{ name: string | null }>(`select to_regclass('public.' || month_partition_name($1, to_date($2, 'YYYY-MM')))::text as name`, [t, month]);
        counts[t] = exists[0]!.name ? await countRows(pool, exists[0]!.name) : 0;
      }
      archived.push(counts);
    }
    return { dryRun, partitionsMade: await missingAhead(pool), keysExpired: rows[0]!.n, archived, stranded };
  }
  const partitionsMade = await ensurePartitionsAhead(pool);
  const { rowCount } = await pool.query(`delete ${EXPIRED_KEYS}`, [options.idempotencyWindowDays]);
  const archived: ArchivedMonth[] = [];
  for (const month of months) {
    const counts = await withTransaction(pool, async (client) => {
      // DETACH waits for every query on the tables, and the writes queue behind it: give up rather than stall billing
      await client.query(`set local lock_timeout = '10s'`);
      const { rows } = await client.query<{ counted: Record<string, number | string> }>(`select archive_month(to_date($1, 'YYYY-MM')) as counted`, [month]);
      return rows[0]!.counted;
    });
    archived.push({ month, stream_ticks: Number(counts.stream_ticks ?? 0), transfers: Number(counts.transfers ?? 0), events: Number(counts.events ?? 0) });
  }
  return { dryRun, partitionsMade, keysExpired: rowCount ?? 0, archived, stranded };
}

export function formatRetention(report: RetentionReport): string {
  const would = (done: string, planned: string) => (report.dryRun ? planned : done);
  const lines = [
    `partitions: ${report.partitionsMade} ${would('made', 'to make')} (each table ready ${MONTHS_AHEAD} months ahead)`,
    `idempotency keys: ${report.keysExpired} ${would('expired', 'to expire')}`,
  ];
  if (report.archived.length === 0) lines.push('archive: no month past the horizon');
  for (const m of report.archived) {
    lines.push(`${would('archived', 'to archive')} ${m.month}: ${m.transfers} transfers, ${m.stream_ticks} ticks, ${m.events} events → sluice_archive`);
  }
  const stranded = Object.entries(report.stranded).filter(([, n]) => (n as number) > 0);
  lines.push(
    stranded.length === 0
      ? 'default partitions: empty'
      : `default partitions: ${stranded.map(([t, n]) => `${t} ${n}`).join(', ')} rows with no month of their own (see docs/operations.md)`,
  );
  return lines.join('\n');
}

import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { loadMigrations } from '../../src/db/migrate';

test('with no DATABASE_URL and no local server, the launcher runs an embedded PostgreSQL (as root too) that takes the migrations', () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'sluice-embedded-'));
  try {
    const out = execFileSync(process.execPath, ['--import', 'tsx', resolve(__dirname, '../support/embeddedProbe.ts'), dataDir], {
      encoding: 'utf8',
      timeout: 120_000,
    });
    const seen = JSON.parse(out.trim().split('\n').at(-1)!);
    expect(seen.source).toBe('embedded');
    expect(seen.lines.join('\n')).toContain('starting an embedded one');
    expect(seen.applied).toEqual(loadMigrations().map((m) => m.version));
    // the system accounts, the pool seeded from the world (the default 10,000); the pool and the
    // world are each held as stripes (SLUICE_POOL_STRIPES, SLUICE_WORLD_STRIPES, default 8 each)
    type Row = { id: string; kind: string; balance: number };
    const rows: Row[] = seen.rows;
    const ofKind = (kind: string) => rows.filter((r) => r.kind === kind);
    const sum = (rs: Row[]) => rs.reduce((s, r) => s + Number(r.balance), 0);
    const stripes = [1, 2, 3, 4, 5, 6, 7];
    expect(ofKind('user')).toEqual([
      ...['sluice.jobs', ...stripes.map((i) => `sluice.jobs.${i}`)].map((id) => ({ id, kind: 'user', balance: 0 })), // the jobs account, striped like the pool
      { id: 'sluice.rewards', kind: 'user', balance: 0 },
    ]);
    expect(ofKind('pool').map((r) => r.id)).toEqual(['sluice.pool', ...stripes.map((i) => `sluice.pool.${i}`)]);
    expect(sum(ofKind('pool'))).toBe(10_000);
    expect(ofKind('world').map((r) => r.id)).toEqual(['world', ...stripes.map((i) => `world.${i}`)]);
    expect(sum(ofKind('world'))).toBe(-10_000);
    expect(rows).toHaveLength(25);
    expect(seen.version).toMatch(/^\d+\.\d+/);
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
});

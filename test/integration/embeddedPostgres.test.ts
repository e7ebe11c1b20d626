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
    // the system accounts, the pool seeded from the world (the default 10,000)
    expect(seen.rows).toEqual([
      { id: 'sluice.jobs', kind: 'user', balance: 0 },
      { id: 'sluice.pool', kind: 'pool', balance: 10_000 },
      { id: 'sluice.rewards', kind: 'user', balance: 0 },
      { id: 'world', kind: 'world', balance: -10_000 },
    ]);
    expect(seen.version).toMatch(/^\d+\.\d+/);
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
});

import { execFileSync } from 'node:child_process';
import { join, resolve } from 'node:path';

const ROOT = resolve(__dirname, '..', '..');

/**
 * Builds the console (Vite) into dist/console, so the API under test serves the current
 * source. Once per jest run, in the global setup: a build empties dist/console first, so a
 * test file building it while another serves it would see a half-written console.
 */
export function buildConsole(): void {
  execFileSync(process.execPath, [join(ROOT, 'node_modules', 'vite', 'bin', 'vite.js'), 'build', '--config', join(ROOT, 'console', 'vite.config.ts')], { cwd: ROOT, stdio: 'pipe' });
}

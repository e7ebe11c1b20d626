import { DefaultLogger, Runtime, type LogLevel } from '@temporalio/worker';
import type { Logger } from '../logger';

const PINO_LEVEL: Record<LogLevel, 'trace' | 'debug' | 'info' | 'warn' | 'error'> = { TRACE: 'trace', DEBUG: 'debug', INFO: 'info', WARN: 'warn', ERROR: 'error' };

/**
 * Sends the Temporal SDK's log lines (the worker's, workflows' and activities', and
 * Core's, forwarded) through `log`, so a worker writes one stream of structured JSON
 * with the same redaction as the API. Process-wide, once, before the first worker or
 * connection.
 */
export function installTemporalLogging(log: Logger, level: LogLevel = 'INFO'): void {
  Runtime.install({
    logger: new DefaultLogger(level, (entry) => log[PINO_LEVEL[entry.level]]({ ...entry.meta, sdk: 'temporal' }, entry.message)),
    telemetryOptions: { logging: { filter: { core: level, other: level }, forward: {} } },
  });
}

/** The Temporal level matching a LOG_LEVEL ('fatal' and 'silent' keep only errors). */
export const temporalLevel = (level: string): LogLevel =>
  (({ trace: 'TRACE', debug: 'DEBUG', info: 'INFO', warn: 'WARN' }) as Record<string, LogLevel>)[level] ?? 'ERROR';

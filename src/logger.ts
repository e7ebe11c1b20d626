import pino from 'pino';

export type Logger = pino.Logger;

/**
 * Structured JSON logs. Credentials never reach a log line: the auth header and
 * anything that looks like a key or secret is redacted wherever it appears.
 */
export function createLogger(level: string, name = 'sluice'): Logger {
  return pino({
    name,
    level,
    redact: {
      paths: ['req.headers.authorization', 'headers.authorization', '*.apiKey', 'apiKey', '*.secret', 'secret', '*.password'],
      censor: '[redacted]',
    },
  });
}

import { z } from 'zod';

/**
 * Every setting Sluice reads from the environment, validated once at start-up.
 * A bad value stops the process with a message naming the variable, instead of
 * surfacing later as a confusing runtime error.
 */
const port = z.coerce.number().int().min(0).max(65535);

export const ConfigSchema = z.object({
  /** PostgreSQL. Unset: the launcher tries 127.0.0.1:5432, then an embedded server. */
  DATABASE_URL: z.string().url().optional(),
  /** Read-only role used by tail readers and dashboards (created by the migrations). */
  SLUICE_READONLY_ROLE: z.string().regex(/^[a-z_][a-z0-9_]*$/).default('sluice_readonly'),
  TEMPORAL_ADDRESS: z.string().min(1).default('127.0.0.1:7233'),
  TEMPORAL_NAMESPACE: z.string().min(1).default('default'),
  TEMPORAL_UI_PORT: port.default(8233),
  SLUICE_TASK_QUEUE: z.string().min(1).default('sluice'),
  SLUICE_API_HOST: z.string().min(1).default('127.0.0.1'),
  SLUICE_API_PORT: port.default(3000),
  /** The admin key (pool, deposits, parties). The dev default is for local use only. */
  SLUICE_ADMIN_KEY: z.string().min(16).default('sluice-dev-admin-key'),
  SLUICE_DATA_DIR: z.string().min(1).default('.data'),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  /** Largest JSON body the API accepts. */
  SLUICE_BODY_LIMIT_BYTES: z.coerce.number().int().min(1024).max(10_485_760).default(65_536),
});

export type Config = z.infer<typeof ConfigSchema>;

export function loadConfig(env: NodeJS.ProcessEnv = process.env, overrides: Partial<Config> = {}): Config {
  const parsed = ConfigSchema.safeParse(env);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => `  ${i.path.join('.')}: ${i.message}`);
    throw new Error(`invalid configuration:\n${lines.join('\n')}`);
  }
  return { ...parsed.data, ...overrides };
}

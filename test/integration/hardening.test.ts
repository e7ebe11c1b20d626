import { spawn } from 'node:child_process';
import { connect } from 'node:net';
import { join, resolve } from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { buildApp, type Api } from '../../src/api/app';
import { DEV_ADMIN_KEY } from '../../src/config';
import { createPool } from '../../src/db/pool';
import { createLogger } from '../../src/logger';
import { isConsoleBuilt } from '../../src/api/console';

/**
 * The API's production posture, on an app that needs neither its database nor
 * Temporal to answer (both connect lazily, and no route here reaches them):
 * security headers on every kind of response, the 408 a stalled client gets, and
 * the API process refusing the dev admin key beyond loopback.
 */

const ROOT = resolve(__dirname, '../..');
const ERROR_SHAPE = { error: expect.objectContaining({ code: expect.any(String), message: expect.any(String), request_id: expect.any(String) }) };

const pool = createPool('postgres://nobody@127.0.0.1:1/none', 1);
const temporal = new Client({ connection: Connection.lazy({ address: '127.0.0.1:1' }) });
const apps: Api[] = [];
async function appWith(changes: { requestTimeoutMs?: number } = {}): Promise<Api> {
  const app = await buildApp({ pool, temporal, taskQueue: 'hardening', adminKey: 'hardening-admin-key-0123456789', bodyLimitBytes: 1_048_576, logger: createLogger('silent', 'test'), ...changes });
  apps.push(app);
  return app;
}
afterAll(async () => {
  await Promise.all(apps.map((a) => a.close()));
  await pool.end();
});

describe('security headers', () => {
  const CSP = /(^|;)default-src 'self'/;

  test.each([
    ['the index', '/', 200],
    ['a public page', '/errors', 200],
    ['a refused API call (no key)', '/v1/accounts', 401],
    ['a missing console file', '/console/no-such-file.js', 404],
    ['the console', '/console/', isConsoleBuilt() ? 200 : 404],
  ])('%s carries CSP with frame-ancestors none, X-Frame-Options DENY, nosniff and no-referrer', async (_what, url, status) => {
    const app = await appWith();
    const res = await app.inject({ method: 'GET', url });
    expect(res.statusCode).toBe(status);
    const csp = String(res.headers['content-security-policy']);
    expect(csp).toMatch(CSP);
    expect(csp).toContain("frame-ancestors 'none'");
    expect(csp).toContain("script-src 'self'");
    expect(csp).not.toMatch(/script-src[^;]*'unsafe-(inline|eval)'/);
    expect(csp).toContain("connect-src 'self'");
    expect(res.headers['x-frame-options']).toBe('DENY');
    expect(res.headers['x-content-type-options']).toBe('nosniff');
    expect(res.headers['referrer-policy']).toBe('no-referrer');
  });

  test('the console is served under a CSP that allows no inline script and its built page needs none', async () => {
    if (!isConsoleBuilt()) throw new Error('the console is not built: run `npm run build:console` first');
    const app = await appWith();
    const page = await app.inject({ method: 'GET', url: '/console/' });
    const csp = String(page.headers['content-security-policy']);
    expect(csp).toMatch(/(^|;)style-src 'self'(;|$)/);
    // every script in the page is a file from this origin
    const scripts = [...page.body.matchAll(/<script\b([^>]*)>([\s\S]*?)<\/script>/g)];
    expect(scripts.length).toBeGreaterThan(0);
    for (const [, attrs, body] of scripts) {
      expect(attrs).toMatch(/src="\/console\//);
      expect(body!.trim()).toBe('');
    }
    const asset = page.body.match(/src="(\/console\/assets\/[^"]+\.js)"/)![1]!;
    const js = await app.inject({ method: 'GET', url: asset });
    expect(js.statusCode).toBe(200);
    expect(js.headers['x-content-type-options']).toBe('nosniff');
  });

  test('only the Swagger UI at /docs gets inline styles and data: images, and still no inline script', async () => {
    const app = await appWith();
    const docs = await app.inject({ method: 'GET', url: '/docs/' });
    expect(docs.statusCode).toBe(200);
    const csp = String(docs.headers['content-security-policy']);
    expect(csp).toMatch(/style-src 'self' 'unsafe-inline'/);
    expect(csp).toMatch(/img-src 'self' data:/);
    expect(csp).toMatch(/script-src 'self'(;|$)/);
    expect(csp).toContain("frame-ancestors 'none'");
    expect(docs.body).not.toMatch(/<script(?![^>]*\bsrc=)[^>]*>/);
    expect(docs.headers['x-frame-options']).toBe('DENY');
    const api = await app.inject({ method: 'GET', url: '/' });
    expect(String(api.headers['content-security-policy'])).toMatch(/(^|;)style-src 'self';/);
    expect(String(api.headers['content-security-policy'])).toMatch(/(^|;)img-src 'self';/);
  });
});

describe('request timeouts', () => {
  test('a client that sends half a request and stalls gets 408 request_timeout in the error shape, and is closed', async () => {
    const app = await appWith({ requestTimeoutMs: 1_000 });
    await app.listen({ host: '127.0.0.1', port: 0 });
    const { port } = app.server.address() as { port: number };
    const startedMs = Date.now();
    const answer = await new Promise<string>((resolvePromise, reject) => {
      const socket = connect(port, '127.0.0.1', () => {
        // headers that never end
        socket.write('GET / HTTP/1.1\r\nHost: x\r\nAccept: app');
      });
      let text = '';
      socket.setEncoding('utf8');
      socket.on('data', (chunk) => (text += chunk));
      socket.on('end', () => resolvePromise(text));
      socket.on('error', reject);
      setTimeout(() => reject(new Error(`no answer in 10 s; got ${JSON.stringify(text)}`)), 10_000).unref();
    });
    const elapsedMs = Date.now() - startedMs;
    expect(answer).toMatch(/^HTTP\/1\.1 408 Request Timeout\r\n/);
    expect(answer).toMatch(/\r\nConnection: close\r\n/i);
    const body = JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4));
    expect(body).toEqual(ERROR_SHAPE);
    expect(body.error.code).toBe('request_timeout');
    // the deadline, not Node's default 30 s check interval
    expect(elapsedMs).toBeGreaterThanOrEqual(900);
    expect(elapsedMs).toBeLessThan(5_000);
  });

  test('a request that arrives in time is answered normally by the same server', async () => {
    const app = await appWith({ requestTimeoutMs: 1_000 });
    await app.listen({ host: '127.0.0.1', port: 0 });
    const { port } = app.server.address() as { port: number };
    const res = await fetch(`http://127.0.0.1:${port}/`);
    expect(res.status).toBe(200);
    expect(res.headers.get('x-frame-options')).toBe('DENY');
  });
});

describe('the dev admin key beyond loopback', () => {
  test('the API process refuses to start on 0.0.0.0 with the dev key: exit 1, the message names SLUICE_ADMIN_KEY and the fix', async () => {
    const env: NodeJS.ProcessEnv = { ...process.env, SLUICE_API_HOST: '0.0.0.0', SLUICE_API_PORT: '0', SLUICE_DEV_MODE: 'false', LOG_LEVEL: 'silent' };
    delete env.SLUICE_ADMIN_KEY;
    const child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'src', 'cli.ts'), 'api'], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    const code = await new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
    clearTimeout(timer);
    expect(code).toBe(1);
    expect(stderr).toContain('sluice: SLUICE_ADMIN_KEY is the published development key and the API listens on 0.0.0.0');
    expect(stderr).toContain('set SLUICE_ADMIN_KEY to a secret of your own');
    expect(stderr).not.toContain(DEV_ADMIN_KEY);
  }, 40_000);
});

import { adminKeyRefusal, DEV_ADMIN_KEY, isLoopbackHost, loadConfig, REQUEST_TIMEOUT_MS_DEFAULT } from '../../src/config';
import { httpTimeouts } from '../../src/api/app';

/** The production-posture rules that need no server: the dev admin key's refusal and the HTTP clocks. */

describe('the dev admin key outside development', () => {
  const OWN_KEY = 'an-operator-chosen-key-0123456789';

  test.each(['0.0.0.0', '::', '10.0.0.5', 'api.example.com'])('is refused on %s, with a message naming SLUICE_ADMIN_KEY and the fixes', (apiHost) => {
    const refusal = adminKeyRefusal({ adminKey: DEV_ADMIN_KEY, apiHost, devMode: false });
    expect(refusal).toMatch(/^SLUICE_ADMIN_KEY is the published development key/);
    expect(refusal).toContain(apiHost);
    expect(refusal).toMatch(/openssl rand/);
    expect(refusal).toMatch(/SLUICE_API_HOST to 127\.0\.0\.1/);
    expect(refusal).toMatch(/SLUICE_DEV_MODE=true/);
  });

  test.each(['127.0.0.1', '127.0.1.1', '::1', '[::1]', 'localhost'])('is allowed on loopback %s', (apiHost) => {
    expect(isLoopbackHost(apiHost)).toBe(true);
    expect(adminKeyRefusal({ adminKey: DEV_ADMIN_KEY, apiHost, devMode: false })).toBeUndefined();
  });

  test('is allowed anywhere in an explicit dev mode (the npm start launcher)', () => {
    expect(adminKeyRefusal({ adminKey: DEV_ADMIN_KEY, apiHost: '0.0.0.0', devMode: true })).toBeUndefined();
  });

  test('an operator-chosen key is allowed anywhere', () => {
    expect(adminKeyRefusal({ adminKey: OWN_KEY, apiHost: '0.0.0.0', devMode: false })).toBeUndefined();
  });

  test('a host that only looks like loopback is not loopback', () => {
    for (const host of ['127.0.0.1.example.com', '0.0.0.0', '::ffff:10.0.0.1', 'localhost.example.com']) expect(isLoopbackHost(host)).toBe(false);
  });

  test('the config defaults to the dev key, bound to loopback, outside dev mode: a fresh checkout starts', () => {
    const config = loadConfig({});
    expect(config.SLUICE_ADMIN_KEY).toBe(DEV_ADMIN_KEY);
    expect(config.SLUICE_DEV_MODE).toBe(false);
    expect(adminKeyRefusal({ adminKey: config.SLUICE_ADMIN_KEY, apiHost: config.SLUICE_API_HOST, devMode: config.SLUICE_DEV_MODE })).toBeUndefined();
    expect(loadConfig({ SLUICE_DEV_MODE: 'true' }).SLUICE_DEV_MODE).toBe(true);
    expect(() => loadConfig({ SLUICE_DEV_MODE: 'yes' })).toThrow(/SLUICE_DEV_MODE/);
  });
});

describe('request timeouts', () => {
  test('SLUICE_REQUEST_TIMEOUT_MS defaults to 30 s and is validated', () => {
    expect(loadConfig({}).SLUICE_REQUEST_TIMEOUT_MS).toBe(REQUEST_TIMEOUT_MS_DEFAULT);
    expect(REQUEST_TIMEOUT_MS_DEFAULT).toBe(30_000);
    expect(loadConfig({ SLUICE_REQUEST_TIMEOUT_MS: '5000' }).SLUICE_REQUEST_TIMEOUT_MS).toBe(5000);
    for (const bad of ['0', '999', '300001', 'soon']) expect(() => loadConfig({ SLUICE_REQUEST_TIMEOUT_MS: bad })).toThrow(/SLUICE_REQUEST_TIMEOUT_MS/);
    expect(() => loadConfig({ SLUICE_KEEP_ALIVE_TIMEOUT_MS: '10' })).toThrow(/SLUICE_KEEP_ALIVE_TIMEOUT_MS/);
  });

  test('an idle socket outlives a request that arrives in time and then waits its longest on a workflow', () => {
    const t = httpTimeouts({ requestTimeoutMs: 30_000, waitMs: 15_000 });
    expect(t.connectionTimeoutMs).toBeGreaterThan(30_000 + 15_000);
    expect(t.checkIntervalMs).toBeLessThanOrEqual(1_000);
    expect(httpTimeouts({ requestTimeoutMs: 500 }).checkIntervalMs).toBe(500);
  });
});

import { loadConfig, metricsTokenRefusal } from '../../src/config';

/** /metrics without a token: open only where the dev admin key would be (loopback, or a development stack); otherwise the API refuses to start. */

describe('the API without a metrics token', () => {
  test.each(['0.0.0.0', '::', '10.0.0.5', 'api.example.com'])('refuses to start on %s, with a message naming SLUICE_METRICS_TOKEN and the fixes', (apiHost) => {
    const refusal = metricsTokenRefusal({ metricsToken: undefined, apiHost, devMode: false });
    expect(refusal).toMatch(/^SLUICE_METRICS_TOKEN is not set/);
    expect(refusal).toContain(apiHost);
    expect(refusal).toMatch(/openssl rand/);
    expect(refusal).toMatch(/credentials_file/);
    expect(refusal).toMatch(/SLUICE_API_HOST to 127\.0\.0\.1/);
    expect(refusal).toMatch(/SLUICE_DEV_MODE=true/);
  });

  test.each(['127.0.0.1', '::1', 'localhost'])('starts on loopback %s, /metrics open to this machine only', (apiHost) => {
    expect(metricsTokenRefusal({ metricsToken: undefined, apiHost, devMode: false })).toBeUndefined();
  });

  test('starts anywhere in an explicit dev mode (the npm start launcher)', () => {
    expect(metricsTokenRefusal({ metricsToken: undefined, apiHost: '0.0.0.0', devMode: true })).toBeUndefined();
  });

  test('with a token it starts anywhere', () => {
    expect(metricsTokenRefusal({ metricsToken: 'an-operator-chosen-token-0123', apiHost: '0.0.0.0', devMode: false })).toBeUndefined();
  });

  test('the setting: absent by default (a fresh checkout on loopback starts), at least 16 characters when set', () => {
    const config = loadConfig({});
    expect(config.SLUICE_METRICS_TOKEN).toBeUndefined();
    expect(metricsTokenRefusal({ metricsToken: config.SLUICE_METRICS_TOKEN, apiHost: config.SLUICE_API_HOST, devMode: config.SLUICE_DEV_MODE })).toBeUndefined();
    expect(loadConfig({ SLUICE_METRICS_TOKEN: 'an-operator-chosen-token-0123' }).SLUICE_METRICS_TOKEN).toBe('an-operator-chosen-token-0123');
    expect(() => loadConfig({ SLUICE_METRICS_TOKEN: 'short' })).toThrow(/SLUICE_METRICS_TOKEN/);
  });
});

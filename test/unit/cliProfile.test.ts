import { mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { apiBase, apiKey, units } from '../../src/cli/client';
import { profilePath, readProfile, removeProfile, saveProfile } from '../../src/cli/profile';
import { loadConfig } from '../../src/config';

/**
 * The CLI's saved login and where the API and key come from: flags, then the
 * environment, then the profile, then the local default.
 */
const saved = { ...process.env };
const config = loadConfig({});
beforeEach(() => {
  process.env.XDG_CONFIG_HOME = mkdtempSync(join(tmpdir(), 'sluice-profile-'));
  for (const name of ['SLUICE_API_URL', 'SLUICE_API_KEY', 'SLUICE_API_HOST', 'SLUICE_API_PORT']) delete process.env[name];
});
afterAll(() => {
  process.env = saved;
});

test('the profile is saved under XDG_CONFIG_HOME, readable by its owner only, and removed by logout', () => {
  expect(readProfile()).toBeUndefined();
  const path = saveProfile({ api: 'http://sluice.example:3000/', key: 'sk_a_1' });
  expect(path).toBe(join(process.env.XDG_CONFIG_HOME!, 'sluice', 'config.json'));
  expect(statSync(path).mode & 0o777).toBe(0o600);
  expect(JSON.parse(readFileSync(path, 'utf8'))).toEqual({ api: 'http://sluice.example:3000', key: 'sk_a_1' });
  expect(readProfile()).toEqual({ api: 'http://sluice.example:3000', key: 'sk_a_1' });
  expect(removeProfile()).toBe(true);
  expect(removeProfile()).toBe(false);
  expect(readProfile()).toBeUndefined();
});

test('a file that is not a profile is an error naming it and the way out', () => {
  saveProfile({ api: 'http://a', key: 'k' });
  writeFileSync(profilePath(), '{"api": 1}');
  expect(() => readProfile()).toThrow(/config\.json is not a Sluice profile.*sluice logout/);
});

test('precedence: --api/--key, then the environment, then the profile, then the local API', () => {
  expect(apiBase({}, config)).toBe('http://127.0.0.1:3000');
  expect(() => apiKey({}, 'http://127.0.0.1:3000')).toThrow(/no API key for http:\/\/127\.0\.0\.1:3000: pass --key, set SLUICE_API_KEY, or log in/);

  saveProfile({ api: 'http://saved:3000', key: 'saved-key' });
  expect(apiBase({}, config)).toBe('http://saved:3000');
  expect(apiKey({}, 'http://saved:3000')).toBe('saved-key');

  process.env.SLUICE_API_URL = 'http://env:3000';
  process.env.SLUICE_API_KEY = 'env-key';
  expect(apiBase({}, config)).toBe('http://env:3000');
  expect(apiKey({}, 'http://env:3000')).toBe('env-key');

  expect(apiBase({ api: 'http://flag:3000' }, config)).toBe('http://flag:3000');
  expect(apiKey({ key: 'flag-key' }, 'http://flag:3000')).toBe('flag-key');
});

test("the saved key goes only to the saved API, never to another one", () => {
  saveProfile({ api: 'http://saved:3000', key: 'saved-key' });
  expect(() => apiKey({}, 'http://other:3000')).toThrow('no API key for http://other:3000 (the saved login is for http://saved:3000)');
});

test('amounts are positive whole numbers of minor units', () => {
  expect(units('500')).toBe(500);
  for (const bad of ['12.5', '1e3', '-5', '0', '', ' 5', '0x10', '9007199254740993']) {
    expect(() => units(bad)).toThrow(`amounts are positive whole numbers of minor units (500 for 5.00), not "${bad}"`);
  }
});

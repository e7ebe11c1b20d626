import { chmodSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';

/**
 * The saved login of `sluice login`: which API, and the key to use with it, in the
 * user's config directory ($XDG_CONFIG_HOME/sluice/config.json, else
 * ~/.config/sluice/config.json). The file holds a secret, so only its owner may
 * read it (0600, in a 0700 directory).
 */
export interface Profile {
  api: string;
  key: string;
}

export const profilePath = () => join(process.env.XDG_CONFIG_HOME || join(homedir(), '.config'), 'sluice', 'config.json');

/** The same API however it was typed: `http://h:3000/` and `http://h:3000` are one. */
export const normalizeApi = (url: string) => url.replace(/\/+$/, '');

/** The saved profile, or undefined when there is none; a file that is not one is an error naming it. */
export function readProfile(): Profile | undefined {
  const path = profilePath();
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    if ((error as { code?: string }).code === 'ENOENT') return undefined;
    throw error;
  }
  try {
    const p = JSON.parse(text) as Partial<Profile>;
    if (typeof p.api === 'string' && typeof p.key === 'string') return { api: normalizeApi(p.api), key: p.key };
  } catch {
    // reported below, with the way out
  }
  throw new Error(`${path} is not a Sluice profile ({"api", "key"}): log in again with \`sluice login\`, or remove it with \`sluice logout\``);
}

export function saveProfile(profile: Profile): string {
  const path = profilePath();
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  writeFileSync(path, `${JSON.stringify({ api: normalizeApi(profile.api), key: profile.key }, null, 2)}\n`, { mode: 0o600 });
  // the mode above applies only when the file is created: an older file keeps its own otherwise
  chmodSync(path, 0o600);
  return path;
}

/** Removes the saved profile; false when there was none. */
export function removeProfile(): boolean {
  try {
    rmSync(profilePath());
    return true;
  } catch (error) {
    if ((error as { code?: string }).code === 'ENOENT') return false;
    throw error;
  }
}

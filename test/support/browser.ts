import { accessSync, constants, copyFileSync, mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';

const ROOT = resolve(__dirname, '..', '..');

/** Debian's Chromium (scripts/install-chromium.sh puts it there), or CHROMIUM_PATH. */
export const CHROMIUM_PATH = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

/**
 * Headless Chromium through playwright-core, which downloads no browser. A missing
 * browser fails the test, never skips it: CI installs it, so its absence is a broken setup.
 */
export async function launchChromium(path = CHROMIUM_PATH): Promise<Browser> {
  try {
    accessSync(path, constants.X_OK);
  } catch {
    throw new Error(`no Chromium at ${path}: run \`npm run install:chromium\` (scripts/install-chromium.sh, apt-get install chromium) or set CHROMIUM_PATH`);
  }
  // --no-sandbox: CI and the dev machines run as root, where Chromium's sandbox refuses to start
  return chromium.launch({ executablePath: path, headless: true, args: ['--no-sandbox', '--disable-dev-shm-usage'] });
}

const ARTIFACTS = join(ROOT, 'test-artifacts', 'console');
const DOCS = join(ROOT, 'docs', 'console');

/** A full-page screenshot in test-artifacts/console/; with UPDATE_SCREENSHOTS=1 also into docs/console/ for the README. */
export async function screenshot(page: Page, name: string): Promise<void> {
  mkdirSync(ARTIFACTS, { recursive: true });
  const file = join(ARTIFACTS, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  if (process.env.UPDATE_SCREENSHOTS === '1') {
    mkdirSync(DOCS, { recursive: true });
    copyFileSync(file, join(DOCS, `${name}.png`));
  }
}

// Shared launcher: playwright-core driving the system Chromium (never a downloaded browser).
import { chromium } from 'playwright-core';

/** The Chromium binary: $AUTHKEEPER_CHROMIUM, else /usr/bin/chromium. */
export const executablePath = process.env.AUTHKEEPER_CHROMIUM || '/usr/bin/chromium';

/** Flags for a headless Chromium run as root in a closed network (see docs/notes). */
export const args = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/** Milliseconds any single navigation or wait may take. */
export const TIMEOUT_MS = Number(process.env.AUTHKEEPER_PLAYWRIGHT_TIMEOUT_MS || 30000);

/** Launches a headless Chromium (Playwright gives it a fresh temporary profile). */
export async function launch() {
  return chromium.launch({ executablePath, args, headless: true, timeout: TIMEOUT_MS });
}

/** Prints `usage` and exits 2 unless there are exactly `count` arguments; returns them. */
export function argv(count, usage) {
  const given = process.argv.slice(2);
  if (given.length !== count) {
    console.error(`usage: ${usage}`);
    process.exit(2);
  }
  return given;
}

/** `base` without a trailing slash. */
export function trimBase(base) {
  return base.replace(/\/+$/, '');
}

// What the scenarios share: the stack per file, a browser whose profile
// blocks third-party cookies, waiting on page state, screenshots.
import { mkdtempSync, mkdirSync, writeFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium, expect } from '@playwright/test';

import { chromiumPath } from '../playwright.config.mjs';

/** Saves a screenshot of the scenario in its output folder. */
export async function screenshot(page, testInfo, name) {
  await page.screenshot({ path: testInfo.outputPath(`${name}.png`), fullPage: true });
}

/**
 * A Chromium with a fresh, ordinary (not incognito) profile whose
 * preferences block third-party cookies (as "Block third-party cookies" in
 * the settings does), or allow them. (Playwright's own contexts are
 * incognito-like, where Chromium blocks them already.)
 */
export async function profileBrowser({ blockThirdPartyCookies }) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'embedgate-profile-'));
  mkdirSync(path.join(dir, 'Default'));
  const profile = blockThirdPartyCookies
    ? { block_third_party_cookies: true, cookie_controls_mode: 1 }
    : { block_third_party_cookies: false, cookie_controls_mode: 0 };
  writeFileSync(path.join(dir, 'Default', 'Preferences'), JSON.stringify({ profile }));
  const context = await chromium.launchPersistentContext(dir, { executablePath: chromiumPath, headless: true });
  return {
    context,
    async close() {
      await context.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** The embedded app's frame in `page` (by the iframe's selector). */
export function appFrame(page, selector = 'iframe') {
  return page.frameLocator(selector);
}

/** Waits until the frame shows the app for `user`. */
export async function expectApp(frame, user) {
  await expect(frame.locator('#user')).toHaveText(user);
}

/** The messages a no-helper portal page received. */
export async function messages(page) {
  return page.evaluate(() => window.__messages.map((m) => ({ origin: m.origin, type: m.data && m.data.type })));
}

/** The states a helper mount reported, in order. */
export async function states(page, appId) {
  return page.evaluate((id) => window.__states[id].map((s) => s.state), appId);
}

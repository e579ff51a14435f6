// The embed flow in Chromium, the portal on one site and the gateway on
// another: the PAT exchange, the app with the user's identity, navigation,
// fetch and a WebSocket on the session; third-party cookies blocked; a page
// the app's frame_ancestors do not list; revocation seen by the host page.
import { test, expect } from '@playwright/test';

import { startStack, APP_A } from '../support/stack.mjs';
import { appFrame, expectApp, messages, profileBrowser, screenshot } from './helpers.mjs';

let stack;
test.beforeAll(async () => {
  stack = await startStack();
});
test.afterAll(async () => {
  await stack?.stop();
});

/** Opens the no-helper portal page for `app` and checks the whole app. */
async function embedsTheApp(page, testInfo, name) {
  await page.goto(`${stack.portal}/basic.html?app=${APP_A}&user=alice@example.com`);
  const frame = appFrame(page, '#app');
  await expectApp(frame, 'alice@example.com');
  await expect(frame.locator('#app')).toHaveText(APP_A);
  // The exchange's redirect left no PAT in the frame's address.
  const src = page.frames().find((f) => f.url().includes('/embed-apps/'))?.url() ?? '';
  expect(src).toBe(`${stack.gateway}/embed-apps/${APP_A}/`);
  expect(src).not.toContain('personal-access-token');
  // fetch and a WebSocket from the page work on the session.
  await expect(frame.locator('#whoami')).toHaveText('alice@example.com');
  await expect(frame.locator('#ws')).toHaveText('echo for alice@example.com: ping');
  await screenshot(page, testInfo, name);
  // Navigation inside the frame stays on the session.
  await frame.locator('#next').click();
  await expect(frame.locator('#second')).toHaveText('the second page');
  await expectApp(frame, 'alice@example.com');
  await screenshot(page, testInfo, `${name}-page-2`);
}

test('the portal backend mints, the frame shows the app for the user, with no PAT in its URL', async ({ page }, testInfo) => {
  await embedsTheApp(page, testInfo, 'embedded');
});

test('with third-party cookies blocked it all still works: the session cookie is Partitioned', async ({}, testInfo) => {
  const browser = await profileBrowser({ blockThirdPartyCookies: true });
  try {
    // The control: in this browser an ordinary cross-site cookie
    // (SameSite=None, not Partitioned) is refused.
    const control = await browser.context.newPage();
    await control.goto(`${stack.portal}/control.html`);
    await expect(appFrame(control, '#set').locator('#control')).toHaveText('set');
    await expect(appFrame(control, '#check').locator('#control')).toHaveText('no cookie');
    await screenshot(control, testInfo, 'control-cookie-refused');

    const page = await browser.context.newPage();
    await embedsTheApp(page, testInfo, 'third-party-cookies-blocked');
  } finally {
    await browser.close();
  }
});

test('the control cookie is sent where third-party cookies are allowed', async ({}, testInfo) => {
  // Without this, "no cookie" above could mean a broken control.
  const browser = await profileBrowser({ blockThirdPartyCookies: false });
  try {
    const page = await browser.context.newPage();
    await page.goto(`${stack.portal}/control.html`);
    await expect(appFrame(page, '#check').locator('#control')).toHaveText('cookie sent');
    await screenshot(page, testInfo, 'control-cookie-sent');
  } finally {
    await browser.close();
  }
});

test('a page on an origin not in frame_ancestors cannot frame the app', async ({ page }, testInfo) => {
  const minted = await stack.mint('alice@example.com', APP_A);
  expect(minted.status).toBe(201);
  const refused = [];
  page.on('console', (m) => refused.push(m.text()));
  await page.goto(`${stack.appOrigin}/evil.html?src=${encodeURIComponent(minted.json.redirectUrl)}`);
  // The exchange answered (the frame got a response) and Chromium refused
  // to show it: the frame never shows the app.
  await page.waitForTimeout(1500);
  const app = page.frames().find((f) => f !== page.mainFrame());
  const shown = app ? await app.locator('#user').count().catch(() => 0) : 0;
  expect(shown).toBe(0);
  expect(refused.join('\n')).toContain('frame-ancestors');
  await screenshot(page, testInfo, 'framing-refused');
});

test('a revoked session tells the host page, in embedgate\'s words and ToolJet\'s', async ({ page }, testInfo) => {
  await page.goto(`${stack.portal}/basic.html?app=${APP_A}&user=bob@example.com`);
  const frame = appFrame(page, '#app');
  await expectApp(frame, 'bob@example.com');
  const revoked = await stack.revoke('bob@example.com', APP_A);
  expect(revoked.json.revokedSessions).toBeGreaterThanOrEqual(1);
  // The next navigation in the frame meets the ended session.
  await frame.locator('#next').click();
  await expect.poll(async () => (await messages(page)).map((m) => m.type)).toEqual([
    'embedgate:session-expired',
    'TJ_EMBED_APP_LOGOUT',
  ]);
  for (const m of await messages(page)) expect(m.origin).toBe(stack.gateway);
  await screenshot(page, testInfo, 'revoked');
});

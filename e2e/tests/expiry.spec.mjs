// Idle expiry, for real: the portal mints with sessionExpiry = 1 (a minute,
// the least there is), and everything that needs an expired session shares
// the one wait: a page without the helper hears the gateway's messages, and
// two tabs of a helper page both heal, neither breaking the other.
import { test, expect } from '@playwright/test';

import { startStack, APP_A, APP_B } from '../support/stack.mjs';
import { appFrame, expectApp, messages, screenshot, states } from './helpers.mjs';

let stack;
test.beforeAll(async () => {
  stack = await startStack();
  stack.backend.sessionExpiry = 1;
});
test.afterAll(async () => {
  await stack?.stop();
});

test('idle sessions end: the host page hears it, and two helper tabs both heal', async ({ context }, testInfo) => {
  test.setTimeout(180_000);
  // Alice's app B without the helper; Bob's app A with it, in two tabs of
  // one browser (one cookie jar, one partition).
  const plain = await context.newPage();
  await plain.goto(`${stack.portal}/basic.html?app=${APP_B}&user=alice@example.com`);
  const tabs = [await context.newPage(), await context.newPage()];
  for (const tab of tabs) await tab.goto(`${stack.portal}/helper.html?apps=${APP_A}&user=bob@example.com`);
  await expectApp(appFrame(plain, '#app'), 'alice@example.com');
  for (const tab of tabs) {
    await expectApp(appFrame(tab, `#box-${APP_A} iframe`), 'bob@example.com');
    await expect.poll(() => states(tab, APP_A)).toEqual(['loading', 'ready']);
  }
  const mintsBefore = stack.backend.mints;

  // A minute and a little more with no request on any of the sessions.
  await plain.waitForTimeout(65_000);

  // Without the helper: the next navigation meets the gateway's page.
  await appFrame(plain, '#app').locator('#next').click();
  await expect.poll(async () => (await messages(plain)).map((m) => m.type)).toEqual([
    'embedgate:session-expired',
    'TJ_EMBED_APP_LOGOUT',
  ]);
  await screenshot(plain, testInfo, 'idle-expiry-no-helper');

  // Both tabs move on at once: each meets the end (or the other's fresh
  // session), and each ends up on the app, on a live session.
  await Promise.all(tabs.map((tab) => appFrame(tab, `#box-${APP_A} iframe`).locator('#next').click()));
  for (const [i, tab] of tabs.entries()) {
    const frame = appFrame(tab, `#box-${APP_A} iframe`);
    await expect.poll(() => states(tab, APP_A)).toEqual(
      expect.arrayContaining(['loading', 'ready']),
    );
    await expect.poll(async () => (await states(tab, APP_A)).at(-1)).toBe('ready');
    await expectApp(frame, 'bob@example.com');
    await screenshot(tab, testInfo, `idle-expiry-tab-${i + 1}-healed`);
  }
  // At least one tab renewed through the portal's backend, and no more
  // than one PAT per tab.
  const renewed = stack.backend.mints - mintsBefore;
  expect(renewed).toBeGreaterThanOrEqual(1);
  expect(renewed).toBeLessThanOrEqual(2);
  // Neither broke the other: both go on to page 2 and back on the session
  // the jar holds now.
  for (const tab of tabs) {
    const frame = appFrame(tab, `#box-${APP_A} iframe`);
    const link = frame.locator('#next');
    if (await link.count()) await link.click();
    await expect(frame.locator('#second')).toHaveText('the second page');
    await expectApp(frame, 'bob@example.com');
  }
});

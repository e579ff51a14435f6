// The host-page helper (GET /embedgate.js, EmbedGate.mount) in Chromium:
// it heals a revoked frame by itself, backs off from a failing backend and
// says "failed", ignores messages that are not its frame's gateway page,
// and keeps two apps on one page apart.
import { test, expect } from '@playwright/test';

import { startStack, APP_A, APP_B } from '../support/stack.mjs';
import { appFrame, expectApp, screenshot, states } from './helpers.mjs';

let stack;
test.beforeAll(async () => {
  stack = await startStack();
});
test.afterAll(async () => {
  await stack?.stop();
});
test.beforeEach(() => {
  stack.backend.failing = false;
});

const frameOf = (page, appId) => appFrame(page, `#box-${appId} iframe`);

test('the gateway serves the helper as cacheable JavaScript, script and module', async ({ request }) => {
  for (const [path, marker] of [['/embedgate.js', 'window.EmbedGate'], ['/embedgate.mjs', 'export function mount(']]) {
    const r = await request.get(`${stack.gateway}${path}`);
    expect(r.status()).toBe(200);
    expect(r.headers()['content-type']).toBe('text/javascript; charset=utf-8');
    expect(r.headers()['cache-control']).toContain('max-age=');
    expect(r.headers()['etag']).toBeTruthy();
    expect(await r.text()).toContain(marker);
  }
});

test('after a revocation the helper mints again and shows the app, with no user action', async ({ page }, testInfo) => {
  await page.goto(`${stack.portal}/helper.html?apps=${APP_A}&user=alice@example.com`);
  const frame = frameOf(page, APP_A);
  await expectApp(frame, 'alice@example.com');
  await expect.poll(() => states(page, APP_A)).toEqual(['loading', 'ready']);
  const mintsBefore = stack.backend.mints;
  await stack.revoke('alice@example.com', APP_A);
  // The user moves on in the app: the gateway's page tells the helper.
  await frame.locator('#next').click();
  await expect.poll(() => states(page, APP_A)).toEqual(['loading', 'ready', 'renewing', 'ready']);
  await expectApp(frame, 'alice@example.com');
  await expect(frame.locator('#ws')).toHaveText('echo for alice@example.com: ping');
  // One new PAT, not one per message: the page posts two.
  expect(stack.backend.mints).toBe(mintsBefore + 1);
  await screenshot(page, testInfo, 'healed-after-revocation');
});

test('with a failing backend the helper backs off and reports failed, without a request storm', async ({ page }, testInfo) => {
  stack.backend.failing = true;
  const mintsBefore = stack.backend.mints;
  // ?fast: retries start at 250 ms, double, 4 tries in all.
  await page.goto(`${stack.portal}/helper.html?apps=${APP_A}&fast`);
  await expect.poll(() => states(page, APP_A), { timeout: 20_000 }).toContain('failed');
  const recorded = await page.evaluate((id) => window.__states[id], APP_A);
  expect(recorded.map((s) => s.state)).toEqual(['loading', 'renewing', 'renewing', 'renewing', 'renewing', 'renewing', 'renewing', 'failed']);
  // Announced delays double: 250, 500, 1000 ms (capped at 1000).
  expect(recorded.filter((s) => s.retryInMs).map((s) => s.retryInMs)).toEqual([250, 500, 1000]);
  // And were waited: the tries are spread over at least 1.75 s.
  const tries = recorded.filter((s, i) => s.state === 'loading' || (s.state === 'renewing' && !s.retryInMs));
  expect(tries.length).toBe(4);
  expect(tries[3].at - tries[0].at).toBeGreaterThanOrEqual(1700);
  expect(stack.backend.mints - mintsBefore).toBe(4);
  // Nothing more comes once it failed.
  await page.waitForTimeout(1500);
  expect(stack.backend.mints - mintsBefore).toBe(4);
  await screenshot(page, testInfo, 'backend-failing');
  // renew() starts over once the backend is back.
  stack.backend.failing = false;
  await page.evaluate((id) => window.__handles[id].renew(), APP_A);
  await expectApp(frameOf(page, APP_A), 'alice@example.com');
});

test('a forged session-expired from another frame or origin does not make it renew', async ({ page }, testInfo) => {
  await page.goto(`${stack.portal}/forge.html?app=${APP_A}`);
  const frame = frameOf(page, APP_A);
  await expectApp(frame, 'alice@example.com');
  const mintsBefore = stack.backend.mints;
  // A sibling frame of another origin posts the gateway's messages, five
  // times a second.
  await expect(appFrame(page, '#forger').locator('#forger')).toHaveText('forging');
  await page.waitForTimeout(1500);
  expect(await states(page, APP_A)).toEqual(['loading', 'ready']);
  expect(stack.backend.mints).toBe(mintsBefore);
  // The app's own frame, navigated to a page of another origin, posts them
  // too: the right window, the wrong origin.
  await frame.locator('#away').click();
  await expect(frame.locator('#forger')).toHaveText('forging');
  await page.waitForTimeout(1500);
  expect(await states(page, APP_A)).toEqual(['loading', 'ready']);
  expect(stack.backend.mints).toBe(mintsBefore);
  await screenshot(page, testInfo, 'forgery-ignored');
  // destroy() takes the frame away, and nothing reaches the page after.
  await page.evaluate((id) => window.__handles[id].destroy(), APP_A);
  await expect(page.locator(`#box-${APP_A} iframe`)).toHaveCount(0);
  await page.evaluate((id) => window.__handles[id].renew(), APP_A);
  await page.waitForTimeout(500);
  expect(await states(page, APP_A)).toEqual(['loading', 'ready']);
  expect(stack.backend.mints).toBe(mintsBefore);
});

test('two apps side by side keep their own sessions; revoking one leaves the other working', async ({ page }, testInfo) => {
  await page.goto(`${stack.portal}/helper.html?apps=${APP_A},${APP_B}&user=bob@example.com`);
  const a = frameOf(page, APP_A);
  const b = frameOf(page, APP_B);
  await expectApp(a, 'bob@example.com');
  await expectApp(b, 'bob@example.com');
  await expect(a.locator('#app')).toHaveText(APP_A);
  await expect(b.locator('#app')).toHaveText(APP_B);
  await screenshot(page, testInfo, 'two-apps');
  const revoked = await stack.revoke('bob@example.com', APP_B);
  expect(revoked.json.revokedSessions).toBe(1);
  // A goes on, on its own session, untouched.
  await a.locator('#next').click();
  await expect(a.locator('#second')).toHaveText('the second page');
  expect(await states(page, APP_A)).toEqual(['loading', 'ready']);
  // B heals.
  await b.locator('#next').click();
  await expect.poll(() => states(page, APP_B)).toEqual(['loading', 'ready', 'renewing', 'ready']);
  await expectApp(b, 'bob@example.com');
  await screenshot(page, testInfo, 'two-apps-one-revoked');
});

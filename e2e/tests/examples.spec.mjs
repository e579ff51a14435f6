// The examples, built and run as their READMEs say: the React portal page
// (examples/react, built with Vite, on the helper) served by the Node/Express
// backend (examples/node-express), which mints with the API token it keeps.
import { spawn, execFileSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test, expect } from '@playwright/test';

import { freePort, startStack, APP_A } from '../support/stack.mjs';
import { appFrame, expectApp, screenshot } from './helpers.mjs';

const examples = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../examples');
const npm = (dir, args, env = {}) =>
  execFileSync('npm', args, { cwd: path.join(examples, dir), env: { ...process.env, ...env }, stdio: 'pipe' });

let stack;
let backend;
let portal;
test.beforeAll(async () => {
  test.setTimeout(300_000);
  const port = await freePort();
  portal = `http://127.0.0.1:${port}`;
  stack = await startStack({ frameAncestors: [portal] });
  // examples/react/README.md: install, build with the app's id.
  npm('react', ['ci', '--no-audit', '--no-fund']);
  npm('react', ['run', 'build'], { VITE_EMBEDGATE_APP_ID: APP_A });
  // examples/node-express/README.md: install, start with the gateway's URL
  // and the API token, serving the React build.
  npm('node-express', ['ci', '--no-audit', '--no-fund']);
  backend = spawn('node', ['server.js'], {
    cwd: path.join(examples, 'node-express'),
    env: {
      ...process.env,
      EMBEDGATE_URL: stack.gateway,
      EMBEDGATE_API_TOKEN: stack.apiToken,
      PORT: String(port),
      STATIC_DIR: path.join(examples, 'react', 'dist'),
      PORTAL_USER_EMAIL: 'alice@example.com',
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  await new Promise((resolve, reject) => {
    backend.stdout.on('data', (d) => String(d).includes('listening') && resolve());
    backend.on('exit', (code) => reject(new Error(`the backend exited (${code})`)));
  });
});
test.afterAll(async () => {
  backend?.kill();
  await stack?.stop();
});

test('the React example on the Node/Express backend shows the app embedded, and heals', async ({ page }, testInfo) => {
  await page.goto(portal);
  await expect(page.locator('h1')).toHaveText('My portal');
  const frame = appFrame(page, 'iframe[title="Embedded app"]');
  await expectApp(frame, 'alice@example.com');
  await expect(frame.locator('#whoami')).toHaveText('alice@example.com');
  await expect(page.locator('.embed-state')).toHaveAttribute('data-state', 'ready');
  await screenshot(page, testInfo, 'react-example');
  // Revoked, it renews through the backend by itself.
  await stack.revoke('alice@example.com', APP_A);
  await frame.locator('#next').click();
  // Back on the app's first page (page 2 has no #whoami): a new session.
  await expect(frame.locator('#whoami')).toHaveText('alice@example.com');
  await expect(page.locator('.embed-state')).toHaveAttribute('data-state', 'ready');
  await screenshot(page, testInfo, 'react-example-healed');
});

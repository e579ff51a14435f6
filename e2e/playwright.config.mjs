// The suite drives Debian's Chromium (CHROMIUM, default /usr/bin/chromium):
// Playwright's own browser downloads cannot work here, and are never made.
import { defineConfig } from '@playwright/test';

export const chromiumPath = process.env.CHROMIUM || '/usr/bin/chromium';

export default defineConfig({
  testDir: './tests',
  outputDir: './test-results',
  // Two cores: one browser at a time, the gateway and the servers beside it.
  workers: 1,
  fullyParallel: false,
  timeout: 150_000,
  expect: { timeout: 15_000 },
  reporter: [['list']],
  use: {
    browserName: 'chromium',
    headless: true,
    launchOptions: { executablePath: chromiumPath },
    trace: 'off',
  },
});

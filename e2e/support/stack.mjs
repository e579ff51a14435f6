// The whole stack for one test file: the upstream app, the portal, and the
// real gateway binary (EMBEDGATE_BIN, which the Rust test that runs this
// suite sets) on a config of its own. The portal is http://127.0.0.1:<port>
// and the gateway http://localhost:<port>: two sites, so the gateway's
// frames are third-party, as they are in production.
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

import { startApp } from './app.mjs';
import { startPortal } from './portal.mjs';

export const APP_A = '8ba8bf0e-6b8f-4e07-abb9-6fd2d816fabc';
export const APP_B = '2f4c6e8a-1b3d-4f5a-9c7e-0d2b4a6c8e1f';

async function freePort() {
  const server = net.createServer();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** A free port on 127.0.0.1, for a server to be started later. */
export { freePort };

/**
 * Starts the stack; `stop()` ends all of it. `frameAncestors`: origins
 * besides the portal's that may frame the apps.
 */
export async function startStack({ frameAncestors = [] } = {}) {
  const bin = process.env.EMBEDGATE_BIN;
  if (!bin) throw new Error('EMBEDGATE_BIN must name the embedgate binary (cargo test sets it)');
  const app = await startApp();
  const gatewayPort = await freePort();
  const gateway = `http://localhost:${gatewayPort}`;
  const apiToken = randomBytes(24).toString('hex');
  const portal = await startPortal({ gateway, apiToken, appPort: app.port });
  const dir = mkdtempSync(path.join(os.tmpdir(), 'embedgate-e2e-'));
  const hash = createHash('sha256').update(apiToken).digest('hex');
  const appTable = (id) => `[[apps]]
id = "${id}"
upstream = "http://127.0.0.1:${app.port}"
allow_users = ["*"]
frame_ancestors = ${JSON.stringify([portal.url, ...frameAncestors])}
`;
  writeFileSync(path.join(dir, 'gateway.toml'), `[server]
listen = "127.0.0.1:${gatewayPort}"
public_url = "${gateway}"

[api]
token_sha256 = ["${hash}"]

[rate_limit]
pat_create_per_minute = 10000
pat_create_per_user_per_minute = 10000
bad_pat_per_minute = 10000

[[users]]
email = "alice@example.com"
groups = ["sales"]

[[users]]
email = "bob@example.com"

${appTable(APP_A)}
${appTable(APP_B)}`);
  const child = spawn(bin, ['--config', path.join(dir, 'gateway.toml')], {
    env: { ...process.env, RUST_LOG: 'info' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  child.stderr.on('data', (d) => { log += d; });
  await new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`the gateway did not start:\n${log}`)), 15000);
    child.stdout.on('data', (d) => {
      out += d;
      if (out.includes('embedgate ready')) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.on('exit', (code) => reject(new Error(`the gateway exited (${code}):\n${log}`)));
  });

  const api = async (endpoint, body) => {
    const r = await fetch(`http://127.0.0.1:${gatewayPort}/api/ext/${endpoint}`, {
      method: 'POST',
      headers: { authorization: `Basic ${apiToken}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    return { status: r.status, json: await r.json() };
  };
  return {
    gateway,
    portal: portal.url,
    appOrigin: `http://localhost:${app.port}`,
    backend: portal.backend,
    apiToken,
    log: () => log,
    mint: (email, appId, extra = {}) => api('users/personal-access-token', { email, appId, ...extra }),
    revoke: (email, appId) => api('users/sessions/revoke', appId ? { email, appId } : { email }),
    async stop() {
      child.kill('SIGTERM');
      await new Promise((resolve) => (child.exitCode !== null ? resolve() : child.on('exit', resolve)));
      await portal.close();
      await app.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

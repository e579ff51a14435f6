// The portal: a site of its own (127.0.0.1, while the gateway is
// localhost) whose backend mints PATs with the API token it keeps, and
// whose pages frame the apps — by hand, or with the gateway's helper.
import http from 'node:http';

const escape = (s) => String(s ?? '').replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

/**
 * Starts the portal on 127.0.0.1. `gateway` is the gateway's public URL
 * (for its helper and its API), `apiToken` the portal's API token, `app`
 * the upstream app's port (for the control and forgery pages).
 */
export async function startPortal({ gateway, apiToken, appPort }) {
  const backend = { mints: 0, failing: false, sessionExpiry: 60 };

  async function generatePat(req, res) {
    backend.mints += 1;
    let body = '';
    for await (const chunk of req) body += chunk;
    const { email, appId } = JSON.parse(body || '{}');
    if (backend.failing) {
      res.writeHead(503, { 'content-type': 'application/json' });
      return res.end(JSON.stringify({ error: 'the portal backend is down' }));
    }
    const minted = await fetch(`${gateway}/api/ext/users/personal-access-token`, {
      method: 'POST',
      headers: { authorization: `Basic ${apiToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({ email, appId, sessionExpiry: backend.sessionExpiry }),
    });
    const answer = await minted.json();
    res.writeHead(minted.ok ? 200 : 502, { 'content-type': 'application/json' });
    res.end(JSON.stringify(minted.ok ? { redirectUrl: answer.redirectUrl } : answer));
  }

  const shell = (title, body) => `<!doctype html><html><head><meta charset="utf-8"><title>${escape(title)}</title>
<style>body{font:15px system-ui;margin:16px}iframe{border:1px solid #99a;width:46%;height:330px;margin:4px}
.frames{display:flex;flex-wrap:wrap}</style></head><body><h2>${escape(title)}</h2>${body}</body></html>`;

  // The seed's way, no helper: ask the backend, set the frame's src, and
  // note every message the frame posts.
  const basic = (app, user) => shell('Portal (no helper)', `<div class="frames"><iframe id="app" title="app"></iframe></div>
<script>
window.__messages = [];
addEventListener('message', (e) => window.__messages.push({ origin: e.origin, data: e.data }));
fetch('/api/generate-pat', { method: 'POST', headers: { 'content-type': 'application/json' },
  body: JSON.stringify({ email: ${JSON.stringify(user)}, appId: ${JSON.stringify(app)} }) })
  .then((r) => r.json()).then((j) => { document.getElementById('app').src = j.redirectUrl; });
</script>`);

  // With the helper: one mount per app, each reporting its states.
  const withHelper = (apps, user, retry) => shell('Portal (helper)', `<div class="frames" id="frames"></div>
<script src="${gateway}/embedgate.js"></script>
<script>
window.__states = {};
window.__handles = {};
for (const appId of ${JSON.stringify(apps)}) {
  const box = document.createElement('div');
  box.id = 'box-' + appId;
  box.style.width = '48%';
  document.getElementById('frames').appendChild(box);
  window.__states[appId] = [];
  window.__handles[appId] = EmbedGate.mount(box, {
    getEmbedUrl: async () => {
      const r = await fetch('/api/generate-pat', { method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ email: ${JSON.stringify(user)}, appId }) });
      if (!r.ok) throw new Error('generate-pat answered ' + r.status);
      return (await r.json()).redirectUrl;
    },
    onStateChange: (state, detail) => window.__states[appId].push({ state, at: Date.now(), retryInMs: detail.retryInMs }),
    iframe: { title: 'app ' + appId, width: '100%', height: '320px' },
    ${retry ? `retry: ${JSON.stringify(retry)},` : ''}
  });
}
</script>`);

  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url, 'http://portal');
    const q = (k, d) => url.searchParams.get(k) ?? d;
    const html = (text) => {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      res.end(text);
    };
    try {
      switch (url.pathname) {
        case '/api/generate-pat':
          return await generatePat(req, res);
        case '/basic.html':
          return html(basic(q('app'), q('user', 'alice@example.com')));
        case '/helper.html': {
          const retry = url.searchParams.has('fast') ? { initialDelayMs: 250, maxDelayMs: 1000, maxAttempts: 4 } : null;
          return html(withHelper(q('apps').split(','), q('user', 'alice@example.com'), retry));
        }
        case '/forge.html':
          // The app with the helper, beside a frame of another origin that
          // posts the gateway's message over and over.
          return html(withHelper([q('app')], 'alice@example.com', null).replace('</body>',
            `<iframe id="forger" title="forger" src="http://localhost:${appPort}/forge.html"></iframe></body>`));
        case '/control.html':
          return html(shell('Control: an unpartitioned cookie', `<div class="frames">
<iframe id="set" title="set" src="http://localhost:${appPort}/control/set"></iframe></div>
<script>document.getElementById('set').onload = () => {
  const check = document.createElement('iframe'); check.id = 'check'; check.title = 'check';
  check.src = 'http://localhost:${appPort}/control/check'; document.querySelector('.frames').appendChild(check);
};</script>`));
        default:
          res.writeHead(404);
          return res.end();
      }
    } catch (error) {
      res.writeHead(500, { 'content-type': 'text/plain' });
      res.end(String(error));
    }
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = server.address().port;
  return {
    url: `http://127.0.0.1:${port}`,
    backend,
    close: () => new Promise((resolve) => {
      server.closeAllConnections?.();
      server.close(resolve);
    }),
  };
}

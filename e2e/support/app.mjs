// The upstream app the suite embeds: what any app behind the gateway is,
// a plain HTTP server that reads who the user is from the identity headers.
// Pages link and fetch by relative URLs, so they work under the gateway's
// /embed-apps/<appId>/ prefix. Also serves, on its own origin, the pages of
// the control case (an unpartitioned third-party cookie) and a page that
// forges the gateway's session-expired message.
import http from 'node:http';
import { WebSocketServer } from 'ws';

const escape = (s) => String(s ?? '').replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function page(req, title, body) {
  const user = req.headers['x-embed-user'] || '';
  const app = req.headers['x-embed-app'] || '';
  return `<!doctype html><html><head><meta charset="utf-8"><title>${escape(title)}</title>
<style>body{font:15px system-ui;margin:12px;background:#f4f7fb}h1{font-size:18px;color:#234}</style></head>
<body><h1>${escape(title)}</h1>
<p>user: <b id="user">${escape(user)}</b></p><p>app: <code id="app">${escape(app)}</code></p>
${body}</body></html>`;
}

const HOME = `<p><a id="next" href="page2">page 2</a> · <a id="away" href="{away}">a page elsewhere</a></p>
<p>fetch: <span id="whoami">…</span></p><p>websocket: <span id="ws">…</span></p>
<script>
fetch('api/whoami').then((r) => r.json()).then((j) => { document.getElementById('whoami').textContent = j.user; })
  .catch((e) => { document.getElementById('whoami').textContent = 'failed: ' + e; });
const url = new URL('ws', location.href);
url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
const socket = new WebSocket(url);
socket.onopen = () => socket.send('ping');
socket.onmessage = (m) => { document.getElementById('ws').textContent = m.data; };
socket.onerror = () => { document.getElementById('ws').textContent = 'failed'; };
</script>`;

/** Starts the app on 127.0.0.1 (any free port); resolves to { port, close }. */
export async function startApp() {
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://app');
    const html = (status, text, headers = {}) => {
      res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', ...headers });
      res.end(text);
    };
    if (url.pathname === '/' || url.pathname === '') {
      const away = `http://localhost:${server.address().port}/forge.html`;
      return html(200, page(req, 'Orders app', HOME.replace('{away}', away)));
    }
    if (url.pathname === '/page2') {
      return html(200, page(req, 'Orders app, page 2', '<p id="second">the second page</p>'));
    }
    if (url.pathname === '/api/whoami') {
      res.writeHead(200, { 'content-type': 'application/json' });
      return res.end(JSON.stringify({ user: req.headers['x-embed-user'] || null, app: req.headers['x-embed-app'] || null }));
    }
    // The control case, framed directly (not through the gateway): an
    // ordinary cross-site cookie, SameSite=None but not Partitioned.
    if (url.pathname === '/control/set') {
      return html(200, '<p id="control">set</p>', {
        'set-cookie': 'control=1; Path=/; SameSite=None; Secure',
      });
    }
    if (url.pathname === '/control/check') {
      const has = /(^|;\s*)control=1/.test(req.headers.cookie || '');
      return html(200, `<p id="control">${has ? 'cookie sent' : 'no cookie'}</p>`);
    }
    // A page on another origin than the gateway's that claims the session
    // ended: from a sibling frame, or loaded in the app's own frame.
    if (url.pathname === '/forge.html') {
      return html(200, `<p id="forger">forging</p><script>
const forge = () => {
  parent.postMessage({ type: 'embedgate:session-expired', appId: 'forged' }, '*');
  parent.postMessage({ type: 'TJ_EMBED_APP_LOGOUT', error: 401 }, '*');
};
forge(); setInterval(forge, 200);
</script>`);
    }
    // A page of a site the app's frame_ancestors do not list, framing it.
    if (url.pathname === '/evil.html') {
      const src = url.searchParams.get('src') || '';
      return html(200, `<h2>Not the portal</h2><iframe id="app" title="app" width="600" height="300" src="${escape(src)}"></iframe>`);
    }
    html(404, '<p>not found</p>');
  });
  const sockets = new WebSocketServer({ noServer: true });
  server.on('upgrade', (req, socket, head) => {
    if (!new URL(req.url, 'http://app').pathname.endsWith('/ws')) return socket.destroy();
    const user = req.headers['x-embed-user'] || 'nobody';
    sockets.handleUpgrade(req, socket, head, (ws) => {
      ws.on('message', (data) => ws.send(`echo for ${user}: ${data}`));
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: server.address().port,
    close: () => new Promise((resolve) => {
      for (const client of sockets.clients) client.terminate();
      server.closeAllConnections?.();
      server.close(resolve);
    }),
  };
}

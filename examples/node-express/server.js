// A portal's backend: the one route the embed needs. The browser asks it
// for an embed URL; it mints a PAT for the signed-in user with the API
// token, which never leaves the server, and answers the gateway's
// redirectUrl. Optionally serves the built React example too.
//
//   EMBEDGATE_URL=https://gateway.example.com EMBEDGATE_API_TOKEN=… node server.js
import express from 'express';
import axios from 'axios';

const GATEWAY = process.env.EMBEDGATE_URL;
const API_TOKEN = process.env.EMBEDGATE_API_TOKEN;
if (!GATEWAY || !API_TOKEN) {
  console.error('set EMBEDGATE_URL (the gateway) and EMBEDGATE_API_TOKEN (the portal\'s API token)');
  process.exit(1);
}
const PORT = Number(process.env.PORT || 3002);
const HOST = process.env.HOST || '127.0.0.1';

const app = express();
app.use(express.json());

// Who is signed in to the portal. A real portal reads its own session
// here; never take the email from the browser's request.
function signedInUser(req) {
  return process.env.PORTAL_USER_EMAIL || 'demo@example.com';
}

app.post('/api/generate-pat', async (req, res) => {
  const { appId } = req.body ?? {};
  if (typeof appId !== 'string') {
    return res.status(400).json({ error: 'appId is required' });
  }
  try {
    const response = await axios.post(
      `${GATEWAY}/api/ext/users/personal-access-token`,
      {
        email: signedInUser(req),
        appId,
        sessionExpiry: 60, // minutes of inactivity before the embedded session ends
        patExpiry: 60, // seconds the PAT may wait for its exchange
      },
      {
        headers: {
          Authorization: `Basic ${API_TOKEN}`,
          'Content-Type': 'application/json',
        },
        timeout: 10_000,
      },
    );
    res.json({ redirectUrl: response.data.redirectUrl });
  } catch (error) {
    const status = error.response?.status;
    console.error('minting a PAT failed:', status ?? error.message, error.response?.data ?? '');
    res.status(502).json({ error: 'could not get an embed URL' });
  }
});

// The React example's build, when STATIC_DIR names it.
if (process.env.STATIC_DIR) {
  app.use(express.static(process.env.STATIC_DIR));
}

app.listen(PORT, HOST, () => {
  console.log(`portal backend listening on http://${HOST}:${PORT}`);
});

import { StrictMode } from 'react';
import { createRoot } from 'react-dom/client';

import EmbeddedApp from './EmbeddedApp.jsx';

// The app to embed: VITE_EMBEDGATE_APP_ID at build time.
const appId = import.meta.env.VITE_EMBEDGATE_APP_ID;

createRoot(document.getElementById('root')).render(
  <StrictMode>
    <h1>My portal</h1>
    {appId ? <EmbeddedApp appId={appId} /> : <p>Set VITE_EMBEDGATE_APP_ID to the app's id and build again.</p>}
  </StrictMode>,
);

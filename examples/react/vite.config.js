import { defineConfig } from 'vite';
import react from '@vitejs/plugin-react';

// `npm run dev` sends /api to the portal backend (examples/node-express);
// `npm run build` writes dist/, which that backend serves (STATIC_DIR).
export default defineConfig({
  plugins: [react()],
  server: {
    proxy: { '/api': process.env.PORTAL_BACKEND || 'http://127.0.0.1:3002' },
  },
});

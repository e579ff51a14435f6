import { useEffect, useRef, useState } from 'react';
import { mount } from 'embedgate';

// The seed's component: it asks the portal's backend for an embed URL and
// frames it. On embedgate's helper, the frame also renews itself when its
// session ends (revoked, idle, past its lifetime) — no reload, no click.
export default function EmbeddedApp({ appId }) {
  const container = useRef(null);
  const [state, setState] = useState('loading');

  useEffect(() => {
    const handle = mount(container.current, {
      getEmbedUrl: async () => {
        const response = await fetch('/api/generate-pat', {
          method: 'POST',
          headers: { 'Content-Type': 'application/json' },
          body: JSON.stringify({ appId }),
        });
        if (!response.ok) throw new Error(`generate-pat answered ${response.status}`);
        const { redirectUrl } = await response.json();
        return redirectUrl;
      },
      onStateChange: (next) => setState(next),
      iframe: { title: 'Embedded app', width: '100%', height: '600px' },
    });
    return () => handle.destroy();
  }, [appId]);

  return (
    <section>
      {state === 'failed' && <p role="alert">The app could not be loaded. Try again later.</p>}
      <p className="embed-state" data-state={state}>
        {state === 'ready' ? '' : `${state}…`}
      </p>
      <div ref={container} />
    </section>
  );
}

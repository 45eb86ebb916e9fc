'use strict';
// Live updates: while an admin is logged in, the console keeps one stream of the kernel's change events open
// (GET /api/v1/events, server-sent events read with fetch so that the token travels in the Authorization header, as
// for every other request) and re-reads what it shows within a moment of a change made anywhere: the CLI, another
// admin, the kernel itself: the navigation and the open view (overview, plugin list, plugin page, ...). A dropped
// stream is reopened. Uses `state` and `refresh` from console.js.
(function () {
  let open = null; // the token the open stream was made with
  let pending = null;

  function schedule() {
    if (pending) return;
    pending = setTimeout(() => { pending = null; refresh(); }, 100);
  }

  async function listen(token) {
    try {
      const response = await fetch('/api/v1/events', { headers: { Authorization: 'Bearer ' + token } });
      if (!response.ok || !response.body) return;
      document.body.dataset.live = 'true';
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done || state.token !== token) break;
        buffer += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          if (block.split('\n').some(line => line === 'event: change')) schedule();
        }
      }
      reader.cancel().catch(() => {});
    } catch (_) {
      // reopened below
    } finally {
      delete document.body.dataset.live;
    }
  }

  setInterval(() => {
    if (!state.admin || !state.token || open === state.token) return;
    const token = state.token;
    open = token;
    listen(token).finally(() => { if (open === token) open = null; });
  }, 500);
})();

// Server-sent events over fetch(): EventSource cannot send an
// Authorization header, so the page reads text/event-stream bodies itself.
// Loaded before app.js; the browser test also drives it directly.
'use strict';
(() => {
  // readSSE reads a text/event-stream body and calls onEvent({event, data,
  // id}) for each event; it returns when the stream ends. onEvent may
  // return true to stop reading.
  async function readSSE(res, onEvent) {
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    let ev = { event: 'message', data: [], id: '' };
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        buf += value;
        let i;
        while ((i = buf.indexOf('\n')) >= 0) {
          let line = buf.slice(0, i);
          buf = buf.slice(i + 1);
          if (line.endsWith('\r')) line = line.slice(0, -1);
          if (line === '') {
            if (ev.data.length) {
              if (onEvent({ event: ev.event, data: ev.data.join('\n'), id: ev.id }) === true) return;
            }
            ev = { event: 'message', data: [], id: ev.id };
            continue;
          }
          if (line.startsWith(':')) continue; // comment, keep-alive
          const c = line.indexOf(':');
          const field = c < 0 ? line : line.slice(0, c);
          let val = c < 0 ? '' : line.slice(c + 1);
          if (val.startsWith(' ')) val = val.slice(1);
          if (field === 'data') ev.data.push(val);
          else if (field === 'event') ev.event = val;
          else if (field === 'id') ev.id = val;
        }
      }
    } finally {
      reader.cancel().catch(() => {});
    }
  }

  window.rbeeSSE = Object.freeze({ readSSE });
})();

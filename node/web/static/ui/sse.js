// Server-sent events over fetch(): EventSource cannot send an
// Authorization header, so the page reads text/event-stream bodies itself.
// Loaded before app.js; the browser test also drives it directly.
'use strict';
(() => {
  const EOL = /\r\n|\r|\n/g;

  // readSSE reads a text/event-stream body (a fetch Response) and calls
  // onEvent({event, data, id}) for each event, as the HTML standard parses
  // them: CRLF, CR or LF line ends, comments, multi-line data, "event"
  // defaulting to "message", the last id carried over. An event the stream
  // ends in the middle of is dropped. It returns when the stream ends, or
  // as soon as onEvent returns true (then it cancels the body).
  async function readSSE(res, onEvent) {
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    let id = '';
    let event = '';
    let data = [];
    // line handles one line; true stops reading.
    const line = (l) => {
      if (l === '') {
        const stop = data.length > 0 && onEvent({ event: event || 'message', data: data.join('\n'), id }) === true;
        event = '';
        data = [];
        return stop;
      }
      if (l[0] === ':') return false; // comment, keep-alive
      const c = l.indexOf(':');
      const field = c < 0 ? l : l.slice(0, c);
      let val = c < 0 ? '' : l.slice(c + 1);
      if (val[0] === ' ') val = val.slice(1);
      if (field === 'data') data.push(val);
      else if (field === 'event') event = val;
      else if (field === 'id' && !val.includes('\0')) id = val;
      return false;
    };
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        buf += value;
        let pos = 0;
        for (;;) {
          EOL.lastIndex = pos;
          const m = EOL.exec(buf);
          // A CR at the end may be the first half of a CRLF: wait.
          if (!m || (m[0] === '\r' && m.index === buf.length - 1)) break;
          if (line(buf.slice(pos, m.index))) return;
          pos = m.index + m[0].length;
        }
        buf = buf.slice(pos);
      }
    } finally {
      reader.cancel().catch(() => {});
    }
  }

  window.rbeeSSE = Object.freeze({ readSSE });
})();

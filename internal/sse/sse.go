// Package sse writes and reads server-sent events (text/event-stream, as
// the WHATWG HTML standard defines them). Every SSE stream of rbee goes
// through it: job events and the cluster feed of the node's API, the token
// streams of workers, and the clients that read them (node routing, the
// CLI, the benchmarks).
//
// Wire format written, one event:
//
//	id: <id>\n          (only when the event has an id)
//	event: <type>\n     (only when the event has a type)
//	data: <line>\n      (one per line of data, at least one)
//	\n
//
// and keep-alive comments ": keep-alive\n\n". The reader accepts what the
// standard allows: LF, CRLF or CR line ends, a leading byte order mark,
// comments, fields without a value or without the space after the colon,
// multi-line data, retry, and unknown fields (ignored).
package sse

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

// ContentType is the media type of an event stream.
const ContentType = "text/event-stream"

// DefaultMaxLine bounds a line, and the data of one event, when NewReader
// is given no limit: the largest event rbee sends is a job result of a few
// MiB.
const DefaultMaxLine = 8 << 20

// Sentinel errors of this package. Match them with errors.Is.
var (
	// ErrLineTooLong is returned by Reader.Next for a line, or the data of
	// one event, over the reader's limit. The stream cannot be resumed:
	// the remaining bytes of the line were not consumed.
	ErrLineTooLong = errors.New("sse: line or event too long")

	// ErrInvalidField is returned by Writer.Event for an id or an event
	// type that cannot be written: a line break would end the field early,
	// and a NUL in an id makes readers ignore it.
	ErrInvalidField = errors.New("sse: invalid event field")
)

// Event is one server-sent event.
type Event struct {
	// ID is the event's id; on a Reader, the last id the stream set,
	// which applies to every later event until another id line.
	ID string
	// Type is the event's type; "" is the standard's default, "message".
	Type string
	// Data is the event's payload, its data lines joined with "\n".
	Data []byte
}

// Writer writes an event stream. Each Event and Comment is written with
// one Write call and flushed. Not safe for concurrent use.
type Writer struct {
	w   io.Writer
	rc  *http.ResponseController // nil when w is not an http.ResponseWriter
	buf []byte
}

// NewWriter returns a Writer on w; when w is an http.ResponseWriter, every
// event is flushed to the client (see Start for the headers).
func NewWriter(w io.Writer) *Writer {
	sw := &Writer{w: w}
	if rw, ok := w.(http.ResponseWriter); ok {
		sw.rc = http.NewResponseController(rw)
	}
	return sw
}

// Start answers an HTTP request with an event stream: the Content-Type,
// no storing (a job's events can hold a new API key), no buffering by proxies (X-Accel-Buffering), status 200,
// flushed at once so the client knows the stream is open.
func Start(w http.ResponseWriter) *Writer {
	h := w.Header()
	h.Set("Content-Type", ContentType)
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	sw := NewWriter(w)
	_ = sw.Flush()
	return sw
}

// Event writes ev and flushes it. Data is split at line breaks (LF, CRLF
// or CR) into data lines, so a reader gets it back with "\n" line ends.
func (w *Writer) Event(ev Event) error {
	if !validField(ev.Type) || !validField(ev.ID) || bytes.IndexByte([]byte(ev.ID), 0) >= 0 {
		return fmt.Errorf("%w: id %q, type %q", ErrInvalidField, ev.ID, ev.Type)
	}
	b := w.buf[:0]
	if ev.ID != "" {
		b = append(append(append(b, "id: "...), ev.ID...), '\n')
	}
	if ev.Type != "" {
		b = append(append(append(b, "event: "...), ev.Type...), '\n')
	}
	b = appendLines(b, "data: ", ev.Data)
	b = append(b, '\n')
	w.buf = b
	return w.write(b)
}

// Data writes an event of type typ ("" for none) with data and flushes it.
func (w *Writer) Data(typ string, data []byte) error {
	return w.Event(Event{Type: typ, Data: data})
}

// JSON writes an event of type typ ("" for none) whose data is v encoded
// as JSON, and flushes it.
func (w *Writer) JSON(typ string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("sse: encode %s event: %w", typ, err)
	}
	return w.Data(typ, b)
}

// Comment writes a comment, which readers ignore, and flushes it; a
// comment every few seconds keeps idle connections and proxies open.
func (w *Writer) Comment(text string) error {
	b := appendLines(w.buf[:0], ": ", []byte(text))
	b = append(b, '\n')
	w.buf = b
	return w.write(b)
}

// KeepAlive writes the comment "keep-alive".
func (w *Writer) KeepAlive() error { return w.Comment("keep-alive") }

// Flush sends what was written to the client. A response that cannot be
// flushed is not an error: its bytes go out when the handler returns.
func (w *Writer) Flush() error {
	if w.rc == nil {
		return nil
	}
	if err := w.rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	return nil
}

func (w *Writer) write(b []byte) error {
	if _, err := w.w.Write(b); err != nil {
		return err
	}
	return w.Flush()
}

// validField reports whether s fits on one line.
func validField(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == '\n' || s[i] == '\r' {
			return false
		}
	}
	return true
}

// appendLines appends one "<prefix><line>\n" per line of data (at least
// one), splitting at LF, CRLF and CR.
func appendLines(b []byte, prefix string, data []byte) []byte {
	for {
		i := bytes.IndexAny(data, "\r\n")
		if i < 0 {
			return append(append(append(b, prefix...), data...), '\n')
		}
		b = append(append(append(b, prefix...), data[:i]...), '\n')
		if data[i] == '\r' && i+1 < len(data) && data[i+1] == '\n' {
			i++
		}
		data = data[i+1:]
	}
}

// Reader reads events from a stream. Not safe for concurrent use.
type Reader struct {
	sc     *bufio.Scanner
	max    int
	first  bool
	lastID string
	retry  time.Duration
	data   []byte
	typ    string
}

// NewReader returns a Reader on r; maxLine bounds each line and the data
// of one event (<= 0: DefaultMaxLine).
func NewReader(r io.Reader, maxLine int) *Reader {
	if maxLine <= 0 {
		maxLine = DefaultMaxLine
	}
	sc := bufio.NewScanner(r)
	// A line end (up to 2 bytes) must fit next to a line of maxLine bytes.
	sc.Buffer(make([]byte, 0, min(maxLine+2, 64<<10)), maxLine+2)
	sc.Split(splitLines)
	return &Reader{sc: sc, max: maxLine, first: true}
}

// LastEventID returns the last id the stream set ("" if none): the value
// of the Last-Event-ID header when reconnecting.
func (r *Reader) LastEventID() string { return r.lastID }

// Retry returns the reconnection delay the stream asked for, 0 if none.
func (r *Reader) Retry() time.Duration { return r.retry }

// Next returns the next event. At the end of the stream it returns io.EOF;
// an event the stream did not finish (no empty line after it) is
// discarded, as the standard says. Data is owned by the caller.
func (r *Reader) Next() (Event, error) {
	for r.sc.Scan() {
		line := r.sc.Bytes()
		if r.first {
			r.first = false
			line = bytes.TrimPrefix(line, []byte("\xEF\xBB\xBF"))
		}
		if len(line) > r.max {
			return Event{}, fmt.Errorf("%w: a line of %d bytes, limit %d", ErrLineTooLong, len(line), r.max)
		}
		if len(line) == 0 {
			ev, ok := r.dispatch()
			if ok {
				return ev, nil
			}
			continue
		}
		if line[0] == ':' {
			continue // comment
		}
		field, value := line, []byte(nil)
		if i := bytes.IndexByte(line, ':'); i >= 0 {
			field, value = line[:i], line[i+1:]
			value = bytes.TrimPrefix(value, []byte(" "))
		}
		switch string(field) {
		case "event":
			r.typ = string(value)
		case "data":
			if len(r.data)+len(value)+1 > r.max+1 {
				return Event{}, fmt.Errorf("%w: event data over %d bytes", ErrLineTooLong, r.max)
			}
			r.data = append(append(r.data, value...), '\n')
		case "id":
			if bytes.IndexByte(value, 0) < 0 {
				r.lastID = string(value)
			}
		case "retry":
			if ms, err := strconv.ParseUint(string(value), 10, 31); err == nil {
				r.retry = time.Duration(ms) * time.Millisecond
			}
		}
	}
	if err := r.sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return Event{}, fmt.Errorf("%w: a line over %d bytes", ErrLineTooLong, r.max)
		}
		return Event{}, err
	}
	return Event{}, io.EOF
}

// dispatch ends the pending event at an empty line; there is an event only
// when it had data.
func (r *Reader) dispatch() (Event, bool) {
	typ := r.typ
	r.typ = ""
	if len(r.data) == 0 {
		return Event{}, false
	}
	data := bytes.Clone(r.data[:len(r.data)-1])
	if data == nil {
		data = []byte{}
	}
	r.data = r.data[:0]
	return Event{ID: r.lastID, Type: typ, Data: data}, true
}

// splitLines is a bufio.SplitFunc for LF, CRLF and CR line ends.
func splitLines(data []byte, atEOF bool) (advance int, token []byte, err error) {
	i := bytes.IndexAny(data, "\r\n")
	switch {
	case i < 0:
		if atEOF {
			return len(data), nil, nil // an unfinished last line: discarded
		}
		return 0, nil, nil
	case data[i] == '\n':
		return i + 1, data[:i], nil
	case i+1 < len(data):
		if data[i+1] == '\n' {
			return i + 2, data[:i], nil
		}
		return i + 1, data[:i], nil
	case atEOF:
		return i + 1, data[:i], nil
	}
	return 0, nil, nil // a CR at the end: is an LF next?
}

// Read calls fn for every event of r until the stream ends (nil), reading
// fails (that error) or fn returns an error (that error). maxLine is as
// for NewReader.
func Read(r io.Reader, maxLine int, fn func(Event) error) error {
	sr := NewReader(r, maxLine)
	for {
		ev, err := sr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := fn(ev); err != nil {
			return err
		}
	}
}

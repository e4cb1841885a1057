package sse

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/stretchr/testify/require"
)

// readAll reads every event of in with the given limit.
func readAll(in io.Reader, max int) ([]Event, *Reader, error) {
	r := NewReader(in, max)
	var evs []Event
	for {
		ev, err := r.Next()
		if errors.Is(err, io.EOF) {
			return evs, r, nil
		}
		if err != nil {
			return evs, r, err
		}
		evs = append(evs, ev)
	}
}

func ev(id, typ, data string) Event { return Event{ID: id, Type: typ, Data: []byte(data)} }

func TestReader(t *testing.T) {
	tests := []struct {
		name   string
		in     string
		want   []Event
		lastID string
		retry  time.Duration
	}{
		{"typed event", "event: token\ndata: {\"text\":\"a\"}\n\n", []Event{ev("", "token", `{"text":"a"}`)}, "", 0},
		{"job event", "id: 3\nevent: done\ndata: {}\n\n", []Event{ev("3", "done", "{}")}, "3", 0},
		{"id applies to later events", "id: 1\ndata: a\n\ndata: b\n\n", []Event{ev("1", "", "a"), ev("1", "", "b")}, "1", 0},
		{"empty id resets", "id: 1\ndata: a\n\nid\ndata: b\n\n", []Event{ev("1", "", "a"), ev("", "", "b")}, "", 0},
		{"id with NUL ignored", "id: 1\ndata: a\n\nid: x\x00y\ndata: b\n\n", []Event{ev("1", "", "a"), ev("1", "", "b")}, "1", 0},
		{"multi-line data", "data: a\ndata: b\ndata:\n\n", []Event{ev("", "", "a\nb\n")}, "", 0},
		{"CRLF", "event: x\r\ndata: a\r\n\r\n", []Event{ev("", "x", "a")}, "", 0},
		{"CR", "data: a\r\rdata: b\r\r", []Event{ev("", "", "a"), ev("", "", "b")}, "", 0},
		{"mixed line ends", "data: a\r\ndata: b\rdata: c\n\r\n", []Event{ev("", "", "a\nb\nc")}, "", 0},
		{"comments ignored", ": keep-alive\n\n:\ndata: x\n: inside\n\n", []Event{ev("", "", "x")}, "", 0},
		{"no space after colon", "data:x\nevent:t\n\n", []Event{ev("", "t", "x")}, "", 0},
		{"only one space stripped", "data:  x \n\n", []Event{ev("", "", " x ")}, "", 0},
		{"field without colon", "data\n\n", []Event{ev("", "", "")}, "", 0},
		{"empty data value", "data:\n\n", []Event{ev("", "", "")}, "", 0},
		{"colon in value", "data: a: b\n\n", []Event{ev("", "", "a: b")}, "", 0},
		{"no data, no event", "event: ping\nid: 9\n\ndata: x\n\n", []Event{ev("9", "", "x")}, "9", 0},
		{"unfinished event discarded", "data: x\n\ndata: y\n", []Event{ev("", "", "x")}, "", 0},
		{"unfinished line discarded", "data: x\n\nid: 5", []Event{ev("", "", "x")}, "", 0},
		{"byte order mark", "\xEF\xBB\xBFdata: x\n\n", []Event{ev("", "", "x")}, "", 0},
		{"unknown fields ignored", "foo: bar\nDATA: y\ndata: x\n\n", []Event{ev("", "", "x")}, "", 0},
		{"retry", "retry: 1500\n\n", nil, "", 1500 * time.Millisecond},
		{"bad retry ignored", "retry: 1s\nretry: -1\nretry:\n\n", nil, "", 0},
		{"empty stream", "", nil, "", 0},
		{"blank lines only", "\n\n\r\n", nil, "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Whole, and one byte per read (line ends split across reads).
			for _, in := range []io.Reader{strings.NewReader(tt.in), iotest.OneByteReader(strings.NewReader(tt.in))} {
				got, r, err := readAll(in, 0)
				require.NoError(t, err)
				require.Equal(t, tt.want, got)
				require.Equal(t, tt.lastID, r.LastEventID())
				require.Equal(t, tt.retry, r.Retry())
			}
		})
	}
}

func TestReaderLimits(t *testing.T) {
	tests := []struct {
		name string
		in   string
		max  int
		want []Event // read before the error
	}{
		{"long line", "data: 12345678\n\n", 8, nil},
		{"long unterminated line", "data: x\n\ndata: " + strings.Repeat("y", 100), 16, []Event{ev("", "", "x")}},
		{"long comment", ": " + strings.Repeat("c", 20) + "\n\n", 8, nil},
		{"data over the limit in several lines", "data: 1234\ndata: 5678\n\n", 8, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _, err := readAll(strings.NewReader(tt.in), tt.max)
			require.ErrorIs(t, err, ErrLineTooLong)
			require.Equal(t, tt.want, got)
		})
	}
	// At the limit exactly is fine.
	got, _, err := readAll(strings.NewReader("data:12345678\ndata:\n\n"), 13)
	require.NoError(t, err)
	require.Equal(t, []Event{ev("", "", "12345678\n")}, got)
}

func TestReadStopsOnCallbackError(t *testing.T) {
	in := "data: 1\n\ndata: 2\n\ndata: 3\n\n"
	var seen []string
	stop := errors.New("stop")
	err := Read(strings.NewReader(in), 0, func(e Event) error {
		seen = append(seen, string(e.Data))
		if len(seen) == 2 {
			return stop
		}
		return nil
	})
	require.ErrorIs(t, err, stop)
	require.Equal(t, []string{"1", "2"}, seen)

	require.NoError(t, Read(strings.NewReader(in), 0, func(Event) error { return nil }), "end of stream")
	broken := io.MultiReader(strings.NewReader("data: 1\n"), iotest.ErrReader(io.ErrUnexpectedEOF))
	require.ErrorIs(t, Read(broken, 0, func(Event) error { return nil }), io.ErrUnexpectedEOF)
}

func TestWriter(t *testing.T) {
	tests := []struct {
		name string
		ev   Event
		want string
	}{
		{"job event", ev("12", "progress", `{"done":1}`), "id: 12\nevent: progress\ndata: {\"done\":1}\n\n"},
		{"typed", ev("", "token", `{"text":"hi"}`), "event: token\ndata: {\"text\":\"hi\"}\n\n"},
		{"untyped", ev("", "", "[DONE]"), "data: [DONE]\n\n"},
		{"empty data", ev("", "", ""), "data: \n\n"},
		{"nil data", Event{Type: "x"}, "event: x\ndata: \n\n"},
		{"multi-line data", ev("", "", "a\nb\r\nc\rd"), "data: a\ndata: b\ndata: c\ndata: d\n\n"},
		{"trailing line end", ev("", "", "a\n"), "data: a\ndata: \n\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			require.NoError(t, NewWriter(&b).Event(tt.ev))
			require.Equal(t, tt.want, b.String())
		})
	}
	var b bytes.Buffer
	w := NewWriter(&b)
	require.NoError(t, w.KeepAlive())
	require.NoError(t, w.Comment("two\nlines"))
	require.NoError(t, w.Data("state", []byte("{}")))
	require.NoError(t, w.JSON("", map[string]int{"a": 1}))
	require.Equal(t, ": keep-alive\n\n: two\n: lines\n\nevent: state\ndata: {}\n\ndata: {\"a\":1}\n\n", b.String())
	require.Error(t, w.JSON("x", func() {}), "not encodable")

	for _, bad := range []Event{ev("", "a\nb", "x"), ev("1\r", "", "x"), ev("a\x00b", "", "x")} {
		require.ErrorIs(t, w.Event(bad), ErrInvalidField)
	}
}

func TestStartAndFlush(t *testing.T) {
	rec := httptest.NewRecorder()
	w := Start(rec)
	require.Equal(t, http.StatusOK, rec.Code)
	require.Equal(t, ContentType, rec.Header().Get("Content-Type"))
	require.Equal(t, "no-store", rec.Header().Get("Cache-Control"))
	require.Equal(t, "no", rec.Header().Get("X-Accel-Buffering"))
	require.True(t, rec.Flushed, "headers go out at once")

	// Over a real connection every event arrives as it is written.
	next := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		w := Start(rw)
		for i := range 3 {
			require.NoError(t, w.Event(Event{ID: string(rune('1' + i)), Type: "n", Data: []byte("x")}))
			<-next
		}
	}))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	require.NoError(t, err)
	defer resp.Body.Close()
	r := NewReader(resp.Body, 0)
	for i := range 3 {
		e, err := r.Next()
		require.NoError(t, err)
		require.Equal(t, string(rune('1'+i)), e.ID)
		next <- struct{}{}
	}
	_, err = r.Next()
	require.ErrorIs(t, err, io.EOF)
	_ = w
}

func TestRoundTrip(t *testing.T) {
	evs := []Event{
		ev("1", "narration", `{"message":"héllo"}`),
		ev("2", "", "line one\nline two\n\nafter a blank"),
		ev("2", "token", ""),
		ev("3", " spaced type", ":leading colon"),
		ev("4", "x", strings.Repeat("z", 100_000)),
	}
	var b bytes.Buffer
	w := NewWriter(&b)
	for _, e := range evs {
		require.NoError(t, w.Event(e))
		require.NoError(t, w.KeepAlive())
	}
	got, r, err := readAll(&b, 0)
	require.NoError(t, err)
	require.Equal(t, evs, got)
	require.Equal(t, "4", r.LastEventID())
}

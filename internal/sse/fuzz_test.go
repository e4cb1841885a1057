package sse

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"
)

// FuzzReader feeds arbitrary bytes to the Reader: it must never panic,
// never return an event over its limit or with a field that could not be
// written back, read the same events however the input is split into
// reads, and every event it returns must survive a Writer → Reader round
// trip unchanged. The seed corpus is in testdata/fuzz/FuzzReader.
func FuzzReader(f *testing.F) {
	for _, s := range []string{
		"id: 1\nevent: token\ndata: {\"text\":\"a\"}\n\n",
		"data: a\r\ndata: b\r\rdata: c\n\n",
		": keep-alive\n\nretry: 10\nid\n\n",
		"\xEF\xBB\xBFdata:x\n\nid: \x00\ndata\n\n",
	} {
		f.Add([]byte(s))
	}
	const max = 64
	f.Fuzz(func(t *testing.T, in []byte) {
		whole, errWhole := collect(bytes.NewReader(in), max)
		split, errSplit := collect(iotest.OneByteReader(bytes.NewReader(in)), max)
		if (errWhole == nil) != (errSplit == nil) || len(whole) != len(split) {
			t.Fatalf("split reads differ: %d events (%v) vs %d (%v)", len(whole), errWhole, len(split), errSplit)
		}
		if errWhole != nil && !errors.Is(errWhole, ErrLineTooLong) {
			t.Fatalf("unexpected error %v", errWhole)
		}
		var out bytes.Buffer
		w := NewWriter(&out)
		for i, e := range whole {
			if !equal(e, split[i]) {
				t.Fatalf("event %d differs between split reads: %+v vs %+v", i, e, split[i])
			}
			if len(e.Data) > max {
				t.Fatalf("event data of %d bytes over the limit %d", len(e.Data), max)
			}
			if err := w.Event(e); err != nil {
				t.Fatalf("event %+v read but not writable: %v", e, err)
			}
		}
		back, err := collect(&out, 0)
		if err != nil {
			t.Fatalf("reading back: %v", err)
		}
		if len(back) != len(whole) {
			t.Fatalf("round trip: %d events, want %d", len(back), len(whole))
		}
		for i := range back {
			// An event without an id after one with an id keeps the
			// earlier id on the way back; the writer writes what it is given.
			if back[i].Type != whole[i].Type || !bytes.Equal(back[i].Data, whole[i].Data) {
				t.Fatalf("round trip changed event %d: %+v -> %+v", i, whole[i], back[i])
			}
		}
	})
}

func collect(r io.Reader, max int) ([]Event, error) {
	var evs []Event
	err := Read(r, max, func(e Event) error { evs = append(evs, e); return nil })
	return evs, err
}

func equal(a, b Event) bool {
	return a.ID == b.ID && a.Type == b.Type && bytes.Equal(a.Data, b.Data)
}

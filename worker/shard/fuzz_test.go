package shard

import (
	"bytes"
	"encoding/binary"
	"io"
	"testing"

	"github.com/stretchr/testify/require"
)

// FuzzParseFrame: no payload makes the parser panic, allocate past what
// the payload can hold, or accept a frame that does not encode back to
// the same bytes.
func FuzzParseFrame(f *testing.F) {
	for _, fr := range []frame{
		{typ: frameHello, proto: ProtocolID},
		{typ: frameWelcome, info: StageInfo{Lo: 1, Hi: 2, Layers: 2, Dim: 4, Vocab: 8, Instance: 5}},
		{typ: frameForward, id: 1, segs: []Segment{{Session: 1, Pos: 0, N: 2, Logits: true}}, rows: 2, width: 2, data: []float32{1, 2, 3, 4}},
		{typ: frameResult, id: 1, compute: 9, rows: 1, width: 2, data: []float32{1, 2}},
		{typ: frameError, id: 1, code: codeStateLost, msg: "x"},
		{typ: frameBegin, id: 2, segs: []Segment{{Session: 1, Pos: 3, N: 2, Logits: true}}, ids: []int32{5, 6}},
		{typ: frameParts, id: 3, parts: [][]float32{{1, 2}, {}, {3}}},
	} {
		var buf netBuffer
		if _, err := writeFrame(&buf, &fr, nil); err != nil {
			f.Fatal(err)
		}
		f.Add(buf.b[4:])
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		var fr frame
		if err := parseFrame(p, &fr); err != nil {
			return
		}
		if len(fr.data) > len(p)/4 {
			t.Fatalf("%d values from %d bytes", len(fr.data), len(p))
		}
		var buf netBuffer
		if _, err := writeFrame(&buf, &fr, nil); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf.b[4:], p) {
			t.Fatalf("re-encoded %x, parsed %x", buf.b[4:], p)
		}
	})
}

// TestFrameHeaderPinsNoMemory: a peer that declares a large frame and
// sends a few bytes makes the reader hold about what arrived, not what was
// declared.
func TestFrameHeaderPinsNoMemory(t *testing.T) {
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], 200<<20)
	r := io.MultiReader(bytes.NewReader(hdr[:]), bytes.NewReader(make([]byte, 10)))
	var f frame
	buf, err := readFrame(r, DefaultMaxFrame, nil, &f)
	require.ErrorIs(t, err, io.ErrUnexpectedEOF)
	require.LessOrEqual(t, cap(buf), readChunk)
}

package p2p

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"

	"github.com/stretchr/testify/require"
)

func header(n uint32) []byte {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], n)
	return b[:]
}

func TestReadFrame(t *testing.T) {
	tests := []struct {
		name    string
		in      []byte
		max     int
		want    []byte
		wantErr error
	}{
		{"empty frame", header(0), 0, []byte{}, nil},
		{"small", append(header(3), "abc"...), 0, []byte("abc"), nil},
		{"exactly max", append(header(4), "abcd"...), 4, []byte("abcd"), nil},
		{"over max", append(header(5), "abcde"...), 4, nil, ErrFrameTooLarge},
		{"over default", header(DefaultMaxFrameSize + 1), 0, nil, ErrFrameTooLarge},
		{"over hard cap", header(MaxFrameSize + 1), 1 << 30, nil, ErrFrameTooLarge},
		{"huge header", header(0xffffffff), 0, nil, ErrFrameTooLarge},
		{"clean eof", nil, 0, nil, io.EOF},
		{"short header", []byte{0, 0}, 0, nil, io.ErrUnexpectedEOF},
		{"short body", append(header(10), "abc"...), 0, nil, io.ErrUnexpectedEOF},
		{"short large body", append(header(readChunk+10), make([]byte, readChunk)...), 0, nil, io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ReadFrame(bytes.NewReader(tt.in), tt.max)
			if tt.wantErr != nil {
				require.ErrorIs(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
}

func TestFrameRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	payloads := [][]byte{{}, []byte("x"), bytes.Repeat([]byte("ab"), readChunk)}
	for _, p := range payloads {
		require.NoError(t, WriteFrame(&buf, p))
	}
	for _, p := range payloads {
		got, err := ReadFrame(&buf, 0)
		require.NoError(t, err)
		require.Equal(t, p, got)
	}
	_, err := ReadFrame(&buf, 0)
	require.ErrorIs(t, err, io.EOF)
}

func TestWriteFrameTooLarge(t *testing.T) {
	var buf bytes.Buffer
	err := WriteFrame(&buf, make([]byte, MaxFrameSize+1))
	require.ErrorIs(t, err, ErrFrameTooLarge)
	require.Zero(t, buf.Len(), "nothing written")
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("boom") }

func TestJSONFrames(t *testing.T) {
	var buf bytes.Buffer
	require.NoError(t, WriteJSON(&buf, map[string]int{"a": 1}))
	var m map[string]int
	require.NoError(t, ReadJSON(&buf, 0, &m))
	require.Equal(t, map[string]int{"a": 1}, m)

	require.NoError(t, WriteFrame(&buf, []byte("{not json")))
	require.ErrorContains(t, ReadJSON(&buf, 0, &m), "decode json")

	require.Error(t, WriteJSON(&buf, func() {}), "unencodable value")
	require.Error(t, WriteJSON(failWriter{}, 1))
	require.ErrorIs(t, ReadJSON(&buf, 0, &m), io.EOF)
}

// FuzzReadFrame checks that arbitrary bytes never panic ReadFrame, that what
// it accepts respects the limit, and that an accepted frame re-encodes to the
// bytes it was read from.
func FuzzReadFrame(f *testing.F) {
	f.Add(append(header(3), "abc"...), 16)
	f.Add(header(0), 0)
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 1}, 0)
	f.Add([]byte{0, 0}, 1)
	f.Fuzz(func(t *testing.T, in []byte, max int) {
		got, err := ReadFrame(bytes.NewReader(in), max)
		if err != nil {
			if got != nil {
				t.Fatalf("payload %q returned with error %v", got, err)
			}
			return
		}
		limit := max
		if limit <= 0 {
			limit = DefaultMaxFrameSize
		}
		if len(got) > limit {
			t.Fatalf("accepted %d bytes over limit %d", len(got), limit)
		}
		var buf bytes.Buffer
		if err := WriteFrame(&buf, got); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf.Bytes(), in[:buf.Len()]) {
			t.Fatalf("re-encoding differs from input")
		}
	})
}

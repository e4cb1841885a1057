package blob

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"testing"

	"github.com/stretchr/testify/require"
)

// framePair is a sender and a receiver over a pipe that tamper may
// change in flight.
func framePair(t *testing.T, data []byte, tamper func(b []byte)) *directBody {
	km := make([]byte, 28)
	for i := range km {
		km[i] = byte(i * 7)
	}
	tx, err := sealerFor(km)
	require.NoError(t, err)
	rx, err := sealerFor(km)
	require.NoError(t, err)
	a, b := net.Pipe()
	t.Cleanup(func() { _ = a.Close(); _ = b.Close() })
	go func() {
		var w net.Conn = a
		if tamper != nil {
			w = &tamperConn{Conn: a, f: tamper}
		}
		_ = sendFrames(w, tx, statusOK, bytes.NewReader(data))
		_ = a.Close()
	}()
	d := &directConn{c: b, r: b, s: rx}
	var st [1 + tagLen]byte
	p, err := d.readFrame(st[:], 1)
	require.NoError(t, err)
	require.Equal(t, statusOK, p[0])
	return newDirectBody(d, int64(len(data)), func() bool { return true })
}

// tamperConn hands each write to f before it goes out.
type tamperConn struct {
	net.Conn
	f func([]byte)
	n int
}

func (c *tamperConn) Write(p []byte) (int, error) {
	q := append([]byte(nil), p...)
	c.f(q)
	c.n++
	return c.Conn.Write(q)
}

// TestSealedFrames: every size, read through buffers of every kind of
// size (smaller than a frame, odd, the download's 256 KiB), comes out
// whole.
func TestSealedFrames(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, size := range []int{0, 1, frameData - 1, frameData, frameData + 1, framesPerWrite*frameData + 7, 3*framesPerWrite*frameData - 5} {
		data := make([]byte, size)
		for i := range data {
			data[i] = byte(rng.Uint32())
		}
		for _, bufSize := range []int{1, 1000, frameData + tagLen, 100_003, Chunk} {
			body := framePair(t, data, nil)
			got := []byte{}
			buf := make([]byte, bufSize)
			for {
				k, err := body.Read(buf)
				got = append(got, buf[:k]...)
				if errors.Is(err, io.EOF) {
					break
				}
				require.NoError(t, err)
			}
			require.Equal(t, data, got, "size %d, buffer %d", size, bufSize)
		}
	}
}

// TestSealedFramesTampered: a changed byte, a dropped frame or frames
// swapped in flight fail the transfer; nothing after the change is
// returned as data.
func TestSealedFramesTampered(t *testing.T) {
	data := bytes.Repeat([]byte("rbee frames "), 3*framesPerWrite*frameData/12)
	frame := frameData + tagLen
	for name, tamper := range map[string]func(b []byte){
		"flipped bit": func(b []byte) {
			if len(b) > 2*frame {
				b[frame+100] ^= 1
			}
		},
		"swapped frames": func(b []byte) {
			if len(b) > 2*frame {
				f1 := append([]byte(nil), b[:frame]...)
				copy(b[:frame], b[frame:2*frame])
				copy(b[frame:2*frame], f1)
			}
		},
		"dropped frame": func(b []byte) {
			if len(b) > 2*frame {
				copy(b[frame:], b[2*frame:])
				for i := len(b) - frame; i < len(b); i++ {
					b[i] = 0
				}
			}
		},
	} {
		t.Run(name, func(t *testing.T) {
			body := framePair(t, data, tamper)
			got, err := io.ReadAll(body)
			require.ErrorContains(t, err, "failed authentication")
			require.True(t, bytes.HasPrefix(data, got), "only bytes before the change come out")
			require.Less(t, len(got), len(data))
		})
	}
}

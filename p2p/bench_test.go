package p2p

import (
	"io"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/protocol"
)

const benchProto protocol.ID = "/rbee/test-sink/1.0.0"

// BenchmarkStreamThroughput measures one stream's throughput between two
// hosts on loopback (TCP + private network + Noise + yamux), in 256 KiB
// writes; the handler discards and acknowledges the end.
func BenchmarkStreamThroughput(b *testing.B) {
	a, c := newHost(b, "bench"), newHost(b, "bench")
	introduce(b, c, a)
	a.Handle(benchProto, func(s network.Stream) {
		_, err := io.Copy(io.Discard, s)
		if err == nil {
			_, err = s.Write([]byte{1})
		}
		closeOrReset(s, err)
	})
	chunk := make([]byte, 256<<10)
	s, err := c.NewStream(ctxT(b), a.ID(), benchProto)
	if err != nil {
		b.Fatal(err)
	}
	_ = s.SetDeadline(time.Now().Add(5 * time.Minute))
	b.SetBytes(int64(len(chunk)))
	for b.Loop() {
		if _, err := s.Write(chunk); err != nil {
			b.Fatal(err)
		}
	}
	if err := s.CloseWrite(); err != nil {
		b.Fatal(err)
	}
	if _, err := io.ReadFull(s, make([]byte, 1)); err != nil {
		b.Fatal(err)
	}
	_ = s.Close()
}

package p2p

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"io"
	"testing"
	"time"

	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/crypto/salsa20"

	"github.com/rbee-project/rbee/internal/cputime"

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
	c0 := cpuNow(b)
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
	// Both hosts run in this process: this is the CPU of both ends.
	b.ReportMetric(float64((cpuNow(b)-c0).Nanoseconds())/float64(b.N*len(chunk)), "cpu-ns/B")
	_ = s.Close()
}

// BenchmarkByteCost measures, per 64 KiB block (a Noise message), the
// per-byte work every byte of a stream pays on each side, next to the
// alternatives a faster wire could use: the private network's XSalsa20
// (pnet, both directions), Noise's ChaCha20-Poly1305, the sha256 a model
// copy is verified with, and AES-CTR / AES-GCM (AES-NI) for comparison.
func BenchmarkByteCost(b *testing.B) {
	key := make([]byte, 32)
	block := make([]byte, 64<<10)
	out := make([]byte, len(block)+16)
	var nonce24 [24]byte
	aead, err := chacha20poly1305.New(key)
	if err != nil {
		b.Fatal(err)
	}
	blk, err := aes.NewCipher(key)
	if err != nil {
		b.Fatal(err)
	}
	gcm, err := cipher.NewGCM(blk)
	if err != nil {
		b.Fatal(err)
	}
	nonce12 := make([]byte, 12)
	ctr := cipher.NewCTR(blk, make([]byte, aes.BlockSize))
	var k32 [32]byte
	copy(k32[:], key)
	h := sha256.New()
	for _, c := range []struct {
		name string
		fn   func()
	}{
		{"pnet-xsalsa20", func() { salsa20.XORKeyStream(out[:len(block)], block, nonce24[:], &k32) }},
		{"noise-chacha20poly1305-seal", func() { aead.Seal(out[:0], nonce12, block, nil) }},
		{"sha256", func() { h.Write(block) }},
		{"aes256-ctr", func() { ctr.XORKeyStream(out[:len(block)], block) }},
		{"aes256-gcm-seal", func() { gcm.Seal(out[:0], nonce12, block, nil) }},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(block)))
			for b.Loop() {
				c.fn()
			}
		})
	}
}

// cpuNow is this process's CPU time so far.
func cpuNow(b *testing.B) time.Duration {
	d, err := cputime.Self()
	if err != nil {
		b.Skip(err)
	}
	return d
}

package blob

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// After the handshake and the token, the direct path carries its bytes in
// sealed frames instead of TLS records: AES-128-GCM under a key both
// sides export from their TLS 1.3 session (RFC 8446 §7.5), with TLS 1.3's
// nonce construction (a per-connection IV XOR the frame's sequence
// number). The cipher and the key schedule are TLS's; what changes is
// the framing, which lets both sides skip their copies:
//
//   - the sender reads the file straight into its frame buffer, seals in
//     place and writes four frames per system call;
//   - the receiver reads each frame's ciphertext straight into the
//     download's buffer and opens it in place.
//
// With crypto/tls each byte was copied three more times (into the batch
// of records, through the socket buffer, out of the record) and each
// 16 KiB record cost a call of its own on both sides.
//
// No frame carries its length: the receiver knows how many bytes are due
// (the head's size less its offset), every frame but the last carries
// frameData bytes, and the last carries the rest. Frame 0 is the status
// byte. A frame that fails to open (altered, dropped, reordered or
// replayed: the sequence number is in the nonce) fails the transfer;
// a connection that ends before the last frame is io.ErrUnexpectedEOF, so
// the download resumes from the last whole frame.

// exportLabel names the sealed frames' key material among the session's
// exported secrets; it also versions the framing.
const exportLabel = "EXPORTER-rbee-blob-direct-frames-v1"

// Frame sizes.
const (
	// tagLen is GCM's authentication tag.
	tagLen = 16
	// frameData is the plaintext of a full frame: a frame and its tag
	// fill 64 KiB, loopback's segment size, and four of them nearly fill
	// a download's 256 KiB buffer, so most frames open in place there.
	frameData = 64<<10 - tagLen
	// framesPerWrite is how many frames the sender writes per system
	// call: Chunk's worth.
	framesPerWrite = Chunk / (frameData + tagLen)
	// handshakeBuffer is the receiver's read buffer for the handshake;
	// frames larger than it are read past it, straight into place.
	handshakeBuffer = 16 << 10
)

// sealer seals or opens the frames of one direction of one connection.
// Not safe for concurrent use.
type sealer struct {
	aead  cipher.AEAD
	iv    [12]byte
	seq   uint64
	nonce [12]byte
}

// newSealer derives the frames' key and IV from a finished TLS 1.3
// session; both ends of it get the same.
func newSealer(cs tls.ConnectionState) (*sealer, error) {
	km, err := cs.ExportKeyingMaterial(exportLabel, nil, 16+12)
	if err != nil {
		return nil, fmt.Errorf("blob: direct: exporting keys: %w", err)
	}
	return sealerFor(km)
}

// sealerFor makes a sealer of key material km: 16 bytes of key, 12 of IV.
func sealerFor(km []byte) (*sealer, error) {
	blk, err := aes.NewCipher(km[:16])
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(blk)
	if err != nil {
		return nil, err
	}
	s := &sealer{aead: aead}
	copy(s.iv[:], km[16:])
	return s, nil
}

// next is the nonce of the next frame: the IV XOR the sequence number.
func (s *sealer) next() []byte {
	s.nonce = s.iv
	var seq [8]byte
	binary.BigEndian.PutUint64(seq[:], s.seq)
	for i := range seq {
		s.nonce[4+i] ^= seq[i]
	}
	s.seq++
	return s.nonce[:]
}

// seal encrypts b[:n] in place; b must have room for the tag. It
// returns the frame, b[:n+tagLen].
func (s *sealer) seal(b []byte, n int) []byte {
	return s.aead.Seal(b[:0], s.next(), b[:n], nil)
}

// open decrypts and checks frame in place and returns its plaintext.
func (s *sealer) open(frame []byte) ([]byte, error) {
	p, err := s.aead.Open(frame[:0], s.next(), frame, nil)
	if err != nil {
		return nil, errors.New("blob: direct: a frame failed authentication")
	}
	return p, nil
}

// sendFrames writes the status frame and then, after statusOK, r's bytes
// in frames until r ends, with a write deadline of idle per batch.
func sendFrames(c net.Conn, s *sealer, status byte, r io.Reader) error {
	buf := make([]byte, framesPerWrite*(frameData+tagLen))
	_ = c.SetWriteDeadline(time.Now().Add(idle))
	buf[0] = status
	if _, err := c.Write(s.seal(buf, 1)); err != nil || status != statusOK {
		return err
	}
	for {
		off, end := 0, false
		for range framesPerWrite {
			k, err := io.ReadFull(r, buf[off:off+frameData])
			if k > 0 {
				off += len(s.seal(buf[off:], k))
			}
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				end = true
				break
			}
			if err != nil {
				return err
			}
		}
		if off > 0 {
			_ = c.SetWriteDeadline(time.Now().Add(idle))
			if _, err := c.Write(buf[:off]); err != nil {
				return err
			}
		}
		if end {
			return nil
		}
	}
}

// directConn is a claimed offer: the connection past the handshake, read
// through the handshake's buffer, and the frames' sealer.
type directConn struct {
	c net.Conn
	r io.Reader
	s *sealer
}

// readFrame reads the next frame of n plaintext bytes into dst (which
// must hold n+tagLen) and opens it in place.
func (d *directConn) readFrame(dst []byte, n int) ([]byte, error) {
	if _, err := io.ReadFull(d.r, dst[:n+tagLen]); err != nil {
		return nil, err
	}
	return d.s.open(dst[:n+tagLen])
}

// directBody is a transfer over the direct path: left bytes are due. A
// stall longer than idle fails it, and so does an end before left is
// done.
type directBody struct {
	d    *directConn
	left int64  // plaintext bytes not yet read from the connection
	pend []byte // the rest of a frame that did not fit a caller's buffer
	bnc  []byte // the buffer for such frames
	stop func() bool
}

func newDirectBody(d *directConn, left int64, stop func() bool) *directBody {
	return &directBody{d: d, left: left, stop: stop}
}

// Read fills p with as many whole frames as fit, each read and opened in
// place; a frame that does not fit goes through a buffer of its own.
func (b *directBody) Read(p []byte) (int, error) {
	if len(b.pend) > 0 {
		n := copy(p, b.pend)
		b.pend = b.pend[n:]
		return n, nil
	}
	if b.left <= 0 {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	_ = b.d.c.SetReadDeadline(time.Now().Add(idle))
	got := 0
	for b.left > 0 {
		n := int(min(b.left, frameData))
		inPlace := len(p)-got >= n+tagLen
		if !inPlace && got > 0 {
			break
		}
		dst := p[got:]
		if !inPlace {
			if b.bnc == nil {
				b.bnc = make([]byte, frameData+tagLen)
			}
			dst = b.bnc
		}
		pt, err := b.d.readFrame(dst, n)
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				err = fmt.Errorf("blob: direct: the peer ended %d bytes short: %w", b.left, io.ErrUnexpectedEOF)
			}
			return got, err
		}
		b.left -= int64(n)
		if !inPlace {
			k := copy(p, pt)
			b.pend = pt[k:]
			return k, nil
		}
		got += n
	}
	return got, nil
}

func (b *directBody) Close() error {
	b.stop()
	return b.d.c.Close()
}

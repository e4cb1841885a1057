package p2p

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
)

// Frame format: a 4-byte big-endian unsigned length followed by that many
// payload bytes. A fixed-width header (rather than a uvarint) keeps the reader
// to one io.ReadFull, needs no io.ByteReader, and is trivial to implement in
// any language; the 3 bytes it may waste per frame do not matter next to the
// Noise and yamux overhead.
const (
	// frameHeaderLen is the size of the length prefix.
	frameHeaderLen = 4

	// DefaultMaxFrameSize is the limit ReadFrame applies when called with
	// max <= 0. 1 MiB comfortably holds any control message (job requests,
	// registry snapshots of a LAN cluster) while bounding what a misbehaving
	// peer can make us allocate.
	DefaultMaxFrameSize = 1 << 20

	// MaxFrameSize is the hard cap for any frame in either direction. Bulk
	// data (model files, worker binaries) is streamed raw, never framed, so 64
	// MiB is far above any legitimate frame.
	MaxFrameSize = 64 << 20

	// readChunk bounds the up-front allocation for one frame: larger frames
	// grow their buffer as bytes actually arrive, so a header that lies about
	// its length costs at most this much memory before the read fails.
	readChunk = 64 << 10
)

// WriteFrame writes b as one length-prefixed frame. Payloads larger than
// MaxFrameSize are refused with ErrFrameTooLarge before anything is written.
// It is not safe to call concurrently on the same writer.
func WriteFrame(w io.Writer, b []byte) error {
	if len(b) > MaxFrameSize {
		return fmt.Errorf("%w: %d bytes, cap %d", ErrFrameTooLarge, len(b), MaxFrameSize)
	}
	var hdr [frameHeaderLen]byte
	binary.BigEndian.PutUint32(hdr[:], uint32(len(b)))
	if len(b) <= readChunk {
		// One write for small frames: one yamux frame, one syscall.
		buf := make([]byte, 0, frameHeaderLen+len(b))
		buf = append(buf, hdr[:]...)
		buf = append(buf, b...)
		if _, err := w.Write(buf); err != nil {
			return fmt.Errorf("p2p: write frame: %w", err)
		}
		return nil
	}
	if _, err := w.Write(hdr[:]); err != nil {
		return fmt.Errorf("p2p: write frame header: %w", err)
	}
	if _, err := w.Write(b); err != nil {
		return fmt.Errorf("p2p: write frame body: %w", err)
	}
	return nil
}

// ReadFrame reads one frame written by WriteFrame and returns its payload.
// max bounds the payload size (max <= 0 means DefaultMaxFrameSize; values
// above MaxFrameSize are lowered to it); a larger frame yields
// ErrFrameTooLarge and the stream should be reset, as its remaining bytes are
// not consumed. A clean end of stream before the header yields io.EOF; a
// stream that ends inside a frame yields io.ErrUnexpectedEOF.
func ReadFrame(r io.Reader, max int) ([]byte, error) {
	if max <= 0 {
		max = DefaultMaxFrameSize
	}
	if max > MaxFrameSize {
		max = MaxFrameSize
	}
	var hdr [frameHeaderLen]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, io.EOF
		}
		return nil, fmt.Errorf("p2p: read frame header: %w", err)
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if uint64(n) > uint64(max) {
		return nil, fmt.Errorf("%w: %d bytes announced, limit %d", ErrFrameTooLarge, n, max)
	}
	if n <= readChunk {
		b := make([]byte, n)
		if _, err := io.ReadFull(r, b); err != nil {
			return nil, fmt.Errorf("p2p: read frame body: %w", unexpected(err))
		}
		return b, nil
	}
	var buf bytes.Buffer
	buf.Grow(readChunk)
	got, err := io.CopyN(&buf, r, int64(n))
	if err != nil {
		return nil, fmt.Errorf("p2p: read frame body (%d of %d bytes): %w", got, n, unexpected(err))
	}
	return buf.Bytes(), nil
}

// unexpected turns a bare EOF inside a frame into io.ErrUnexpectedEOF.
func unexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// WriteJSON encodes v as JSON and writes it as one frame.
func WriteJSON(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("p2p: encode json frame: %w", err)
	}
	return WriteFrame(w, b)
}

// ReadJSON reads one frame (bounded by max, as ReadFrame) and decodes it as
// JSON into v. A clean end of stream yields io.EOF.
func ReadJSON(r io.Reader, max int, v any) error {
	b, err := ReadFrame(r, max)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("p2p: decode json frame: %w", err)
	}
	return nil
}

// WriteDeadliner is what Pump needs of a stream.
type WriteDeadliner interface{ SetWriteDeadline(time.Time) error }

// Pump copies r to write in reads of up to chunk bytes as they come (a
// streaming response is relayed without waiting for a full buffer),
// setting s's write deadline idle ahead before each chunk. io.EOF ends it
// without error.
func Pump(r io.Reader, chunk int, idle time.Duration, s WriteDeadliner, write func([]byte) error) error {
	buf := make([]byte, chunk)
	for {
		k, rerr := r.Read(buf)
		if k > 0 {
			_ = s.SetWriteDeadline(time.Now().Add(idle))
			if err := write(buf[:k]); err != nil {
				return err
			}
		}
		if rerr != nil {
			if errors.Is(rerr, io.EOF) {
				return nil
			}
			return rerr
		}
	}
}

// Package shard carries a pipeline-sharded model's hidden states between
// its stages: the wire protocol (ProtocolID, length-prefixed binary frames
// with size caps), the stage server that runs a later stage's layers
// (Server) and the first stage's driver that sends each forward pass
// through the later stages (Pipeline, an engine.Remote). Both work over
// any byte stream — a TCP connection, an upgraded HTTP connection to a
// worker, a libp2p stream bridged by the node. See worker/DESIGN.md.
package shard

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
)

// ProtocolID names the protocol and its version: the libp2p protocol id
// of a stream carrying it, and the first thing a client sends.
const ProtocolID = "/rbee/shard/1.0.0"

// helloPairwise is the hello of a tensor head whose group is itself and
// the one member it says it to. The two then swap parts in every exchange
// (each sends its own, each assembles or sums both in shard order: the
// same bits on both sides), one crossing instead of the star's two (the
// member's part in, the result out). A Server of an older version refuses
// this hello and closes the connection; the head then dials again and
// says ProtocolID, the star's hello.
const helloPairwise = ProtocolID + " pairwise"

// Sentinel errors; the package wraps them with %w.
var (
	// ErrProtocol: a malformed, unexpected or oversized frame, or a peer
	// speaking another protocol or version.
	ErrProtocol = errors.New("shard: protocol error")
	// ErrStage: a stage failed a forward pass or its connection broke;
	// the pipeline reconnects on the next pass (a new Epoch).
	ErrStage = errors.New("shard: a shard of the group failed")
	// ErrMismatch: the stages do not make up the model (layer ranges with
	// gaps or overlaps, different shapes).
	ErrMismatch = errors.New("shard: stages do not fit together")
	// ErrClosed: the Pipeline or Server was closed.
	ErrClosed = errors.New("shard: closed")
)

// errHelloRefused: a stage answered the hello with an error (a Server of
// an older version refusing helloPairwise).
var errHelloRefused = errors.New("shard: the stage refused the hello")

// partsFrameLen is the length on the wire of a parts frame of one part of
// n values: the length prefix, type, id, part count, the part's length
// and its values.
func partsFrameLen(n int) int { return 4 + 1 + 4 + 2 + 4 + 4*n }

// Limits of the wire format, whatever the configured frame cap.
const (
	// DefaultMaxFrame bounds a frame's length: the logits of 256 rows of
	// a 152k vocabulary (156 MB) fit.
	DefaultMaxFrame = 256 << 20
	// MaxSegments bounds the sessions in one forward pass.
	MaxSegments = 4096
	// MaxRows bounds the rows (positions) of one forward pass.
	MaxRows = 1 << 16
	// MaxWidth bounds a row's length (embedding length or vocabulary).
	MaxWidth = 1 << 22
	// maxMessage bounds an error frame's text.
	maxMessage = 1024
)

// frameType is a frame's first byte.
type frameType uint8

const (
	frameHello   frameType = 1 // client → server: ProtocolID
	frameWelcome frameType = 2 // server → client: what the stage holds
	frameForward frameType = 3 // client → server: rows to run
	frameResult  frameType = 4 // server → client: output rows
	frameError   frameType = 5 // server → client: the forward pass failed
	frameBegin   frameType = 6 // tensor head → member: rows of a pass (segments, token ids)
	frameParts   frameType = 7 // tensor: a member's part (1), every shard's or their sum (head → member); pairwise: each side's own
)

// MaxParts bounds the shards of a tensor group (no model has more KV
// heads).
const MaxParts = 256

// dtypeF32 is little-endian IEEE-754 float32, the only data type of
// version 1.
const dtypeF32 = 1

// Error codes of an error frame.
const (
	codeBadRequest uint8 = 1 // malformed pass (shapes, positions)
	codeStateLost  uint8 = 2 // the stage does not hold the positions asked for
	codeInternal   uint8 = 3 // the stage failed (closed model)
)

// Segment is one first-stage session's rows in a forward pass.
type Segment struct {
	Session uint64
	Pos, N  uint32
	Logits  bool
}

// StageInfo is what a stage serves, sent in its welcome frame. For a
// tensor shard (Mode ModeTensor) Lo, Hi and Layers count KV heads: the
// shard's [Lo, Hi) of Layers.
type StageInfo struct {
	Mode                       uint8
	Lo, Hi, Layers, Dim, Vocab uint32
	// Instance is drawn at random by each Server: a client can tell a
	// restarted stage.
	Instance uint64
}

// frame is one decoded frame; which fields are set depends on typ.
type frame struct {
	typ   frameType
	proto string    // hello
	info  StageInfo // welcome
	id    uint32    // forward, result, error: the request it answers
	segs  []Segment // forward
	rows  uint32    // forward, result
	width uint32
	data  []float32
	// compute is the stage's compute time in nanoseconds (result).
	compute uint64
	code    uint8       // error
	msg     string      // error
	ids     []int32     // begin
	parts   [][]float32 // parts
}

// Modes of a StageInfo.
const (
	ModePipeline uint8 = 0
	ModeTensor   uint8 = 1
)

// writeFrame encodes f after a 4-byte big-endian length into buf (grown
// as needed and returned for reuse) and writes it in one Write.
func writeFrame(w io.Writer, f *frame, buf []byte) ([]byte, error) {
	b := append(buf[:0], 0, 0, 0, 0, byte(f.typ))
	switch f.typ {
	case frameHello:
		b = append(b, byte(len(f.proto)))
		b = append(b, f.proto...)
	case frameWelcome:
		b = append(b, f.info.Mode)
		for _, v := range []uint32{f.info.Lo, f.info.Hi, f.info.Layers, f.info.Dim, f.info.Vocab} {
			b = binary.BigEndian.AppendUint32(b, v)
		}
		b = binary.BigEndian.AppendUint64(b, f.info.Instance)
	case frameForward, frameResult:
		b = binary.BigEndian.AppendUint32(b, f.id)
		if f.typ == frameForward {
			b = appendSegs(b, f.segs)
		} else {
			b = binary.BigEndian.AppendUint64(b, f.compute)
		}
		b = append(b, dtypeF32)
		b = binary.BigEndian.AppendUint32(b, f.rows)
		b = binary.BigEndian.AppendUint32(b, f.width)
		for _, v := range f.data {
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
		}
	case frameBegin:
		b = binary.BigEndian.AppendUint32(b, f.id)
		b = appendSegs(b, f.segs)
		b = binary.BigEndian.AppendUint32(b, uint32(len(f.ids)))
		for _, id := range f.ids {
			b = binary.BigEndian.AppendUint32(b, uint32(id))
		}
	case frameParts:
		b = binary.BigEndian.AppendUint32(b, f.id)
		b = binary.BigEndian.AppendUint16(b, uint16(len(f.parts)))
		for _, p := range f.parts {
			b = binary.BigEndian.AppendUint32(b, uint32(len(p)))
			for _, v := range p {
				b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
			}
		}
	case frameError:
		b = binary.BigEndian.AppendUint32(b, f.id)
		b = append(b, f.code)
		msg := f.msg
		if len(msg) > maxMessage {
			msg = msg[:maxMessage]
		}
		b = binary.BigEndian.AppendUint16(b, uint16(len(msg)))
		b = append(b, msg...)
	default:
		return b, fmt.Errorf("%w: frame type %d", ErrProtocol, f.typ)
	}
	if len(b)-4 > math.MaxUint32 {
		return b, fmt.Errorf("%w: frame of %d bytes", ErrProtocol, len(b)-4)
	}
	binary.BigEndian.PutUint32(b, uint32(len(b)-4))
	_, err := w.Write(b)
	return b, err
}

func appendSegs(b []byte, segs []Segment) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(segs)))
	for _, s := range segs {
		b = binary.BigEndian.AppendUint64(b, s.Session)
		b = binary.BigEndian.AppendUint32(b, s.Pos)
		b = binary.BigEndian.AppendUint32(b, s.N)
		fl := byte(0)
		if s.Logits {
			fl = 1
		}
		b = append(b, fl)
	}
	return b
}

// parseSegs reads a segment list; it returns the rows they hold.
func parseSegs(r *reader, f *frame) (uint64, error) {
	f.segs = f.segs[:0]
	ns := int(r.u16())
	if ns == 0 || ns > MaxSegments || ns*17 > len(r.b) {
		return 0, fmt.Errorf("%w: %d segments", ErrProtocol, ns)
	}
	var total uint64
	for i := 0; i < ns; i++ {
		s := Segment{Session: r.u64(), Pos: r.u32(), N: r.u32()}
		switch fl := r.u8(); fl {
		case 0:
		case 1:
			s.Logits = true
		default:
			return 0, fmt.Errorf("%w: segment flags %#x", ErrProtocol, fl)
		}
		if s.N == 0 {
			return 0, fmt.Errorf("%w: empty segment", ErrProtocol)
		}
		total += uint64(s.N)
		f.segs = append(f.segs, s)
	}
	return total, nil
}

// readChunk is how much of a frame is read before the buffer grows
// again.
const readChunk = 1 << 20

// readFrame reads one frame of at most maxLen bytes into buf (grown as
// needed and returned for reuse) and parses it. f's slices are reused.
func readFrame(r io.Reader, maxLen int, buf []byte, f *frame) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return buf, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if uint64(n) > uint64(maxLen) {
		return buf, fmt.Errorf("%w: frame of %d bytes over the cap of %d", ErrProtocol, n, maxLen)
	}
	// The buffer grows as the bytes arrive, not to the length the peer
	// declares: a header alone pins no memory.
	buf = buf[:0]
	for len(buf) < int(n) {
		k := min(int(n)-len(buf), readChunk)
		if cap(buf)-len(buf) < k {
			nb := make([]byte, len(buf), min(int(n), max(2*cap(buf), len(buf)+k)))
			copy(nb, buf)
			buf = nb
		}
		got, err := io.ReadFull(r, buf[len(buf):len(buf)+k])
		buf = buf[:len(buf)+got]
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return buf, err
		}
	}
	return buf, parseFrame(buf, f)
}

// reader walks a frame's payload; the first short read sets err.
type reader struct {
	b   []byte
	err error
}

func (r *reader) take(n int) []byte {
	if r.err != nil || n > len(r.b) {
		r.err = fmt.Errorf("%w: frame truncated", ErrProtocol)
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) u8() uint8 {
	if v := r.take(1); v != nil {
		return v[0]
	}
	return 0
}

func (r *reader) u16() uint16 {
	if v := r.take(2); v != nil {
		return binary.BigEndian.Uint16(v)
	}
	return 0
}

func (r *reader) u32() uint32 {
	if v := r.take(4); v != nil {
		return binary.BigEndian.Uint32(v)
	}
	return 0
}

func (r *reader) u64() uint64 {
	if v := r.take(8); v != nil {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

// parseFrame decodes a payload (without its length prefix), checking every
// count against the bytes present and the wire limits before allocating.
func parseFrame(p []byte, f *frame) error {
	r := &reader{b: p}
	f.typ = frameType(r.u8())
	switch f.typ {
	case frameHello:
		f.proto = string(r.take(int(r.u8())))
	case frameWelcome:
		f.info = StageInfo{Mode: r.u8(), Lo: r.u32(), Hi: r.u32(), Layers: r.u32(), Dim: r.u32(), Vocab: r.u32(), Instance: r.u64()}
	case frameForward, frameResult:
		f.id = r.u32()
		f.segs = f.segs[:0]
		var total uint64
		if f.typ == frameForward {
			var err error
			if total, err = parseSegs(r, f); err != nil {
				return err
			}
		} else {
			f.compute = r.u64()
		}
		if dt := r.u8(); r.err == nil && dt != dtypeF32 {
			return fmt.Errorf("%w: data type %d", ErrProtocol, dt)
		}
		f.rows, f.width = r.u32(), r.u32()
		if r.err != nil {
			return r.err
		}
		if f.rows > MaxRows || f.width == 0 || f.width > MaxWidth {
			return fmt.Errorf("%w: %d rows of %d", ErrProtocol, f.rows, f.width)
		}
		if f.typ == frameForward && total != uint64(f.rows) {
			return fmt.Errorf("%w: segments hold %d rows, data %d", ErrProtocol, total, f.rows)
		}
		n := uint64(f.rows) * uint64(f.width)
		if n*4 != uint64(len(r.b)) {
			return fmt.Errorf("%w: %d bytes of data for %d×%d float32", ErrProtocol, len(r.b), f.rows, f.width)
		}
		if uint64(cap(f.data)) < n {
			f.data = make([]float32, n)
		}
		f.data = f.data[:n]
		for i := range f.data {
			f.data[i] = math.Float32frombits(binary.LittleEndian.Uint32(r.b[4*i:]))
		}
		r.b = nil
	case frameBegin:
		f.id = r.u32()
		total, err := parseSegs(r, f)
		if err != nil {
			return err
		}
		n := r.u32()
		if r.err == nil && (uint64(n) != total || n > MaxRows || uint64(n)*4 != uint64(len(r.b))) {
			return fmt.Errorf("%w: %d ids for %d rows in %d bytes", ErrProtocol, n, total, len(r.b))
		}
		f.ids = f.ids[:0]
		for i := uint32(0); i < n && r.err == nil; i++ {
			f.ids = append(f.ids, int32(r.u32()))
		}
	case frameParts:
		f.id = r.u32()
		np := int(r.u16())
		if r.err == nil && (np == 0 || np > MaxParts) {
			return fmt.Errorf("%w: %d parts", ErrProtocol, np)
		}
		// The parts reuse the slices of the frame's last parts when they
		// are large enough and at most twice as large: an exchange of a
		// pass allocates nothing once they have grown, and a connection
		// keeps no more than twice its current parts (the logits' part,
		// which can be megabytes, does not stay behind the hidden
		// states').
		keep := f.parts[:cap(f.parts)]
		f.parts = f.parts[:0]
		for i := 0; i < np && r.err == nil; i++ {
			n := uint64(r.u32())
			if r.err == nil && n*4 > uint64(len(r.b)) {
				return fmt.Errorf("%w: part of %d values in %d bytes", ErrProtocol, n, len(r.b))
			}
			raw := r.take(int(n) * 4)
			var p []float32
			if i < len(keep) && uint64(cap(keep[i])) >= n && uint64(cap(keep[i])) <= 2*n {
				p = keep[i][:n]
			} else {
				p = make([]float32, n)
			}
			for j := range p {
				p[j] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*j:]))
			}
			f.parts = append(f.parts, p)
		}
	case frameError:
		f.id = r.u32()
		f.code = r.u8()
		n := int(r.u16())
		if n > maxMessage {
			return fmt.Errorf("%w: error message of %d bytes", ErrProtocol, n)
		}
		f.msg = string(r.take(n))
	default:
		return fmt.Errorf("%w: frame type %d", ErrProtocol, f.typ)
	}
	if r.err != nil {
		return r.err
	}
	if len(r.b) != 0 {
		return fmt.Errorf("%w: %d trailing bytes in frame type %d", ErrProtocol, len(r.b), f.typ)
	}
	return nil
}

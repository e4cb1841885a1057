// Package gguf reads and writes GGUF files, the model container format of
// ggml/llama.cpp (versions 2 and 3, little-endian).
//
// Open memory-maps a file and validates its whole header before returning:
// every count and length is checked against the bytes that remain, tensor
// shapes, types and data ranges are checked against the file, and duplicate
// keys or tensor names are rejected, so hostile or truncated files give an
// error, never a panic or an allocation larger than the file. A *File is
// immutable after Open/Parse and safe for concurrent readers; Close must not
// race with readers of TensorData slices.
package gguf

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"os"
	"unsafe"

	"github.com/rbee-project/rbee/model/quant"
)

// Magic is the 4-byte file signature "GGUF".
const Magic = "GGUF"

// DefaultAlignment is the tensor data alignment when general.alignment is absent.
const DefaultAlignment = 32

// KeyAlignment is the metadata key that overrides the tensor data alignment.
const KeyAlignment = "general.alignment"

// Limits that keep hostile files from causing deep recursion or huge work.
const (
	// MaxDims is ggml's GGML_MAX_DIMS.
	MaxDims = 4
	// MaxNameLen mirrors ggml's GGML_MAX_NAME (64, including the NUL): longer
	// tensor names are rejected by ggml, so no valid file has them.
	MaxNameLen = 63
	// maxArrayDepth bounds nesting of arrays of arrays; real files use depth 1.
	maxArrayDepth = 8
	// MaxKVs bounds the metadata pairs. Real files have tens (a
	// vocabulary is one array); each pair costs about a hundred bytes of
	// Go values however small it is encoded (14 bytes), so a 37 MB file of
	// 2M pairs took 280 MB and 4 s to open.
	MaxKVs = 1 << 16
	// MaxTensors bounds the tensor count. The largest models have a few
	// thousand (MoE files with every expert a tensor, some ten thousand);
	// each costs ~200 bytes of Go values (name, dims, index), so a 37 MB
	// file of 1M empty tensors took 200 MB in a node importing it.
	MaxTensors = 1 << 16
	// MaxHeaderMemory bounds the memory the header's strings and arrays
	// take as Go values (a string costs its bytes plus 16, an array its
	// elements plus 24). The largest real vocabularies (Gemma's 262k
	// tokens, Llama 3's 128k tokens and 280k merges) take 10–15 MiB; a
	// 159 MB file of 10 million tokens took 570 MB to open and 1.2 GB to
	// refuse, in every node that imported or showed it.
	MaxHeaderMemory = 64 << 20
)

// Sentinel errors; returned errors wrap one of them with %w.
var (
	// ErrMagic: the file does not start with "GGUF".
	ErrMagic = errors.New("gguf: bad magic")
	// ErrVersion: unsupported version (v1, big-endian, or unknown).
	ErrVersion = errors.New("gguf: unsupported version")
	// ErrTruncated: the file ends before the header or a tensor's data does.
	ErrTruncated = errors.New("gguf: truncated file")
	// ErrInvalid: the header is malformed (bad type, count, shape, offset, alignment, duplicate ...).
	ErrInvalid = errors.New("gguf: invalid file")
	// ErrNotFound: no such tensor or key.
	ErrNotFound = errors.New("gguf: not found")
	// ErrClosed: the file has been closed.
	ErrClosed = errors.New("gguf: file closed")
	// ErrSplit: the parts of a split model do not make one model (order,
	// count, tensors), or a name is not a part's name (split.go).
	ErrSplit = errors.New("gguf: bad split model")
	// ErrChanged: the mapped file's size or modification time changed
	// since Open (File.Changed): written or truncated in place, so its
	// mapping no longer holds the bytes that were parsed.
	ErrChanged = errors.New("gguf: file changed in place while mapped")
)

// KV is one metadata key/value pair, in file order.
type KV struct {
	Key   string
	Value Value
}

// TensorInfo describes one tensor. Dims are in GGUF/ggml order: Dims[0]
// (ne0) is the length of a row, the fastest-varying dimension.
type TensorInfo struct {
	Name   string
	Dims   []uint64
	Type   quant.Type
	Offset uint64 // relative to the start of the data section (File.DataOffset)
	Size   uint64 // bytes of data, computed from Dims and Type
}

// NumElements returns the product of the dimensions.
func (t *TensorInfo) NumElements() uint64 {
	n := uint64(1)
	for _, d := range t.Dims {
		n *= d
	}
	return n
}

// File is a parsed GGUF file. All fields are read-only after parsing.
type File struct {
	Version    uint32
	Alignment  uint64
	DataOffset uint64 // absolute offset of the tensor data section
	KVs        []KV
	Tensors    []TensorInfo

	data    []byte // the whole file (mapping or caller's slice)
	kvIndex map[string]int
	tIndex  map[string]int
	unmap   func() error
	release func(start, end int) error // drops the mapped pages inside data[start:end] (Open on unix)
	advise  func(start, end int) error // asks for huge pages for data[start:end] (Open on unix)
	changed func() error               // the mapped file's filewatch.Watch.Check (Open on unix)
	closed  bool
}

// Size returns the length in bytes of the underlying file or slice.
func (f *File) Size() int64 { return int64(len(f.data)) }

// Close releases the memory mapping (a no-op for Parse). Slices returned by
// TensorData must not be used afterwards. Calling Close twice is harmless.
func (f *File) Close() error {
	if f.closed {
		return nil
	}
	f.closed = true
	f.data = nil
	if f.unmap != nil {
		err := f.unmap()
		f.unmap = nil
		return err
	}
	return nil
}

// Tensor returns the tensor with the given name.
func (f *File) Tensor(name string) (*TensorInfo, bool) {
	i, ok := f.tIndex[name]
	if !ok {
		return nil, false
	}
	return &f.Tensors[i], true
}

// TensorData returns t's bytes as a slice of the file (no copy). t must
// describe a tensor of f (normally from Tensor or Tensors); the range is
// bounds-checked again so a forged TensorInfo cannot read outside the file.
func (f *File) TensorData(t *TensorInfo) ([]byte, error) {
	if f.closed {
		return nil, ErrClosed
	}
	if t == nil {
		return nil, fmt.Errorf("%w: nil tensor", ErrNotFound)
	}
	start, ok1 := addU64(f.DataOffset, t.Offset)
	end, ok2 := addU64(start, t.Size)
	if !ok1 || !ok2 || end > uint64(len(f.data)) {
		return nil, fmt.Errorf("%w: tensor %q data [%d, %d) outside file of %d bytes", ErrTruncated, t.Name, start, end, len(f.data))
	}
	return f.data[start:end:end], nil
}

// AdviseHugePages asks for b, a part of the file's data (a slice of what
// TensorData returns), to be read and mapped in huge pages where the
// kernel can (internal/hugepage), for a caller that streams it again and
// again (the engine reads a weight matrix left in the file's layout on
// every decode step). Call it before b is first read: pages the page
// cache already holds stay as they are cached. The range is widened to
// whole pages. It is advice: a no-op for Parse and for an empty b, and
// without huge pages for files the mapping works as before. A b that is
// not part of the file's data is ErrNotFound.
func (f *File) AdviseHugePages(b []byte) error {
	if f.closed {
		return ErrClosed
	}
	if len(b) == 0 || f.advise == nil {
		return nil
	}
	lo := uintptr(unsafe.Pointer(unsafe.SliceData(f.data)))
	p := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	if p < lo || p-lo > uintptr(len(f.data)) || uintptr(len(b)) > uintptr(len(f.data))-(p-lo) {
		return fmt.Errorf("%w: %d bytes outside the file's data", ErrNotFound, len(b))
	}
	start := int(p - lo)
	return f.advise(start, start+len(b))
}

// ReleaseTensor tells the OS that the data pages of t are not needed for
// now, for callers that have copied what they use (a repacked weight
// matrix): with a mapped file (Open on unix) the whole pages inside t's data
// leave the process's resident memory (madvise MADV_DONTNEED; the mapping is
// shared and read-only, so nothing is lost) and are read back from the file
// if touched again. Pages shared with a neighbouring tensor are kept. A
// no-op for Parse and where Open reads the file into memory.
func (f *File) ReleaseTensor(t *TensorInfo) error {
	if _, err := f.TensorData(t); err != nil || f.release == nil {
		return err
	}
	start := f.DataOffset + t.Offset // in range: TensorData checked
	return f.release(int(start), int(start+t.Size))
}

// Changed returns nil while the file Open mapped has the size and
// modification time it had when opened, else an error wrapping ErrChanged
// (a write or truncation in place: reads of the mapping may then return
// other bytes than were parsed, or zeros past the new end without a
// fault). A rename over its name or its deletion is not a change: the
// mapping keeps the bytes opened. One fstat; nil for Parse, where Open
// reads the file into memory, and after Close.
func (f *File) Changed() error {
	if f.closed || f.changed == nil {
		return nil
	}
	if err := f.changed(); err != nil {
		return fmt.Errorf("%w: %w", ErrChanged, err)
	}
	return nil
}

// Get returns the value of a metadata key.
func (f *File) Get(key string) (Value, bool) {
	i, ok := f.kvIndex[key]
	if !ok {
		return Value{}, false
	}
	return f.KVs[i].Value, true
}

// Has reports whether the file has a metadata key, whatever its type.
func (f *File) Has(key string) bool {
	_, ok := f.kvIndex[key]
	return ok
}

// String returns a string metadata value.
func (f *File) String(key string) (string, bool) {
	v, ok := f.Get(key)
	if !ok {
		return "", false
	}
	s, ok := v.Data.(string)
	return s, ok
}

// Uint returns an integer metadata value (any integer type, non-negative) as uint64.
func (f *File) Uint(key string) (uint64, bool) {
	v, ok := f.Get(key)
	if !ok {
		return 0, false
	}
	return v.Uint()
}

// Float returns a float32/float64 (or integer) metadata value as float64.
func (f *File) Float(key string) (float64, bool) {
	v, ok := f.Get(key)
	if !ok {
		return 0, false
	}
	return v.Float()
}

// Bool returns a bool metadata value.
func (f *File) Bool(key string) (bool, bool) {
	v, ok := f.Get(key)
	if !ok {
		return false, false
	}
	b, ok := v.Data.(bool)
	return b, ok
}

// Strings returns a string-array metadata value. The slice is shared; do not modify it.
func (f *File) Strings(key string) ([]string, bool) {
	v, ok := f.Get(key)
	if !ok {
		return nil, false
	}
	s, ok := v.Data.([]string)
	return s, ok
}

// Float32s returns a float array (float32, or float64 converted) metadata value.
// A float32 array is returned shared; do not modify it.
func (f *File) Float32s(key string) ([]float32, bool) {
	v, ok := f.Get(key)
	if !ok {
		return nil, false
	}
	switch a := v.Data.(type) {
	case []float32:
		return a, true
	case []float64:
		out := make([]float32, len(a))
		for i, x := range a {
			out[i] = float32(x)
		}
		return out, true
	}
	return nil, false
}

// Bytes returns a uint8 or int8 array metadata value as bytes (a uint8
// array shared: do not modify it).
func (f *File) Bytes(key string) ([]byte, bool) {
	v, ok := f.Get(key)
	if !ok {
		return nil, false
	}
	switch a := v.Data.(type) {
	case []uint8:
		return a, true
	case []int8:
		out := make([]byte, len(a))
		for i, x := range a {
			out[i] = byte(x)
		}
		return out, true
	}
	return nil, false
}

// Int32s returns an integer array metadata value as []int32. An int32 array
// is returned shared (do not modify it); other integer arrays are converted
// when every element fits in int32 (unsigned values are reinterpreted if they
// fit in uint32, so a uint32 0xFFFFFFFF becomes -1, as in C).
func (f *File) Int32s(key string) ([]int32, bool) {
	v, ok := f.Get(key)
	if !ok {
		return nil, false
	}
	switch a := v.Data.(type) {
	case []int32:
		return a, true
	case []uint32:
		return convInts(a, func(x uint32) (int32, bool) { return int32(x), true })
	case []int8:
		return convInts(a, func(x int8) (int32, bool) { return int32(x), true })
	case []uint8:
		return convInts(a, func(x uint8) (int32, bool) { return int32(x), true })
	case []int16:
		return convInts(a, func(x int16) (int32, bool) { return int32(x), true })
	case []uint16:
		return convInts(a, func(x uint16) (int32, bool) { return int32(x), true })
	case []int64:
		return convInts(a, func(x int64) (int32, bool) { return int32(x), x >= math.MinInt32 && x <= math.MaxInt32 })
	case []uint64:
		return convInts(a, func(x uint64) (int32, bool) { return int32(x), x <= math.MaxUint32 })
	}
	return nil, false
}

func convInts[T any](a []T, conv func(T) (int32, bool)) ([]int32, bool) {
	out := make([]int32, len(a))
	for i, x := range a {
		v, ok := conv(x)
		if !ok {
			return nil, false
		}
		out[i] = v
	}
	return out, true
}

func addU64(a, b uint64) (uint64, bool) {
	s, c := bits.Add64(a, b, 0)
	return s, c == 0
}

func mulU64(a, b uint64) (uint64, bool) {
	hi, lo := bits.Mul64(a, b)
	return lo, hi == 0
}

func alignUp(x, a uint64) (uint64, bool) {
	s, ok := addU64(x, a-1)
	if !ok {
		return 0, false
	}
	return s / a * a, true
}

// Holds reports whether addr lies in the file's data (for Open, its
// mapping, whose last page runs past the data): a memory fault there is
// the file shrinking under the mapping, one elsewhere is not.
func (f *File) Holds(addr uintptr) bool {
	return holds(f.data, addr)
}

// holds reports whether addr lies in b or the rest of its last page.
func holds(b []byte, addr uintptr) bool {
	if len(b) == 0 {
		return false
	}
	lo := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	page := uintptr(os.Getpagesize())
	hi := (lo + uintptr(len(b)) + page - 1) / page * page
	return addr >= lo && addr < hi
}

// Holds reports whether addr lies in b or the rest of its last page (a
// mapping of a file as Open makes one).
func Holds(b []byte, addr uintptr) bool { return holds(b, addr) }

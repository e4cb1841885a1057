package gguf

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"math"

	"github.com/rbee-project/rbee/internal/atomicfile"
	"github.com/rbee-project/rbee/model/quant"
)

// Writer builds a GGUF file in memory order: metadata first, then tensors,
// each tensor's data padded to the alignment. It is not safe for concurrent use.
type Writer struct {
	// Version is the GGUF version written: 3 (default) or 2. Both have the
	// same little-endian layout.
	Version uint32

	kvs     []KV
	keys    map[string]bool
	tensors []wTensor
	names   map[string]bool
}

type wTensor struct {
	info TensorInfo
	data []byte
}

// NewWriter returns an empty version-3 Writer.
func NewWriter() *Writer {
	return &Writer{Version: 3, keys: map[string]bool{}, names: map[string]bool{}}
}

// AddKV adds a metadata pair. v may be a Value, or a Go value of type
// string, bool, uint8..uint64, int8..int64, int (stored as int64), uint
// (stored as uint64), float32, float64, or a slice of one of those
// ([]string, []float32, []int32, ...). Keys must be unique and non-empty.
// general.alignment must be a uint32 power of two; it sets the alignment.
func (w *Writer) AddKV(key string, v any) error {
	if key == "" {
		return fmt.Errorf("%w: empty key", ErrInvalid)
	}
	if w.keys[key] {
		return fmt.Errorf("%w: duplicate metadata key %q", ErrInvalid, key)
	}
	val, err := toValue(v)
	if err != nil {
		return fmt.Errorf("key %q: %w", key, err)
	}
	if key == KeyAlignment {
		a, ok := val.Data.(uint32)
		if !ok || a == 0 || a&(a-1) != 0 {
			return fmt.Errorf("%w: %s must be a uint32 power of two, got %v", ErrInvalid, KeyAlignment, v)
		}
	}
	w.keys[key] = true
	w.kvs = append(w.kvs, KV{Key: key, Value: val})
	return nil
}

func toValue(v any) (Value, error) {
	switch x := v.(type) {
	case Value:
		if x.Type == TypeArray {
			if !x.ArrayType.valid() {
				return Value{}, fmt.Errorf("%w: array element type %d", ErrInvalid, x.ArrayType)
			}
			return x, nil
		}
		if !x.Type.valid() {
			return Value{}, fmt.Errorf("%w: value type %d", ErrInvalid, x.Type)
		}
		return x, nil
	case uint8:
		return Value{Type: TypeUint8, Data: x}, nil
	case int8:
		return Value{Type: TypeInt8, Data: x}, nil
	case uint16:
		return Value{Type: TypeUint16, Data: x}, nil
	case int16:
		return Value{Type: TypeInt16, Data: x}, nil
	case uint32:
		return Value{Type: TypeUint32, Data: x}, nil
	case int32:
		return Value{Type: TypeInt32, Data: x}, nil
	case float32:
		return Value{Type: TypeFloat32, Data: x}, nil
	case bool:
		return Value{Type: TypeBool, Data: x}, nil
	case string:
		return Value{Type: TypeString, Data: x}, nil
	case uint64:
		return Value{Type: TypeUint64, Data: x}, nil
	case int64:
		return Value{Type: TypeInt64, Data: x}, nil
	case float64:
		return Value{Type: TypeFloat64, Data: x}, nil
	case int:
		return Value{Type: TypeInt64, Data: int64(x)}, nil
	case uint:
		return Value{Type: TypeUint64, Data: uint64(x)}, nil
	case []uint8:
		return arr(TypeUint8, x), nil
	case []int8:
		return arr(TypeInt8, x), nil
	case []uint16:
		return arr(TypeUint16, x), nil
	case []int16:
		return arr(TypeInt16, x), nil
	case []uint32:
		return arr(TypeUint32, x), nil
	case []int32:
		return arr(TypeInt32, x), nil
	case []float32:
		return arr(TypeFloat32, x), nil
	case []bool:
		return arr(TypeBool, x), nil
	case []string:
		return arr(TypeString, x), nil
	case []uint64:
		return arr(TypeUint64, x), nil
	case []int64:
		return arr(TypeInt64, x), nil
	case []float64:
		return arr(TypeFloat64, x), nil
	case []int:
		a := make([]int64, len(x))
		for i, e := range x {
			a[i] = int64(e)
		}
		return arr(TypeInt64, a), nil
	}
	return Value{}, fmt.Errorf("%w: unsupported metadata Go type %T", ErrInvalid, v)
}

func arr(et ValueType, data any) Value { return Value{Type: TypeArray, ArrayType: et, Data: data} }

// AddTensor adds a tensor. dims are in GGUF order (dims[0] = row length);
// data must hold exactly the bytes of that shape and type. data is not
// copied and must stay unchanged until the file is written.
func (w *Writer) AddTensor(name string, typ quant.Type, dims []uint64, data []byte) error {
	size, err := w.check(name, typ, dims)
	if err != nil {
		return err
	}
	if uint64(len(data)) != size {
		return fmt.Errorf("%w: tensor %q needs %d bytes, got %d", ErrInvalid, name, size, len(data))
	}
	w.add(name, typ, dims, size, data)
	return nil
}

// addInfo adds a tensor without its data: for a Writer whose header alone
// is written (PlanMerge); WriteTo would write no bytes for it.
func (w *Writer) addInfo(name string, typ quant.Type, dims []uint64) error {
	size, err := w.check(name, typ, dims)
	if err != nil {
		return err
	}
	w.add(name, typ, dims, size, nil)
	return nil
}

func (w *Writer) add(name string, typ quant.Type, dims []uint64, size uint64, data []byte) {
	w.names[name] = true
	w.tensors = append(w.tensors, wTensor{info: TensorInfo{Name: name, Dims: append([]uint64(nil), dims...), Type: typ, Size: size}, data: data})
}

// check checks a tensor AddTensor is given and returns its size in bytes.
func (w *Writer) check(name string, typ quant.Type, dims []uint64) (uint64, error) {
	if name == "" || len(name) > MaxNameLen {
		return 0, fmt.Errorf("%w: tensor name %q must have 1..%d bytes", ErrInvalid, name, MaxNameLen)
	}
	if w.names[name] {
		return 0, fmt.Errorf("%w: duplicate tensor name %q", ErrInvalid, name)
	}
	if len(dims) == 0 || len(dims) > MaxDims {
		return 0, fmt.Errorf("%w: tensor %q has %d dimensions (want 1..%d)", ErrInvalid, name, len(dims), MaxDims)
	}
	if !typ.Known() {
		return 0, fmt.Errorf("%w: tensor %q has unknown type %d", ErrInvalid, name, uint32(typ))
	}
	n := uint64(1)
	for _, d := range dims {
		var ok bool
		if n, ok = mulU64(n, d); !ok || n > math.MaxInt64 {
			return 0, fmt.Errorf("%w: tensor %q element count overflows", ErrInvalid, name)
		}
	}
	bs := uint64(typ.BlockSize())
	if dims[0]%bs != 0 {
		return 0, fmt.Errorf("%w: tensor %q row length %d is not a multiple of the %s block size %d", ErrInvalid, name, dims[0], typ, bs)
	}
	return n / bs * uint64(typ.BlockBytes()), nil
}

func (w *Writer) alignment() uint64 {
	for _, kv := range w.kvs {
		if kv.Key == KeyAlignment {
			return uint64(kv.Value.Data.(uint32))
		}
	}
	return DefaultAlignment
}

type countWriter struct {
	w   *bufio.Writer
	n   int64
	err error
}

func (c *countWriter) write(b []byte) {
	if c.err != nil {
		return
	}
	n, err := c.w.Write(b)
	c.n += int64(n)
	c.err = err
}

func (c *countWriter) u32(v uint32) { c.write(binary.LittleEndian.AppendUint32(nil, v)) }
func (c *countWriter) u64(v uint64) { c.write(binary.LittleEndian.AppendUint64(nil, v)) }
func (c *countWriter) str(s string) { c.u64(uint64(len(s))); c.write([]byte(s)) }

// Size returns the number of bytes WriteTo writes, without writing the
// tensor data (the header is encoded to count it).
func (w *Writer) Size() (int64, error) {
	c := &countWriter{w: bufio.NewWriterSize(io.Discard, 1<<16)}
	_, data, err := w.writeHeader(c)
	if err != nil {
		return 0, err
	}
	if c.err != nil {
		return 0, c.err
	}
	return c.n + int64(data), nil
}

// writeHeader writes everything before the first tensor's data, padding
// included, and returns each tensor's offset in the data section and the
// data section's size (each tensor padded to the alignment).
func (w *Writer) writeHeader(c *countWriter) (offsets []uint64, data uint64, err error) {
	if w.Version != 2 && w.Version != 3 {
		return nil, 0, fmt.Errorf("%w: cannot write version %d", ErrVersion, w.Version)
	}
	c.write([]byte(Magic))
	c.u32(w.Version)
	c.u64(uint64(len(w.tensors)))
	c.u64(uint64(len(w.kvs)))
	for _, kv := range w.kvs {
		c.str(kv.Key)
		c.u32(uint32(kv.Value.Type))
		if err := writeValue(c, kv.Value); err != nil {
			return nil, 0, fmt.Errorf("key %q: %w", kv.Key, err)
		}
	}
	align := w.alignment()
	off := uint64(0)
	offsets = make([]uint64, len(w.tensors))
	for i, t := range w.tensors {
		offsets[i] = off
		c.str(t.info.Name)
		c.u32(uint32(len(t.info.Dims)))
		for _, d := range t.info.Dims {
			c.u64(d)
		}
		c.u32(uint32(t.info.Type))
		c.u64(off)
		off = (off + t.info.Size + align - 1) / align * align
	}
	c.pad(align)
	return offsets, off, nil
}

func (c *countWriter) pad(align uint64) {
	if r := uint64(c.n) % align; r != 0 {
		c.write(make([]byte, align-r))
	}
}

// WriteTo writes the file to out and returns the number of bytes written.
func (w *Writer) WriteTo(out io.Writer) (int64, error) {
	c := &countWriter{w: bufio.NewWriterSize(out, 1<<16)}
	offsets, _, err := w.writeHeader(c)
	if err != nil {
		return c.n, err
	}
	align := w.alignment()
	base := uint64(c.n)
	for i, t := range w.tensors {
		if c.err != nil {
			break // out refused a write: that is the error, not the offsets
		}
		if uint64(c.n) != base+offsets[i] {
			return c.n, fmt.Errorf("gguf: internal error: tensor %q at %d, want %d", t.info.Name, uint64(c.n)-base, offsets[i])
		}
		c.write(t.data)
		c.pad(align)
	}
	if c.err != nil {
		return c.n, c.err
	}
	return c.n, c.w.Flush()
}

func writeValue(c *countWriter, v Value) error {
	le := binary.LittleEndian
	var b []byte
	switch x := v.Data.(type) {
	case uint8:
		b = []byte{x}
	case int8:
		b = []byte{byte(x)}
	case uint16:
		b = le.AppendUint16(nil, x)
	case int16:
		b = le.AppendUint16(nil, uint16(x))
	case uint32:
		b = le.AppendUint32(nil, x)
	case int32:
		b = le.AppendUint32(nil, uint32(x))
	case float32:
		b = le.AppendUint32(nil, math.Float32bits(x))
	case bool:
		if x {
			b = []byte{1}
		} else {
			b = []byte{0}
		}
	case string:
		c.str(x)
		return nil
	case uint64:
		b = le.AppendUint64(nil, x)
	case int64:
		b = le.AppendUint64(nil, uint64(x))
	case float64:
		b = le.AppendUint64(nil, math.Float64bits(x))
	default:
		if v.Type != TypeArray {
			return fmt.Errorf("%w: value of Go type %T", ErrInvalid, v.Data)
		}
		return writeArray(c, v)
	}
	if ValueType(v.Type).size() != len(b) {
		return fmt.Errorf("%w: value type %s does not match Go type %T", ErrInvalid, v.Type, v.Data)
	}
	c.write(b)
	return nil
}

func writeArray(c *countWriter, v Value) error {
	c.u32(uint32(v.ArrayType))
	c.u64(uint64(v.Len()))
	elem := func(d any) error { return writeValue(c, Value{Type: v.ArrayType, Data: d}) }
	var err error
	switch a := v.Data.(type) {
	case []Value:
		if v.ArrayType != TypeArray {
			return fmt.Errorf("%w: []Value elements need ArrayType array", ErrInvalid)
		}
		for _, e := range a {
			if e.Type != TypeArray {
				return fmt.Errorf("%w: nested element is not an array", ErrInvalid)
			}
			if err = writeValue(c, e); err != nil {
				return err
			}
		}
		return nil
	case []uint8:
		err = each(a, elem)
	case []int8:
		err = each(a, elem)
	case []uint16:
		err = each(a, elem)
	case []int16:
		err = each(a, elem)
	case []uint32:
		err = each(a, elem)
	case []int32:
		err = each(a, elem)
	case []float32:
		err = each(a, elem)
	case []bool:
		err = each(a, elem)
	case []string:
		err = each(a, elem)
	case []uint64:
		err = each(a, elem)
	case []int64:
		err = each(a, elem)
	case []float64:
		err = each(a, elem)
	default:
		return fmt.Errorf("%w: array of Go type %T", ErrInvalid, v.Data)
	}
	return err
}

func each[T any](a []T, f func(any) error) error {
	for _, e := range a {
		if err := f(e); err != nil {
			return err
		}
	}
	return nil
}

// WriteFile writes the file atomically: to a temporary file in the same
// directory, fsynced, then renamed over path.
func (w *Writer) WriteFile(path string) error {
	f, err := atomicfile.Create(path, 0o600)
	if err != nil {
		return fmt.Errorf("gguf: %w", err)
	}
	defer f.Abort()
	if _, err := w.WriteTo(f); err != nil {
		return err
	}
	if err := f.Commit(); err != nil {
		return fmt.Errorf("gguf: %w", err)
	}
	return nil
}

package gguf

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"math"
	"slices"

	"github.com/rbee-project/rbee/model/quant"
)

// reader decodes little-endian GGUF primitives from a byte slice; every read
// is bounds-checked and reports ErrTruncated instead of panicking.
type reader struct {
	b   []byte
	pos uint64
	err error
	mem uint64 // bytes of Go values the header's strings and arrays take so far
}

// charge counts n more bytes of Go values and fails once they pass
// MaxHeaderMemory: checked before each allocation, so a hostile header
// never takes more.
func (r *reader) charge(n uint64, what string) bool {
	if r.err != nil {
		return false
	}
	if n > MaxHeaderMemory-r.mem {
		r.fail(fmt.Errorf("%w: %s: the header's metadata takes more than %d MiB of memory", ErrInvalid, what, MaxHeaderMemory>>20))
		return false
	}
	r.mem += n
	return true
}

func (r *reader) remaining() uint64 { return uint64(len(r.b)) - r.pos }

func (r *reader) fail(err error) {
	if r.err == nil {
		r.err = err
	}
}

func (r *reader) take(n uint64, what string) []byte {
	if r.err != nil {
		return nil
	}
	if n > r.remaining() {
		r.fail(fmt.Errorf("%w: %s needs %d bytes at offset %d, %d left", ErrTruncated, what, n, r.pos, r.remaining()))
		return nil
	}
	s := r.b[r.pos : r.pos+n]
	r.pos += n
	return s
}

func (r *reader) u8(what string) uint8 {
	if b := r.take(1, what); b != nil {
		return b[0]
	}
	return 0
}

func (r *reader) u16(what string) uint16 {
	if b := r.take(2, what); b != nil {
		return binary.LittleEndian.Uint16(b)
	}
	return 0
}

func (r *reader) u32(what string) uint32 {
	if b := r.take(4, what); b != nil {
		return binary.LittleEndian.Uint32(b)
	}
	return 0
}

func (r *reader) u64(what string) uint64 {
	if b := r.take(8, what); b != nil {
		return binary.LittleEndian.Uint64(b)
	}
	return 0
}

// count reads an element count and checks that count elements of at least
// minSize bytes each can still fit in the file, which bounds allocations by
// the file size.
func (r *reader) count(minSize uint64, what string) uint64 {
	n := r.u64(what)
	if r.err != nil {
		return 0
	}
	if minSize > 0 && n > r.remaining()/minSize {
		r.fail(fmt.Errorf("%w: %s %d exceeds what the remaining %d bytes can hold", ErrTruncated, what, n, r.remaining()))
		return 0
	}
	return n
}

func (r *reader) str(what string) string { return r.strCharged(what, 16) }

// strCharged reads a string and charges its bytes plus overhead (its
// header, unless already charged with the array holding it).
func (r *reader) strCharged(what string, overhead uint64) string {
	n := r.count(1, what+" length")
	b := r.take(n, what)
	if r.err != nil || !r.charge(overhead+n, what) {
		return ""
	}
	return string(b)
}

// HeaderSize is how many leading bytes CheckHeader needs: magic and version.
const HeaderSize = 8

// CheckHeader checks that head (a file's first HeaderSize or more bytes)
// starts a GGUF file of a supported version: a cheap test before a file is
// copied or downloaded whole. The error never contains the bytes.
func CheckHeader(head []byte) error {
	if len(head) < HeaderSize {
		return fmt.Errorf("%w: %d bytes, a GGUF header has %d", ErrTruncated, len(head), HeaderSize)
	}
	if string(head[:4]) != Magic {
		return fmt.Errorf("%w: the file does not start with %q", ErrMagic, Magic)
	}
	return checkVersion(binary.LittleEndian.Uint32(head[4:8]))
}

func checkVersion(version uint32) error {
	switch {
	case version == 2 || version == 3:
		return nil
	case version == 1:
		return fmt.Errorf("%w: version 1 (32-bit counts) is obsolete", ErrVersion)
	case version&0xffff == 0 && bits32Swap(version) <= 3:
		return fmt.Errorf("%w: big-endian file (version %d byte-swapped)", ErrVersion, bits32Swap(version))
	default:
		return fmt.Errorf("%w: %d", ErrVersion, version)
	}
}

// Parse parses a GGUF file held in data. The returned File references data
// (tensor data is not copied), so data must stay unchanged while it is used.
func Parse(data []byte) (*File, error) {
	return parse(data, uint64(len(data)))
}

// ParseHeader parses the header of a GGUF file of size bytes from its
// first bytes, prefix, which must reach the start of the tensor data
// (File.DataOffset, or the end of a file that ends before it): a shorter
// prefix is ErrTruncated, and a longer one (or the whole file) serves as
// well. Everything Parse checks is checked, with the tensors' data bounded
// by size instead of the bytes at hand; TensorData of a tensor whose data
// lies past the prefix is ErrTruncated. It is for a caller that has (or
// downloads) only the beginning of a file: a split model's parts are laid
// out as one file from their headers before their data arrives (PlanMerge).
func ParseHeader(prefix []byte, size int64) (*File, error) {
	if size < int64(len(prefix)) {
		return nil, fmt.Errorf("%w: a prefix of %d bytes of a %d-byte file", ErrInvalid, len(prefix), size)
	}
	f, err := parse(prefix, uint64(size))
	if err != nil {
		return nil, err
	}
	if end := min(f.DataOffset, uint64(size)); end > uint64(len(prefix)) {
		return nil, fmt.Errorf("%w: the header ends at %d, %d bytes at hand", ErrTruncated, end, len(prefix))
	}
	return f, nil
}

// parse is Parse of data, the first bytes of a file of size bytes (the
// whole file when size is len(data)).
func parse(data []byte, size uint64) (*File, error) {
	r := &reader{b: data}
	magic := r.take(4, "magic")
	if r.err != nil {
		return nil, r.err
	}
	if string(magic) != Magic {
		// The bytes read are never echoed: the file may be anything (a
		// secret that a request named), and errors travel to clients.
		return nil, fmt.Errorf("%w: the file does not start with %q", ErrMagic, Magic)
	}
	version := r.u32("version")
	if r.err != nil {
		return nil, r.err
	}
	if err := checkVersion(version); err != nil {
		return nil, err
	}
	f := &File{Version: version, Alignment: DefaultAlignment}

	// Minimum encoded sizes, used to cap counts against the remaining bytes.
	const (
		minKV     = 8 + 4 + 1         // key length, type, 1-byte value
		minTensor = 8 + 4 + 8 + 4 + 8 // name length, n_dims, one dim, type, offset
	)
	nTensors := r.count(0, "tensor count")
	nKV := r.count(minKV, "metadata count")
	if r.err != nil {
		return nil, r.err
	}
	if nKV > MaxKVs {
		return nil, fmt.Errorf("%w: %d metadata pairs (at most %d)", ErrInvalid, nKV, MaxKVs)
	}
	if nTensors > r.remaining()/minTensor {
		return nil, fmt.Errorf("%w: tensor count %d exceeds what the file can hold", ErrTruncated, nTensors)
	}
	if nTensors > MaxTensors {
		return nil, fmt.Errorf("%w: %d tensors (at most %d)", ErrInvalid, nTensors, MaxTensors)
	}

	f.KVs = make([]KV, 0, nKV)
	f.kvIndex = make(map[string]int, nKV)
	for i := uint64(0); i < nKV; i++ {
		key := r.str("metadata key")
		if r.err != nil {
			return nil, r.err
		}
		if key == "" {
			return nil, fmt.Errorf("%w: metadata %d has an empty key", ErrInvalid, i)
		}
		if _, dup := f.kvIndex[key]; dup {
			return nil, fmt.Errorf("%w: duplicate metadata key %q", ErrInvalid, key)
		}
		vt := ValueType(r.u32("value type"))
		v := r.value(vt, 0)
		if r.err != nil {
			return nil, fmt.Errorf("metadata %q: %w", key, r.err)
		}
		f.kvIndex[key] = len(f.KVs)
		f.KVs = append(f.KVs, KV{Key: key, Value: v})
	}

	if v, ok := f.Get(KeyAlignment); ok {
		a, isU32 := v.Data.(uint32)
		if !isU32 {
			return nil, fmt.Errorf("%w: %s has type %s, want uint32", ErrInvalid, KeyAlignment, v.Type)
		}
		if a == 0 || a&(a-1) != 0 {
			return nil, fmt.Errorf("%w: %s = %d is not a power of two", ErrInvalid, KeyAlignment, a)
		}
		f.Alignment = uint64(a)
	}

	f.Tensors = make([]TensorInfo, 0, nTensors)
	f.tIndex = make(map[string]int, nTensors)
	for i := uint64(0); i < nTensors; i++ {
		t, err := r.tensorInfo()
		if err != nil {
			return nil, fmt.Errorf("tensor %d: %w", i, err)
		}
		if _, dup := f.tIndex[t.Name]; dup {
			return nil, fmt.Errorf("%w: duplicate tensor name %q", ErrInvalid, t.Name)
		}
		if t.Offset%f.Alignment != 0 {
			return nil, fmt.Errorf("%w: tensor %q offset %d is not a multiple of the alignment %d", ErrInvalid, t.Name, t.Offset, f.Alignment)
		}
		f.tIndex[t.Name] = len(f.Tensors)
		f.Tensors = append(f.Tensors, t)
	}

	dataOff, ok := alignUp(r.pos, f.Alignment)
	if !ok {
		return nil, fmt.Errorf("%w: data offset overflows", ErrInvalid)
	}
	f.DataOffset = dataOff
	for i := range f.Tensors {
		t := &f.Tensors[i]
		start, ok1 := addU64(dataOff, t.Offset)
		end, ok2 := addU64(start, t.Size)
		if !ok1 || !ok2 || end > size {
			return nil, fmt.Errorf("%w: tensor %q data [offset %d, %d bytes] extends past the end of the %d-byte file", ErrTruncated, t.Name, t.Offset, t.Size, size)
		}
	}
	// Tensors must not share bytes (ggml writes them one after another;
	// llama.cpp refuses any other layout): tensors aliasing one range
	// would make a small file claim any number of parameters.
	order := make([]int, 0, len(f.Tensors))
	for i := range f.Tensors {
		if f.Tensors[i].Size > 0 {
			order = append(order, i)
		}
	}
	slices.SortFunc(order, func(a, b int) int { return cmp.Compare(f.Tensors[a].Offset, f.Tensors[b].Offset) })
	for k := 1; k < len(order); k++ {
		p, t := &f.Tensors[order[k-1]], &f.Tensors[order[k]]
		if p.Offset+p.Size > t.Offset {
			return nil, fmt.Errorf("%w: tensor %q data [offset %d, %d bytes] overlaps tensor %q at offset %d", ErrInvalid, p.Name, p.Offset, p.Size, t.Name, t.Offset)
		}
	}
	f.data = data
	return f, nil
}

func bits32Swap(v uint32) uint32 {
	return v>>24 | (v>>8)&0xff00 | (v<<8)&0xff0000 | v<<24
}

func (r *reader) tensorInfo() (TensorInfo, error) {
	var t TensorInfo
	t.Name = r.str("tensor name")
	if r.err != nil {
		return t, r.err
	}
	if len(t.Name) > MaxNameLen {
		return t, fmt.Errorf("%w: tensor name of %d bytes is longer than %d", ErrInvalid, len(t.Name), MaxNameLen)
	}
	nd := r.u32("n_dims")
	if r.err != nil {
		return t, r.err
	}
	if nd == 0 || nd > MaxDims {
		return t, fmt.Errorf("%w: tensor %q has %d dimensions (want 1..%d)", ErrInvalid, t.Name, nd, MaxDims)
	}
	t.Dims = make([]uint64, nd)
	n := uint64(1)
	for j := range t.Dims {
		d := r.u64("dimension")
		if r.err != nil {
			return t, r.err
		}
		if d > math.MaxInt64 {
			return t, fmt.Errorf("%w: tensor %q dimension %d = %d is negative as int64", ErrInvalid, t.Name, j, d)
		}
		t.Dims[j] = d
		var ok bool
		if n, ok = mulU64(n, d); !ok || n > math.MaxInt64 {
			return t, fmt.Errorf("%w: tensor %q element count overflows", ErrInvalid, t.Name)
		}
	}
	t.Type = quant.Type(r.u32("tensor type"))
	t.Offset = r.u64("tensor offset")
	if r.err != nil {
		return t, r.err
	}
	if !t.Type.Known() {
		return t, fmt.Errorf("%w: tensor %q has unknown type %d", ErrInvalid, t.Name, uint32(t.Type))
	}
	bs, bb := uint64(t.Type.BlockSize()), uint64(t.Type.BlockBytes())
	if t.Dims[0]%bs != 0 {
		return t, fmt.Errorf("%w: tensor %q row length %d is not a multiple of the %s block size %d", ErrInvalid, t.Name, t.Dims[0], t.Type, bs)
	}
	size, ok := mulU64(n/bs, bb)
	if !ok {
		return t, fmt.Errorf("%w: tensor %q byte size overflows", ErrInvalid, t.Name)
	}
	t.Size = size
	return t, nil
}

// value decodes one value of type vt; depth counts array nesting.
func (r *reader) value(vt ValueType, depth int) Value {
	v := Value{Type: vt}
	switch vt {
	case TypeUint8:
		v.Data = r.u8("uint8")
	case TypeInt8:
		v.Data = int8(r.u8("int8"))
	case TypeUint16:
		v.Data = r.u16("uint16")
	case TypeInt16:
		v.Data = int16(r.u16("int16"))
	case TypeUint32:
		v.Data = r.u32("uint32")
	case TypeInt32:
		v.Data = int32(r.u32("int32"))
	case TypeFloat32:
		v.Data = math.Float32frombits(r.u32("float32"))
	case TypeBool:
		b := r.u8("bool")
		if r.err == nil && b > 1 {
			r.fail(fmt.Errorf("%w: bool value %d", ErrInvalid, b))
		}
		v.Data = b == 1
	case TypeString:
		v.Data = r.str("string")
	case TypeUint64:
		v.Data = r.u64("uint64")
	case TypeInt64:
		v.Data = int64(r.u64("int64"))
	case TypeFloat64:
		v.Data = math.Float64frombits(r.u64("float64"))
	case TypeArray:
		if depth >= maxArrayDepth {
			r.fail(fmt.Errorf("%w: arrays nested deeper than %d", ErrInvalid, maxArrayDepth))
			return v
		}
		et := ValueType(r.u32("array element type"))
		if r.err != nil {
			return v
		}
		if !et.valid() {
			r.fail(fmt.Errorf("%w: unknown array element type %d", ErrInvalid, uint32(et)))
			return v
		}
		v.ArrayType = et
		v.Data = r.array(et, depth)
	default:
		r.fail(fmt.Errorf("%w: unknown value type %d", ErrInvalid, uint32(vt)))
	}
	return v
}

func readFixed[T any](r *reader, n uint64, size uint64, what string, dec func([]byte) T) []T {
	b := r.take(n*size, what) // n*size cannot overflow: n <= remaining/size
	if r.err != nil || !r.charge(24+n*size, what) {
		return nil
	}
	out := make([]T, n)
	for i := range out {
		out[i] = dec(b[uint64(i)*size:])
	}
	return out
}

func (r *reader) array(et ValueType, depth int) any {
	minSize := uint64(et.size())
	switch et {
	case TypeString:
		minSize = 8
	case TypeArray:
		minSize = 12
	}
	n := r.count(minSize, "array length")
	if r.err != nil {
		return nil
	}
	le := binary.LittleEndian
	switch et {
	case TypeUint8:
		return readFixed(r, n, 1, "uint8 array", func(b []byte) uint8 { return b[0] })
	case TypeInt8:
		return readFixed(r, n, 1, "int8 array", func(b []byte) int8 { return int8(b[0]) })
	case TypeBool:
		a := readFixed(r, n, 1, "bool array", func(b []byte) bool { return b[0] != 0 })
		if r.err == nil {
			for _, c := range r.b[r.pos-n : r.pos] {
				if c > 1 {
					r.fail(fmt.Errorf("%w: bool value %d", ErrInvalid, c))
					return nil
				}
			}
		}
		return a
	case TypeUint16:
		return readFixed(r, n, 2, "uint16 array", le.Uint16)
	case TypeInt16:
		return readFixed(r, n, 2, "int16 array", func(b []byte) int16 { return int16(le.Uint16(b)) })
	case TypeUint32:
		return readFixed(r, n, 4, "uint32 array", le.Uint32)
	case TypeInt32:
		return readFixed(r, n, 4, "int32 array", func(b []byte) int32 { return int32(le.Uint32(b)) })
	case TypeFloat32:
		return readFixed(r, n, 4, "float32 array", func(b []byte) float32 { return math.Float32frombits(le.Uint32(b)) })
	case TypeUint64:
		return readFixed(r, n, 8, "uint64 array", le.Uint64)
	case TypeInt64:
		return readFixed(r, n, 8, "int64 array", func(b []byte) int64 { return int64(le.Uint64(b)) })
	case TypeFloat64:
		return readFixed(r, n, 8, "float64 array", func(b []byte) float64 { return math.Float64frombits(le.Uint64(b)) })
	case TypeString:
		if !r.charge(24+n*16, "string array") { // 16: a string's header
			return nil
		}
		out := make([]string, n)
		for i := range out {
			out[i] = r.strCharged("string array element", 0)
			if r.err != nil {
				return nil
			}
		}
		return out
	case TypeArray:
		if !r.charge(24+n*24, "array of arrays") { // 24: a Value
			return nil
		}
		out := make([]Value, n)
		for i := range out {
			out[i] = r.value(TypeArray, depth+1)
			if r.err != nil {
				return nil
			}
		}
		return out
	}
	return nil
}

package gguf

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/rbee-project/rbee/model/quant"
	"github.com/stretchr/testify/require"
)

// hdr builds a raw GGUF byte stream piece by piece for hostile-input tests.
type hdr struct{ bytes.Buffer }

func (h *hdr) u32(v uint32) *hdr  { binary.Write(&h.Buffer, binary.LittleEndian, v); return h }
func (h *hdr) u64(v uint64) *hdr  { binary.Write(&h.Buffer, binary.LittleEndian, v); return h }
func (h *hdr) str(s string) *hdr  { h.u64(uint64(len(s))); h.WriteString(s); return h }
func (h *hdr) raw(b ...byte) *hdr { h.Write(b); return h }

func start(version uint32, nTensors, nKV uint64) *hdr {
	h := &hdr{}
	h.WriteString("GGUF")
	return h.u32(version).u64(nTensors).u64(nKV)
}

// tensor appends a tensor info.
func (h *hdr) tensor(name string, dims []uint64, typ uint32, off uint64) *hdr {
	h.str(name).u32(uint32(len(dims)))
	for _, d := range dims {
		h.u64(d)
	}
	return h.u32(typ).u64(off)
}

func (h *hdr) pad(align int) *hdr {
	for h.Len()%align != 0 {
		h.WriteByte(0)
	}
	return h
}

func TestParseRejectsHostileInput(t *testing.T) {
	valid := start(3, 1, 1).str("a").u32(uint32(TypeUint32)).u32(7).tensor("t", []uint64{4}, 0, 0).pad(32).raw(make([]byte, 16)...).Bytes()
	_, err := Parse(valid)
	require.NoError(t, err, "the base case must parse")

	cases := []struct {
		name string
		data []byte
		want error
	}{
		{"empty", nil, ErrTruncated},
		{"short magic", []byte("GG"), ErrTruncated},
		{"bad magic", []byte("GGML\x03\x00\x00\x00"), ErrMagic},
		{"no version", []byte("GGUF"), ErrTruncated},
		{"version 1", start(1, 0, 0).Bytes(), ErrVersion},
		{"version 4", start(4, 0, 0).Bytes(), ErrVersion},
		{"big-endian v3", append([]byte("GGUF"), 0, 0, 0, 3), ErrVersion},
		{"no counts", start(3, 0, 0).Bytes()[:12], ErrTruncated},
		{"huge kv count", start(3, 0, 1<<60).Bytes(), ErrTruncated},
		{"huge tensor count", start(3, 1<<62, 0).Bytes(), ErrTruncated},
		{"key length past end", start(3, 0, 1).u64(1<<40).raw(0, 0, 0, 0, 0, 0, 0, 0, 0).Bytes(), ErrTruncated},
		{"empty key", start(3, 0, 1).str("").u32(0).raw(1).Bytes(), ErrInvalid},
		{"unknown value type", start(3, 0, 1).str("k").u32(13).raw(0, 0, 0, 0).Bytes(), ErrInvalid},
		{"truncated value", start(3, 0, 1).str("k").u32(uint32(TypeUint64)).raw(1, 2).Bytes(), ErrTruncated},
		{"bad bool", start(3, 0, 1).str("k").u32(uint32(TypeBool)).raw(2).Bytes(), ErrInvalid},
		{"duplicate key", start(3, 0, 2).str("k").u32(0).raw(1).str("k").u32(0).raw(2).Bytes(), ErrInvalid},
		{"huge array", start(3, 0, 1).str("k").u32(uint32(TypeArray)).u32(uint32(TypeUint32)).u64(1<<61).raw(0, 0, 0, 0).Bytes(), ErrTruncated},
		{"huge string array", start(3, 0, 1).str("k").u32(uint32(TypeArray)).u32(uint32(TypeString)).u64(1 << 40).raw(make([]byte, 64)...).Bytes(), ErrTruncated},
		{"bad array elem type", start(3, 0, 1).str("k").u32(uint32(TypeArray)).u32(99).u64(0).Bytes(), ErrInvalid},
		{"deep nesting", deepArray(100), ErrInvalid},
		{"string past end", start(3, 0, 1).str("k").u32(uint32(TypeString)).u64(100).raw('x').Bytes(), ErrTruncated},
		{"alignment not u32", start(3, 0, 1).str(KeyAlignment).u32(uint32(TypeUint64)).u64(32).Bytes(), ErrInvalid},
		{"alignment zero", start(3, 0, 1).str(KeyAlignment).u32(uint32(TypeUint32)).u32(0).Bytes(), ErrInvalid},
		{"alignment not power of two", start(3, 0, 1).str(KeyAlignment).u32(uint32(TypeUint32)).u32(24).Bytes(), ErrInvalid},
		{"zero dims", start(3, 1, 0).tensor("t", nil, 0, 0).pad(32).raw(make([]byte, 64)...).Bytes(), ErrInvalid},
		{"five dims", start(3, 1, 0).tensor("t", []uint64{1, 1, 1, 1, 1}, 0, 0).pad(32).raw(make([]byte, 64)...).Bytes(), ErrInvalid},
		{"unknown tensor type", start(3, 1, 0).tensor("t", []uint64{4}, 4, 0).pad(32).raw(make([]byte, 64)...).Bytes(), ErrInvalid},
		{"row not multiple of block", start(3, 1, 0).tensor("t", []uint64{31}, uint32(quant.Q4_0), 0).pad(32).raw(make([]byte, 64)...).Bytes(), ErrInvalid},
		{"element count overflow", start(3, 1, 0).tensor("t", []uint64{1 << 32, 1 << 32}, 0, 0).pad(32).raw(make([]byte, 64)...).Bytes(), ErrInvalid},
		{"negative dim", start(3, 1, 0).tensor("t", []uint64{1 << 63}, 0, 0).pad(32).raw(make([]byte, 64)...).Bytes(), ErrInvalid},
		{"byte size overflow", start(3, 1, 0).tensor("t", []uint64{1 << 31, 1 << 31}, 0, 0).pad(32).raw(make([]byte, 64)...).Bytes(), ErrInvalid},
		{"huge but representable tensor", start(3, 1, 0).tensor("t", []uint64{1 << 30, 1 << 20}, 0, 0).pad(32).raw(make([]byte, 64)...).Bytes(), ErrTruncated},
		{"data past end", start(3, 1, 0).tensor("t", []uint64{64}, 0, 0).pad(32).raw(make([]byte, 64)...).Bytes(), ErrTruncated},
		{"offset past end", start(3, 1, 0).tensor("t", []uint64{4}, 0, 1<<40).pad(32).raw(make([]byte, 64)...).Bytes(), ErrTruncated},
		{"offset overflow", start(3, 1, 0).tensor("t", []uint64{4}, 0, ^uint64(0)-31).pad(32).raw(make([]byte, 64)...).Bytes(), ErrTruncated},
		{"misaligned offset", start(3, 1, 0).tensor("t", []uint64{4}, 0, 4).pad(32).raw(make([]byte, 64)...).Bytes(), ErrInvalid},
		{"too many metadata pairs", manyKVs(MaxKVs + 1), ErrInvalid},
		{"too many tensors", manyTensors(MaxTensors + 1), ErrInvalid},
		{"overlapping tensors", start(3, 2, 0).tensor("a", []uint64{16}, 0, 0).tensor("b", []uint64{4}, 0, 32).pad(32).raw(make([]byte, 64)...).Bytes(), ErrInvalid},
		{"aliased tensors", start(3, 2, 0).tensor("a", []uint64{4}, 0, 0).tensor("b", []uint64{4}, 0, 0).pad(32).raw(make([]byte, 64)...).Bytes(), ErrInvalid},
		{"duplicate tensor", start(3, 2, 0).tensor("t", []uint64{4}, 0, 0).tensor("t", []uint64{4}, 0, 32).pad(32).raw(make([]byte, 64)...).Bytes(), ErrInvalid},
		{"long tensor name", start(3, 1, 0).tensor(string(bytes.Repeat([]byte{'n'}, 64)), []uint64{4}, 0, 0).pad(32).raw(make([]byte, 64)...).Bytes(), ErrInvalid},
		{"truncated tensor info", start(3, 1, 0).str("t").u32(2).u64(4).Bytes(), ErrTruncated},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f, err := Parse(c.data)
			require.Nil(t, f)
			require.ErrorIs(t, err, c.want)
		})
	}
	// Every truncation of a real file must fail cleanly.
	real, err := os.ReadFile("../../testdata/gguf/stories260K-quant/stories260K-Q4_0.gguf")
	require.NoError(t, err)
	for n := 0; n < len(real); n += 1 + n/8 {
		_, err := Parse(real[:n])
		require.Error(t, err, "prefix of %d bytes", n)
	}
	full, err := Parse(real)
	require.NoError(t, err)
	var end uint64
	for _, ti := range full.Tensors {
		end = max(end, full.DataOffset+ti.Offset+ti.Size)
	}
	_, err = Parse(real[:end-1])
	require.ErrorIs(t, err, ErrTruncated)
}

// TestParseBoundsHeaderMemory: a file's metadata cannot make Parse hold
// more than MaxHeaderMemory of Go values (a 159 MB file of 10 million
// tokens took 570 MB to open), whether one array or many pairs hold it;
// the refusal comes before the allocation. Real vocabularies parse.
func TestParseBoundsHeaderMemory(t *testing.T) {
	strs := func(h *hdr, key string, n int) *hdr {
		h.str(key).u32(uint32(TypeArray)).u32(uint32(TypeString)).u64(uint64(n))
		h.Write(make([]byte, 8*n)) // n empty strings: 8 bytes in the file, 16 in memory
		return h
	}
	n := MaxHeaderMemory/16 + 1
	third := MaxHeaderMemory / 16 / 3
	arrays := MaxHeaderMemory/24 + 1
	cases := []struct {
		name string
		data []byte
	}{
		{"one string array", strs(start(3, 0, 1), "k", n).Bytes()},
		{"three string arrays", strs(strs(strs(start(3, 0, 3), "a", third), "b", third), "c", third+4).Bytes()},
		{"array of empty arrays", func() []byte {
			h := start(3, 0, 1).str("k").u32(uint32(TypeArray)).u32(uint32(TypeArray)).u64(uint64(arrays))
			for range arrays {
				h.u32(uint32(TypeUint8)).u64(0)
			}
			return h.Bytes()
		}()},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse(c.data)
			require.ErrorIs(t, err, ErrInvalid)
			require.ErrorContains(t, err, "more than 64 MiB")
		})
	}
	for _, name := range []string{"ggml-vocab-qwen2.gguf", "ggml-vocab-gpt-2.gguf", "ggml-vocab-llama-spm.gguf"} {
		f, err := Open("../../testdata/tokenizer/" + name)
		require.NoError(t, err, name)
		require.NoError(t, f.Close())
	}
}

// manyKVs is a file of n one-byte metadata pairs.
func manyKVs(n int) []byte {
	h := start(3, 0, uint64(n))
	for i := 0; i < n; i++ {
		h.str(strconv.Itoa(i)).u32(uint32(TypeUint8)).raw(1)
	}
	return h.Bytes()
}

// manyTensors is a file of n empty tensors.
func manyTensors(n int) []byte {
	h := start(3, uint64(n), 0)
	for i := 0; i < n; i++ {
		h.tensor(strconv.Itoa(i), []uint64{0}, 0, 0)
	}
	return h.pad(32).Bytes()
}

func deepArray(depth int) []byte {
	h := start(3, 0, 1).str("k").u32(uint32(TypeArray))
	for i := 0; i < depth; i++ {
		h.u32(uint32(TypeArray)).u64(1)
	}
	h.u32(uint32(TypeUint8)).u64(0)
	return h.Bytes()
}

func TestWriterRoundTrip(t *testing.T) {
	for _, version := range []uint32{2, 3} {
		w := NewWriter()
		w.Version = version
		nested := Value{Type: TypeArray, ArrayType: TypeArray, Data: []Value{
			{Type: TypeArray, ArrayType: TypeInt16, Data: []int16{-1, 2}},
			{Type: TypeArray, ArrayType: TypeString, Data: []string{"x"}},
		}}
		kvs := []struct {
			key string
			v   any
		}{
			{"u8", uint8(200)}, {"i8", int8(-3)}, {"u16", uint16(60000)}, {"i16", int16(-300)},
			{"u32", uint32(4e9)}, {"i32", int32(-7)}, {"f32", float32(1.5)}, {"b", true},
			{"s", "héllo"}, {"u64", uint64(1 << 60)}, {"i64", int64(-1 << 60)}, {"f64", 2.25},
			{"int", 42}, {"strs", []string{"a", "", "ccc"}}, {"f32s", []float32{1, -2}}, {"i32s", []int32{-1, 5}},
			{"u32s", []uint32{1, 0xFFFFFFFF}}, {"bools", []bool{true, false}}, {"u8s", []uint8{1, 2}},
			{"i8s", []int8{-1, 3}}, {"f64s", []float64{0.5}}, {"nested", nested}, {KeyAlignment, uint32(64)},
		}
		for _, kv := range kvs {
			require.NoError(t, w.AddKV(kv.key, kv.v), kv.key)
		}
		require.ErrorIs(t, w.AddKV("u8", uint8(1)), ErrInvalid)
		require.ErrorIs(t, w.AddKV("bad", struct{}{}), ErrInvalid)

		src := make([]float32, 64*3)
		for i := range src {
			src[i] = float32(i%17) - 8
		}
		q8 := make([]byte, 3*2*34)
		require.NoError(t, quant.Quantize(quant.Q8_0, src, q8))
		f32 := make([]byte, 5*4)
		require.NoError(t, w.AddTensor("a.weight", quant.Q8_0, []uint64{64, 3}, q8))
		require.NoError(t, w.AddTensor("b", quant.F32, []uint64{5}, f32))
		require.ErrorIs(t, w.AddTensor("b", quant.F32, []uint64{5}, f32), ErrInvalid)
		require.ErrorIs(t, w.AddTensor("c", quant.F32, []uint64{5}, f32[:4]), ErrInvalid)
		require.ErrorIs(t, w.AddTensor("d", quant.Q8_0, []uint64{33}, make([]byte, 34)), ErrInvalid)

		path := filepath.Join(t.TempDir(), "rt.gguf")
		require.NoError(t, w.WriteFile(path))
		f, err := Open(path)
		require.NoError(t, err)
		require.Equal(t, version, f.Version)
		require.EqualValues(t, 64, f.Alignment)
		require.EqualValues(t, 0, f.DataOffset%64)
		require.Len(t, f.KVs, len(kvs))
		for i, kv := range kvs {
			require.Equal(t, kv.key, f.KVs[i].Key)
		}
		u, ok := f.Uint("u32")
		require.True(t, ok)
		require.EqualValues(t, 4e9, u)
		_, ok = f.Uint("i8")
		require.False(t, ok, "negative value is not a uint")
		v, _ := f.Get("i64")
		i64, ok := v.Int()
		require.True(t, ok)
		require.Equal(t, int64(-1<<60), i64)
		fl, ok := f.Float("f32")
		require.True(t, ok)
		require.Equal(t, 1.5, fl)
		s, _ := f.String("s")
		require.Equal(t, "héllo", s)
		strs, _ := f.Strings("strs")
		require.Equal(t, []string{"a", "", "ccc"}, strs)
		i32s, ok := f.Int32s("u32s")
		require.True(t, ok)
		require.Equal(t, []int32{1, -1}, i32s)
		u8s, ok := f.Bytes("u8s")
		require.True(t, ok)
		require.Equal(t, []byte{1, 2}, u8s)
		i8s, ok := f.Bytes("i8s")
		require.True(t, ok)
		require.Equal(t, []byte{0xFF, 3}, i8s)
		_, ok = f.Bytes("u32s")
		require.False(t, ok, "only byte arrays")
		f32s, ok := f.Float32s("f64s")
		require.True(t, ok)
		require.Equal(t, []float32{0.5}, f32s)
		b, _ := f.Bool("b")
		require.True(t, b)
		nv, _ := f.Get("nested")
		require.Equal(t, nested, nv)
		n, _ := f.Uint("int")
		require.EqualValues(t, 42, n)

		ti, ok := f.Tensor("a.weight")
		require.True(t, ok)
		require.Equal(t, quant.Q8_0, ti.Type)
		require.Equal(t, []uint64{64, 3}, ti.Dims)
		data, err := f.TensorData(ti)
		require.NoError(t, err)
		require.Equal(t, q8, data)
		tb, _ := f.Tensor("b")
		require.EqualValues(t, 0, tb.Offset%64)
		require.NoError(t, f.Close())

		// Writing again from the parsed values gives identical bytes.
		raw, err := os.ReadFile(path)
		require.NoError(t, err)
		f2, err := Parse(raw)
		require.NoError(t, err)
		w2 := NewWriter()
		w2.Version = f2.Version
		for _, kv := range f2.KVs {
			require.NoError(t, w2.AddKV(kv.Key, kv.Value))
		}
		for i := range f2.Tensors {
			ti := &f2.Tensors[i]
			d, err := f2.TensorData(ti)
			require.NoError(t, err)
			require.NoError(t, w2.AddTensor(ti.Name, ti.Type, ti.Dims, d))
		}
		var buf bytes.Buffer
		n64, err := w2.WriteTo(&buf)
		require.NoError(t, err)
		require.EqualValues(t, len(raw), n64)
		require.Equal(t, raw, buf.Bytes())
	}
}

// TestRewriteRealFiles re-encodes real files through Parse and Writer and
// expects byte-identical output, which checks every value type they use.
func TestRewriteRealFiles(t *testing.T) {
	for _, p := range []string{
		"../../testdata/model/stories260K.gguf",
		"../../testdata/gguf/ggml-quant-ref.gguf",
		"../../testdata/gguf/llama-2-tiny-random.gguf",
		"../../testdata/gguf/stories260K-quant/stories260K-Q4_0.gguf",
	} {
		t.Run(filepath.Base(p), func(t *testing.T) {
			raw, err := os.ReadFile(p)
			require.NoError(t, err)
			f, err := Parse(raw)
			require.NoError(t, err)
			w := NewWriter()
			w.Version = f.Version
			for _, kv := range f.KVs {
				require.NoError(t, w.AddKV(kv.Key, kv.Value))
			}
			for i := range f.Tensors {
				ti := &f.Tensors[i]
				d, err := f.TensorData(ti)
				require.NoError(t, err)
				require.NoError(t, w.AddTensor(ti.Name, ti.Type, ti.Dims, d))
			}
			var buf bytes.Buffer
			_, err = w.WriteTo(&buf)
			require.NoError(t, err)
			require.Equal(t, len(raw), buf.Len())
			require.True(t, bytes.Equal(raw, buf.Bytes()), "re-encoded bytes differ")
		})
	}
}

func TestVersion2File(t *testing.T) {
	// A hand-built v2 file: same layout as v3.
	data := start(2, 1, 2).
		str("general.architecture").u32(uint32(TypeString)).str("llama").
		str("xs").u32(uint32(TypeArray)).u32(uint32(TypeInt32)).u64(2).u32(7).u32(0xFFFFFFFE).
		tensor("w", []uint64{2, 2}, uint32(quant.F16), 0).pad(32).
		raw(0, 0x3c, 0, 0xc0, 0, 0, 0, 0x3c).Bytes()
	f, err := Parse(data)
	require.NoError(t, err)
	require.EqualValues(t, 2, f.Version)
	a, _ := f.String("general.architecture")
	require.Equal(t, "llama", a)
	xs, _ := f.Int32s("xs")
	require.Equal(t, []int32{7, -2}, xs)
	ti, ok := f.Tensor("w")
	require.True(t, ok)
	require.EqualValues(t, 4, ti.NumElements())
	d, err := f.TensorData(ti)
	require.NoError(t, err)
	out := make([]float32, 4)
	require.NoError(t, quant.Dequantize(ti.Type, d, out))
	require.Equal(t, []float32{1, -2, 0, 1}, out)
}

func TestTensorTypesFromFileNotFileType(t *testing.T) {
	f, err := Open("../../testdata/gguf/stories260K-quant/stories260K-Q4_0.gguf")
	require.NoError(t, err)
	defer f.Close()
	ft, _ := f.Uint("general.file_type")
	require.EqualValues(t, 37, ft) // what was asked for, not what is stored
	count := map[quant.Type]int{}
	for _, ti := range f.Tensors {
		count[ti.Type]++
	}
	require.Equal(t, map[quant.Type]int{quant.Q4_0: 30, quant.Q5_0: 1, quant.Q8_0: 1, quant.F16: 5, quant.F32: 11}, count)
	require.EqualValues(t, 14240, f.DataOffset)
	te, _ := f.Tensor("token_embd.weight")
	require.Equal(t, quant.Q5_0, te.Type)
}

func TestOpenErrors(t *testing.T) {
	_, err := Open(filepath.Join(t.TempDir(), "missing.gguf"))
	require.Error(t, err)
	p := filepath.Join(t.TempDir(), "junk.gguf")
	require.NoError(t, os.WriteFile(p, []byte("not a gguf file at all"), 0o644))
	_, err = Open(p)
	require.ErrorIs(t, err, ErrMagic)
	p2 := filepath.Join(t.TempDir(), "tiny.gguf")
	require.NoError(t, os.WriteFile(p2, []byte("GGU"), 0o644))
	_, err = Open(p2)
	require.ErrorIs(t, err, ErrTruncated)
}

func FuzzParse(f *testing.F) {
	for _, p := range []string{
		"../../testdata/model/stories260K.gguf",
		"../../testdata/gguf/stories260K-quant/stories260K-Q8_0.gguf",
	} {
		raw, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw[:min(len(raw), 4096)])
	}
	f.Add(start(3, 1, 1).str("a").u32(uint32(TypeUint32)).u32(7).tensor("t", []uint64{4}, 0, 0).pad(32).raw(make([]byte, 16)...).Bytes())
	f.Add(deepArray(3))
	f.Fuzz(func(t *testing.T, data []byte) {
		g, err := Parse(data)
		if err != nil {
			return
		}
		for i := range g.Tensors {
			ti := &g.Tensors[i]
			d, err := g.TensorData(ti)
			if err != nil {
				t.Fatalf("validated tensor %q has no data: %v", ti.Name, err)
			}
			if uint64(len(d)) != ti.Size {
				t.Fatalf("tensor %q: %d bytes, want %d", ti.Name, len(d), ti.Size)
			}
		}
		for _, kv := range g.KVs {
			_ = kv.Value.String()
		}
	})
}

package gguf_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/model/gguf"
	"github.com/rbee-project/rbee/model/quant"
	"github.com/rbee-project/rbee/model/synth"
)

const stories = "../../testdata/model/stories260K.gguf"

func openAll(t *testing.T, paths []string) []*gguf.File {
	t.Helper()
	var fs []*gguf.File
	for _, p := range paths {
		f, err := gguf.Open(p)
		require.NoError(t, err)
		t.Cleanup(func() { f.Close() })
		fs = append(fs, f)
	}
	return fs
}

// synthFile writes a synth model (with general.alignment when align > 0)
// and returns its path.
func synthFile(t *testing.T, cfg synth.Config, align uint32) string {
	t.Helper()
	w, err := synth.Build(cfg)
	require.NoError(t, err)
	if align > 0 {
		require.NoError(t, w.AddKV(gguf.KeyAlignment, align))
	}
	p := filepath.Join(t.TempDir(), "synth.gguf")
	require.NoError(t, w.WriteFile(p))
	return p
}

// TestSplitMergeRoundTrip: files the Writer wrote (stories260K is one:
// re-encoding it is byte-identical; synth models, quantized, a mixture of
// experts, one aligned to 64 bytes while later parts align to 32) split
// in 1-4 parts, with and without tensors in the first part, merge back to
// the same bytes, and the merged size is known before writing.
func TestSplitMergeRoundTrip(t *testing.T) {
	q4 := synth.DefaultConfig()
	q4.Dim, q4.FF, q4.Type = 256, 512, quant.Q4_K
	moe := synth.DefaultConfig()
	moe.Arch, moe.Experts, moe.ExpertsUsed, moe.Type = "qwen3moe", 4, 2, quant.Q8_0
	for _, src := range []struct{ name, path string }{
		{"stories260K", stories},
		{"synth Q4_K", synthFile(t, q4, 0)},
		{"synth MoE Q8_0 aligned to 64", synthFile(t, moe, 64)},
	} {
		orig, err := os.ReadFile(src.path)
		require.NoError(t, err)
		f := openAll(t, []string{src.path})[0]
		for _, tc := range []struct {
			n    int
			meta bool
		}{{1, false}, {2, false}, {3, false}, {4, false}, {2, true}, {4, true}} {
			prefix := filepath.Join(t.TempDir(), "m")
			paths, err := gguf.Split(f, prefix, tc.n, gguf.SplitOptions{MetadataOnlyFirst: tc.meta})
			require.NoError(t, err)
			require.Len(t, paths, tc.n)
			want, err := gguf.SplitPaths(paths[0])
			require.NoError(t, err)
			require.Equal(t, want, paths)
			parts := openAll(t, paths)
			if tc.meta {
				require.Empty(t, parts[0].Tensors)
			}
			for i, p := range parts {
				require.Equal(t, tc.n, p.SplitCount())
				no, _ := p.Uint(gguf.KeySplitNo)
				require.EqualValues(t, i, no)
				if i > 0 {
					require.Len(t, p.KVs, 3, "later parts hold only the split keys")
				}
			}
			plan, err := gguf.PlanMerge(parts)
			require.NoError(t, err)
			var buf bytes.Buffer
			require.NoError(t, gguf.Merge(&buf, parts))
			require.Equal(t, int64(buf.Len()), plan.Size())
			require.True(t, bytes.Equal(orig, buf.Bytes()), "%s n=%d meta=%v: merged file differs from the original", src.name, tc.n, tc.meta)

			// The same file part by part, planned from the parts' headers
			// alone (what a download has before their data), and from
			// the merged file's own header (a merge resumed).
			heads := make([]*gguf.File, len(paths))
			for i, p := range paths {
				b, err := os.ReadFile(p)
				require.NoError(t, err)
				heads[i], err = gguf.ParseHeader(b[:parts[i].DataOffset], int64(len(b)))
				require.NoError(t, err)
			}
			fromHeads, err := gguf.PlanMerge(heads)
			require.NoError(t, err)
			resumed, err := gguf.ParseMergePlan(buf.Bytes()[:len(fromHeads.Head())], fromHeads.Counts())
			require.NoError(t, err)
			for _, plan := range []*gguf.MergePlan{fromHeads, resumed} {
				require.Equal(t, orig[:len(plan.Head())], plan.Head())
				var out bytes.Buffer
				out.Write(plan.Head())
				for i, part := range parts {
					require.EqualValues(t, plan.PartStart(i), out.Len())
					_, err := plan.WritePart(&out, i, part)
					require.NoError(t, err)
				}
				require.EqualValues(t, plan.PartStart(tc.n), out.Len())
				require.Equal(t, plan.Size(), int64(out.Len()))
				require.True(t, bytes.Equal(orig, out.Bytes()), "%s n=%d meta=%v: merged part by part, the file differs", src.name, tc.n, tc.meta)
			}
		}
	}
}

// part writes one hand-made part: split keys as given (nil leaves a key
// out) and tensors of 32 F32 values named names.
func part(t *testing.T, dir string, i int, no, count any, total any, names ...string) string {
	t.Helper()
	w := gguf.NewWriter()
	if i == 0 {
		require.NoError(t, w.AddKV("general.architecture", "llama"))
	}
	for _, kv := range []struct {
		k string
		v any
	}{{gguf.KeySplitNo, no}, {gguf.KeySplitCount, count}, {gguf.KeySplitTensors, total}} {
		if kv.v != nil {
			require.NoError(t, w.AddKV(kv.k, kv.v))
		}
	}
	for _, n := range names {
		require.NoError(t, w.AddTensor(n, quant.F32, []uint64{32}, make([]byte, 128)))
	}
	p := filepath.Join(dir, gguf.SplitPath("m", i, 9))
	require.NoError(t, w.WriteFile(p))
	return p
}

// TestMergeRefusesBadSets: parts out of order, of other sets, with
// tensors missing or repeated, or without split keys are ErrSplit naming
// the part, and nothing is written.
func TestMergeRefusesBadSets(t *testing.T) {
	u16 := func(v int) uint16 { return uint16(v) }
	i32 := func(v int) int32 { return int32(v) }
	for _, tc := range []struct {
		name  string
		parts func(dir string) []string
		msg   string
	}{
		{"swapped", func(d string) []string {
			return []string{part(t, d, 0, u16(0), u16(2), i32(2), "a"), part(t, d, 1, u16(0), u16(2), i32(2), "b")}
		}, "part 2 of 2 says it is part 1"},
		{"count differs", func(d string) []string {
			return []string{part(t, d, 0, u16(0), u16(2), i32(2), "a"), part(t, d, 1, u16(1), u16(3), i32(2), "b")}
		}, "part 2 of 2 says the model has 3 parts"},
		{"a part missing", func(d string) []string {
			return []string{part(t, d, 0, u16(0), u16(3), i32(3), "a"), part(t, d, 1, u16(1), u16(3), i32(3), "b")}
		}, "part 1 of 2 says the model has 3 parts"},
		{"tensor missing", func(d string) []string {
			return []string{part(t, d, 0, u16(0), u16(2), i32(3), "a"), part(t, d, 1, u16(1), u16(2), i32(3), "b")}
		}, "hold 2 tensors, split.tensors.count says 3"},
		{"tensor count differs", func(d string) []string {
			return []string{part(t, d, 0, u16(0), u16(2), i32(2), "a"), part(t, d, 1, u16(1), u16(2), i32(5), "b")}
		}, "part 2 of 2 says the model has 5 tensors"},
		{"duplicate tensor", func(d string) []string {
			return []string{part(t, d, 0, u16(0), u16(2), i32(2), "a"), part(t, d, 1, u16(1), u16(2), i32(2), "a")}
		}, "part 2 of 2: gguf: invalid file: duplicate tensor name"},
		{"not a part", func(d string) []string {
			return []string{part(t, d, 0, nil, nil, i32(1), "a")}
		}, "part 1 of 1 has no split.no"},
		{"more tensors than a file may have", func(d string) []string {
			names := make([]string, gguf.MaxTensors/2+1)
			for i := range names {
				names[i] = fmt.Sprint("t", i)
			}
			other := make([]string, len(names))
			for i := range other {
				other[i] = fmt.Sprint("u", i)
			}
			total := i32(2 * len(names))
			return []string{part(t, d, 0, u16(0), u16(2), total, names...), part(t, d, 1, u16(1), u16(2), total, other...)}
		}, "split.tensors.count is 65538, more than the 65536 tensors a file may have"},
		{"no tensor count", func(d string) []string {
			return []string{part(t, d, 0, u16(0), u16(1), nil, "a")}
		}, "part 1 of 1 has no split.tensors.count"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			parts := openAll(t, tc.parts(t.TempDir()))
			var buf bytes.Buffer
			err := gguf.Merge(&buf, parts)
			require.ErrorIs(t, err, gguf.ErrSplit)
			require.Contains(t, err.Error(), tc.msg)
			require.Zero(t, buf.Len())
		})
	}
	require.ErrorIs(t, gguf.Merge(&bytes.Buffer{}, nil), gguf.ErrSplit)
}

func TestSplitPaths(t *testing.T) {
	for _, tc := range []struct {
		first string
		want  []string
		err   string
	}{
		{"/m/x-00001-of-00002.gguf", []string{"/m/x-00001-of-00002.gguf", "/m/x-00002-of-00002.gguf"}, ""},
		{"a-b-Q8_0-00001-of-00001.gguf", []string{"a-b-Q8_0-00001-of-00001.gguf"}, ""},
		{"d/x-00002-of-00003.gguf", nil, "is part 2 of 3; a split model is named by its first part, d/x-00001-of-00003.gguf"},
		{"x.gguf", nil, "not named like a part"},
		{"x-1-of-3.gguf", nil, "not named like a part"},
		{"x-00000-of-00003.gguf", nil, "not named like a part"},
		{"x-00004-of-00003.gguf", nil, "not named like a part"},
		{"x-00001-of-99999.gguf", nil, "not named like a part"},
		{"x-00001-of-00003.GGUF", nil, "not named like a part"},
		{"-00001-of-00003.gguf", nil, "not named like a part"},
	} {
		got, err := gguf.SplitPaths(tc.first)
		if tc.err != "" {
			require.ErrorIs(t, err, gguf.ErrSplit, tc.first)
			require.Contains(t, err.Error(), tc.err)
			continue
		}
		require.NoError(t, err, tc.first)
		require.Equal(t, tc.want, got)
	}
}

// TestSplitRefuses: a split part is not split again, and counts outside
// 1..65535 (2.. without tensors in the first part) are refused.
func TestSplitRefuses(t *testing.T) {
	src := openAll(t, []string{stories})[0]
	dir := t.TempDir()
	for _, n := range []int{0, -1, 65536} {
		_, err := gguf.Split(src, filepath.Join(dir, "s"), n, gguf.SplitOptions{})
		require.ErrorIs(t, err, gguf.ErrSplit)
	}
	_, err := gguf.Split(src, filepath.Join(dir, "s"), 1, gguf.SplitOptions{MetadataOnlyFirst: true})
	require.ErrorIs(t, err, gguf.ErrSplit)
	paths, err := gguf.Split(src, filepath.Join(dir, "s"), 2, gguf.SplitOptions{})
	require.NoError(t, err)
	_, err = gguf.Split(openAll(t, paths[:1])[0], filepath.Join(dir, "again"), 2, gguf.SplitOptions{})
	require.ErrorIs(t, err, gguf.ErrSplit)
}

// failAfter takes n bytes, then refuses every write.
type failAfter struct{ n int }

var errRefused = errors.New("refused")

func (f *failAfter) Write(b []byte) (int, error) {
	if len(b) > f.n {
		k := f.n
		f.n = 0
		return k, errRefused
	}
	f.n -= len(b)
	return len(b), nil
}

// TestMergeReportsTheWritersError: a destination that refuses a write
// part way through the tensor data (a full disk, a cancelled merge) is
// the error Merge returns, not a complaint about the offsets.
func TestMergeReportsTheWritersError(t *testing.T) {
	src := openAll(t, []string{stories})[0]
	paths, err := gguf.Split(src, filepath.Join(t.TempDir(), "s"), 2, gguf.SplitOptions{})
	require.NoError(t, err)
	for _, n := range []int{0, 100, 1 << 16, 200_000} {
		err := gguf.Merge(&failAfter{n: n}, openAll(t, paths))
		require.ErrorIs(t, err, errRefused, "after %d bytes", n)
	}
}

// TestParseHeaderOfAPrefix: a file's first bytes up to its data are its
// header (the whole file serves as well); one byte fewer is ErrTruncated,
// so a caller reading a download's beginning knows to read more; a
// tensor past the file's size is refused as Parse refuses it.
func TestParseHeaderOfAPrefix(t *testing.T) {
	b, err := os.ReadFile(stories)
	require.NoError(t, err)
	whole, err := gguf.Parse(b)
	require.NoError(t, err)
	size := int64(len(b))
	for _, n := range []uint64{whole.DataOffset, whole.DataOffset + 1000, uint64(size)} {
		h, err := gguf.ParseHeader(b[:n], size)
		require.NoError(t, err, "prefix of %d", n)
		require.Equal(t, whole.KVs, h.KVs)
		require.Equal(t, whole.Tensors, h.Tensors)
		require.Equal(t, whole.DataOffset, h.DataOffset)
	}
	// Cut anywhere (in a key, a value, the vocabulary's arrays, a
	// tensor's description, the padding), it says: read more.
	for n := range whole.DataOffset {
		_, err := gguf.ParseHeader(b[:n], size)
		require.ErrorIs(t, err, gguf.ErrTruncated, "prefix of %d", n)
	}
	_, err = gguf.ParseHeader(b[:whole.DataOffset], size-1)
	require.ErrorIs(t, err, gguf.ErrTruncated, "the last tensor ends past the file")
	_, err = gguf.ParseHeader(b, size-1)
	require.ErrorIs(t, err, gguf.ErrInvalid, "more bytes than the file has")
}

// TestWritePartRefusesAnotherPart: a part whose tensors are not the ones
// its header promised the plan (another split of the model, its bytes
// changed since the header was read) is ErrSplit naming the part, and
// nothing of it is written; a plan read back with counts that do not add
// up, or from bytes that are not a merged header, is ErrSplit.
func TestWritePartRefusesAnotherPart(t *testing.T) {
	src := openAll(t, []string{stories})[0]
	three := openAll(t, must(gguf.Split(src, filepath.Join(t.TempDir(), "a"), 3, gguf.SplitOptions{})))
	two := openAll(t, must(gguf.Split(src, filepath.Join(t.TempDir(), "b"), 2, gguf.SplitOptions{})))
	plan, err := gguf.PlanMerge(three)
	require.NoError(t, err)
	var out bytes.Buffer
	n, err := plan.WritePart(&out, 1, two[1])
	require.ErrorIs(t, err, gguf.ErrSplit)
	require.ErrorContains(t, err, "part 2 of 3")
	require.Zero(t, n)
	require.Zero(t, out.Len())
	_, err = plan.WritePart(&out, 3, three[2])
	require.ErrorIs(t, err, gguf.ErrSplit)

	counts := plan.Counts()
	counts[0]++
	_, err = gguf.ParseMergePlan(plan.Head(), counts)
	require.ErrorIs(t, err, gguf.ErrSplit)
	_, err = gguf.ParseMergePlan(plan.Head()[:len(plan.Head())-1], plan.Counts())
	require.ErrorIs(t, err, gguf.ErrSplit)
	b, err := os.ReadFile(stories)
	require.NoError(t, err)
	_, err = gguf.ParseMergePlan(b, []int{len(src.Tensors)})
	require.ErrorIs(t, err, gguf.ErrSplit, "a whole file is not a header")
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

package catalog

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// fuzzTarDeclaresMore reports whether the tar.gz data declares members of
// more than limit bytes in all (as far as it parses).
func fuzzTarDeclaresMore(data []byte, limit int64) bool {
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return false
	}
	tr := tar.NewReader(zr)
	var total int64
	for {
		h, err := tr.Next()
		if err != nil {
			return false
		}
		if h.Size < 0 || h.Size > limit-total {
			return true
		}
		total += h.Size
	}
}

// FuzzUnpack unpacks arbitrary bytes as a .tar.gz or .zip engine archive
// into an empty directory. unpack never panics and never creates anything
// outside its directory (checked up to four levels up); the tree holds only
// directories, regular files and links, with no mode bits beyond 0755. An
// error is ErrBadArchive or a local file system error, never a success
// with an empty path. On success the returned path is local, names the one
// regular file called binary in the tree, which is executable, and every
// link in the tree resolves inside it.
func FuzzUnpack(f *testing.F) {
	const binary = "llama-server"
	engine := []member{
		{name: "build/", dir: true},
		{name: "build/bin/llama-server", body: "#!/bin/sh\necho llama-server\n", mode: 0o755},
		{name: "build/bin/libggml.so.0", body: "ELF-ish"},
		{name: "build/bin/libggml.so", link: "libggml.so.0"},
		{name: "build/LICENSE", body: "MIT"},
	}
	with := func(ms ...member) []member { return append(ms, engine...) }
	archives := [][]member{
		engine,
		{{name: "llama-server", body: "x"}},
		{{name: "./bin/llama-server", body: "x", mode: 0o4777}}, // setuid, world-writable
		{{name: "llama-server", dir: true}, {name: "llama-server/llama-server", body: "x"}},
		with(member{name: "../escape", body: "x"}),
		with(member{name: "../../../../escape", body: "x"}),
		with(member{name: "/etc/evil", body: "x"}),
		with(member{name: "lib", link: "/etc"}),
		with(member{name: "lib", link: "../.."}),
		with(member{name: "a", link: "."}, member{name: "d", link: "a/.."}),
		with(member{name: "a", link: "build"}, member{name: "a/x", body: "x"}),
		with(member{name: "a", link: ".."}, member{name: "a", dir: true}),
		with(member{name: "llama-server", body: "second"}),
		{{name: "real", body: "x"}, {name: "llama-server", link: "real"}},
		with(member{name: "build/LICENSE", body: "first"}),
		with(member{name: `..\evil`, body: "x"}),
		with(member{name: "x", body: "file"}, member{name: "x/y", body: "under a file"}),
		with(member{name: "dev", typeflag: tar.TypeChar}),
		with(member{name: "hard", typeflag: tar.TypeLink}),
		with(member{name: "fifo", typeflag: tar.TypeFifo}),
		{},
	}
	for _, ms := range archives {
		tgz, err := tarGzBytes(ms)
		if err != nil {
			f.Fatal(err)
		}
		zp, err := zipBytes(ms)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(tgz, false)
		f.Add(zp, true)
	}
	tgz, _ := tarGzBytes(engine)
	zp, _ := zipBytes(engine)
	f.Add(zp, false)               // a zip named .tar.gz
	f.Add(tgz, true)               // a tar.gz named .zip
	f.Add(tgz[:len(tgz)/2], false) // truncated
	f.Add(zp[:len(zp)-10], true)
	for _, mode := range []fs.FileMode{fs.ModeDevice | 0o666, fs.ModeNamedPipe | 0o644, fs.ModeSocket | 0o644, fs.ModeSetuid | 0o4755} {
		if b, err := zipBytes(with(member{name: "odd", mode: int64(mode)})); err == nil {
			f.Add(b, true)
		}
	}
	f.Add([]byte("definitely not an archive"), false)
	f.Add([]byte{}, true)

	f.Fuzz(func(t *testing.T, data []byte, isZip bool) {
		if !isZip && fuzzTarDeclaresMore(data, 1<<20) {
			// A sparse member of a few bytes can unpack to
			// maxUnpackedPerFile of zeros: within the caps, too slow to fuzz.
			t.Skip("the tar declares more than 1 MiB")
		}
		root := t.TempDir()
		dir := filepath.Join(root, "a", "b", "c", "d", "tree")
		require.NoError(t, os.MkdirAll(dir, 0o755))
		name := "llama-server-linux-amd64-cpu.tar.gz"
		if isZip {
			name = "llama-server-linux-amd64-cpu.zip"
		}
		src := filepath.Join(root, name)
		require.NoError(t, os.WriteFile(src, data, 0o644))

		exec, uerr := unpack(src, name, dir, binary)

		// Nothing outside dir: only the directories above it and the
		// archive itself.
		allowed := map[string]bool{".": true, "a": true, "a/b": true, "a/b/c": true, "a/b/c/d": true, name: true}
		require.NoError(t, filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, err := filepath.Rel(root, p)
			if err != nil {
				return err
			}
			rel = filepath.ToSlash(rel)
			if allowed[rel] || rel == "a/b/c/d/tree" || strings.HasPrefix(rel, "a/b/c/d/tree/") {
				return nil
			}
			return errors.New("unpack created " + rel + " outside its directory")
		}))
		src2, err2 := os.ReadFile(src)
		require.NoError(t, err2)
		require.Equal(t, data, src2, "the archive is left as it was")

		// Only directories, regular files and links, modes at most 0755.
		realDir, err2 := filepath.EvalSymlinks(dir)
		require.NoError(t, err2)
		var named []string
		require.NoError(t, filepath.WalkDir(dir, func(p string, d fs.DirEntry, werr error) error {
			if werr != nil {
				return werr
			}
			fi, err := d.Info()
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(dir, p)
			switch m := fi.Mode(); {
			case m&fs.ModeSymlink != 0:
				if uerr == nil {
					// checkLinks vouched for every link of a tree it accepted.
					real, err := filepath.EvalSymlinks(p)
					require.NoError(t, err, "link %s does not resolve", rel)
					in, err := filepath.Rel(realDir, real)
					require.NoError(t, err)
					require.True(t, filepath.IsLocal(in), "link %s resolves outside the tree to %s", rel, real)
				}
			case m.IsDir(), m.IsRegular():
				require.Zero(t, m.Perm()&^0o755, "%s has mode %v", rel, m)
				require.Zero(t, m&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky), "%s has mode %v", rel, m)
				if m.IsRegular() && filepath.Base(p) == binary {
					named = append(named, filepath.ToSlash(rel))
				}
			default:
				t.Fatalf("unpack made %s of mode %v", rel, m)
			}
			return nil
		}))

		if err := uerr; err != nil {
			require.Empty(t, exec, "a failed unpack returns no path")
			var pe *fs.PathError
			var le *os.LinkError
			if !errors.Is(err, ErrBadArchive) && !errors.As(err, &pe) && !errors.As(err, &le) {
				t.Fatalf("unpack failed with %v, neither ErrBadArchive nor a file system error", err)
			}
			return
		}
		require.NotEmpty(t, exec)
		require.False(t, strings.Contains(exec, `\`), "exec %q is not slash-separated", exec)
		require.True(t, filepath.IsLocal(filepath.FromSlash(exec)), "exec %q is not inside the tree", exec)
		require.Equal(t, binary, path.Base(exec))
		require.Equal(t, []string{exec}, named, "exactly one file named %s, the one returned", binary)
		fi, err := os.Lstat(filepath.Join(dir, filepath.FromSlash(exec)))
		require.NoError(t, err)
		require.True(t, fi.Mode().IsRegular(), "the executable is a regular file")
		require.NotZero(t, fi.Mode().Perm()&0o100, "the executable has its execute bit")
	})
}

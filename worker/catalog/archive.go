package catalog

import (
	"archive/tar"
	"archive/zip"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
)

// Archive formats of engine releases, by asset suffix. llama.cpp publishes
// zip files for some platforms and tar.gz for others; a release location
// may hold either.
var archiveSuffixes = []string{".tar.gz", ".zip"}

// ArchiveAssets returns the asset names an archive release of t may use
// for goos/goarch/accel, in order of preference.
func ArchiveAssets(t WorkerType, goos, goarch, accel string) []string {
	out := make([]string, 0, len(archiveSuffixes))
	for _, s := range archiveSuffixes {
		out = append(out, t.Binary+"-"+goos+"-"+goarch+"-"+accel+s)
	}
	return out
}

// Bounds on what an archive may unpack to. An engine with GPU kernels for
// every architecture unpacks to a few GiB at most (a CUDA llama.cpp build
// is ~1 GiB); the bounds stop a decompression bomb, not a real release.
const (
	maxArchiveFiles    = 10000
	maxUnpackedPerFile = 4 << 30
	maxUnpackedTotal   = 8 << 30
	treeDir            = "tree" // an archive entry's unpacked files, next to the archive
)

// ErrBadArchive: an engine archive is not a tar.gz or zip, or holds
// something the catalog refuses (a path outside it, a link out, a device
// file, too many or too large files, no or several executables).
var ErrBadArchive = errors.New("catalog: bad archive")

// unpack extracts the archive at src (format by name) into dir, which must
// exist and be empty, and returns the path, relative to dir, of the one
// executable named binary in it. Only directories, regular files and
// symbolic links that stay inside dir are accepted; modes are reduced to
// 0755/0644 (no setuid, no world-writable files).
func unpack(src, name, dir, binary string) (string, error) {
	var u unpacker
	u.dir, u.binary = dir, binary
	var err error
	switch {
	case strings.HasSuffix(name, ".tar.gz"):
		err = u.tarGz(src)
	case strings.HasSuffix(name, ".zip"):
		err = u.zip(src)
	default:
		err = fmt.Errorf("%w: %s is neither .tar.gz nor .zip", ErrBadArchive, name)
	}
	if err != nil {
		return "", err
	}
	if err := u.checkLinks(); err != nil {
		return "", err
	}
	switch len(u.execs) {
	case 0:
		return "", fmt.Errorf("%w: %s holds no file named %s", ErrBadArchive, name, binary)
	case 1:
		return u.execs[0], nil
	}
	return "", fmt.Errorf("%w: %s holds %d files named %s (%s)", ErrBadArchive, name, len(u.execs), binary, strings.Join(u.execs, ", "))
}

type unpacker struct {
	dir, binary string
	files       int
	total       int64
	execs       []string
	links       map[string]bool // members made as symbolic links
}

// local checks an archive member's name and returns it as a relative,
// slash-separated path inside the tree.
func (u *unpacker) local(name string) (string, error) {
	if strings.ContainsRune(name, 0) || strings.Contains(name, `\`) {
		return "", fmt.Errorf("%w: member name %q", ErrBadArchive, name)
	}
	clean := path.Clean(strings.TrimPrefix(name, "./"))
	if clean == "." {
		return "", nil
	}
	if !filepath.IsLocal(clean) {
		return "", fmt.Errorf("%w: member %q points outside the archive", ErrBadArchive, name)
	}
	// Nothing is written through a link: a link to "." followed by a link
	// "d/e" -> ".." would otherwise reach out of the tree.
	for p := path.Dir(clean); p != "."; p = path.Dir(p) {
		if u.links[p] {
			return "", fmt.Errorf("%w: member %q lies under the link %q", ErrBadArchive, name, p)
		}
	}
	u.files++
	if u.files > maxArchiveFiles {
		return "", fmt.Errorf("%w: more than %d members", ErrBadArchive, maxArchiveFiles)
	}
	return clean, nil
}

func (u *unpacker) mkdir(rel string) error {
	if rel == "" {
		return nil
	}
	if err := os.MkdirAll(filepath.Join(u.dir, filepath.FromSlash(rel)), 0o755); err != nil {
		if errors.Is(err, syscall.ENOTDIR) || errors.Is(err, fs.ErrExist) {
			// A member's path runs through a file an earlier member wrote.
			return fmt.Errorf("%w: %w", ErrBadArchive, err)
		}
		return fmt.Errorf("catalog: %w", err)
	}
	return nil
}

// file writes one regular member; exec marks any execute bit in the
// archive's mode.
func (u *unpacker) file(rel string, exec bool, size int64, r io.Reader) error {
	if rel == "" {
		return fmt.Errorf("%w: a file member with no name", ErrBadArchive)
	}
	if size > maxUnpackedPerFile {
		return fmt.Errorf("%w: %s is %d bytes (limit %d)", ErrBadArchive, rel, size, int64(maxUnpackedPerFile))
	}
	if err := u.mkdir(path.Dir(rel)); err != nil {
		return err
	}
	mode := os.FileMode(0o644)
	if exec || path.Base(rel) == u.binary {
		mode = 0o755
	}
	p := filepath.Join(u.dir, filepath.FromSlash(rel))
	// O_EXCL: a second member of the same name, or one that would write
	// through a link an earlier member made, is refused.
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrBadArchive, rel, err)
	}
	n, err := io.Copy(f, io.LimitReader(r, maxUnpackedPerFile+1))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrBadArchive, rel, err)
	}
	u.total += n
	if n > maxUnpackedPerFile || u.total > maxUnpackedTotal {
		return fmt.Errorf("%w: unpacks to more than %d bytes", ErrBadArchive, int64(maxUnpackedTotal))
	}
	if path.Base(rel) == u.binary {
		u.execs = append(u.execs, rel)
	}
	return nil
}

// symlink makes a link whose target, resolved from the link's directory,
// stays inside the tree (llama.cpp's shared libraries come as
// libggml.so -> libggml.so.0 links).
func (u *unpacker) symlink(rel, target string) error {
	if rel == "" || target == "" || path.IsAbs(target) || strings.ContainsRune(target, 0) {
		return fmt.Errorf("%w: link %q -> %q", ErrBadArchive, rel, target)
	}
	if !filepath.IsLocal(path.Join(path.Dir(rel), target)) {
		return fmt.Errorf("%w: link %q points outside the archive (%q)", ErrBadArchive, rel, target)
	}
	if path.Base(rel) == u.binary {
		return fmt.Errorf("%w: the executable %s is a link", ErrBadArchive, rel)
	}
	if err := u.mkdir(path.Dir(rel)); err != nil {
		return err
	}
	if err := os.Symlink(target, filepath.Join(u.dir, filepath.FromSlash(rel))); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrBadArchive, rel, err)
	}
	if u.links == nil {
		u.links = map[string]bool{}
	}
	u.links[rel] = true
	return nil
}

// checkLinks resolves every link the archive made, as the OS will: each
// must end at something inside the tree. The lexical check in symlink is
// not enough once links point through links ("a" -> "." and "d" -> "a/..").
func (u *unpacker) checkLinks() error {
	root, err := filepath.EvalSymlinks(u.dir)
	if err != nil {
		return fmt.Errorf("catalog: %w", err)
	}
	for rel := range u.links {
		real, err := filepath.EvalSymlinks(filepath.Join(u.dir, filepath.FromSlash(rel)))
		if err != nil {
			return fmt.Errorf("%w: link %s does not resolve: %v", ErrBadArchive, rel, err)
		}
		in, err := filepath.Rel(root, real)
		if err != nil || !filepath.IsLocal(in) {
			return fmt.Errorf("%w: link %s resolves outside the archive", ErrBadArchive, rel)
		}
	}
	return nil
}

func (u *unpacker) tarGz(src string) error {
	f, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("catalog: %w", err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadArchive, err)
	}
	defer zr.Close()
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%w: %v", ErrBadArchive, err)
		}
		rel, err := u.local(h.Name)
		if err != nil {
			return err
		}
		switch h.Typeflag {
		case tar.TypeDir:
			err = u.mkdir(rel)
		case tar.TypeReg:
			err = u.file(rel, h.Mode&0o111 != 0, h.Size, tr)
		case tar.TypeSymlink:
			err = u.symlink(rel, h.Linkname)
		case tar.TypeXGlobalHeader:
		default:
			err = fmt.Errorf("%w: member %q has type %q (only files, directories and links inside the archive)", ErrBadArchive, h.Name, h.Typeflag)
		}
		if err != nil {
			return err
		}
	}
}

// maxSymlinkTarget bounds a zip link's target, which is its content.
const maxSymlinkTarget = 4096

func (u *unpacker) zip(src string) error {
	zr, err := zip.OpenReader(src)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadArchive, err)
	}
	defer zr.Close()
	for _, zf := range zr.File {
		rel, err := u.local(zf.Name)
		if err != nil {
			return err
		}
		mode := zf.Mode()
		switch {
		case mode.IsDir():
			err = u.mkdir(rel)
		case mode&fs.ModeSymlink != 0:
			var target []byte
			if target, err = readMember(zf, maxSymlinkTarget); err == nil {
				err = u.symlink(rel, string(target))
			}
		case mode.IsRegular():
			var r io.ReadCloser
			if r, err = zf.Open(); err == nil {
				err = u.file(rel, mode&0o111 != 0, int64(zf.UncompressedSize64), r)
				r.Close()
			} else {
				err = fmt.Errorf("%w: %s: %v", ErrBadArchive, zf.Name, err)
			}
		default:
			err = fmt.Errorf("%w: member %q has mode %s (only files, directories and links inside the archive)", ErrBadArchive, zf.Name, mode)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func readMember(zf *zip.File, max int64) ([]byte, error) {
	r, err := zf.Open()
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBadArchive, zf.Name, err)
	}
	defer r.Close()
	b, err := io.ReadAll(io.LimitReader(r, max+1))
	if err != nil || int64(len(b)) > max {
		return nil, fmt.Errorf("%w: %s: link target unreadable or longer than %d bytes", ErrBadArchive, zf.Name, max)
	}
	return b, nil
}

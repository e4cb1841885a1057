package sshhive

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/pkg/sftp"

	"github.com/rbee-project/rbee/internal/humanize"
)

// Remote defaults, all under the remote user's home so that no step needs
// root: the XDG user locations that `rbee node` itself uses.
const (
	DefaultBinaryPath  = "~/.local/bin/rbee"
	DefaultStateDir    = "~/.local/share/rbee" // also `rbee node`'s default data dir
	DefaultUnitDir     = "~/.config/systemd/user"
	DefaultServiceName = "rbee"
)

// Files this package writes in the state dir. Uninstall removes exactly
// these (and the binary and unit), nothing else, unless purging.
const (
	startScriptName = "rbee-start.sh" // script mode: launch in the background
	runScriptName   = "rbee-node.sh"  // the node's command line, rewritten by Start
	pidFileName     = "rbee.pid"
	logFileName     = "rbee.log"
	tokenFileName   = "join.token"
	modeFileName    = "rbee-service" // "systemd" or "script"
)

// ServiceMode is how the node runs on the remote host.
type ServiceMode string

// Service modes.
const (
	// ServiceAuto picks systemd when a user manager answers, else script.
	ServiceAuto ServiceMode = ""
	// ServiceSystemd is a systemd user unit (survives logout with lingering).
	ServiceSystemd ServiceMode = "systemd"
	// ServiceScript is a start script that runs the node with nohup,
	// writes a pid file and logs to a file.
	ServiceScript ServiceMode = "script"
)

// Layout says where rbee lives on the remote host. Paths may start with
// "~/" (the remote $HOME); after expansion they must be absolute. The zero
// value means the defaults. Install, Start, Stop and Uninstall of one host
// must use the same Layout.
type Layout struct {
	BinaryPath  string // DefaultBinaryPath
	StateDir    string // DefaultStateDir: scripts, pid file, log, token file
	UnitDir     string // DefaultUnitDir
	ServiceName string // DefaultServiceName: the unit is ServiceName.service
}

// paths is a Layout resolved against the remote home.
type paths struct {
	home, binary, stateDir, unit                                  string
	startScript, runScript, pidFile, logFile, tokenFile, modeFile string
	service                                                       string
}

func (l Layout) resolve(ctx context.Context, c *Client) (paths, error) {
	home, err := c.Home(ctx)
	if err != nil {
		return paths{}, err
	}
	def := func(v, d string) string {
		if v == "" {
			return d
		}
		return v
	}
	p := paths{home: home, service: def(l.ServiceName, DefaultServiceName)}
	if strings.ContainsAny(p.service, "/ \t\n'\"$`\\") {
		return p, fmt.Errorf("%w: service name %q", ErrInvalid, p.service)
	}
	for _, x := range []struct {
		dst      *string
		val, def string
	}{
		{&p.binary, l.BinaryPath, DefaultBinaryPath},
		{&p.stateDir, l.StateDir, DefaultStateDir},
		{&p.unit, l.UnitDir, DefaultUnitDir},
	} {
		v, err := remoteAbs(def(x.val, x.def), home)
		if err != nil {
			return p, err
		}
		*x.dst = v
	}
	p.unit = path.Join(p.unit, p.service+".service")
	p.startScript = path.Join(p.stateDir, startScriptName)
	p.runScript = path.Join(p.stateDir, runScriptName)
	p.pidFile = path.Join(p.stateDir, pidFileName)
	p.logFile = path.Join(p.stateDir, logFileName)
	p.tokenFile = path.Join(p.stateDir, tokenFileName)
	p.modeFile = path.Join(p.stateDir, modeFileName)
	return p, nil
}

// remoteAbs expands "~" against home and requires an absolute, clean path.
func remoteAbs(p, home string) (string, error) {
	switch {
	case p == "~":
		p = home
	case strings.HasPrefix(p, "~/"):
		p = path.Join(home, p[2:])
	}
	if !path.IsAbs(p) || strings.ContainsAny(p, "\n\x00") {
		return "", fmt.Errorf("%w: remote path %q is not absolute", ErrInvalid, p)
	}
	return path.Clean(p), nil
}

// InstallOptions controls Install.
type InstallOptions struct {
	Layout
	// LocalBinary is the rbee binary to copy: this program's own when the
	// remote OS/arch match (see Test), else one for that platform. Required.
	LocalBinary string
	// Service picks the service mode; ServiceAuto detects it.
	Service ServiceMode
	// NodeArgs are the `rbee node` arguments the service runs with until
	// Start rewrites them (e.g. after a reboot before any Start).
	NodeArgs []string
	// Secret, when set, is this cluster's secret: a host whose node
	// another cluster started is left as it is (ErrOtherCluster).
	Secret string
}

// InstallResult says what Install put on the host.
type InstallResult struct {
	BinaryPath  string
	Version     string // `rbee --version` run there
	Service     ServiceMode
	ServiceFile string // the unit file or the start script
	// Warnings are non-fatal problems (e.g. lingering could not be enabled,
	// so a systemd user service stops when the user logs out).
	Warnings []string
}

// Install copies opts.LocalBinary to the host (SFTP to a temporary name in
// the same directory, checked, `--version` run there, chmod 0755, rename
// over the target: a running node keeps its old inode, and a binary that
// does not run there never replaces one), then installs the service
// (systemd user unit, enabled but not started; or the start script).
// Running it again upgrades in place.
func Install(ctx context.Context, c *Client, opts InstallOptions) (InstallResult, error) {
	var res InstallResult
	st, err := os.Stat(opts.LocalBinary)
	switch {
	case opts.LocalBinary == "":
		return res, fmt.Errorf("%w: no local binary to install", ErrInvalid)
	case err != nil:
		return res, fmt.Errorf("%w: local binary: %v", ErrInvalid, err)
	case !st.Mode().IsRegular():
		return res, fmt.Errorf("%w: local binary %s is not a regular file", ErrInvalid, opts.LocalBinary)
	}
	if err := checkNodeArgs(opts.NodeArgs); err != nil {
		return res, err
	}
	p, err := opts.Layout.resolve(ctx, c)
	if err != nil {
		return res, err
	}
	if err := checkCluster(c, p, opts.Secret); err != nil {
		return res, err
	}
	sc, err := c.SFTP()
	if err != nil {
		return res, err
	}
	if err := mkdirs(sc, path.Dir(p.binary), false); err != nil {
		return res, err
	}
	// The state dir holds the join token: private, even if it existed.
	if err := mkdirs(sc, p.stateDir, true); err != nil {
		return res, err
	}
	f, err := os.Open(opts.LocalBinary)
	if err != nil {
		return res, fmt.Errorf("%w: local binary: %v", ErrInvalid, err)
	}
	opened, err := f.Stat()
	if err != nil {
		f.Close()
		return res, fmt.Errorf("%w: local binary: %v", ErrInvalid, err)
	}
	sum := sha256.New()
	cr := &countReader{r: io.TeeReader(f, sum)}
	err = putFile(ctx, sc, p.binary, cr, 0o755, func(tmp string) error {
		if err := verifyUpload(ctx, c, sc, tmp, f, opened, cr.n, sum.Sum(nil)); err != nil {
			return err
		}
		// Run the copy before it replaces anything: a binary that does
		// not run there must not take the place of one that does.
		if err := sc.Chmod(tmp, 0o700); err != nil {
			return fmt.Errorf("chmod %s: %w", tmp, err)
		}
		// Bounded: a binary that hangs instead of printing its version
		// (a broken build) must not hold the install until it is cancelled.
		bound := 3 * c.timeout()
		vctx, cancel := context.WithTimeout(ctx, bound)
		defer cancel()
		out, err := c.Run(vctx, shellQuote(tmp)+" --version")
		if err != nil && ctx.Err() == nil && vctx.Err() != nil {
			return fmt.Errorf("%w: the copied binary did not answer --version within %v, so %s was left as it was", ErrRemoteCommand, bound, p.binary)
		}
		if err != nil {
			return fmt.Errorf("the copied binary does not run there (wrong platform?), so %s was left as it was: %w", p.binary, err)
		}
		res.Version = strings.TrimSpace(out)
		return nil
	})
	f.Close()
	if err != nil {
		return res, err
	}
	res.BinaryPath = p.binary

	mode := opts.Service
	switch mode {
	case ServiceAuto:
		mode = ServiceScript
		if _, err := c.Run(ctx, "systemctl --user show-environment >/dev/null 2>&1"); err == nil {
			mode = ServiceSystemd
		} else if !errors.Is(err, ErrRemoteCommand) {
			return res, err
		}
	case ServiceSystemd, ServiceScript:
	default:
		return res, fmt.Errorf("%w: service mode %q", ErrInvalid, mode)
	}
	res.Service = mode

	// An upgrade keeps the command line the last Start wrote (its --join,
	// --token-file, --data-dir): a restart by systemd or a reboot must run
	// the node as started, not a bare `rbee node` on the default data dir.
	nodeArgs := opts.NodeArgs
	if nodeArgs == nil {
		nodeArgs = startedArgs(c, p)
	}
	if err := writeFile(ctx, sc, p.runScript, []byte(runScript(p, nodeArgs)), 0o700); err != nil {
		return res, err
	}
	switch mode {
	case ServiceSystemd:
		if err := mkdirs(sc, path.Dir(p.unit), false); err != nil {
			return res, err
		}
		if err := writeFile(ctx, sc, p.unit, []byte(systemdUnit(p)), 0o644); err != nil {
			return res, err
		}
		if _, err := c.Run(ctx, "systemctl --user daemon-reload && systemctl --user enable "+shellQuote(p.service+".service")); err != nil {
			return res, err
		}
		if _, err := c.Run(ctx, `loginctl enable-linger "$(id -un)"`); err != nil {
			if !errors.Is(err, ErrRemoteCommand) {
				return res, err
			}
			res.Warnings = append(res.Warnings, "could not enable lingering: the rbee user service stops when the user logs out ("+err.Error()+")")
		}
		res.ServiceFile = p.unit
	case ServiceScript:
		if err := writeFile(ctx, sc, p.startScript, []byte(startScript(p)), 0o700); err != nil {
			return res, err
		}
		res.ServiceFile = p.startScript
	}
	if err := writeFile(ctx, sc, p.modeFile, []byte(string(mode)+"\n"), 0o600); err != nil {
		return res, err
	}

	return res, nil
}

// UninstallOptions controls Uninstall.
type UninstallOptions struct {
	Layout
	// Purge also removes DataDir (the node's registry replica, models,
	// worker binaries, cluster secret).
	Purge bool
	// DataDir is the node's data dir; "" means DefaultStateDir (the
	// default of `rbee node` and of Start).
	DataDir string
	// Stop is how a running node is stopped first; with Stop.Secret set, a
	// host whose node another cluster started is left as it is
	// (ErrOtherCluster), nothing removed.
	Stop StopOptions
}

// UninstallResult lists the remote paths Uninstall removed.
type UninstallResult struct {
	Removed []string
}

// Uninstall stops the node if it runs, removes the service (unit or start
// script), the binary and the files this package wrote in the state dir;
// with Purge also the data dir. It removes nothing else: the state dir is
// removed only when that leaves it empty. Running it on a host without rbee
// removes nothing and is not an error.
func Uninstall(ctx context.Context, c *Client, opts UninstallOptions) (UninstallResult, error) {
	var res UninstallResult
	p, err := opts.Layout.resolve(ctx, c)
	if err != nil {
		return res, err
	}
	dataDir := p.stateDir
	if opts.DataDir != "" {
		if dataDir, err = remoteAbs(opts.DataDir, p.home); err != nil {
			return res, err
		}
	} else if d := startedDataDir(c, p); d != "" {
		// The data dir `hive start --data-dir` gave the node, as its run
		// script says: purging the default one would leave the cluster
		// secret and keys where the node kept them.
		dataDir = d
	}
	if opts.Purge {
		if err := checkPurgeable(dataDir, p); err != nil {
			return res, err
		}
		if err := checkDataDir(c, dataDir); err != nil {
			return res, err
		}
	}
	mode, err := readMode(ctx, c, p)
	if err != nil && !errors.Is(err, ErrNotInstalled) {
		return res, err
	}
	if err := checkCluster(c, p, opts.Stop.Secret); err != nil {
		return res, err
	}
	if mode != "" {
		so := opts.Stop
		so.Layout = opts.Layout
		if _, err := Stop(ctx, c, so); err != nil && !errors.Is(err, ErrNotRunning) {
			return res, fmt.Errorf("stopping before uninstall: %w", err)
		}
	}
	if mode == ServiceSystemd {
		_, _ = c.Run(ctx, "systemctl --user disable "+shellQuote(p.service+".service")+" >/dev/null 2>&1")
	}
	sc, err := c.SFTP()
	if err != nil {
		return res, err
	}
	for _, f := range []string{p.unit, p.binary, p.startScript, p.runScript, p.pidFile, p.tokenFile, p.logFile, p.modeFile} {
		removeStaleTemps(sc, f, 0) // an interrupted upload's leftovers
		switch err := sc.Remove(f); {
		case err == nil:
			res.Removed = append(res.Removed, f)
		case errors.Is(err, fs.ErrNotExist):
		default:
			return res, fmt.Errorf("remove %s: %w", f, err)
		}
	}
	if mode == ServiceSystemd {
		_, _ = c.Run(ctx, "systemctl --user daemon-reload >/dev/null 2>&1")
	}
	if opts.Purge {
		if _, err := c.Run(ctx, "rm -rf -- "+shellQuote(dataDir)); err != nil {
			return res, fmt.Errorf("purge %s: %w", dataDir, err)
		}
		res.Removed = append(res.Removed, dataDir)
	}
	if sc.RemoveDirectory(p.stateDir) == nil {
		res.Removed = append(res.Removed, p.stateDir)
	}
	return res, nil
}

// checkPurgeable refuses to rm -rf a directory that is obviously not a data
// dir: the root, the home itself or one of its ancestors, or a directory
// that holds the binary or the unit.
func checkPurgeable(dir string, p paths) error {
	switch {
	case dir == "/" || dir == p.home || strings.HasPrefix(p.home, dir+"/"):
		return fmt.Errorf("%w: refusing to purge %s", ErrInvalid, dir)
	case strings.HasPrefix(p.binary, dir+"/") || strings.HasPrefix(p.unit, dir+"/"):
		return fmt.Errorf("%w: refusing to purge %s: it holds the binary or the unit", ErrInvalid, dir)
	case strings.Count(dir, "/") < 2:
		return fmt.Errorf("%w: refusing to purge top-level directory %s", ErrInvalid, dir)
	}
	return nil
}

// dataDirMarkers are files only an rbee data dir (or the state dir, which
// is the default one) holds.
var dataDirMarkers = []string{"node.key", "node.json", "cluster.secret", "admin.key", modeFileName}

// checkDataDir refuses to purge a directory that exists, is not empty and
// holds none of dataDirMarkers: a mistyped --remote-data-dir (a home's
// projects dir) must not be rm -rf'd.
func checkDataDir(c *Client, dir string) error {
	sc, err := c.SFTP()
	if err != nil {
		return err
	}
	entries, err := sc.ReadDir(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("read %s: %w", dir, err)
	case len(entries) == 0:
		return nil
	}
	for _, e := range entries {
		if slices.Contains(dataDirMarkers, e.Name()) {
			return nil
		}
	}
	return fmt.Errorf("%w: refusing to purge %s: it is not an rbee data dir (none of %s in it)", ErrInvalid, dir,
		strings.Join(dataDirMarkers, ", "))
}

func readMode(ctx context.Context, c *Client, p paths) (ServiceMode, error) {
	sc, err := c.SFTP()
	if err != nil {
		return "", err
	}
	f, err := sc.Open(p.modeFile)
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("%w: no %s on %s (run hive install first)", ErrNotInstalled, p.modeFile, c.target.Host)
	}
	if err != nil {
		return "", fmt.Errorf("read %s: %w", p.modeFile, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 64))
	if err != nil {
		return "", fmt.Errorf("read %s: %w", p.modeFile, err)
	}
	switch m := ServiceMode(strings.TrimSpace(string(b))); m {
	case ServiceSystemd, ServiceScript:
		return m, nil
	default:
		return "", fmt.Errorf("%w: %s says %q", ErrNotInstalled, p.modeFile, m)
	}
}

// mkdirs creates dir and its parents (with the server's default mode); a
// private dir is then set to 0700 even if it existed.
func mkdirs(sc *sftp.Client, dir string, private bool) error {
	if err := sc.MkdirAll(dir); err != nil {
		return remoteFSError(sc, dir, fmt.Errorf("mkdir %s: %w", dir, err))
	}
	if !private {
		return nil
	}
	if err := sc.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("chmod %s: %w", dir, err)
	}
	return nil
}

func writeFile(ctx context.Context, sc *sftp.Client, dst string, data []byte, perm os.FileMode) error {
	return putFile(ctx, sc, dst, strings.NewReader(string(data)), perm, nil)
}

// putFile writes r to dst atomically: a temporary file in the same
// directory, then renamed over dst. Until it is complete the temporary file
// is at most 0600 (a secret is never readable by others, and a copy cut off
// half-way is never executable); verify, when not nil, checks it before it
// gets perm and the rename. Temporary files that an earlier, interrupted
// putFile of dst left behind are removed first.
func putFile(ctx context.Context, sc *sftp.Client, dst string, r io.Reader, perm os.FileMode, verify func(tmp string) error) error {
	removeStaleTemps(sc, dst, staleTempAge)
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	tmp := dst + tmpInfix + hex.EncodeToString(rnd[:])
	f, err := sc.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL)
	if err != nil {
		return remoteFSError(sc, path.Dir(dst), fmt.Errorf("create %s: %w", tmp, err))
	}
	fail := func(err error) error {
		_ = f.Close()
		err = remoteFSError(sc, path.Dir(dst), err) // while the partial copy still fills the disk
		_ = sc.Remove(tmp)
		return err
	}
	if err := f.Chmod(perm & 0o600); err != nil {
		return fail(fmt.Errorf("chmod %s: %w", tmp, err))
	}
	if _, err := io.Copy(f, ctxReader{ctx, r}); err != nil {
		return fail(fmt.Errorf("write %s: %w", tmp, err))
	}
	if err := f.Close(); err != nil {
		err = remoteFSError(sc, path.Dir(dst), fmt.Errorf("write %s: %w", tmp, err))
		_ = sc.Remove(tmp)
		return err
	}
	if verify != nil {
		if err := verify(tmp); err != nil {
			_ = sc.Remove(tmp)
			return err
		}
	}
	if perm != perm&0o600 {
		if err := sc.Chmod(tmp, perm); err != nil {
			_ = sc.Remove(tmp)
			return fmt.Errorf("chmod %s: %w", tmp, err)
		}
	}
	if err := sc.PosixRename(tmp, dst); err != nil {
		// Servers without the posix-rename extension: plain rename
		// refuses to replace, so remove first (not atomic, but rare).
		_ = sc.Remove(dst)
		if err2 := sc.Rename(tmp, dst); err2 != nil {
			_ = sc.Remove(tmp)
			return fmt.Errorf("rename %s to %s: %w", tmp, dst, err2)
		}
	}
	return nil
}

// lowSpace is the free space under which a failed write is put down to a
// full filesystem: the write that failed was at most a few SFTP packets.
const lowSpace = 1 << 20

// connectionLost reports whether an SFTP error is the connection's end
// rather than the host's answer: sftp says "connection lost" when it
// notices first, and passes on the transport's EOF or reset ("failed to
// send packet: EOF") when a write meets the dead connection first.
func connectionLost(err error) bool {
	return errors.Is(err, sftp.ErrSSHFxConnectionLost) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET)
}

// stReadOnly is ST_RDONLY in the flags of OpenSSH's statvfs@openssh.com.
const stReadOnly = 0x1

// remoteFSError explains a failed SFTP write, mkdir or create: the
// connection lost (ErrUnreachable), permission denied, or a full or
// read-only filesystem. OpenSSH
// answers a full disk and a read-only filesystem alike with SFTP's generic
// "Failure"; the filesystem's state (statvfs@openssh.com) tells which, and
// the error then matches ErrRemoteFS. Any other error is returned as is.
func remoteFSError(sc *sftp.Client, dir string, err error) error {
	if connectionLost(err) {
		return fmt.Errorf("%w: the SSH connection was lost: %v", ErrUnreachable, err)
	}
	if errors.Is(err, fs.ErrPermission) {
		return fmt.Errorf("%w: %v: the remote user may not write in %s (choose a --path it owns, or fix the permissions there)", ErrRemoteFS, err, dir)
	}
	var se *sftp.StatusError
	if !errors.As(err, &se) || se.FxCode() != sftp.ErrSSHFxFailure {
		return err
	}
	// The dir may not exist yet (a failed mkdir): ask its nearest parent.
	var vfs *sftp.StatVFS
	for d := dir; ; d = path.Dir(d) {
		v, verr := sc.StatVFS(d)
		if verr == nil {
			vfs = v
			break
		}
		if d == "/" || d == "." {
			return err
		}
	}
	switch {
	case vfs.Flag&stReadOnly != 0:
		return fmt.Errorf("%w: %v: %s is on a read-only filesystem", ErrRemoteFS, err, dir)
	case vfs.Bavail*vfs.Frsize < lowSpace:
		return fmt.Errorf("%w: %v: the filesystem of %s is full (%s free of %s)", ErrRemoteFS, err, dir,
			humanize.Bytes(vfs.Bavail*vfs.Frsize), humanize.Bytes(vfs.Blocks*vfs.Frsize))
	case vfs.Files > 0 && vfs.Favail == 0:
		return fmt.Errorf("%w: %v: the filesystem of %s has no free inodes", ErrRemoteFS, err, dir)
	}
	return err
}

// tmpInfix names putFile's temporary files: dst + tmpInfix + 12 hex digits.
const tmpInfix = ".tmp-"

// staleTempAge is how long a temporary file must have gone unwritten before
// removeStaleTemps takes it for a leftover: an upload in progress (another
// install of the same host) writes to its file continuously.
const staleTempAge = time.Minute

// removeStaleTemps removes the temporary files of dst that an interrupted
// putFile left (the connection died before it could remove them) and that
// have not been written for minAge, so that retries do not pile up copies
// of the binary. Best effort.
func removeStaleTemps(sc *sftp.Client, dst string, minAge time.Duration) {
	dir, base := path.Split(dst)
	entries, err := sc.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		n := e.Name()
		rest, ok := strings.CutPrefix(n, base+tmpInfix)
		if !ok || len(rest) != 12 || strings.Trim(rest, "0123456789abcdef") != "" || !e.Mode().IsRegular() ||
			time.Since(e.ModTime()) < minAge {
			continue
		}
		_ = sc.Remove(path.Join(dir, n))
	}
}

// verifyUpload checks the uploaded copy tmp of the local file f: the file
// did not change while it was read (size and modification time as opened),
// the copy has the size that was sent and, where the host has sha256sum or
// shasum, the same SHA-256 as the bytes sent.
func verifyUpload(ctx context.Context, c *Client, sc *sftp.Client, tmp string, f *os.File, opened os.FileInfo, sent int64, sum []byte) error {
	if now, err := f.Stat(); err != nil || now.Size() != opened.Size() || !now.ModTime().Equal(opened.ModTime()) || sent != opened.Size() {
		return fmt.Errorf("%w: %s changed while it was copied (%d bytes when opened, %d sent): retry once it is complete", ErrTransfer, f.Name(), opened.Size(), sent)
	}
	st, err := sc.Stat(tmp)
	if err != nil {
		return fmt.Errorf("%w: stat %s: %v", ErrTransfer, tmp, err)
	}
	if st.Size() != sent {
		return fmt.Errorf("%w: %s holds %d bytes, %d were sent", ErrTransfer, tmp, st.Size(), sent)
	}
	// The file goes on stdin: no option parsing ('--' is a file name to a
	// busybox sha256sum built without its check feature) and no escaped
	// name in the output.
	out, err := c.Run(ctx, "f="+shellQuote(tmp)+"; if command -v sha256sum >/dev/null 2>&1; then sha256sum <\"$f\"; "+
		"elif command -v shasum >/dev/null 2>&1; then shasum -a 256 <\"$f\"; fi")
	if err != nil {
		return fmt.Errorf("%w: checksum of %s: %w", ErrTransfer, tmp, err)
	}
	want := hex.EncodeToString(sum)
	// sha256sum escapes a name with a backslash by prefixing the sum with one.
	if fields := strings.Fields(out); len(fields) > 0 && !strings.EqualFold(strings.TrimPrefix(fields[0], `\`), want) {
		return fmt.Errorf("%w: %s has SHA-256 %s, the bytes sent %s", ErrTransfer, tmp, humanize.Clip(fields[0], 80), want)
	}
	return nil
}

// countReader counts the bytes read through it.
type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// startedDataDir is the --data-dir of the node command in the host's run
// script (written by every hive start), "" when there is none or it names
// none.
func startedDataDir(c *Client, p paths) string {
	args := startedArgs(c, p)
	for i, w := range args {
		if w == "--data-dir" && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

// startedArgs are the `rbee node` arguments of the host's run script (as
// the last hive start wrote them); nil when there is no run script, it
// runs no node, or its arguments are not ones Start could have written.
func startedArgs(c *Client, p paths) []string {
	sc, err := c.SFTP()
	if err != nil {
		return nil
	}
	f, err := sc.Open(p.runScript)
	if err != nil {
		return nil
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 64<<10))
	if err != nil {
		return nil
	}
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "exec ") {
			continue
		}
		words := splitWords(line)
		if len(words) < 3 || words[2] != "node" || checkNodeArgs(words[3:]) != nil {
			return nil
		}
		return words[3:]
	}
	return nil
}

package sshhive

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strconv"
	"strings"
	"time"
)

// Errors of the service operations (see also the package's main list).
var (
	// ErrAlreadyRunning: Start found the node already running there.
	ErrAlreadyRunning = errors.New("sshhive: rbee node already running there")
	// ErrOtherCluster: the node there was started with another cluster's
	// secret (its join token differs): Stop and Uninstall leave it alone.
	ErrOtherCluster = errors.New("sshhive: the rbee node there belongs to another cluster")
)

// Start and Stop timing defaults.
const (
	// DefaultPIDWait bounds the wait for the launched node to write its pid
	// file: the shell starts it in milliseconds; 10 s covers a loaded host.
	DefaultPIDWait = 10 * time.Second
	// DefaultSettle is how long the node must keep running after launch for
	// Start to succeed: bad flags or an unusable data dir make `rbee node`
	// exit within a fraction of a second, and the user should see that
	// error from Start rather than a node that never joins.
	DefaultSettle = time.Second
	// DefaultStopGrace is how long Stop waits after SIGTERM before SIGKILL:
	// a node drains its workers' in-flight requests on SIGTERM.
	DefaultStopGrace = 30 * time.Second
	// killWait bounds the wait for the process to vanish after SIGKILL.
	killWait = 5 * time.Second
	// pollInterval paces remote liveness checks (one SSH session each).
	pollInterval = 100 * time.Millisecond
	// logTail is how many log lines a failed start reports.
	logTail = 20
)

// StartOptions says how to run the node on the remote host. Empty fields
// are left to `rbee node`'s defaults.
type StartOptions struct {
	Layout
	Name      string   // --name (default there: the hostname)
	JoinAddrs []string // --join, one per address: gossip addresses of this cluster
	// Secret is the cluster token. It travels in a 0600 file written over
	// SFTP (never on a command line, where `ps` would show it) and the node
	// reads it with --token-file. A host whose join token another cluster
	// wrote is left alone (ErrOtherCluster).
	Secret     string
	DataDir    string // --data-dir ("~/" expands remotely)
	HTTPAddr   string // --http-addr
	GossipAddr string // --gossip-addr
	P2PAddr    string // --p2p-addr
	ExtraArgs  []string
	// PIDWait and Settle: see DefaultPIDWait and DefaultSettle.
	PIDWait, Settle time.Duration
}

// StartResult identifies the launched node.
type StartResult struct {
	PID     int
	Service ServiceMode
	LogFile string // script mode: the node's output; systemd: also the journal
}

// checkNodeArgs refuses a token on the command line.
func checkNodeArgs(args []string) error {
	for _, a := range args {
		if a == "--token" || strings.HasPrefix(a, "--token=") {
			return fmt.Errorf("%w: the cluster token must not be passed as an argument (visible in ps): use Secret", ErrInvalid)
		}
		if strings.ContainsAny(a, "\n\x00") {
			return fmt.Errorf("%w: node argument %q has a newline or NUL", ErrInvalid, a)
		}
	}
	return nil
}

func (o StartOptions) args(p paths) ([]string, error) {
	if err := checkNodeArgs(o.ExtraArgs); err != nil {
		return nil, err
	}
	var a []string
	add := func(flag, v string) {
		if v != "" {
			a = append(a, flag, v)
		}
	}
	add("--name", o.Name)
	for _, j := range o.JoinAddrs {
		add("--join", j)
	}
	if o.Secret != "" {
		add("--token-file", p.tokenFile)
	}
	if o.DataDir != "" {
		d, err := remoteAbs(o.DataDir, p.home)
		if err != nil {
			return nil, err
		}
		add("--data-dir", d)
	}
	add("--http-addr", o.HTTPAddr)
	add("--gossip-addr", o.GossipAddr)
	add("--p2p-addr", o.P2PAddr)
	a = append(a, o.ExtraArgs...)
	if err := checkNodeArgs(a); err != nil {
		return nil, err
	}
	return a, nil
}

// Start runs `rbee node` on the host with the service Install set up and
// returns once the process has written its pid file and still runs after
// opts.Settle. Joining the cluster is the node's own business (the caller
// watches gossip). Errors: ErrNotInstalled, ErrAlreadyRunning, ErrNotRunning
// (it exited at once: the error carries the log's last lines), ErrInvalid.
func Start(ctx context.Context, c *Client, opts StartOptions) (StartResult, error) {
	var res StartResult
	p, err := opts.Layout.resolve(ctx, c)
	if err != nil {
		return res, err
	}
	args, err := opts.args(p)
	if err != nil {
		return res, err
	}
	mode, err := readMode(ctx, c, p)
	if err != nil {
		return res, err
	}
	res.Service, res.LogFile = mode, p.logFile
	if err := checkCluster(c, p, opts.Secret); err != nil {
		return res, err
	}
	if pid, alive, err := running(ctx, c, p, mode); err != nil {
		return res, err
	} else if alive {
		return res, fmt.Errorf("%w (pid %d)", ErrAlreadyRunning, pid)
	}
	sc, err := c.SFTP()
	if err != nil {
		return res, err
	}
	if opts.Secret != "" {
		if err := writeFile(ctx, sc, p.tokenFile, []byte(opts.Secret+"\n"), 0o600); err != nil {
			return res, err
		}
	}
	if err := writeFile(ctx, sc, p.runScript, []byte(runScript(p, args)), 0o700); err != nil {
		return res, err
	}
	if err := sc.Remove(p.pidFile); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return res, fmt.Errorf("remove stale %s: %w", p.pidFile, err)
	}
	switch mode {
	case ServiceSystemd:
		_, err = c.Run(ctx, "systemctl --user daemon-reload && systemctl --user restart "+shellQuote(p.service+".service"))
	default:
		_, err = c.Run(ctx, "/bin/sh "+shellQuote(p.startScript))
	}
	if err != nil {
		return res, err
	}

	wait := orDefault(opts.PIDWait, DefaultPIDWait)
	deadline := time.Now().Add(wait)
	for {
		pid, err := readPID(ctx, c, p)
		if err != nil {
			return res, err
		}
		if pid > 0 {
			res.PID = pid
			break
		}
		if time.Now().After(deadline) {
			return res, fmt.Errorf("%w: no pid file %s within %s%s", ErrNotRunning, p.pidFile, wait, tailLog(ctx, c, p, mode))
		}
		if err := sleepCtx(ctx, pollInterval); err != nil {
			return res, err
		}
	}
	// Watch it for Settle: an early exit is reported as soon as it happens.
	gone, err := waitGone(ctx, c, p, res.PID, orDefault(opts.Settle, DefaultSettle))
	if err != nil {
		return res, err
	}
	if gone {
		return res, fmt.Errorf("%w: pid %d exited right after start%s", ErrNotRunning, res.PID, tailLog(ctx, c, p, mode))
	}
	return res, nil
}

// StopOptions controls Stop.
type StopOptions struct {
	Layout
	// Grace is the wait between SIGTERM and SIGKILL (script mode; systemd
	// applies the unit's TimeoutStopSec). 0 means DefaultStopGrace.
	Grace time.Duration
	// Secret, when set, is this cluster's secret: a node that Start ran
	// there with another one (another cluster's node) is not stopped
	// (ErrOtherCluster).
	Secret string
}

// StopResult says what Stop found and did.
type StopResult struct {
	WasRunning bool
	PID        int
	Killed     bool // it outlived Grace and got SIGKILL
}

// Stop is the SSH fallback for stopping a node (the graceful way is the
// node's own leave over p2p). systemd: `systemctl --user stop`. Script mode:
// SIGTERM to the pid in the pid file (only if that pid still runs this rbee
// binary, so a reused pid is never signalled), wait up to Grace, then
// SIGKILL that pid. A node that is not running is not an error
// (WasRunning false). ErrNotInstalled when Install never ran there.
func Stop(ctx context.Context, c *Client, opts StopOptions) (StopResult, error) {
	var res StopResult
	p, err := opts.Layout.resolve(ctx, c)
	if err != nil {
		return res, err
	}
	mode, err := readMode(ctx, c, p)
	if err != nil {
		return res, err
	}
	if err := checkCluster(c, p, opts.Secret); err != nil {
		return res, err
	}
	pid, isUp, err := running(ctx, c, p, mode)
	if err != nil {
		return res, err
	}
	res.PID, res.WasRunning = pid, isUp
	if mode == ServiceSystemd {
		if isUp {
			if _, err := c.Run(ctx, "systemctl --user stop "+shellQuote(p.service+".service")); err != nil {
				return res, err
			}
		}
		return res, removePID(c, p)
	}
	if !isUp {
		return res, removePID(c, p)
	}
	if err := signal(ctx, c, p, pid, "TERM"); err != nil {
		return res, err
	}
	gone, err := waitGone(ctx, c, p, pid, orDefault(opts.Grace, DefaultStopGrace))
	if err != nil {
		return res, err
	}
	if !gone {
		res.Killed = true
		if err := signal(ctx, c, p, pid, "KILL"); err != nil {
			return res, err
		}
		if gone, err = waitGone(ctx, c, p, pid, killWait); err != nil {
			return res, err
		} else if !gone {
			return res, fmt.Errorf("pid %d on %s survived SIGKILL", pid, c.target.Host)
		}
	}
	return res, removePID(c, p)
}

// Status is the service state on a host.
type Status struct {
	Installed bool
	Service   ServiceMode
	Running   bool
	PID       int // from the pid file; 0 if none
}

// GetStatus reports whether rbee is installed and running there.
func GetStatus(ctx context.Context, c *Client, l Layout) (Status, error) {
	var st Status
	p, err := l.resolve(ctx, c)
	if err != nil {
		return st, err
	}
	mode, err := readMode(ctx, c, p)
	if errors.Is(err, ErrNotInstalled) {
		return st, nil
	}
	if err != nil {
		return st, err
	}
	st.Installed, st.Service = true, mode
	st.PID, st.Running, err = running(ctx, c, p, mode)
	return st, err
}

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// checkCluster refuses (ErrOtherCluster) when secret is set and the join
// token Start wrote there holds another secret. No token file (never
// started with a secret) passes.
func checkCluster(c *Client, p paths, secret string) error {
	if secret == "" {
		return nil
	}
	sc, err := c.SFTP()
	if err != nil {
		return err
	}
	f, err := sc.Open(p.tokenFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", p.tokenFile, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 64<<10))
	if err != nil {
		return fmt.Errorf("read %s: %w", p.tokenFile, err)
	}
	if subtle.ConstantTimeCompare([]byte(strings.TrimSpace(string(b))), []byte(secret)) != 1 {
		return fmt.Errorf("%w: %s on %s holds another cluster's secret: stop or uninstall that node from its own cluster "+
			"(if that cluster is gone, remove the file there first)", ErrOtherCluster, p.tokenFile, c.target.Host)
	}
	return nil
}

func removePID(c *Client, p paths) error {
	sc, err := c.SFTP()
	if err != nil {
		return err
	}
	if err := sc.Remove(p.pidFile); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", p.pidFile, err)
	}
	return nil
}

// readPID returns the pid in the pid file, 0 when there is none (yet).
func readPID(ctx context.Context, c *Client, p paths) (int, error) {
	sc, err := c.SFTP()
	if err != nil {
		return 0, err
	}
	f, err := sc.Open(p.pidFile)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", p.pidFile, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 32))
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", p.pidFile, err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return 0, nil
	}
	pid, err := strconv.Atoi(s)
	if err != nil || pid <= 1 {
		return 0, fmt.Errorf("%w: pid file %s holds %q", ErrInvalid, p.pidFile, s)
	}
	return pid, nil
}

// running reports the pid file's pid and whether the node runs: systemd's
// view in systemd mode, else whether that pid runs our binary.
func running(ctx context.Context, c *Client, p paths, mode ServiceMode) (int, bool, error) {
	pid, err := readPID(ctx, c, p)
	if err != nil {
		return 0, false, err
	}
	if mode == ServiceSystemd {
		_, err := c.Run(ctx, "systemctl --user is-active --quiet "+shellQuote(p.service+".service"))
		if errors.Is(err, ErrRemoteCommand) {
			return pid, false, nil
		}
		return pid, err == nil, err
	}
	if pid == 0 {
		return 0, false, nil
	}
	ok, err := alive(ctx, c, p, pid)
	return pid, ok, err
}

// aliveFunc defines rbee_alive PID in a remote shell: true when PID exists,
// is not a zombie (an unreaped child of an init that does not reap still has
// a pid), and its command line names our binary or run script, so a pid
// reused by another program does not count. Linux reads /proc; elsewhere ps.
const aliveFunc = `rbee_alive() {
  [ -n "$1" ] || return 1
  if [ -r "/proc/$1/stat" ]; then
    st=$(sed -n 's/^.*) \(.\).*$/\1/p' "/proc/$1/stat" 2>/dev/null)
    case "$st" in ""|Z|X|x) return 1;; esac
    tr '\000' ' ' < "/proc/$1/cmdline" 2>/dev/null | grep -qF -e "$RBEE_BIN" -e "$RBEE_RUN"
  else
    st=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
    case "$st" in ""|Z*) return 1;; esac
    ps -o args= -p "$1" 2>/dev/null | grep -qF -e "$RBEE_BIN" -e "$RBEE_RUN"
  fi
}
`

func aliveScript(p paths) string {
	return "RBEE_BIN=" + shellQuote(p.binary) + "\nRBEE_RUN=" + shellQuote(p.runScript) + "\n" + aliveFunc
}

func alive(ctx context.Context, c *Client, p paths, pid int) (bool, error) {
	_, err := c.Run(ctx, aliveScript(p)+"rbee_alive "+strconv.Itoa(pid))
	if errors.Is(err, ErrRemoteCommand) {
		return false, nil
	}
	return err == nil, err
}

// signal sends SIG to pid only if it is still our process.
func signal(ctx context.Context, c *Client, p paths, pid int, sig string) error {
	_, err := c.Run(ctx, aliveScript(p)+fmt.Sprintf("if rbee_alive %d; then kill -%s %d; fi", pid, sig, pid))
	return err
}

func waitGone(ctx context.Context, c *Client, p paths, pid int, d time.Duration) (bool, error) {
	deadline := time.Now().Add(d)
	for {
		ok, err := alive(ctx, c, p, pid)
		if err != nil || !ok {
			return !ok, err
		}
		if time.Now().After(deadline) {
			return false, nil
		}
		if err := sleepCtx(ctx, pollInterval); err != nil {
			return false, err
		}
	}
}

// tailLog returns "\n" + the log's last lines (script mode) or the unit's
// journal, for error messages; empty when there is nothing to show.
func tailLog(ctx context.Context, c *Client, p paths, mode ServiceMode) string {
	cmd := fmt.Sprintf("tail -n %d %s 2>/dev/null", logTail, shellQuote(p.logFile))
	if mode == ServiceSystemd {
		cmd = fmt.Sprintf("journalctl --user -u %s -n %d --no-pager 2>/dev/null", shellQuote(p.service+".service"), logTail)
	}
	out, _ := c.Run(ctx, cmd)
	out = strings.TrimSpace(out)
	if out == "" {
		return ""
	}
	return "; last lines of the log:\n" + out
}

// runScript is the node's command line. It records its own pid (the shell
// then execs rbee, so the pid is the node's) and runs in the foreground:
// systemd runs it as ExecStart, the start script in the background.
func runScript(p paths, args []string) string {
	var b strings.Builder
	b.WriteString("#!/bin/sh\n# Written by rbee (hive install/start); rewritten by every start. Runs the rbee node in the foreground.\n")
	fmt.Fprintf(&b, "echo $$ > %s && mv -f %s %s\n", shellQuote(p.pidFile+".tmp"), shellQuote(p.pidFile+".tmp"), shellQuote(p.pidFile))
	b.WriteString("exec " + shellQuote(p.binary) + " node")
	for _, a := range args {
		b.WriteString(" " + shellQuote(a))
	}
	b.WriteString("\n")
	return b.String()
}

// startScript launches the run script detached from the SSH session: nohup
// and (where available) setsid so the session's end does not hang it up,
// stdin from /dev/null and output to the log so the session does not wait
// for it. It refuses to start a second copy.
func startScript(p paths) string {
	q := shellQuote
	return "#!/bin/sh\n# Written by rbee hive install: starts the rbee node in the background.\n" +
		"# pid file: " + p.pidFile + "\n# log: " + p.logFile + "\n" +
		aliveScript(p) +
		"pid=$(cat " + q(p.pidFile) + " 2>/dev/null)\n" +
		"if rbee_alive \"$pid\"; then echo \"rbee node already running (pid $pid)\" >&2; exit 3; fi\n" +
		"rm -f " + q(p.pidFile) + "\n" +
		"cd " + q(p.stateDir) + " || exit 1\n" +
		"if command -v setsid >/dev/null 2>&1; then\n" +
		"  nohup setsid /bin/sh " + q(p.runScript) + " >>" + q(p.logFile) + " 2>&1 </dev/null &\n" +
		"else\n" +
		"  nohup /bin/sh " + q(p.runScript) + " >>" + q(p.logFile) + " 2>&1 </dev/null &\n" +
		"fi\n"
}

// systemdUnit runs the run script as a user service.
func systemdUnit(p paths) string {
	return "# Written by rbee hive install.\n[Unit]\nDescription=rbee node (LLM inference cluster hive)\n" +
		"After=network-online.target\nWants=network-online.target\n\n" +
		"[Service]\nType=simple\nExecStart=/bin/sh " + systemdQuote(p.runScript) + "\n" +
		"Restart=on-failure\nRestartSec=5\n" +
		"# A node drains in-flight requests on SIGTERM before exiting.\nTimeoutStopSec=60\n\n" +
		"[Install]\nWantedBy=default.target\n"
}

// systemdQuote quotes one ExecStart argument: double quotes with \ and "
// escaped, % doubled (systemd's specifier character) and $ doubled (its
// environment variable substitution: "${HOME}" in a path would be replaced).
func systemdQuote(s string) string {
	s = strings.ReplaceAll(s, `\`, `\\`)
	s = strings.ReplaceAll(s, `"`, `\"`)
	s = strings.ReplaceAll(s, "%", "%%")
	s = strings.ReplaceAll(s, "$", "$$")
	return `"` + s + `"`
}

package main

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/api"
	"github.com/rbee-project/rbee/node/sshhive"
)

// TestSSHResultLines: what a remote host reports (its rbee's version, the
// install path under its $HOME) reaches the terminal without its escape
// sequences, and the version is not printed as "rbee rbee version X".
func TestSSHResultLines(t *testing.T) {
	const evil = "\x1b]0;PWNED\a\x1b[2J\x1b[31mEVIL"
	tests := []struct {
		name, got, want string
	}{
		{"ssh-test", sshTestLine("lab1", api.SSHTestResult{OS: "linux", Arch: "amd64", RoundTripMs: 1.5, RbeeVersion: "rbee version v1.2.0\n"}),
			"lab1: ok, linux/amd64, round trip 1.50 ms, rbee v1.2.0"},
		{"ssh-test, no rbee", sshTestLine("lab1", api.SSHTestResult{OS: "linux", Arch: "amd64", RoundTripMs: 1.5}),
			"lab1: ok, linux/amd64, round trip 1.50 ms, rbee -"},
		{"ssh-test, hostile version", sshTestLine("lab1", api.SSHTestResult{OS: "linux", Arch: "amd64", RoundTripMs: 1.5, RbeeVersion: "rbee version " + evil}),
			`lab1: ok, linux/amd64, round trip 1.50 ms, rbee \x1b]0;PWNED\a\x1b[2J\x1b[31mEVIL`},
		{"install", installLine(sshhive.InstallResult{BinaryPath: "/home/u/.local/bin/rbee", Version: "rbee version v1.2.0", Service: sshhive.ServiceScript}),
			"installed /home/u/.local/bin/rbee (rbee v1.2.0, service: script)"},
		{"install, hostile home", installLine(sshhive.InstallResult{BinaryPath: "/home/" + evil + "/rbee", Version: evil, Service: sshhive.ServiceScript}),
			`installed /home/\x1b]0;PWNED\a\x1b[2J\x1b[31mEVIL/rbee (rbee \x1b]0;PWNED\a\x1b[2J\x1b[31mEVIL, service: script)`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, tc.got)
			require.NotContains(t, tc.got, "\x1b")
		})
	}
}

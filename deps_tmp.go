//go:build tools

package rbee

import (
	_ "github.com/hashicorp/memberlist"
	_ "github.com/hashicorp/raft"
	_ "github.com/hashicorp/raft-boltdb/v2"
	_ "github.com/libp2p/go-libp2p"
	_ "github.com/libp2p/go-libp2p/p2p/discovery/mdns"
	_ "github.com/libp2p/go-libp2p/core/pnet"
	_ "github.com/spf13/cobra"
	_ "github.com/shirou/gopsutil/v4/process"
	_ "github.com/stretchr/testify/require"
	_ "golang.org/x/sys/unix"
	_ "github.com/ardanlabs/jinja"
)

package node

import (
	"context"

	"github.com/rbee-project/rbee/fsm"
	"github.com/rbee-project/rbee/node/hw"
)

// DetectCapabilities reads this machine's hardware in the registry's shape.
func DetectCapabilities(ctx context.Context) fsm.Capabilities {
	info := hw.Detect(ctx)
	c := fsm.Capabilities{CPUModel: info.CPUModel, Cores: info.Cores, Threads: info.Threads, Flags: info.Flags,
		RAMTotal: info.RAMTotal, RAMFree: info.RAMFree, OS: info.OS, Arch: info.Arch}
	for _, g := range info.GPUs {
		c.GPUs = append(c.GPUs, fsm.GPU{Vendor: g.Vendor, Name: g.Name, Index: g.Index, VRAMTotal: g.VRAMTotal, VRAMFree: g.VRAMFree})
	}
	return c
}

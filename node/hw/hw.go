// Package hw detects a machine's capabilities: CPU, RAM, OS and GPUs.
//
// GPUs are read from the vendors' command-line tools (nvidia-smi, rocm-smi,
// system_profiler) so the binary stays cgo-free; each parser takes the
// tool's recorded output and is tested on it.
package hw

import (
	"context"
	"encoding/csv"
	"fmt"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/shirou/gopsutil/v4/cpu"
	"github.com/shirou/gopsutil/v4/mem"
)

// GPU is one accelerator.
type GPU struct {
	Vendor    string `json:"vendor"`
	Name      string `json:"name"`
	Index     int    `json:"index"`
	VRAMTotal uint64 `json:"vram_total"`
	VRAMFree  uint64 `json:"vram_free"`
}

// Info is what Detect finds.
type Info struct {
	CPUModel string
	Cores    int
	Threads  int
	Flags    []string
	RAMTotal uint64
	RAMFree  uint64
	OS       string
	Arch     string
	GPUs     []GPU
}

// toolTimeout bounds one vendor tool run: nvidia-smi can take seconds on a
// cold driver, never tens of seconds.
const toolTimeout = 10 * time.Second

// interestingFlags are the CPU features that matter to the engine's kernels.
var interestingFlags = map[string]bool{"avx": true, "avx2": true, "fma": true, "f16c": true, "avx512f": true,
	"avx512bw": true, "avx512vl": true, "avx512_vnni": true, "avx_vnni": true, "neon": true, "asimd": true,
	"asimddp": true, "sve": true, "sse4_2": true}

// RAM reads the machine's total and available RAM (what the kernel could
// give a new process without swapping: free plus reclaimable caches).
func RAM(ctx context.Context) (total, available uint64, err error) {
	vm, err := mem.VirtualMemoryWithContext(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("hw: read RAM: %w", err)
	}
	return vm.Total, vm.Available, nil
}

// Detect reads the local machine. It never fails: what it cannot read
// stays zero.
func Detect(ctx context.Context) Info {
	info := Info{OS: runtime.GOOS, Arch: runtime.GOARCH, Threads: runtime.NumCPU()}
	if cs, err := cpu.InfoWithContext(ctx); err == nil && len(cs) > 0 {
		info.CPUModel = strings.TrimSpace(cs[0].ModelName)
		for _, f := range cs[0].Flags {
			if interestingFlags[strings.ToLower(f)] {
				info.Flags = append(info.Flags, strings.ToLower(f))
			}
		}
	}
	if n, err := cpu.CountsWithContext(ctx, false); err == nil && n > 0 {
		info.Cores = n
	} else {
		info.Cores = info.Threads
	}
	if total, avail, err := RAM(ctx); err == nil {
		info.RAMTotal, info.RAMFree = total, avail
	}
	info.GPUs = append(info.GPUs, detectNVIDIA(ctx)...)
	info.GPUs = append(info.GPUs, detectAMD(ctx)...)
	if runtime.GOOS == "darwin" {
		info.GPUs = append(info.GPUs, detectApple(ctx)...)
	}
	return info
}

func run(ctx context.Context, name string, args ...string) ([]byte, error) {
	if _, err := exec.LookPath(name); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, toolTimeout)
	defer cancel()
	return exec.CommandContext(ctx, name, args...).Output()
}

func detectNVIDIA(ctx context.Context) []GPU {
	out, err := run(ctx, "nvidia-smi", "--query-gpu=index,name,memory.total,memory.free", "--format=csv,noheader,nounits")
	if err != nil {
		return nil
	}
	gpus, _ := ParseNvidiaSMI(out)
	return gpus
}

func detectAMD(ctx context.Context) []GPU {
	out, err := run(ctx, "rocm-smi", "--showproductname", "--showmeminfo", "vram", "--json")
	if err != nil {
		return nil
	}
	gpus, _ := ParseROCmSMI(out)
	return gpus
}

func detectApple(ctx context.Context) []GPU {
	out, err := run(ctx, "system_profiler", "SPDisplaysDataType", "-json")
	if err != nil {
		return nil
	}
	gpus, _ := ParseSystemProfiler(out)
	return gpus
}

const mib = 1 << 20

// ParseNvidiaSMI parses `nvidia-smi --query-gpu=index,name,memory.total,
// memory.free --format=csv,noheader,nounits` (memory in MiB).
func ParseNvidiaSMI(out []byte) ([]GPU, error) {
	r := csv.NewReader(strings.NewReader(string(out)))
	r.TrimLeadingSpace = true
	r.FieldsPerRecord = -1
	recs, err := r.ReadAll()
	if err != nil {
		return nil, fmt.Errorf("nvidia-smi csv: %w", err)
	}
	var gpus []GPU
	for _, rec := range recs {
		if len(rec) < 4 {
			return nil, fmt.Errorf("nvidia-smi csv: want 4 fields, got %d", len(rec))
		}
		idx, err := strconv.Atoi(strings.TrimSpace(rec[0]))
		if err != nil {
			return nil, fmt.Errorf("nvidia-smi index %q: %w", rec[0], err)
		}
		total, err1 := strconv.ParseUint(strings.TrimSpace(rec[2]), 10, 64)
		free, err2 := strconv.ParseUint(strings.TrimSpace(rec[3]), 10, 64)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("nvidia-smi memory %q/%q not a number of MiB", rec[2], rec[3])
		}
		gpus = append(gpus, GPU{Vendor: "nvidia", Name: strings.TrimSpace(rec[1]), Index: idx, VRAMTotal: total * mib, VRAMFree: free * mib})
	}
	return gpus, nil
}

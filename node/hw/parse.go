package hw

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// ParseROCmSMI parses `rocm-smi --showproductname --showmeminfo vram --json`:
// an object of "cardN" objects with "Card series"/"Card model" and
// "VRAM Total Memory (B)"/"VRAM Total Used Memory (B)" as decimal strings.
func ParseROCmSMI(out []byte) ([]GPU, error) {
	var doc map[string]map[string]any
	if err := json.Unmarshal(out, &doc); err != nil {
		return nil, fmt.Errorf("rocm-smi json: %w", err)
	}
	var cards []string
	for k := range doc {
		if strings.HasPrefix(k, "card") {
			cards = append(cards, k)
		}
	}
	sort.Slice(cards, func(a, b int) bool {
		ia, _ := strconv.Atoi(strings.TrimPrefix(cards[a], "card"))
		ib, _ := strconv.Atoi(strings.TrimPrefix(cards[b], "card"))
		return ia < ib
	})
	var gpus []GPU
	for _, c := range cards {
		f := doc[c]
		idx, err := strconv.Atoi(strings.TrimPrefix(c, "card"))
		if err != nil {
			return nil, fmt.Errorf("rocm-smi card name %q", c)
		}
		name := str(f["Card series"])
		if name == "" {
			name = str(f["Card model"])
		}
		if name == "" {
			name = str(f["Card SKU"])
		}
		total, _ := strconv.ParseUint(str(f["VRAM Total Memory (B)"]), 10, 64)
		used, _ := strconv.ParseUint(str(f["VRAM Total Used Memory (B)"]), 10, 64)
		free := uint64(0)
		if total >= used {
			free = total - used
		}
		gpus = append(gpus, GPU{Vendor: "amd", Name: name, Index: idx, VRAMTotal: total, VRAMFree: free})
	}
	return gpus, nil
}

func str(v any) string {
	switch x := v.(type) {
	case string:
		return strings.TrimSpace(x)
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	}
	return ""
}

// ParseSystemProfiler parses `system_profiler SPDisplaysDataType -json`.
// Discrete GPUs report "spdisplays_vram" (e.g. "8 GB"); Apple silicon shares
// system memory and reports none, so its VRAM stays 0 (the node's RAM is the
// limit).
func ParseSystemProfiler(out []byte) ([]GPU, error) {
	var doc struct {
		Displays []map[string]any `json:"SPDisplaysDataType"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		return nil, fmt.Errorf("system_profiler json: %w", err)
	}
	var gpus []GPU
	for i, d := range doc.Displays {
		name := str(d["sppci_model"])
		if name == "" {
			name = str(d["_name"])
		}
		vendor := strings.ToLower(str(d["spdisplays_vendor"]))
		switch {
		case strings.Contains(vendor, "apple") || strings.HasPrefix(name, "Apple"):
			vendor = "apple"
		case strings.Contains(vendor, "amd") || strings.Contains(vendor, "ati"):
			vendor = "amd"
		case strings.Contains(vendor, "nvidia"):
			vendor = "nvidia"
		case strings.Contains(vendor, "intel"):
			vendor = "intel"
		}
		vram := parseSize(str(d["spdisplays_vram"]))
		if vram == 0 {
			vram = parseSize(str(d["spdisplays_vram_shared"]))
		}
		gpus = append(gpus, GPU{Vendor: vendor, Name: name, Index: i, VRAMTotal: vram})
	}
	return gpus, nil
}

// parseSize reads "8 GB", "1536 MB".
func parseSize(s string) uint64 {
	f := strings.Fields(s)
	if len(f) != 2 {
		return 0
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil || v < 0 {
		return 0
	}
	switch strings.ToUpper(f[1]) {
	case "KB":
		return uint64(v * (1 << 10))
	case "MB":
		return uint64(v * (1 << 20))
	case "GB":
		return uint64(v * (1 << 30))
	case "TB":
		return uint64(v * (1 << 40))
	}
	return 0
}

package hw

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParsers(t *testing.T) {
	cases := []struct {
		file  string
		parse func([]byte) ([]GPU, error)
		want  []GPU
	}{
		{"nvidia-smi.csv", ParseNvidiaSMI, []GPU{
			{Vendor: "nvidia", Name: "NVIDIA GeForce RTX 3090", Index: 0, VRAMTotal: 24576 * mib, VRAMFree: 24245 * mib},
			{Vendor: "nvidia", Name: "NVIDIA GeForce RTX 3060", Index: 1, VRAMTotal: 12288 * mib, VRAMFree: 11918 * mib},
		}},
		{"rocm-smi.json", ParseROCmSMI, []GPU{
			{Vendor: "amd", Name: "Navi 21 [Radeon RX 6800/6800 XT / 6900 XT]", Index: 0, VRAMTotal: 17163091968, VRAMFree: 17163091968 - 15130624},
			{Vendor: "amd", Name: "Navi 23 [Radeon RX 6600/6600 XT/6600M]", Index: 1, VRAMTotal: 8573157376, VRAMFree: 8000000000},
		}},
		// Two GPUs, one of them nearly full (another process holds it).
		{"nvidia-smi-busy.csv", ParseNvidiaSMI, []GPU{
			{Vendor: "nvidia", Name: "NVIDIA GeForce RTX 3070", Index: 0, VRAMTotal: 8192 * mib, VRAMFree: 7987 * mib},
			{Vendor: "nvidia", Name: "NVIDIA GeForce RTX 3060", Index: 1, VRAMTotal: 12288 * mib, VRAMFree: 312 * mib},
		}},
		{"rocm-smi-busy.json", ParseROCmSMI, []GPU{
			{Vendor: "amd", Name: "Navi 31 [Radeon RX 7900 XTX]", Index: 0, VRAMTotal: 25753026560, VRAMFree: 301000000},
			{Vendor: "amd", Name: "Navi 21 [Radeon RX 6800/6800 XT / 6900 XT]", Index: 1, VRAMTotal: 17163091968, VRAMFree: 17000000000},
		}},
		{"system_profiler-m1.json", ParseSystemProfiler, []GPU{{Vendor: "apple", Name: "Apple M1 Pro", Index: 0}}},
		{"system_profiler-intel.json", ParseSystemProfiler, []GPU{
			{Vendor: "intel", Name: "Intel UHD Graphics 630", Index: 0, VRAMTotal: 1536 << 20},
			{Vendor: "amd", Name: "AMD Radeon Pro 5500M", Index: 1, VRAMTotal: 4 << 30},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.file, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join("testdata", tc.file))
			require.NoError(t, err)
			got, err := tc.parse(b)
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}

func TestParsersRejectGarbage(t *testing.T) {
	for name, in := range map[string]string{
		"nvidia short":  "0, GPU\n",
		"nvidia nonnum": "0, GPU, lots, some\n",
		"nvidia index":  "x, GPU, 1, 1\n",
	} {
		_, err := ParseNvidiaSMI([]byte(in))
		require.Error(t, err, name)
	}
	_, err := ParseROCmSMI([]byte("{not json"))
	require.Error(t, err)
	_, err = ParseSystemProfiler([]byte("[]"))
	require.Error(t, err)
}

func TestDetectLocal(t *testing.T) {
	info := Detect(context.Background())
	require.Equal(t, runtime.GOOS, info.OS)
	require.Equal(t, runtime.GOARCH, info.Arch)
	require.Positive(t, info.Threads)
	require.Positive(t, info.Cores)
	require.Positive(t, info.RAMTotal)
}

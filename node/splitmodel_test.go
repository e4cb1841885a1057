package node_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	modelcat "github.com/rbee-project/rbee/model/catalog"
	"github.com/rbee-project/rbee/model/gguf"
	"github.com/rbee-project/rbee/model/hf/hubtest"
	"github.com/rbee-project/rbee/node"
	"github.com/rbee-project/rbee/node/jobs"
	"github.com/rbee-project/rbee/node/nodetest"
)

// TestModelDownloadOfASplitModel: a model the Hub holds as gguf-split
// parts downloads through model_download by hf:ORG/REPO:QUANT as one
// merged file (the model's own bytes), with progress over the parts, and
// another hive copies it from the first with the Hub gone, like any model.
func TestModelDownloadOfASplitModel(t *testing.T) {
	src, err := gguf.Open("../testdata/model/stories260K.gguf")
	require.NoError(t, err)
	defer src.Close()
	paths, err := gguf.Split(src, filepath.Join(t.TempDir(), "stories260K-Q8_0"), 3, gguf.SplitOptions{})
	require.NoError(t, err)
	hub := hubtest.New()
	var total int64
	for _, p := range paths {
		b, err := os.ReadFile(p)
		require.NoError(t, err)
		hub.AddFile("org/stories-GGUF", "Q8_0/"+filepath.Base(p), b)
		total += int64(len(b))
	}
	c := nodetest.New(t, 2, func(i int, cfg *node.Config) { cfg.HFEndpoint = hub.URL() })
	n0, n1 := c.Nodes[0], c.Nodes[1]

	var e modelcat.Entry
	events := run(t, n0, map[string]any{"operation": "model_download", "model": "hf:org/stories-GGUF:Q8_0"}, &e)
	require.Equal(t, 3, e.Parts)
	require.Equal(t, "stories260K-Q8_0.gguf", e.FileName)
	require.Equal(t, "hf:org/stories-GGUF/Q8_0/stories260K-Q8_0-00001-of-00003.gguf", e.Ref)
	orig, err := os.ReadFile("../testdata/model/stories260K.gguf")
	require.NoError(t, err)
	got, err := os.ReadFile(e.Path)
	require.NoError(t, err)
	require.Equal(t, orig, got)
	var download, merge jobs.Event
	for _, ev := range events {
		switch {
		case ev.Type != jobs.TypeProgress:
		case ev.Message == "merge":
			merge = ev
		default:
			download = ev
		}
	}
	require.Equal(t, total, download.Done)
	require.Equal(t, total, download.Total)
	require.Equal(t, e.Size, merge.Done, "the merge reports its progress after the download's")
	require.Equal(t, e.Size, merge.Total)

	hub.Close()
	require.Eventually(t, func() bool {
		for _, h := range n1.Registry().Models() {
			if h.ModelID == e.ID && h.SHA256 == e.SHA256 && h.Parts == 3 {
				return true
			}
		}
		return false
	}, nodetest.WaitTimeout, 20*time.Millisecond)
	var e1 modelcat.Entry
	run(t, n1, map[string]any{"operation": "model_download", "model": e.ID}, &e1)
	require.Equal(t, e.SHA256, e1.SHA256)
	require.Equal(t, modelcat.SourcePeer, e1.Source)
	require.Equal(t, 3, e1.Parts, "the copy's entry says what the original's does")
	require.Equal(t, e.Ref, e1.Ref)
}
